//! HTTP/1.1 to peers, driven inline by the request's own task: write the request
//! (`encode.rs`), read and parse the response head (`head.rs`), decode the response
//! body (`body.rs`). This file holds the connection and the exchange that ties them.
//!
//! No connection task and no channel sits between the request and its socket (as in
//! hyper's client), so a proxied request costs one task's work, not two tasks and
//! the hops between them. Knowing exactly what was written also makes the retry rules
//! exact: [`Sent::Nothing`] means not a byte reached the socket.
//!
//! What the parser refuses (→ 502 `http_protocol_error`): see `head.rs`, and bad chunk
//! framing (`body.rs`). A `101` to an upgrade request hands the raw connection over
//! ([`Connection::into_tunnel`]).

pub(crate) mod body;
mod encode;
pub(crate) mod head;

pub use body::UpstreamBody;
pub use head::Head;

use super::deadline::{Deadline, Deadlines, Elapsed};
use crate::error::{Cause, ProxyError, Sent};
use bytes::{Bytes, BytesMut};
use head::{parse_head, Malformed, Names};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Version};
use http_body::Body;
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a failed request-body write waits for an answer the peer may have sent.
const EARLY_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// A raw transport to a peer, plain or TLS.
pub type Stream = crate::tls::io::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl Stream {
    /// The protocol TLS ALPN chose (`None`: plain TCP, or no ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

/// One keep-alive connection to a peer.
pub struct Connection {
    io: Stream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// It served a request before the current one.
    pub reused: bool,
    /// When it last went idle (for the pool, and for learning the peer's timeout).
    pub idle_since: Instant,
    /// Header names this peer sends, parsed once.
    names: Names,
}

/// A request head as it goes out: the client's head, read only (a retry sends it
/// again as it is), and the headers the gateway adds after the client's.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub parts: &'a http::request::Parts,
    pub added: &'a [(HeaderName, HeaderValue)],
    /// The request asks to switch protocols, so a `101` is a valid answer.
    pub upgrade: bool,
}

/// The clocks of one exchange (see [`Connection::send`]), on the gateway's coarse
/// deadline table.
pub struct Timeouts<'a> {
    pub deadlines: &'a Arc<Deadlines>,
    /// From the whole request sent (and while the peer takes no request bytes) to the
    /// response head.
    pub response_header: Duration,
    /// Between two pieces of the client's request body.
    pub client_body: Duration,
}

impl Timeouts<'_> {
    fn no_head(&self, id: &str) -> ProxyError {
        ProxyError::new(
            Cause::ResponseTimeout,
            format!(
                "{id}: no response header within {:?} of the request being sent",
                self.response_header
            ),
        )
        .sent(Sent::Request)
    }

    fn upstream_stalled(&self, id: &str, what: &str) -> ProxyError {
        ProxyError::new(
            Cause::ResponseTimeout,
            format!(
                "{id}: took none of the {what} for {:?} (and sent no response header)",
                self.response_header
            ),
        )
        .sent(Sent::Request)
    }

    fn client_stalled(&self, id: &str) -> ProxyError {
        ProxyError::new(
            Cause::ClientBodyTimeout,
            format!(
                "the client's request body stalled: nothing new for {:?} (while sending it to {id})",
                self.client_body
            ),
        )
        .sent(Sent::Request)
    }
}

impl Connection {
    /// A new connection over `io`.
    pub fn new(io: Stream) -> Connection {
        Connection {
            io,
            buf: BytesMut::with_capacity(8192),
            out: Vec::with_capacity(1024),
            reused: false,
            idle_since: Instant::now(),
            names: Names::default(),
        }
    }

