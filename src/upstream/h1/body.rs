//! The response body decoder: `Content-Length`, chunked (extensions skipped,
//! trailers kept) and until close, as a state machine over the connection's read
//! buffer ([`Decoder`]), driven by [`UpstreamBody`] as the client reads.

use super::head::{lossy, Framing, Head};
use super::Connection;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section kept.
const MAX_TRAILERS: usize = 16 * 1024;
/// Largest read of body bytes at once.
const MAX_READ: usize = 64 * 1024;

/// The body of an upstream response, decoded from the connection as the client
/// reads it. At its end the connection can go back to the pool.
pub struct UpstreamBody {
    conn: Option<Connection>,
    decoder: Decoder,
    keep_alive: bool,
}

/// Where a body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunk(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// What the decoder made of the bytes at hand.
#[derive(Debug)]
pub(crate) enum Step {
    /// A piece of the body, or the trailers (which end it).
    Frame(Frame<Bytes>),
    /// The body is complete.
    End,
    /// More bytes are needed (room for them was reserved in the buffer).
    More,
}

/// A response body's framing as a state machine over a read buffer: it consumes
/// what belongs to the body and leaves what follows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoder {
    state: State,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Length(0) | Framing::Upgrade => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunk(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    fn done() -> Decoder {
        Decoder { state: State::Done }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next step from what `buf` holds. `Err`: the framing is broken.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(left) => {
                    if buf.is_empty() {
                        buf.reserve((left as usize).clamp(4096, MAX_READ));
                        return Ok(Step::More);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.state = match left - n as u64 {
                        0 => State::Done,
                        rest => State::Length(rest),
                    };
                    return Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        buf.reserve(MAX_READ);
                        return Ok(Step::More);
                    }
                    return Ok(Step::Frame(Frame::data(buf.split().freeze())));
                }
                State::Chunk(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        buf.reserve((left as usize).clamp(4096, MAX_READ));
                        return Ok(Step::More);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.state = State::Chunk(match left - n as u64 {
                        0 => Chunk::DataEnd,
                        rest => Chunk::Data(rest),
                    });
                    return Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                State::Chunk(Chunk::Size) => match chunk_size(buf)? {
                    Some((line, size)) => {
                        let _ = buf.split_to(line);
                        self.state = State::Chunk(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    None => {
                        buf.reserve(4096);
                        return Ok(Step::More);
                    }
                },
                State::Chunk(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        buf.reserve(4096);
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Chunk(Chunk::Size);
                }
                State::Chunk(Chunk::Trailers) => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut fields) {
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
                            let _ = buf.split_to(len);
                            self.state = State::Done;
                            return Ok(Step::Frame(Frame::trailers(trailers)));
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => {
                            buf.reserve(4096);
                            return Ok(Step::More);
                        }
                        Ok(httparse::Status::Partial) => {
                            return Err("trailer section too large".into())
                        }
                        Err(e) => return Err(format!("malformed trailer section: {e}")),
                    }
                }
            }
        }
    }

    /// The peer closed the connection, with nothing left unread: the end of an
    /// until-close body, a cut-short one otherwise.
    pub(crate) fn eof(&mut self) -> Result<(), String> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::UntilClose | State::Done => Ok(()),
            _ => Err("the upstream closed the connection before the body ended".into()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Head {
    /// The response body, which owns the connection until the body ends.
    pub fn body(&self, conn: Connection) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::new(self.framing),
            keep_alive: self.keep_alive && self.framing != Framing::UntilClose,
        }
    }
}

impl UpstreamBody {
    /// No body and no connection (the connection went on to a tunnel).
    pub fn empty() -> UpstreamBody {
        UpstreamBody {
            conn: None,
            decoder: Decoder::done(),
            keep_alive: false,
        }
    }

