//! HTTP/1.1 to peers, driven inline by the request's own task: write the request head
//! and body, read and parse the response head, decode the response body.
//!
//! No connection task and no channel sits between the request and its socket (as in
//! hyper's client), so a proxied request costs one task's work, not two tasks and
//! the hops between them. Knowing exactly what was written also makes the retry rules
//! exact: [`Sent::Nothing`] means not a byte reached the socket.
//!
//! What the parser refuses (→ 502 `http_protocol_error`): anything `httparse` rejects,
//! `Transfer-Encoding` together with `Content-Length`, conflicting or malformed
//! `Content-Length` values, a `101` to a request that asked for no upgrade, and bad
//! chunk framing. A `101` to an upgrade request hands the raw connection over
//! ([`Connection::into_tunnel`]).

use super::deadline::{Deadline, Deadlines, Elapsed};
use crate::error::{Cause, ProxyError, Sent};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Most header fields in one response (as hyper allows).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section kept.
const MAX_TRAILERS: usize = 16 * 1024;
/// Largest read of body bytes at once.
const MAX_READ: usize = 64 * 1024;
/// How long a failed request-body write waits for an answer the peer may have sent.
const EARLY_ANSWER_WAIT: Duration = Duration::from_millis(500);
/// Request body data up to this size is copied next to its chunk framing (one write).
const COALESCE: usize = 16 * 1024;

/// A raw transport to a peer, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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

/// The header names seen on one connection, as sent and as parsed: a peer sends the
/// same few names in every response, and parsing a non-standard one costs a
/// validation, a lowercase copy and an allocation each time.
#[derive(Default)]
struct Names(Vec<(Box<[u8]>, HeaderName)>);

impl Names {
    /// Most names remembered per connection.
    const MAX: usize = 32;

    fn get(&mut self, raw: &[u8]) -> Result<HeaderName, Malformed> {
        if let Some((_, name)) = self.0.iter().find(|(r, _)| **r == *raw) {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw)
            .map_err(|_| Malformed::Invalid(format!("header name {:?}", lossy(raw))))?;
        if self.0.len() < Self::MAX {
            self.0.push((raw.into(), name.clone()));
        }
        Ok(name)
    }
}