    /// Whether an idle connection can take a request: the peer has not closed it and
    /// sent nothing unasked. Never blocks (a poll with a no-op waker).
    pub fn is_usable(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.read_now(), Poll::Pending)
    }

    /// Read what has already arrived into `buf`, without waiting (a poll with a
    /// no-op waker). `Pending`: nothing more is there now.
    fn read_now(&mut self) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf)
    }

    /// Write the request and read the response head. The error says how far the
    /// exchange got.
    ///
    /// Two clocks, on one slot of the deadline table: while the client's body is
    /// awaited, `client_body` without a new frame is the client's failure (408
    /// [`Cause::ClientBodyTimeout`], never counted against the peer); while the peer is
    /// written to, and from the moment the whole request is sent until the response
    /// head, `response_header` is the peer's (504 [`Cause::ResponseTimeout`]).
    pub async fn send<B: Body<Data = Bytes> + Unpin>(
        &mut self,
        id: &str,
        request: Outgoing<'_>,
        body: &mut B,
        header_limit: usize,
        timeouts: &Timeouts<'_>,
    ) -> Result<Head, ProxyError>
    where
        B::Error: std::fmt::Display,
    {
        let deadline = timeouts.deadlines.start(timeouts.response_header);
        let chunked = encode::head(&mut self.out, request, !body.is_end_stream());
        let mut sent = Sent::Nothing;
        match deadline
            .run(write_all(&mut self.io, &self.out, &mut sent))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.io_failure(id, e, sent, "writing the request")),
            Err(Elapsed) => return Err(timeouts.upstream_stalled(id, "request head").sent(sent)),
        }
        let method = &request.parts.method;
        if !body.is_end_stream() {
            let sent = self
                .send_body(id, body, chunked, method, header_limit, &deadline, timeouts)
                .await;
            // The peer may answer before it has the whole body (413, 401 ...), and
            // close: its answer, not the failed write, is what the client should see.
            match sent {
                Ok(true) => {}
                Ok(false) => {
                    deadline.reset(timeouts.response_header);
                    let head = self.read_head(id, method, header_limit, false);
                    let mut head = match deadline.run(head).await {
                        Ok(head) => head?,
                        Err(Elapsed) => return Err(timeouts.no_head(id)),
                    };
                    // Part of the body is still unsent: the connection cannot be reused.
                    head.keep_alive = false;
                    return Ok(head);
                }
                Err(e) if e.cause == Cause::ConnectionTerminated => {
                    // The write failed: an answer may still be waiting to be read.
                    let late = self.read_head(id, method, header_limit, false);
                    return match tokio::time::timeout(EARLY_ANSWER_WAIT, late).await {
                        Ok(Ok(mut head)) => {
                            head.keep_alive = false;
                            Ok(head)
                        }
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
            // The request is all sent: the peer's time to answer starts now. (Without
            // a body it started with the head's write, a moment ago: no reset.)
            deadline.reset(timeouts.response_header);
        }
        let answer = async {
            if let Err(e) = self.io.flush().await {
                return Err(self.io_failure(id, e, Sent::Request, "writing the request"));
            }
            self.read_head(id, method, header_limit, request.upgrade)
                .await
        };
        match deadline.run(answer).await {
            Ok(head) => head,
            Err(Elapsed) => Err(timeouts.no_head(id)),
        }
    }

    /// Whether the peer started a final answer while the request body is still being
    /// sent. Reads only what has already arrived (never waits); interim `1xx`
    /// answers (`100 Continue`) are consumed and do not count.
    fn early_answer(&mut self, method: &Method, limit: usize) -> bool {
        while let Poll::Ready(Ok(n)) = self.read_now() {
            if n == 0 {
                break;
            }
            self.buf.reserve(4096);
        }
        loop {
            if self.buf.len() < 12 {
                // Too short to tell: wait while it may still become an interim answer.
                let start = &self.buf[..self.buf.len().min(10)];
                let interim = b"HTTP/1.1 1".starts_with(start) || b"HTTP/1.0 1".starts_with(start);
                return !self.buf.is_empty() && !interim;
            }
            if self.buf[9] != b'1' {
                return true;
            }
            match parse_head(&mut self.buf, &mut self.names, method, limit, false) {
                Ok(Some(_)) => continue, // an interim answer, consumed
                Ok(None) => return false,
                Err(_) => return true, // read_head says what is wrong with it
            }
        }
    }

    /// The raw transport after a `101`, and the bytes the peer already sent on it.
    pub fn into_tunnel(self) -> (Stream, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// Stream the client's body to the peer, as it arrives. False: the peer answered
    /// first (see [`Connection::early_answer`]), and the rest is not sent. `deadline`
    /// runs on the client's clock while a frame is awaited, on the peer's while it is
    /// written.
    #[allow(clippy::too_many_arguments)]
    async fn send_body<B: Body<Data = Bytes> + Unpin>(
        &mut self,
        id: &str,
        body: &mut B,
        chunked: bool,
        method: &Method,
        limit: usize,
        deadline: &Deadline<'_>,
        timeouts: &Timeouts<'_>,
    ) -> Result<bool, ProxyError>
    where
        B::Error: std::fmt::Display,
    {
        let mut sent = Sent::Request;
        loop {
            if self.early_answer(method, limit) {
                return Ok(false);
            }
            deadline.reset(timeouts.client_body);
            let frame = match deadline.run(body.frame()).await {
                Err(Elapsed) => return Err(timeouts.client_stalled(id)),
                Ok(None) => break,
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => {
                    return Err(ProxyError::new(
                        Cause::BadRequest,
                        format!("{id}: the client's request body failed: {e}"),
                    )
                    .sent(Sent::Request))
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // request trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            deadline.reset(timeouts.response_header);
            match deadline
                .run(self.write_data(&data, chunked, &mut sent))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(self.io_failure(id, e, Sent::Request, "writing the request body"))
                }
                Err(Elapsed) => return Err(timeouts.upstream_stalled(id, "request body")),
            }
        }
        if chunked {
            deadline.reset(timeouts.response_header);
            match deadline
                .run(write_all(&mut self.io, b"0\r\n\r\n", &mut sent))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(self.io_failure(id, e, Sent::Request, "writing the request body"))
                }
                Err(Elapsed) => return Err(timeouts.upstream_stalled(id, "request body")),
            }
        }
        Ok(true)
    }

    /// Read until a complete final response head is parsed (1xx interim responses are
    /// skipped).
    async fn read_head(
        &mut self,
        id: &str,
        method: &Method,
        limit: usize,
        upgrade: bool,
    ) -> Result<Head, ProxyError> {
        let mut seen_any = false;
        loop {
            if !self.buf.is_empty() {
                seen_any = true;
                match parse_head(&mut self.buf, &mut self.names, method, limit, upgrade) {
                    Ok(Some(head)) if !head.is_upgrade() && head.status.is_informational() => {
                        continue
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(Malformed::TooLarge(what)) => {
                        return Err(ProxyError::new(
                            Cause::ResponseHeaderTooLarge,
                            format!("{id}: response header section {what} (limit {limit} bytes)"),
                        )
                        .sent(Sent::Response))
                    }
                    Err(Malformed::Invalid(why)) => {
                        return Err(ProxyError::new(
                            Cause::ProtocolError,
                            format!("{id}: malformed response: {why}"),
                        )
                        .sent(Sent::Response))
                    }
                }
                if self.buf.len() >= limit {
                    return Err(ProxyError::new(
                        Cause::ResponseHeaderTooLarge,
                        format!(
                            "{id}: response header section exceeds {limit} bytes (still incomplete)"
                        ),
                    )
                    .sent(Sent::Response));
                }
            }
            self.buf.reserve(4096);
            let sent = if seen_any {
                Sent::Response
            } else {
                Sent::Request
            };
            match read_some(&mut self.io, &mut self.buf).await {
                Ok(0) => {
                    let what = if seen_any {
                        "connection closed in the middle of the response header"
                    } else {
                        "connection closed before the response header"
                    };
                    return Err(self.closed(id, what, sent));
                }
                Ok(_) => {}
                Err(e) => return Err(self.io_failure(id, e, sent, "reading the response")),
            }
        }
    }

    fn closed(&self, id: &str, what: &str, sent: Sent) -> ProxyError {
        let reused = if self.reused {
            " (on a reused connection)"
        } else {
            ""
        };
        ProxyError::new(Cause::ConnectionTerminated, format!("{id}: {what}{reused}")).sent(sent)
    }

    fn io_failure(&self, id: &str, e: io::Error, sent: Sent, doing: &str) -> ProxyError {
        let what = match sent {
            Sent::Nothing => format!("connection closed before the request was written: {e}"),
            _ => format!("connection failed {doing}: {e}"),
        };
        self.closed(id, &what, sent)
    }

    /// A one-off `GET path` with `Connection: close`; the response status.
    pub async fn get_status(
        &mut self,
        id: &str,
        host: &str,
        path: &str,
    ) -> Result<u16, ProxyError> {
        let (mut parts, ()) = http::Request::get(path)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "healgate-health")
            .header(header::CONNECTION, "close")
            .body(())
            .map_err(|e| ProxyError::new(Cause::Internal, format!("{id}: health request: {e}")))?
            .into_parts();
        parts.version = Version::HTTP_11;
        let request = Outgoing {
            parts: &parts,
            added: &[],
            upgrade: false,
        };
        // The caller bounds the whole check with its own timeout.
        encode::head(&mut self.out, request, false);
        let mut sent = Sent::Nothing;
        if let Err(e) = write_all(&mut self.io, &self.out, &mut sent).await {
            return Err(self.io_failure(id, e, sent, "writing the request"));
        }
        if let Err(e) = self.io.flush().await {
            return Err(self.io_failure(id, e, Sent::Request, "writing the request"));
        }
        let head = self.read_head(id, &Method::GET, 64 * 1024, false).await?;
        Ok(head.status.as_u16())
    }
}

/// Write all of `data`; `sent` becomes [`Sent::Request`] once a byte is out.
pub(super) async fn write_all(io: &mut Stream, mut data: &[u8], sent: &mut Sent) -> io::Result<()> {
    while !data.is_empty() {
        let n = io.write(data).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if *sent == Sent::Nothing {
            *sent = Sent::Request;
        }
        data = &data[n..];
    }
    Ok(())
}

async fn read_some(io: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)).await
}

#[cfg(test)]
mod tests;
