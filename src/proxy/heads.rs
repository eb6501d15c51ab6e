//! Every HTTP/1.1 request head on a client connection, the first and each later one
//! on keep-alive, is read and checked by the gateway before hyper parses it: [`scan`]
//! is the one check (request line, framing, size, field count), and [`Heads`] is the
//! client's byte stream as hyper sees it. It hands hyper one checked head at a time
//! and then exactly that request's body (by the framing the check found: a length, or
//! chunks scanned with hyper's own grammar), so no byte of a next request reaches hyper
//! unchecked, pipelined or not. A refused later head is replaced by a stand-in request
//! that hyper answers in order: the service finds the refusal for that position on
//! the [`Client`] and makes the gateway's answer (400/431 with Proxy-Status, request
//! id and page), and the stand-in's `Connection: close` ends the connection.

use super::client::Client;
use super::stream::Stream;
use crate::error::Cause;
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header fields a head may have (hyper's default is 100).
pub const MAX_FIELDS: usize = 256;

/// What a checked head says of the request that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The head's length in bytes.
    pub len: usize,
    pub body: Framing,
    /// A protocol switch may follow (an `Upgrade` field in HTTP/1.1, or CONNECT), as
    /// hyper decides it: nothing after the request is read until it is answered.
    pub upgrade: bool,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Content-Length (zero without one: a request without framing has no body).
    Length(u64),
    Chunked,
}

/// The verdict on the bytes of a head read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Not complete yet.
    More,
    Head(Message),
    /// Refused: 400 (`BadRequest`) or 431 (`RequestHeaderTooLarge`), and why.
    Refused(Cause, String),
}

/// Check the head in `buf`, of which the last `new` bytes just arrived, within
/// `limit` bytes. The request line is judged as soon as it is complete (a bare-LF or
/// HTTP/0.9 request gets its 400 without waiting for an end that never comes); the
/// head once its end arrived (the end httparse, and so hyper, finds).
pub fn scan(buf: &[u8], new: usize, limit: usize) -> Scan {
    let from = buf.len().saturating_sub(new + 2);
    if has_end(&buf[from..]) {
        match parse_head(buf) {
            // httparse took the request line (method, target, HTTP/1.x, single
            // spaces) but takes a bare LF too.
            Ok(Some(_)) if !ends_in_crlf(buf) => {
                return Scan::Refused(
                    Cause::BadRequest,
                    "request line ends in a bare LF, not CRLF".into(),
                );
            }
            Ok(Some(m)) if m.len > limit => {}
            Ok(Some(m)) => return Scan::Head(m),
            Ok(None) => {}
            Err((cause, why)) => {
                // Say what is wrong with the request line when that is it.
                let why = check_request_line(buf).err().unwrap_or(why);
                return Scan::Refused(cause, why);
            }
        }
    }
    if let Err(why) = check_request_line(buf) {
        return Scan::Refused(Cause::BadRequest, why);
    }
    if buf.len() > limit {
        return Scan::Refused(
            Cause::RequestHeaderTooLarge,
            format!(
                "request header section exceeds {limit} bytes ({} bytes without its end)",
                buf.len()
            ),
        );
    }
    Scan::More
}

/// Whether `b` holds an end of head as httparse finds it (an empty line, CRLF or
/// bare LF): `\n\n` or `\n\r\n`.
fn has_end(b: &[u8]) -> bool {
    if b.ends_with(b"\r\n\r\n") {
        return true;
    }
    let mut at = 0;
    while let Some(p) = b[at..].iter().position(|&c| c == b'\n') {
        let next = &b[at + p + 1..];
        if next.starts_with(b"\n") || next.starts_with(b"\r\n") {
            return true;
        }
        at += p + 1;
    }
    false
}

/// Whether the first line ends in CRLF.
fn ends_in_crlf(buf: &[u8]) -> bool {
    buf.iter()
        .position(|&b| b == b'\n')
        .is_some_and(|lf| lf > 0 && buf[lf - 1] == b'\r')
}