    /// The connection, when the body ended cleanly and it may carry another request.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let conn = self.conn.take()?;
        (self.decoder.is_done() && self.keep_alive && conn.buf.is_empty()).then_some(conn)
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.decoder = Decoder::done();
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
            match this.decoder.decode(&mut conn.buf) {
                Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(why) => return this.fail(why),
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return match this.decoder.eof() {
                        Ok(()) => {
                            this.keep_alive = false;
                            Poll::Ready(None)
                        }
                        Err(why) => this.fail(why),
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(format!("reading the body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
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

    /// What a decoder made of a whole stream.
    #[derive(Debug, PartialEq)]
    struct Decoded {
        data: Vec<u8>,
        trailers: Option<HeaderMap>,
        /// Bytes after the body's end (the next response's, or garbage).
        rest: Vec<u8>,
    }

    /// Feed `input` to a decoder `piece` bytes at a time (as reads would deliver it),
    /// then end the stream when `close`.
    fn decode(
        framing: Framing,
        input: &[u8],
        piece: usize,
        close: bool,
    ) -> Result<Decoded, String> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut data = Vec::new();
        let mut trailers = None;
        loop {
            match d.decode(&mut buf)? {
                Step::Frame(f) => match f.into_data() {
                    Ok(bytes) => {
                        assert!(!bytes.is_empty(), "no empty data frames");
                        data.extend_from_slice(&bytes);
                    }
                    Err(f) => trailers = Some(f.into_trailers().expect("data or trailers")),
                },
                Step::End => break,
                Step::More if fed < input.len() => {
                    let n = piece.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
                Step::More if close => {
                    d.eof()?;
                    break;
                }
                Step::More => return Err("stalled: more bytes needed".into()),
            }
        }
        assert!(d.is_done());
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&input[fed..]);
        Ok(Decoded {
            data,
            trailers,
            rest,
        })
    }

    /// The same result whether the stream comes whole or a byte at a time.
    fn decode_any(framing: Framing, input: &[u8], close: bool) -> Result<Decoded, String> {
        let whole = decode(framing, input, usize::MAX, close);
        for piece in [1, 2, 3, 7] {
            assert_eq!(
                decode(framing, input, piece, close),
                whole,
                "{piece} bytes a read"
            );
        }
        whole
    }

    fn ok(data: &[u8]) -> Decoded {
        Decoded {
            data: data.to_vec(),
            trailers: None,
            rest: Vec::new(),
        }
    }

    #[test]
    fn length_exact_short_and_extra() {
        assert_eq!(
            decode_any(Framing::Length(5), b"hello", false),
            Ok(ok(b"hello"))
        );
        assert_eq!(decode_any(Framing::Length(0), b"", false), Ok(ok(b"")));
        // The body ends at its length: what follows is left in the buffer (and makes
        // the connection unfit for reuse, see `take_reusable`).
        let extra = decode_any(Framing::Length(5), b"helloHTTP/1.1", false).unwrap();
        assert_eq!(extra.data, b"hello");
        assert_eq!(extra.rest, b"HTTP/1.1");
        // Short: the peer closed before the length was reached.
        let short = decode_any(Framing::Length(5), b"hel", true).unwrap_err();
        assert!(short.contains("before the body ended"), "{short}");
        let nothing = decode_any(Framing::Length(5), b"", true).unwrap_err();
        assert!(nothing.contains("before the body ended"), "{nothing}");
    }

    #[test]
    fn until_close_ends_with_the_connection() {
        assert_eq!(
            decode_any(Framing::UntilClose, b"all of it", true),
            Ok(ok(b"all of it"))
        );
        assert_eq!(decode_any(Framing::UntilClose, b"", true), Ok(ok(b"")));
        assert!(decode(Framing::UntilClose, b"open", 64, false)
            .unwrap_err()
            .contains("stalled"));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let stream = b"5;name=value\r\nhello\r\n6 ; quoted=\"a;b\"\r\n world\r\n10\r\n0123456789abcdef\r\n0;last\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\nNEXT";
        let got = decode_any(Framing::Chunked, stream, false).unwrap();
        assert_eq!(got.data, b"hello world0123456789abcdef");
        let trailers = got.trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(trailers["x-two"], "2");
        assert_eq!(got.rest, b"NEXT", "the next response is left alone");
        // Without trailers; upper-case hex.
        let got = decode_any(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n", false).unwrap();
        assert_eq!(got, ok(b"0123456789"));
        // An empty body.
        assert_eq!(
            decode_any(Framing::Chunked, b"0\r\n\r\n", false),
            Ok(ok(b""))
        );
        // The largest size accepted (15 hex digits) is read as a size.
        let mut big = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"fffffffffffffff\r\nab"[..]);
        assert!(matches!(big.decode(&mut buf), Ok(Step::Frame(_))));
        assert_eq!(big.state, State::Chunk(Chunk::Data(0xfff_ffff_ffff_fffd)));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"zz\r\nhi\r\n0\r\n\r\n", "bad chunk size"),
            (b"5x\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"-1\r\n", "bad chunk size"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"\r\nhello\r\n", "bad chunk size"),
            (b";ext\r\n", "bad chunk size"),
            (b"1234567890123456\r\n", "bad chunk size"),
            (b"00000000000000001\r\n", "bad chunk size"),
            (b"5\nhello\r\n0\r\n\r\n", "not ended by CRLF"),
            (b"\n", "not ended by CRLF"),
            (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
            (b"5\r\nhello\n0\r\n\r\n", "not followed by CRLF"),
            (
                b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
                "malformed trailer",
            ),
            (
                b"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n",
                "malformed trailer",
            ),
        ];
        for (stream, why) in cases {
            let err = decode_any(Framing::Chunked, stream, true)
                .expect_err(&String::from_utf8_lossy(stream));
            assert!(
                err.contains(why),
                "{:?}: {err}",
                String::from_utf8_lossy(stream)
            );
        }
        // A size line that never ends.
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        let err = decode(Framing::Chunked, &long, 1024, false).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        let ext = [b"5;".as_slice(), &vec![b'x'; MAX_CHUNK_LINE]].concat();
        assert!(decode(Framing::Chunked, &ext, 1024, false)
            .unwrap_err()
            .contains("too long"));
        // A trailer section that never ends.
        let huge = [b"0\r\nX-Filler: ".as_slice(), &vec![b'a'; MAX_TRAILERS]].concat();
        let err = decode(Framing::Chunked, &huge, 4096, false).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn a_chunked_stream_cut_anywhere_is_cut_short() {
        let stream: &[u8] = b"5;e=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        assert!(decode_any(Framing::Chunked, stream, true).is_ok());
        for cut in 0..stream.len() {
            let err = decode_any(Framing::Chunked, &stream[..cut], true).unwrap_err();
            assert!(
                err.contains("before the body ended"),
                "cut at {cut} ({:?}): {err}",
                String::from_utf8_lossy(&stream[..cut])
            );
        }
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

    /// A body read over a real socket hands its connection back only when it ended
    /// cleanly with nothing after it.
    #[tokio::test]
    async fn the_connection_is_reusable_only_after_a_clean_end() {
        use http_body_util::BodyExt;
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let conn = |extra: &'static [u8]| {
            let addr = l.local_addr().unwrap();
            async move {
                let c = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut conn = Connection::new(super::super::Stream::Plain(c));
                conn.buf.extend_from_slice(extra);
                conn
            }
        };
        let head = |framing| Head {
            status: http::StatusCode::OK,
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            reason: None,
            framing,
            keep_alive: true,
        };
        // Clean: the whole body, nothing more.
        let c = conn(b"hello").await;
        let (mut peer, _) = l.accept().await.unwrap();
        let mut body = head(Framing::Length(5)).body(c);
        assert_eq!(body.size_hint().exact(), Some(5));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
        // Extra bytes after the body: not reusable.
        let c = conn(b"helloX").await;
        let _ = l.accept().await.unwrap();
        let mut body = head(Framing::Length(5)).body(c);
        let _ = body.frame().await;
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_none());
        // Chunked over the socket, then the peer closes mid-body: an error, not reusable.
        let c = conn(b"").await;
        let (mut p2, _) = l.accept().await.unwrap();
        let mut body = head(Framing::Chunked).body(c);
        p2.write_all(b"3\r\nabc\r\n4\r\nde").await.unwrap();
        drop(p2);
        let mut got = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
                Some(Err(e)) => break e,
                None => panic!("a cut-short body ended cleanly"),
            }
        };
        assert_eq!(got, b"abcde");
        assert!(err.to_string().contains("before the body ended"), "{err}");
        assert!(body.take_reusable().is_none());
        // Until close: ends with the connection, never reused.
        let c = conn(b"").await;
        let (mut p3, _) = l.accept().await.unwrap();
        let mut body = head(Framing::UntilClose).body(c);
        p3.write_all(b"to the end").await.unwrap();
        drop(p3);
        let collected = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(collected, "to the end");
        assert!(body.take_reusable().is_none());
        peer.write_all(b"unused").await.unwrap();
    }
}
