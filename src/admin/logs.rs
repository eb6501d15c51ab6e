//! `GET /api/v1/logs?app=&lines=&since=&follow=1`: app output and events interleaved
//! in time order, from the live stream. Without `follow`, JSON; with it, server-sent
//! events: the recent lines, then each new one as it happens (a comment every 15 s
//! keeps proxies from closing an idle stream), until the client leaves or the
//! gateway stops.

use super::routes::{json_response, Body};
use super::AdminState;
use crate::observe::logstream::Item;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::json;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Default and largest `lines`.
const DEFAULT_LINES: usize = 200;
const MAX_LINES: usize = crate::observe::logstream::KEPT;
/// A comment this often on an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A parsed logs query.
pub(super) struct Query {
    app: Option<String>,
    lines: usize,
    since: u64,
    follow: bool,
}

impl Query {
    pub(super) fn parse(
        app: Option<String>,
        lines: Option<String>,
        since: Option<String>,
        follow: Option<String>,
    ) -> Result<Query, String> {
        let lines = match lines.as_deref() {
            None | Some("") => DEFAULT_LINES,
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| format!("lines must be a whole number, got {n:?}"))?
                .min(MAX_LINES),
        };
        let since = match since.as_deref() {
            None | Some("") => 0,
            Some(n) => n
                .parse::<u64>()
                .map_err(|_| format!("since must be a line's seq, got {n:?}"))?,
        };
        let follow = match follow.as_deref() {
            None | Some("") | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(format!("follow must be 1 or 0, got {other:?}")),
        };
        Ok(Query {
            app: app.filter(|a| !a.is_empty()),
            lines,
            since,
            follow,
        })
    }
}

pub(super) fn answer(state: &AdminState, q: Query) -> Response<Body> {
    let stream = &state.events.monitor().logs;
    let (recent, rx) = stream.recent(q.app.as_deref(), q.lines, q.since);
    if !q.follow {
        // Where a follower continues from: after everything there is now.
        let cursor = stream.last_seq();
        return json_response(StatusCode::OK, &json!({"lines": recent, "cursor": cursor}));
    }
    let (tx, out) = mpsc::channel::<Bytes>(64);
    let mut first = String::new();
    for l in &recent {
        first.push_str(&sse(l));
    }
    first.push_str(": following\n\n");
    tokio::spawn(follow(rx, tx, q.app, Bytes::from(first)));
    let mut resp = Response::new(Sse { rx: out }.boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// One line as an SSE message (`id` = its seq, to resume with `since`).
fn sse(l: &crate::observe::logstream::LogLine) -> String {
    format!(
        "id: {}\ndata: {}\n\n",
        l.seq,
        serde_json::to_string(l).unwrap_or_default()
    )
}

/// Forward the stream's new lines of `app` to the client until it leaves or the
/// gateway stops.
async fn follow(
    mut rx: broadcast::Receiver<Item>,
    tx: mpsc::Sender<Bytes>,
    app: Option<String>,
    first: Bytes,
) {
    if tx.send(first).await.is_err() {
        return;
    }
    loop {
        let next = tokio::time::timeout(HEARTBEAT, rx.recv()).await;
        let chunk = match next {
            Err(_) => Bytes::from_static(b": heartbeat\n\n"),
            Ok(Ok(Item::Line(l))) => {
                if app.as_ref().is_some_and(|a| *a != l.app) {
                    continue;
                }
                Bytes::from(sse(&l))
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => Bytes::from(format!(
                ": {n} lines skipped: this client reads too slowly\n\n"
            )),
            Ok(Ok(Item::End)) | Ok(Err(broadcast::error::RecvError::Closed)) => return,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// The streamed body: chunks until the forwarder ends.
struct Sse {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for Sse {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