/// The request line, as soon as it is complete: it must end in CRLF (a bare LF is
/// refused, RFC 9112 §2.2 allows a server to) and name HTTP/1.x (or be the h2
/// preface).
pub(crate) fn check_request_line(buf: &[u8]) -> Result<(), String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(());
    };
    let Some(line) = buf[..end].strip_suffix(b"\r") else {
        return Err("request line ends in a bare LF, not CRLF".into());
    };
    if line == b"PRI * HTTP/2.0" {
        return Ok(());
    }
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    if line.iter().filter(|&&b| b == b' ').count() != 2 || !version.starts_with(b"HTTP/1.") {
        return Err(format!(
            "not an HTTP/1.x request line: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        ));
    }
    Ok(())
}

/// The strict check of a complete head (`Ok(())` while incomplete): unparsable heads
/// and ambiguous framing (request smuggling) are refused.
pub(crate) fn check_head(buf: &[u8]) -> Result<(), String> {
    parse_head(buf).map(|_| ()).map_err(|(_, why)| why)
}

/// A head's framing, or why it is refused; `None` while incomplete. The h2 preface
/// is a head without a body.
fn parse_head(buf: &[u8]) -> Result<Option<Message>, (Cause, String)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
    if buf.starts_with(PREFACE) {
        return Ok(Some(Message {
            len: PREFACE.len(),
            body: Framing::Length(0),
            upgrade: false,
        }));
    }
    let bad = |why: String| (Cause::BadRequest, why);
    // Uninitialized: every request is parsed here, 8 KiB of empty fields each time
    // would be a memset per request.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                Cause::RequestHeaderTooLarge,
                format!("more than {MAX_FIELDS} header fields"),
            ))
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let mut te: Option<&[u8]> = None;
    let mut tes = 0;
    let (mut cl, mut cls): (&[u8], usize) = (b"", 0);
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        // By length first: most fields are none of these.
        match h.name.len() {
            17 if h.name.eq_ignore_ascii_case("transfer-encoding") => {
                te = Some(h.value);
                tes += 1;
            }
            14 if h.name.eq_ignore_ascii_case("content-length") => {
                cl = h.value;
                cls += 1;
            }
            7 if h.name.eq_ignore_ascii_case("upgrade") => upgrade |= req.version == Some(1),
            _ => {}
        }
    }
    if tes > 0 && cls > 0 {
        return Err(bad(
            "both Transfer-Encoding and Content-Length (ambiguous framing)".into(),
        ));
    }
    if tes > 0 && req.version == Some(0) {
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(bad(
            "Transfer-Encoding in an HTTP/1.0 request (faulty framing)".into(),
        ));
    }
    if let Some(target) = req.path {
        // An origin-form target of plain URI characters is valid as it is; anything
        // else is parsed as hyper will parse it.
        let plain = target.starts_with('/')
            && target.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                            | b':'
                            | b'@'
                            | b'/'
                            | b'?'
                            | b'%'
                    )
            });
        if !plain
            && (!target.bytes().all(|b| b.is_ascii_graphic())
                || http::Uri::try_from(target).is_err())
        {
            return Err(bad(format!(
                "the request target is not a valid URI: {:?}",
                target.chars().take(80).collect::<String>()
            )));
        }
    }
    if let Some(last) = te {
        // As hyper reads it (a visible-ASCII value; its last coding, ASCII-trimmed):
        // a non-ASCII byte must not be trimmed away as Unicode white space here
        // (U+0085 before `chunked`) when hyper would not see chunked at all.
        if !last.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
            return Err(bad(
                "Transfer-Encoding with bytes outside visible ASCII".into()
            ));
        }
        let last = String::from_utf8_lossy(last).to_ascii_lowercase();
        if last
            .rsplit(',')
            .next()
            .is_none_or(|t| t.trim_matches([' ', '\t']) != "chunked")
        {
            return Err(bad(format!(
                "Transfer-Encoding {last:?} does not end in chunked"
            )));
        }
        return Ok(Some(Message {
            len,
            body: Framing::Chunked,
            upgrade,
        }));
    }
    let length = match cls {
        0 => 0,
        1 => {
            let v = cl.trim_ascii();
            match std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(s) => s
                    .parse::<u64>()
                    .map_err(|_| bad(format!("Content-Length {s:?} is too large")))?,
                None => {
                    return Err(bad(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(v)
                    )))
                }
            }
        }
        many => {
            return Err(bad(format!(
                "{many} Content-Length fields (ambiguous framing)"
            )))
        }
    };
    Ok(Some(Message {
        len,
        body: Framing::Length(length),
        upgrade,
    }))
}

