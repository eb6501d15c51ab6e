//! HTTP/2 to peers (`protocol = "h2"`, or `"auto"` when TLS ALPN picks `h2`): hyper's
//! HTTP/2 client over the connect path of `conn.rs` (prior knowledge on plain TCP,
//! ALPN `h2` over TLS).
//!
//! One multiplexed connection per peer ([`H2Conns`]), shared by concurrent requests;
//! another is opened when it closes or has as many streams open as the peer allows
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`). Each connection runs in a task of its own
//! (hyper's), unlike HTTP/1.1, which the request task drives inline.
//!
//! The client's body is lent to hyper ([`RequestBody`]) and streamed as it arrives;
//! it comes back for a retry when the peer did not process the request and what was
//! taken of it is still held: the first [`REPLAY_MAX`] bytes are kept (the buffers
//! themselves, shared, not copied) until the response head, so a refused gRPC call
//! can go again; past that the body streams on without a copy, and only a
//! bodiless or untouched request is retried. The send phase's two
//! clocks hold as for HTTP/1.1: while hyper waits for a piece of the client's body,
//! `timeouts.client_body` is the client's (408); otherwise, without progress,
//! `timeouts.response_header` is the peer's (504). Once the response head is in, no
//! clock runs: a streaming call may be quiet as long as it likes.
//!
//! How a failure maps (SPEC §4 on h2): `REFUSED_STREAM`, or a `GOAWAY` whose last
//! stream id is below the request's stream, means the peer did not process it
//! (RFC 9113 §8.7): [`Sent::Nothing`] when no byte of the body was taken, so it is
//! retried on another connection or peer; any other `RST_STREAM` or `GOAWAY` before
//! the response head, or the connection closing, is `connection_terminated` after the
//! request was sent.

use super::conn::Connector;
use super::deadline::{Deadlines, Elapsed};
use super::dns::Target;
use super::h1::Stream;
use crate::error::{Cause, ProxyError, Sent};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes of a request body kept for sending it again (see the module doc).
pub const REPLAY_MAX: usize = 64 * 1024;

/// The client's request body as the gateway holds it between attempts: lent whole to
/// an h2 attempt, or read in place by an HTTP/1.1 one. `body` `None`: taken for good
/// (or no body). `replay`: what an attempt the peer did not process had taken of it,
/// sent first next time.
pub struct ClientBody {
    pub body: Option<Incoming>,
    pub replay: Vec<Bytes>,
}

impl ClientBody {
    pub fn new(body: Incoming) -> ClientBody {
        ClientBody {
            body: Some(body),
            replay: Vec::new(),
        }
    }

    /// Whether it can be sent (again) from its start.
    pub fn is_whole(&self) -> bool {
        self.body.is_some()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.replay.remove(0)))));
        }
        match &mut this.body {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if !self.replay.is_empty() {
            return SizeHint::default();
        }
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// What the request task and hyper's body pipe share about the body being sent.
#[derive(Default)]
struct Share {
    body: Mutex<Option<Incoming>>,
    /// Every piece taken so far, while they fit in [`REPLAY_MAX`].
    kept: Mutex<(Vec<Bytes>, usize)>,
    /// [`PULLED`], [`ENDED`], [`STALLED`], [`WAITING`], [`ANSWERED`].
    state: AtomicU8,
    /// Frames taken so far (progress, for the peer's clock).
    frames: AtomicU64,
}

/// A frame of the body was taken and not kept: it cannot be sent again.
const PULLED: u8 = 1;
/// The whole body was taken.
const ENDED: u8 = 2;
/// The client's body made no progress for `client_body`.
const STALLED: u8 = 4;
/// hyper is waiting for the client's next piece.
const WAITING: u8 = 8;
/// The response head arrived: the client's clock stops.
const ANSWERED: u8 = 16;

impl Share {
    fn has(&self, bit: u8) -> bool {
        self.state.load(Ordering::Acquire) & bit != 0
    }

    fn set(&self, bit: u8) {
        self.state.fetch_or(bit, Ordering::AcqRel);
    }

    fn clear(&self, bit: u8) {
        self.state.fetch_and(!bit, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep a piece taken for a possible retry, or give up keeping (for good).
    fn keep(&self, frame: &Frame<Bytes>) {
        if self.has(PULLED) {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        match frame.data_ref() {
            Some(data) if kept.1 + data.len() <= REPLAY_MAX => {
                kept.1 += data.len();
                kept.0.push(data.clone());
            }
            _ => {
                // Too much to hold, or trailers: no retry of this request.
                *kept = (Vec::new(), 0);
                self.set(PULLED);
            }
        }
    }

    /// The response head is in: nothing will be sent again, nothing more is kept.
    fn release(&self) {
        self.set(PULLED);
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = (Vec::new(), 0);
    }
}

/// The body hyper sends on a stream: the client's, pulled as hyper asks, with the
/// client's clock (`timeouts.client_body`) while it waits for a piece; or none.
pub struct RequestBody {
    share: Arc<Share>,
    /// Pieces taken by an earlier attempt, sent first.
    replay: std::collections::VecDeque<Bytes>,
    client_body: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Known empty from the start (no lock needed).
    empty: bool,
}

impl RequestBody {
    fn empty() -> RequestBody {
        RequestBody {
            share: Arc::default(),
            replay: Default::default(),
            client_body: Duration::MAX,
            timer: None,
            empty: true,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.empty {
            return Poll::Ready(None);
        }
        let share = &this.share;
        if let Some(data) = this.replay.pop_front() {
            share.frames.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let polled = match &mut *share.lock() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                share.keep(&frame);
                share.clear(WAITING);
                share.frames.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                share.set(PULLED);
                share.clear(WAITING);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.timer = None;
                share.set(ENDED);
                share.clear(WAITING);
                share.frames.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Pending => {
                share.set(WAITING);
                if share.has(ANSWERED) {
                    // A streaming call: the client may be quiet as long as it likes.
                    this.timer = None;
                    return Poll::Pending;
                }
                let limit = this.client_body;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    share.set(STALLED);
                    return Poll::Ready(Some(Err(format!(
                        "the client's request body stalled for {limit:?}"
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.empty
            || self.replay.is_empty() && self.share.lock().as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if self.empty {
            return SizeHint::with_exact(0);
        }
        if !self.replay.is_empty() {
            return SizeHint::default();
        }
        self.share
            .lock()
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// One live connection and the streams open on it.
#[derive(Clone)]
struct Shared {
    send: SendRequest<RequestBody>,
    streams: Arc<AtomicUsize>,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection's task last saw it.
    max: Arc<AtomicUsize>,
}

/// A request's hold on a stream of a connection: it counts as open until dropped
/// (when the response body ends or the exchange fails).
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What `protocol = "auto"` found.
pub enum Auto {
    /// A stream on an HTTP/2 connection.
    H2(H2Stream),
    /// A fresh TLS connection on which the server chose HTTP/1.1.
    H1(Stream),
}

/// A stream to send one request on.
pub struct H2Stream {
    send: SendRequest<RequestBody>,
    pub slot: StreamSlot,
    /// The connection carried requests before this one.
    pub reused: bool,
}

/// The HTTP/2 connections of one peer (usually one).
#[derive(Default)]
pub struct H2Conns {
    conns: Mutex<Vec<Shared>>,
    /// One connect at a time, so a burst shares the connection it opens.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Conns {
    /// A stream on a live connection with room for one more, if there is one.
    pub fn ready(&self) -> Option<H2Stream> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.send.is_closed());
        conns.iter().find_map(|c| {
            let max = c.max.load(Ordering::Acquire).max(1);
            let open = c.streams.load(Ordering::Acquire);
            if open >= max || !c.send.is_ready() {
                return None;
            }
            c.streams.fetch_add(1, Ordering::AcqRel);
            Some(H2Stream {
                send: c.send.clone(),
                slot: StreamSlot(c.streams.clone()),
                reused: true,
            })
        })
    }

    /// A stream: on a live connection, or on a new one (one connect at a time per
    /// peer; a request that waited for it shares it).
    pub async fn checkout(
        &self,
        c: &Connector,
        id: &str,
        target: &Target,
        tls: bool,
    ) -> Result<H2Stream, ProxyError> {
        if let Some(s) = self.ready() {
            return Ok(s);
        }
        let _gate = self.connecting.lock().await;
        if let Some(s) = self.ready() {
            return Ok(s);
        }
        let io = c.open(id, target, tls).await?;
        if tls && io.alpn() != Some(b"h2") {
            let chose = match io.alpn() {
                Some(p) => format!("it chose {:?}", String::from_utf8_lossy(p)),
                None => "it offers no ALPN".to_owned(),
            };
            return Err(refused_h2(id, &chose));
        }
        self.adopt(c, id, io).await
    }

    /// Start HTTP/2 on a fresh transport and keep the connection for later requests.
    pub async fn adopt(&self, c: &Connector, id: &str, io: Stream) -> Result<H2Stream, ProxyError> {
        let max = Arc::new(AtomicUsize::new(DEFAULT_MAX_STREAMS));
        let send = handshake(c, id, io, max.clone()).await?;
        let streams = Arc::new(AtomicUsize::new(1));
        let shared = Shared {
            send: send.clone(),
            streams: streams.clone(),
            max,
        };
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shared);
        Ok(H2Stream {
            send,
            slot: StreamSlot(streams),
            reused: false,
        })
    }

    /// `protocol = "auto"` over TLS: a stream on a live h2 connection, or a new
    /// connection offering `h2` and `http/1.1`, HTTP/2 when the server picks it.
    pub async fn checkout_auto(
        &self,
        c: &Connector,
        id: &str,
        target: &Target,
    ) -> Result<Auto, ProxyError> {
        if let Some(s) = self.ready() {
            return Ok(Auto::H2(s));
        }
        let _gate = self.connecting.lock().await;
        if let Some(s) = self.ready() {
            return Ok(Auto::H2(s));
        }
        let io = c.open(id, target, true).await?;
        self.by_alpn(c, id, io).await
    }

    /// `protocol = "auto"`: a fresh TLS connection as ALPN chose: HTTP/2 (kept for
    /// later requests) or HTTP/1.1.
    pub async fn by_alpn(&self, c: &Connector, id: &str, io: Stream) -> Result<Auto, ProxyError> {
        if io.alpn() != Some(b"h2") {
            return Ok(Auto::H1(io));
        }
        self.adopt(c, id, io).await.map(Auto::H2)
    }

    /// Leave the connection `slot` belongs to out of later picks (its open streams
    /// go on; it closes after them).
    pub fn forget(&self, slot: &StreamSlot) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !Arc::ptr_eq(&c.streams, &slot.0));
    }

    /// Whether a live connection is kept.
    pub fn is_connected(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.iter().any(|c| !c.send.is_closed())
    }

    /// Forget every connection (the peer left rotation): each closes once its open
    /// streams end.
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        drop(drained);
    }
}

/// `protocol = "h2"` over TLS, and the server did not pick `h2` by ALPN (`chose`: what
/// it did instead): nothing was sent.
pub fn refused_h2(id: &str, chose: &str) -> ProxyError {
    ProxyError::new(
        Cause::TlsProtocol,
        format!(
            "{id}: the server did not agree to HTTP/2 over TLS ({chose}); protocol = \"h2\" needs a server offering ALPN h2 (\"auto\" takes what it offers)"
        ),
    )
}

/// Streams assumed allowed on a connection until the peer's settings say (RFC 9113
/// §6.5.2 recommends at least 100).
const DEFAULT_MAX_STREAMS: usize = 100;

/// The header list size hyper's decoder takes (and the `SETTINGS_MAX_HEADER_LIST_SIZE`
/// the gateway announces): room above `limits.response_header` (4 times it, at least
/// 1 MiB), so that a section over the limit is decoded and measured here and named
/// `http_response_header_section_size`. Past this room the `h2` crate resets the
/// stream with a `PROTOCOL_ERROR` it also uses for malformed headers, and the two
/// cannot be told apart; far past it (or in too many CONTINUATION frames) it closes
/// the connection with `ENHANCE_YOUR_CALM`, which [`failure`] names as too large.
fn decoder_limit(limit: usize) -> u32 {
    let room = limit.saturating_mul(4).max(1 << 20);
    u32::try_from(room).unwrap_or(u32::MAX)
}

/// The size of a response header section as HTTP/2 counts it (RFC 9113 §6.5.2: each
/// field's name and value, plus 32; `:status` included).
fn header_list_size(res: &Response<Incoming>) -> usize {
    const STATUS: usize = ":status".len() + 3 + 32;
    STATUS
        + res
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum::<usize>()
}

/// The HTTP/2 handshake over `io`; the connection's task is spawned, and keeps `max`
/// up to date with the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.
async fn handshake(
    c: &Connector,
    id: &str,
    io: Stream,
    max: Arc<AtomicUsize>,
) -> Result<SendRequest<RequestBody>, ProxyError> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.max_header_list_size(decoder_limit(c.response_header_limit));
    let hs = b.handshake::<_, RequestBody>(TokioIo::new(io));
    let (send, conn) = match tokio::time::timeout(c.connect_timeout, hs).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Err(ProxyError::new(
                Cause::ConnectionTerminated,
                format!("{id}: HTTP/2 handshake failed: {e}"),
            ))
        }
        Err(_) => {
            return Err(ProxyError::new(
                Cause::ConnectTimeout,
                format!(
                    "{id}: HTTP/2 handshake not done within {:?}",
                    c.connect_timeout
                ),
            ))
        }
    };
    let id = id.to_owned();
    tokio::spawn(async move {
        let mut conn = conn;
        let ended = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut conn).poll(cx);
            max.store(conn.current_max_send_streams(), Ordering::Release);
            polled
        })
        .await;
        if let Err(e) = ended {
            tracing::debug!("{id}: HTTP/2 connection ended: {e}");
        }
    });
    Ok(send)
}

/// A request head as it goes out on h2: the client's head, the headers the gateway
/// adds, the scheme and authority.
pub struct H2Request<'a> {
    pub parts: &'a http::request::Parts,
    pub added: &'a [(HeaderName, HeaderValue)],
    /// The client sent `TE: trailers` (gRPC needs it forwarded).
    pub te_trailers: bool,
    pub tls: bool,
    /// For `:authority` when the request has no Host.
    pub target: &'a Target,
}

impl H2Request<'_> {
    /// The request hyper sends: `:authority` from Host (then dropped from the
    /// headers), the added headers after the client's.
    fn build(&self, body: RequestBody) -> Result<Request<RequestBody>, String> {
        let p = self.parts;
        let host = p
            .headers
            .get(header::HOST)
            .or_else(|| {
                self.added
                    .iter()
                    .find(|(n, _)| *n == header::HOST)
                    .map(|(_, v)| v)
            })
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| match self.target.port() {
                80 | 443 => self.target.host().to_owned(),
                port => format!("{}:{port}", self.target.host()),
            });
        let scheme = if self.tls { "https" } else { "http" };
        let pq = p.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(host)
            .path_and_query(pq)
            .build()
            .map_err(|e| format!("request target for HTTP/2: {e}"))?;
        let mut req = Request::new(body);
        *req.method_mut() = p.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        let h = req.headers_mut();
        h.reserve(p.headers.len() + self.added.len() + 1);
        for (name, value) in &p.headers {
            if *name != header::HOST {
                h.append(name, value.clone());
            }
        }
        for (name, value) in self.added {
            if *name != header::HOST && *name != header::CONNECTION && *name != header::UPGRADE {
                h.append(name, value.clone());
            }
        }
        if self.te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        Ok(req)
    }
}

/// The clocks and the header limit of one h2 exchange (see the module doc).
pub struct Clocks<'a> {
    pub deadlines: &'a Arc<Deadlines>,
    pub response_header: Duration,
    pub client_body: Duration,
    /// `limits.response_header`, bytes (the head is measured when it arrives).
    pub response_header_limit: usize,
}

/// Send `request` on `stream` with the client's `body` (lent, and put back when it
/// can be sent again), and wait for the response head.
pub async fn send(
    id: &str,
    stream: &mut H2Stream,
    request: &H2Request<'_>,
    body: &mut ClientBody,
    clocks: &Clocks<'_>,
) -> Result<Response<Incoming>, ProxyError> {
    let share = Arc::new(Share::default());
    let empty = body.is_end_stream();
    let lent = if empty {
        body.body = None;
        RequestBody::empty()
    } else {
        *share.lock() = body.body.take();
        let replay = std::mem::take(&mut body.replay);
        let total = replay.iter().map(Bytes::len).sum();
        *share.kept.lock().unwrap_or_else(|p| p.into_inner()) = (replay.clone(), total);
        RequestBody {
            share: share.clone(),
            replay: replay.into(),
            client_body: clocks.client_body,
            timer: None,
            empty: false,
        }
    };
    let req = request
        .build(lent)
        .map_err(|why| ProxyError::new(Cause::BadRequest, format!("{id}: {why}")))?;
    let result = exchange(id, stream, req, &share, clocks).await;
    if result.is_err() && !share.has(PULLED) {
        // All that was taken of it is held: it can go again.
        if let Some(b) = share.lock().take() {
            body.body = Some(b);
            body.replay =
                std::mem::take(&mut share.kept.lock().unwrap_or_else(|p| p.into_inner()).0);
        }
    }
    result
}

async fn exchange(
    id: &str,
    stream: &mut H2Stream,
    req: Request<RequestBody>,
    share: &Share,
    clocks: &Clocks<'_>,
) -> Result<Response<Incoming>, ProxyError> {
    let deadline = clocks.deadlines.start(clocks.response_header);
    let mut response = std::pin::pin!(stream.send.send_request(req));
    let mut frames = share.frames.load(Ordering::Relaxed);
    loop {
        match deadline.run(response.as_mut()).await {
            Ok(Ok(res)) => {
                share.set(ANSWERED);
                share.release();
                let size = header_list_size(&res);
                if size > clocks.response_header_limit {
                    // Dropping the response resets the stream (CANCEL); the
                    // connection carries on.
                    return Err(ProxyError::new(
                        Cause::ResponseHeaderTooLarge,
                        format!(
                            "{id}: response header section of {size} bytes over HTTP/2 (names, values and 32 a field) exceeds limits.response_header ({} bytes)",
                            clocks.response_header_limit
                        ),
                    )
                    .sent(Sent::Response));
                }
                return Ok(res);
            }
            Ok(Err(e)) => {
                return Err(failure(
                    id,
                    &e,
                    share,
                    stream.reused,
                    clocks.response_header_limit,
                ))
            }
            Err(Elapsed) => {
                let now = share.frames.load(Ordering::Relaxed);
                // The client's clock runs in the body (it fails the stream when it
                // passes); the peer's only while the client is not awaited.
                if now != frames || share.has(WAITING) && !share.has(ENDED) {
                    frames = now;
                    deadline.reset(clocks.response_header);
                    continue;
                }
                return Err(ProxyError::new(
                    Cause::ResponseTimeout,
                    format!(
                        "{id}: no response header within {:?} of the request being sent (HTTP/2)",
                        clocks.response_header
                    ),
                )
                .sent(Sent::Request));
            }
        }
    }
}

/// The failure of a stream before its response head, named as SPEC §4 says.
fn failure(
    id: &str,
    e: &hyper::Error,
    share: &Share,
    reused: bool,
    response_header_limit: usize,
) -> ProxyError {
    if share.has(STALLED) {
        return ProxyError::new(
            Cause::ClientBodyTimeout,
            format!("the client's request body stalled (while sending it to {id} over HTTP/2)"),
        )
        .sent(Sent::Request);
    }
    // Not processed by the peer: safe to send again if the body can go again.
    let unprocessed = if share.has(PULLED) {
        Sent::Request
    } else {
        Sent::Nothing
    };
    let on = if reused {
        " (on a reused connection)"
    } else {
        ""
    };
    let h2 = h2_error(e);
    if let Some(h2) = h2 {
        let reason = h2.reason();
        if h2.is_reset() && h2.is_remote() && reason == Some(h2::Reason::REFUSED_STREAM) {
            return ProxyError::new(
                Cause::ConnectionTerminated,
                format!(
                    "{id}: refused the stream (REFUSED_STREAM): the request was not processed{on}"
                ),
            )
            .sent(unprocessed);
        }
        if h2.is_go_away() && h2.is_remote() {
            return ProxyError::new(
                Cause::ConnectionTerminated,
                format!(
                    "{id}: sent GOAWAY ({}) with a last stream id below this request's: not processed{on}",
                    reason.unwrap_or(h2::Reason::NO_ERROR)
                ),
            )
            .sent(unprocessed);
        }
        if h2.is_reset() && h2.is_remote() {
            return ProxyError::new(
                Cause::ConnectionTerminated,
                format!(
                    "{id}: reset the stream ({}) before the response header{on}",
                    reason.unwrap_or(h2::Reason::NO_ERROR)
                ),
            )
            .sent(Sent::Request);
        }
        if let Some(io) = h2.get_io() {
            return ProxyError::new(
                Cause::ConnectionTerminated,
                format!("{id}: connection closed before the response header: {io}{on}"),
            )
            .sent(Sent::Request);
        }
        if h2.is_go_away() && h2.is_library() && over_decoder_limit(h2) {
            return ProxyError::new(
                Cause::ResponseHeaderTooLarge,
                format!(
                    "{id}: response header section far over limits.response_header (the HTTP/2 decoder gave up on it: {h2})"
                ),
            )
            .sent(Sent::Response);
        }
        if h2.is_reset() && h2.is_library() && reason == Some(h2::Reason::PROTOCOL_ERROR) {
            return ProxyError::new(
                Cause::ProtocolError,
                format!(
                    "{id}: HTTP/2 response rejected ({h2}): a malformed header section, or one over {} bytes",
                    decoder_limit(response_header_limit)
                ),
            )
            .sent(Sent::Request);
        }
        if h2.is_library() || h2.is_go_away() {
            return ProxyError::new(
                Cause::ProtocolError,
                format!("{id}: HTTP/2 protocol error: {h2}"),
            )
            .sent(Sent::Request);
        }
    }
    if e.is_canceled() {
        // hyper gave up on it before it was written: the connection had closed.
        return ProxyError::new(
            Cause::ConnectionTerminated,
            format!("{id}: connection closed before the request was sent{on}"),
        )
        .sent(unprocessed);
    }
    ProxyError::new(
        Cause::ConnectionTerminated,
        format!("{id}: HTTP/2 exchange failed before the response header: {e}{on}"),
    )
    .sent(Sent::Request)
}

/// The `h2` crate closed the connection because a header block went past what its
/// decoder takes ([`decoder_limit`]): its debug data says so (`h2`'s own constants;
/// `ENHANCE_YOUR_CALM` alone also names floods that are not about headers).
fn over_decoder_limit(h2: &h2::Error) -> bool {
    if h2.reason() != Some(h2::Reason::ENHANCE_YOUR_CALM) {
        return false;
    }
    let text = h2.to_string();
    text.contains("header_list_way_too_large") || text.contains("too_many_continuations")
}

/// The `h2` error under a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = s.source();
    }
    None
}

/// A one-off `GET path` over h2 for health checks: the response status. The caller
/// bounds it with its own timeout.
pub async fn get_status(
    c: &Connector,
    id: &str,
    target: &Target,
    tls: bool,
    path: &str,
) -> Result<u16, ProxyError> {
    let conns = H2Conns::default();
    let stream = conns.checkout(c, id, target, tls).await?;
    status_on(c, id, stream, target, tls, path).await
}

/// [`get_status`] over a fresh TLS connection on which ALPN chose `h2` (`auto`).
pub async fn get_status_over(
    c: &Connector,
    id: &str,
    io: Stream,
    target: &Target,
    path: &str,
) -> Result<u16, ProxyError> {
    let stream = H2Conns::default().adopt(c, id, io).await?;
    status_on(c, id, stream, target, true, path).await
}

async fn status_on(
    c: &Connector,
    id: &str,
    mut stream: H2Stream,
    target: &Target,
    tls: bool,
    path: &str,
) -> Result<u16, ProxyError> {
    let scheme = if tls { "https" } else { "http" };
    let authority = match target.port() {
        80 | 443 => target.host().to_owned(),
        port => format!("{}:{port}", target.host()),
    };
    let req = Request::get(format!("{scheme}://{authority}{path}"))
        .version(Version::HTTP_2)
        .header(header::USER_AGENT, "healgate-health")
        .body(RequestBody::empty())
        .map_err(|e| ProxyError::new(Cause::Internal, format!("{id}: health request: {e}")))?;
    let share = Share::default();
    match stream.send.send_request(req).await {
        Ok(res) => Ok(res.status().as_u16()),
        Err(e) => Err(failure(id, &e, &share, false, c.response_header_limit)),
    }
}