/// A parsed response head, and how its body is framed.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The reason phrase when it is not the standard one.
    pub reason: Option<Bytes>,
    framing: Framing,
    /// The connection may carry another request after this response.
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    /// `101 Switching Protocols`: the connection now carries another protocol.
    Upgrade,
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
        let chunked = self.encode_head(request, body);
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
        }
        // The request is all sent: the peer's time to answer starts now.
        deadline.reset(timeouts.response_header);
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

    /// The request line and header section into `self.out`; true when the body goes
    /// chunked.
    fn encode_head<B: Body>(&mut self, request: Outgoing<'_>, body: &B) -> bool {
        let parts = request.parts;
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut has_length = false;
        for (name, value) in parts
            .headers
            .iter()
            .chain(request.added.iter().map(|(n, v)| (n, v)))
        {
            if *name == header::TRANSFER_ENCODING {
                continue;
            }
            has_length |= *name == header::CONTENT_LENGTH;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let chunked = !has_length && !body.is_end_stream();
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if !has_length && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        out.extend_from_slice(b"\r\n");
        chunked
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

    /// One piece of the request body, framed as a chunk when `chunked`.
    async fn write_data(&mut self, data: &[u8], chunked: bool, sent: &mut Sent) -> io::Result<()> {
        if !chunked {
            write_all(&mut self.io, data, sent).await
        } else if data.len() <= COALESCE {
            self.out.clear();
            self.out
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
            write_all(&mut self.io, &self.out, sent).await
        } else {
            let size = format!("{:x}\r\n", data.len());
            write_all(&mut self.io, size.as_bytes(), sent).await?;
            write_all(&mut self.io, data, sent).await?;
            write_all(&mut self.io, b"\r\n", sent).await
        }
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
        self.encode_head(request, &http_body_util::Empty::<Bytes>::new());
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

impl Head {
    /// The response body, which owns the connection until the body ends.
    pub fn body(&self, conn: Connection) -> UpstreamBody {
        let state = match self.framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunk(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
            Framing::Upgrade => State::Done,
        };
        UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive: self.keep_alive && self.framing != Framing::UntilClose,
        }
    }

    /// A `101 Switching Protocols` to an upgrade request.
    pub fn is_upgrade(&self) -> bool {
        self.framing == Framing::Upgrade
    }
}

/// Why a response head was refused.
#[derive(Debug)]
enum Malformed {
    TooLarge(String),
    Invalid(String),
}

/// Parse a response head at the start of `buf`. On success it is split off `buf`
/// (header values share its memory: no copies).
fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    method: &Method,
    limit: usize,
    upgrade: bool,
) -> Result<Option<Head>, Malformed> {
    // Offsets of each field's name and value in the head.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, minor, reason, count) = {
        let mut headers = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Malformed::TooLarge(format!(
                    "has more than {MAX_HEADERS} fields"
                )))
            }
            Err(e) => return Err(Malformed::Invalid(e.to_string())),
        };
        if len > limit {
            return Err(Malformed::TooLarge(format!("of {len} bytes is too large")));
        }
        let base = buf.as_ptr() as usize;
        let count = res.headers.len();
        for (slot, h) in fields.iter_mut().zip(res.headers.iter()) {
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            *slot = (
                n as u32,
                h.name.len() as u32,
                v as u32,
                h.value.len() as u32,
            );
        }
        let code = res.code.unwrap_or(0);
        let reason = res.reason.map(|r| {
            let at = r.as_ptr() as usize - base;
            (at, r.len())
        });
        (len, code, res.version.unwrap_or(1), reason, count)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Malformed::Invalid(format!("status code {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
        return Err(Malformed::Invalid(
            "101 Switching Protocols, but no upgrade was asked".into(),
        ));
    }
    let reason = reason.and_then(|(at, n)| {
        let r = &head[at..at + n];
        (Some(r) != status.canonical_reason().map(str::as_bytes)).then(|| head.slice(at..at + n))
    });
    let mut headers = HeaderMap::with_capacity(count);
    let (mut length, mut chunked, mut te, mut close, mut keep_alive_token) =
        (None::<u64>, false, false, false, false);
    for &(n, nl, v, vl) in &fields[..count] {
        let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
        let name = names.get(&head[n..n + nl])?;
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl))
            .map_err(|_| Malformed::Invalid(format!("value of {name}")))?;
        if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let n = parse_length(part)
                    .ok_or_else(|| Malformed::Invalid(format!("Content-Length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed::Invalid(
                        "conflicting Content-Length values".into(),
                    ));
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            // Only the last coding decides the framing.
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    if te && length.is_some() {
        return Err(Malformed::Invalid(
            "both Transfer-Encoding and Content-Length (ambiguous framing)".into(),
        ));
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Upgrade
    } else if bodiless {
        Framing::Length(0)
    } else if te {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    Ok(Some(Head {
        status,
        version,
        headers,
        reason,
        framing,
        keep_alive,
    }))
}

fn parse_length(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Write all of `data`; `sent` becomes [`Sent::Request`] once a byte is out.
async fn write_all(io: &mut Stream, mut data: &[u8], sent: &mut Sent) -> io::Result<()> {
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

/// The body of an upstream response, decoded from the connection as the client
/// reads it. At its end the connection can go back to the pool.
pub struct UpstreamBody {
    conn: Option<Connection>,
    state: State,
    keep_alive: bool,
}

enum State {
    Length(u64),
    Chunk(Chunk),
    UntilClose,
    Done,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

impl UpstreamBody {
    /// No body and no connection (the connection went on to a tunnel).
    pub fn empty() -> UpstreamBody {
        UpstreamBody {
            conn: None,
            state: State::Done,
            keep_alive: false,
        }
    }

    /// The connection, when the body ended cleanly and it may carry another request.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let conn = self.conn.take()?;
        (matches!(self.state, State::Done) && self.keep_alive && conn.buf.is_empty())
            .then_some(conn)
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.state = State::Done;
        self.keep_alive = false;
        Poll::Ready(Some(Err(io::Error::other(why.into()))))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = (conn.buf.len() as u64).min(left) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        this.state = match left - n as u64 {
                            0 => State::Done,
                            rest => State::Length(rest),
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    conn.buf.reserve((left as usize).clamp(4096, MAX_READ));
                }
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    conn.buf.reserve(MAX_READ);
                }
                State::Chunk(Chunk::Data(left)) => {
                    if !conn.buf.is_empty() {
                        let n = (conn.buf.len() as u64).min(left) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        this.state = State::Chunk(match left - n as u64 {
                            0 => Chunk::DataEnd,
                            rest => Chunk::Data(rest),
                        });
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    conn.buf.reserve((left as usize).clamp(4096, MAX_READ));
                }
                State::Chunk(Chunk::Size) => match chunk_size(&conn.buf) {
                    Ok(Some((line, size))) => {
                        let _ = conn.buf.split_to(line);
                        this.state = State::Chunk(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    Ok(None) => conn.buf.reserve(4096),
                    Err(why) => return this.fail(why),
                },
                State::Chunk(Chunk::DataEnd) => {
                    if conn.buf.len() >= 2 {
                        if &conn.buf[..2] != b"\r\n" {
                            return this.fail("chunk data not followed by CRLF");
                        }
                        let _ = conn.buf.split_to(2);
                        this.state = State::Chunk(Chunk::Size);
                        continue;
                    }
                    conn.buf.reserve(4096);
                }
                State::Chunk(Chunk::Trailers) => {
                    if conn.buf.starts_with(b"\r\n") {
                        let _ = conn.buf.split_to(2);
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter() {
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(n, v);
                                }
                            }
                            let _ = conn.buf.split_to(len);
                            this.state = State::Done;
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() < MAX_TRAILERS => {
                            conn.buf.reserve(4096)
                        }
                        Ok(httparse::Status::Partial) => {
                            return this.fail("trailer section too large")
                        }
                        Err(e) => return this.fail(format!("malformed trailer section: {e}")),
                    }
                }
            }
            // More bytes are needed.
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, State::UntilClose) {
                        this.state = State::Done;
                        this.keep_alive = false;
                        return Poll::Ready(None);
                    }
                    return this.fail("the upstream closed the connection before the body ended");
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(format!("reading the body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A complete chunk-size line at the start of `buf`: its length and the size.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_CHUNK_LINE {
            Err("chunk-size line too long".into())
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("chunk-size line not ended by CRLF".into());
    }
    let line = &buf[..lf - 1];
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(format!("bad chunk size {:?}", lossy(line)));
    }
    // Only chunk extensions may follow the size.
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(format!("bad chunk size {:?}", lossy(line)));
    }
    let size = digits.iter().fold(0u64, |acc, &d| {
        (acc << 4) | (d as char).to_digit(16).unwrap_or(0) as u64
    });
    Ok(Some((lf + 1, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, Malformed> {
        let mut buf = BytesMut::from(raw);
        parse_head(
            &mut buf,
            &mut Names::default(),
            &Method::GET,
            64 * 1024,
            false,
        )
    }

    fn invalid(raw: &str) -> String {
        match head(raw) {
            Err(Malformed::Invalid(why)) => why,
            Err(Malformed::TooLarge(why)) => panic!("too large, not invalid: {why}"),
            Ok(_) => panic!("accepted: {raw:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        assert!(invalid(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .contains("ambiguous"));
        assert!(
            invalid("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .contains("conflicting")
        );
        assert!(invalid("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("Content-Length"));
        assert!(invalid("HTTP/1.1 101 Switching Protocols\r\n\r\n").contains("101"));
        invalid("HTTP/1.1 2x0 OK\r\n\r\n");
        let mut asked =
            BytesMut::from("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nrest");
        let h = parse_head(&mut asked, &mut Names::default(), &Method::GET, 1024, true)
            .unwrap()
            .unwrap();
        assert!(h.is_upgrade(), "a 101 to an upgrade request is the answer");
        assert_eq!(
            &asked[..],
            b"rest",
            "what follows belongs to the new protocol"
        );
        invalid("SSH-2.0-OpenSSH_9.2\r\n\r\n");
        assert!(
            matches!(head("HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(None)),
            "partial"
        );
    }

    #[test]
    fn values_share_the_head_and_odd_reasons_are_kept() {
        let h = head("HTTP/1.1 404 Nope\r\nX-Thing: a b\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.headers["x-thing"], "a b");
        assert_eq!(h.reason.as_deref(), Some(&b"Nope"[..]));
        let h = head("HTTP/1.1 404 Not Found\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.reason, None);
    }

    /// A connection to a loopback peer, and the peer's end.
    async fn pair() -> (Connection, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        (Connection::new(Stream::Plain(c)), peer)
    }

    /// `early_answer` once `want` bytes of the peer's answer have been read.
    async fn early_after(conn: &mut Connection, want: usize) -> bool {
        for _ in 0..1000 {
            let early = conn.early_answer(&Method::POST, 1024);
            if conn.buf.len() >= want || early {
                return early;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!(
            "the peer's bytes never arrived ({} of {want})",
            conn.buf.len()
        );
    }

    #[tokio::test]
    async fn early_answers_are_final_ones_only() {
        let (mut conn, mut peer) = pair().await;
        assert!(!conn.early_answer(&Method::POST, 1024), "nothing yet");
        // A prefix that may still become `100 Continue` is not an answer yet ...
        peer.write_all(b"HTTP/1.").await.unwrap();
        assert!(!early_after(&mut conn, 7).await);
        // ... and a whole interim answer is consumed, not counted.
        peer.write_all(b"1 100 Continue\r\n\r\n").await.unwrap();
        for _ in 0..1000 {
            assert!(!conn.early_answer(&Method::POST, 1024));
            if conn.buf.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(conn.buf.is_empty(), "the 100 was consumed");
        peer.write_all(b"HTTP/1.1 413 Payload Too Large\r\n")
            .await
            .unwrap();
        assert!(
            early_after(&mut conn, usize::MAX).await,
            "a final answer started"
        );
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r\nxyz").unwrap(), Some((4, 26)));
        assert_eq!(chunk_size(b"0;ext=1\r\n").unwrap(), Some((9, 0)));
        assert_eq!(chunk_size(b"1a").unwrap(), None);
        assert!(chunk_size(b"zz\r\n").is_err());
        assert!(chunk_size(b"1a\n").is_err());
        assert!(chunk_size(b"1234567890123456\r\n").is_err(), "overflow");
    }
}