/// Where a chunked body ends, found with hyper's own grammar (`proto::h1::decode`):
/// hex size, optional spaces or tabs, an extension up to CR (never LF), CRLF, the data,
/// CRLF; after the last chunk, trailer lines until an empty line. A body this refuses
/// makes the stream fail (the connection ends); one it accepts ends where hyper's
/// decoder ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

impl Chunks {
    /// Feed the next bytes: `Some(n)` when the body ends after the first `n` of them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunks::Data(rem) => {
                    let n = (bytes.len() - i).min(rem.min(usize::MAX as u64) as usize);
                    i += n;
                    *self = if rem == n as u64 {
                        Chunks::DataCr
                    } else {
                        Chunks::Data(rem - n as u64)
                    };
                    continue;
                }
                Chunks::Start => Chunks::Size(hex(b).ok_or("chunk size: missing digit")?),
                Chunks::Size(size) => match b {
                    b'\t' | b' ' => Chunks::SizeLws(size),
                    b';' => Chunks::Extension(size),
                    b'\r' => Chunks::SizeLf(size),
                    _ => {
                        let d = hex(b).ok_or("chunk size: invalid")?;
                        Chunks::Size(
                            size.checked_mul(16)
                                .and_then(|s| s.checked_add(d))
                                .ok_or("chunk size: overflow")?,
                        )
                    }
                },
                Chunks::SizeLws(size) => match b {
                    b'\t' | b' ' => Chunks::SizeLws(size),
                    b';' => Chunks::Extension(size),
                    b'\r' => Chunks::SizeLf(size),
                    _ => return Err("chunk size: invalid white space"),
                },
                Chunks::Extension(size) => match b {
                    b'\r' => Chunks::SizeLf(size),
                    b'\n' => return Err("chunk extension: a newline"),
                    _ => Chunks::Extension(size),
                },
                Chunks::SizeLf(0) if b == b'\n' => Chunks::EndCr,
                Chunks::SizeLf(size) if b == b'\n' => Chunks::Data(size),
                Chunks::SizeLf(_) => return Err("chunk size: no LF"),
                Chunks::DataCr if b == b'\r' => Chunks::DataLf,
                Chunks::DataCr => return Err("chunk data: no CR"),
                Chunks::DataLf if b == b'\n' => Chunks::Start,
                Chunks::DataLf => return Err("chunk data: no LF"),
                Chunks::Trailer if b == b'\r' => Chunks::TrailerLf,
                Chunks::Trailer => Chunks::Trailer,
                Chunks::TrailerLf if b == b'\n' => Chunks::EndCr,
                Chunks::TrailerLf => return Err("trailer: no LF"),
                Chunks::EndCr if b == b'\r' => Chunks::EndLf,
                Chunks::EndCr => Chunks::Trailer,
                Chunks::EndLf if b == b'\n' => Chunks::End,
                Chunks::EndLf => return Err("chunked body end: no LF"),
                Chunks::End => return Ok(Some(i)),
            };
            i += 1;
            if *self == Chunks::End {
                return Ok(Some(i));
            }
        }
        Ok((*self == Chunks::End).then_some(0))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// The body being handed to hyper.
#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunks),
}

impl Body {
    fn of(f: Framing) -> Body {
        match f {
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunks::Start),
        }
    }

    fn done(&self) -> bool {
        matches!(self, Body::Length(0) | Body::Chunked(Chunks::End))
    }

    /// How many of `bytes` belong to the body (the rest is the next request's).
    fn take(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Body::Length(n) => {
                let k = (*n).min(bytes.len() as u64) as usize;
                *n -= k as u64;
                Ok(k)
            }
            Body::Chunked(c) => match c.feed(bytes) {
                Ok(Some(k)) => Ok(k),
                Ok(None) => Ok(bytes.len()),
                Err(why) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed chunked request body ({why})"),
                )),
            },
        }
    }
}

