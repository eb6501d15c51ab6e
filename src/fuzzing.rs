//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, unstable, no
//! behaviour of its own). Thin wrappers over the upstream response head parser, the
//! response body decoder and the client's first-head checks, so the targets drive
//! exactly the code the gateway runs, without sockets.

use crate::upstream::h1::{body, head};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};

/// How a response body is delimited (a copy of the parser's own enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    Upgrade,
}

impl From<head::Framing> for Framing {
    fn from(f: head::Framing) -> Framing {
        match f {
            head::Framing::Length(n) => Framing::Length(n),
            head::Framing::Chunked => Framing::Chunked,
            head::Framing::UntilClose => Framing::UntilClose,
            head::Framing::Upgrade => Framing::Upgrade,
        }
    }
}

impl From<Framing> for head::Framing {
    fn from(f: Framing) -> head::Framing {
        match f {
            Framing::Length(n) => head::Framing::Length(n),
            Framing::Chunked => head::Framing::Chunked,
            Framing::UntilClose => head::Framing::UntilClose,
            Framing::Upgrade => head::Framing::Upgrade,
        }
    }
}

/// A parsed upstream response head, as the proxy sees it.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub reason: Option<Bytes>,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// The header names one upstream connection has seen (the parser's per-connection
/// cache): reuse one across calls to exercise it.
#[derive(Default)]
pub struct NameCache(head::Names);

/// `upstream::h1` `parse_head`: `Ok(None)` means more bytes are needed; on success
/// the head is split off `buf`. `Err` is the refusal's text (too large or invalid).
pub fn parse_response_head(
    buf: &mut BytesMut,
    names: &mut NameCache,
    head_request: bool,
    limit: usize,
    upgrade: bool,
) -> Result<Option<ResponseHead>, String> {
    let method = if head_request {
        Method::HEAD
    } else {
        Method::GET
    };
    match head::parse_head(buf, &mut names.0, &method, limit, upgrade) {
        Ok(None) => Ok(None),
        Ok(Some(h)) => Ok(Some(ResponseHead {
            status: h.status,
            version: h.version,
            headers: h.headers,
            reason: h.reason,
            framing: h.framing.into(),
            keep_alive: h.keep_alive,
        })),
        Err(head::Malformed::TooLarge(why)) => Err(format!("too large: {why}")),
        Err(head::Malformed::Invalid(why)) => Err(format!("invalid: {why}")),
    }
}

/// What the body decoder made of the bytes at hand.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    More,
}

/// `upstream::h1` body decoder over a read buffer.
pub struct BodyDecoder(body::Decoder);

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        BodyDecoder(body::Decoder::new(framing.into()))
    }

    /// The next step from what `buf` holds; it consumes only what belongs to the body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Piece, String> {
        Ok(match self.0.decode(buf)? {
            body::Step::Frame(f) => match f.into_data() {
                Ok(data) => Piece::Data(data),
                Err(f) => match f.into_trailers() {
                    Ok(t) => Piece::Trailers(t),
                    Err(_) => unreachable!("a frame is data or trailers"),
                },
            },
            body::Step::End => Piece::End,
            body::Step::More => Piece::More,
        })
    }

    /// The peer closed the connection with nothing left unread.
    pub fn eof(&mut self) -> Result<(), String> {
        self.0.eof()
    }

    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// The listener's check of a request line (`proxy::heads`), run on the
/// bytes read so far.
pub fn check_request_line(buf: &[u8]) -> Result<(), String> {
    crate::proxy::heads::check_request_line(buf)
}

/// The listener's strict check of a complete request head (`proxy::heads`).
pub fn check_head(buf: &[u8]) -> Result<(), String> {
    crate::proxy::heads::check_head(buf)
}