/// Where the stream is.
#[derive(Debug)]
enum State {
    /// Handing hyper the rest of a checked head (`left` bytes, all in the buffer).
    Head {
        left: usize,
        body: Framing,
        upgrade: bool,
    },
    /// Handing hyper its body.
    Body { body: Body, upgrade: bool },
    /// Reading and checking the next head.
    Next,
    /// The request at this position may switch protocols: nothing more is read until
    /// the service answered it.
    Verdict(u64),
    /// Bytes as they come: h2c, or after a `101`.
    Raw,
    /// The next head was refused: hyper gets the stand-in (from this offset).
    Refused(usize),
    /// After the stand-in: nothing more (hyper closes after answering it).
    Over,
}

/// The request hyper parses in place of a refused head.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nHost: refused.invalid\r\nConnection: close\r\n\r\n";

/// A refused later head, for the service to answer at its position.
#[derive(Debug)]
pub struct Refusal {
    /// The position of the stand-in request on the connection (0 is the first).
    pub at: u64,
    pub cause: Cause,
    pub why: String,
    /// When the refused head began arriving.
    pub began: Instant,
}

/// The client's stream as hyper's HTTP/1.1 server sees it (see the module doc); for
/// h2c it only passes bytes through. It also counts reads and writes for the idle
/// watchdog.
pub struct Heads {
    stream: Stream,
    /// Bytes read and not yet handed to hyper. Empty between requests, and then
    /// without an allocation: an idle connection holds no buffer here.
    buf: BytesMut,
    state: State,
    /// `limits.request_header`.
    limit: usize,
    /// Requests handed to hyper whole (the position of the current one).
    done: u64,
    /// When the head being read began arriving.
    began: Option<Instant>,
    client: Arc<Client>,
}

impl Heads {
    /// The stream after its first head `first` (in `buf`, with whatever followed it).
    pub fn new(
        stream: Stream,
        buf: BytesMut,
        first: Message,
        limit: usize,
        client: Arc<Client>,
    ) -> Heads {
        Heads {
            stream,
            buf,
            state: State::Head {
                left: first.len,
                body: first.body,
                upgrade: first.upgrade,
            },
            limit,
            done: 0,
            began: None,
            client,
        }
    }

    /// A stream passed through as it is (h2c), `buf` first.
    pub fn raw(stream: Stream, buf: BytesMut, client: Arc<Client>) -> Heads {
        Heads {
            stream,
            buf,
            state: State::Raw,
            limit: 0,
            done: 0,
            began: None,
            client,
        }
    }

    /// Wait until the client sends something (or closes), holding no buffer: a parked
    /// connection between requests.
    pub async fn readable(&self) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Ok(());
        }
        self.stream.readable().await
    }

    /// Taken back from hyper (parked): whether the stream can go on, which it can
    /// when it is between requests and hyper left nothing unparsed.
    pub fn resume(&mut self, unparsed: &[u8]) -> bool {
        self.client.parking.store(false, Ordering::Relaxed);
        unparsed.is_empty() && matches!(self.state, State::Next)
    }

    /// The socket, and how many bytes of a next head had arrived.
    pub fn into_parts(self) -> (Stream, usize) {
        let got = match self.state {
            State::Next => self.buf.len(),
            _ => 0,
        };
        (self.stream, got)
    }

    /// Hand hyper up to `max` buffered bytes.
    fn hand(&mut self, out: &mut ReadBuf<'_>, max: usize) -> usize {
        let n = self.buf.len().min(out.remaining()).min(max);
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        if self.buf.is_empty() {
            // Let go of the allocation: the next head gets a new one when it comes.
            self.buf = BytesMut::new();
        }
        n
    }

    /// The request is handed over whole: what comes next.
    fn finished(&mut self, upgrade: bool) {
        self.state = if upgrade {
            State::Verdict(self.done)
        } else {
            State::Next
        };
        self.done += 1;
        self.client.handed.store(self.done, Ordering::Relaxed);
    }

    /// Read the socket into the buffer (allocated once the socket is readable).
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let client = &self.client;
        let n = ready!(self.stream.poll_fill(cx, &mut self.buf, || {
            client.between.store(true, Ordering::Relaxed)
        }))?;
        if n > 0 {
            self.client.reads.fetch_add(1, Ordering::Relaxed);
            self.client.between.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }

    /// Drop what the client already sent after a refused head.
    fn discard(&mut self) {
        self.stream.discard();
    }

    /// Read the socket straight into hyper's buffer.
    fn read_into(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        let before = out.filled().len();
        if Pin::new(&mut self.stream).poll_read(cx, out)?.is_pending() {
            if matches!(self.state, State::Next) {
                self.client.between.store(true, Ordering::Relaxed);
            }
            return Poll::Pending;
        }
        let n = out.filled().len() - before;
        if n > 0 {
            self.client.reads.fetch_add(1, Ordering::Relaxed);
            self.client.between.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Heads {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut this.state {
                State::Raw => {
                    if !this.buf.is_empty() {
                        this.hand(out, usize::MAX);
                        return Poll::Ready(Ok(()));
                    }
                    ready!(this.read_into(cx, out))?;
                    return Poll::Ready(Ok(()));
                }
                State::Head {
                    left,
                    body,
                    upgrade,
                } => {
                    let (body, upgrade) = (*body, *upgrade);
                    let max = *left;
                    let n = this.hand(out, max);
                    if n == max {
                        this.state = State::Body {
                            body: Body::of(body),
                            upgrade,
                        };
                    } else if let State::Head { left, .. } = &mut this.state {
                        *left -= n;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Body { body, upgrade } => {
                    if body.done() {
                        let upgrade = *upgrade;
                        this.finished(upgrade);
                        continue;
                    }
                    if !this.buf.is_empty() {
                        let n = this.buf.len().min(out.remaining());
                        let k = body.take(&this.buf[..n])?;
                        this.hand(out, k);
                        return Poll::Ready(Ok(()));
                    }
                    let before = out.filled().len();
                    let n = ready!(this.read_into(cx, out))?;
                    if n == 0 {
                        // The client closed mid-body: hyper sees the end.
                        return Poll::Ready(Ok(()));
                    }
                    let State::Body { body, .. } = &mut this.state else {
                        unreachable!()
                    };
                    let k = body.take(&out.filled()[before..])?;
                    if k < n {
                        // The rest is the next request's: kept for its head check.
                        this.buf.extend_from_slice(&out.filled()[before + k..]);
                        out.set_filled(before + k);
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Next if this.buf.is_empty() => {
                    // The usual case: a whole head in one read, straight into hyper's
                    // buffer (nothing allocated or copied here). What is not the
                    // head and its body is kept back; an incomplete head is taken
                    // back into the buffer to wait for the rest.
                    let before = out.filled().len();
                    let n = ready!(this.read_into(cx, out))?;
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let got = &out.filled()[before..];
                    match scan(got, n, this.limit) {
                        Scan::Head(m) => {
                            let mut body = Body::of(m.body);
                            let k = body.take(&got[m.len..])?;
                            if m.len + k < n {
                                this.buf.extend_from_slice(&got[m.len + k..]);
                                out.set_filled(before + m.len + k);
                            }
                            this.state = State::Body {
                                body,
                                upgrade: m.upgrade,
                            };
                            return Poll::Ready(Ok(()));
                        }
                        Scan::More | Scan::Refused(..) => {
                            // Judged again below, from the buffer.
                            this.buf.extend_from_slice(got);
                            out.set_filled(before);
                        }
                    }
                }
                State::Next => {
                    let mut new = this.buf.len();
                    loop {
                        if new > 0 {
                            this.began.get_or_insert_with(Instant::now);
                            match scan(&this.buf, new, this.limit) {
                                Scan::More => {}
                                Scan::Head(m) => {
                                    this.began = None;
                                    this.state = State::Head {
                                        left: m.len,
                                        body: m.body,
                                        upgrade: m.upgrade,
                                    };
                                    break;
                                }
                                Scan::Refused(cause, why) => {
                                    let began = this.began.take().unwrap_or_else(Instant::now);
                                    let _ = this.client.refusal.set(Refusal {
                                        at: this.done,
                                        cause,
                                        why,
                                        began,
                                    });
                                    this.buf = BytesMut::new();
                                    this.discard();
                                    this.state = State::Refused(0);
                                    break;
                                }
                            }
                        }
                        new = ready!(this.fill(cx))?;
                        if new == 0 {
                            // Closed (between requests, or within a head: nothing to
                            // answer).
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                State::Verdict(at) => {
                    if this.client.switched.load(Ordering::Acquire) {
                        this.state = State::Raw;
                    } else if this.client.answered.load(Ordering::Acquire) > *at {
                        this.state = State::Next;
                    } else {
                        // hyper reads again once the request is answered.
                        return Poll::Pending;
                    }
                }
                State::Refused(from) => {
                    let n = (STAND_IN.len() - *from).min(out.remaining());
                    out.put_slice(&STAND_IN[*from..*from + n]);
                    *from += n;
                    if *from == STAND_IN.len() {
                        this.state = State::Over;
                    }
                    return Poll::Ready(Ok(()));
                }
                // hyper closes the connection once it answered the stand-in.
                State::Over => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for Heads {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.client.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.client.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.client.parking.load(Ordering::Relaxed) {
            // hyper lets go of a connection that stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Scan {
        scan(s.as_bytes(), s.len(), 32 * 1024)
    }

    #[test]
    fn framing_is_read_from_the_head() {
        let m = |len, body, upgrade| Scan::Head(Message { len, body, upgrade });
        let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head(get), m(get.len(), Framing::Length(0), false));
        let post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody";
        assert_eq!(head(post), m(post.len() - 4, Framing::Length(12), false));
        let chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(chunked), m(chunked.len(), Framing::Chunked, false));
        let ws = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(head(ws), m(ws.len(), Framing::Length(0), true));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Scan::More);
    }

    #[test]
    fn a_non_ascii_byte_does_not_hide_in_front_of_chunked() {
        // Found by the first_head fuzz target: U+0085 (NEL) is Unicode white space, so a
        // str trim made this `chunked`; hyper, which reads only visible ASCII, does not.
        let mut raw =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,\t\xc2\x85 chunked\r\n\r\n"
                .to_vec();
        assert!(matches!(
            scan(&raw, raw.len(), 32 * 1024),
            Scan::Refused(..)
        ));
        raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip,\t chunked \r\n\r\n".to_vec();
        assert!(matches!(scan(&raw, raw.len(), 32 * 1024), Scan::Head(_)));
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
        ] {
            assert!(
                matches!(head(bad), Scan::Refused(Cause::BadRequest, _)),
                "{bad:?}"
            );
        }
        let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..300 {
            many.push_str(&format!("X-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        assert!(matches!(
            head(&many),
            Scan::Refused(Cause::RequestHeaderTooLarge, _)
        ));
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}", "a".repeat(40_000));
        assert!(matches!(
            head(&big),
            Scan::Refused(Cause::RequestHeaderTooLarge, _)
        ));
    }

    #[test]
    fn a_chunked_body_ends_where_hypers_decoder_ends_it() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let mut c = Chunks::Start;
        let end = c.feed(body).unwrap().expect("the end");
        assert_eq!(&body[end..], b"GET / HTTP/1.1\r\n");
        // In pieces of every size, the same end.
        for step in 1..8 {
            let mut c = Chunks::Start;
            let mut at = 0;
            let mut found = None;
            for piece in body.chunks(step) {
                if let Some(k) = c.feed(piece).unwrap() {
                    found = Some(at + k);
                    break;
                }
                at += piece.len();
            }
            assert_eq!(found, Some(end), "pieces of {step}");
        }
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"5;a\nhello", b"0\r\n\r\r"] {
            assert!(Chunks::Start.feed(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Chunks::Start.feed(b"0\r\n\r\n"), Ok(Some(5)));
    }
}
