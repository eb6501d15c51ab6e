//! The compress step of the respond phase (`[gateway.compression]`): gzip, brotli or
//! zstd for a client that accepts it, on upstream responses of the configured types,
//! streamed.
//!
//! [`Policy::asked`] reads the request before it is forwarded: the coding its
//! `Accept-Encoding` prefers (q-values, RFC 9110 §12.5.3; on equal q the configured
//! order), none for HEAD or a `Range` request. [`Policy::respond`] decides on the
//! response head and rewrites it: `Content-Encoding`, no `Content-Length` or
//! `Accept-Ranges`, `Vary: Accept-Encoding` merged in, a strong `ETag` made weak.
//! A response of a compressible type that is not compressed because the client did not
//! ask still gets `Vary: Accept-Encoding` (a shared cache must not hand it to one that
//! did). Never compressed: 1xx, 204, 206, 304, a `Content-Range`, a `Content-Encoding`
//! other than identity, `Cache-Control: no-transform`, a `Content-Length` below
//! `min_size`. Gateway-made pages are never compressed.
//!
//! [`Encoding`] is the body's encoder (async-compression's codecs at `levels`, gzip 5,
//! brotli 4 and zstd 3 by default, driven frame by frame by
//! [`super::respond::ProxyBody`]): each upstream chunk is encoded as it
//! comes, and the encoder is flushed whenever the upstream has nothing more ready, so a
//! slow or streaming upstream's bytes (server-sent events included) reach the client
//! before it finishes, and nothing is buffered whole.

use crate::config::{Coding, Compression, Levels};
use async_compression::codecs::{BrotliEncoder, EncodeV2, GzipEncoder, ZstdEncoder};
use async_compression::core::util::{PartialBuffer, WriteBuffer};
use async_compression::Level;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use std::io;

/// brotli's window, as a power of two: 512 KiB (ngx_brotli's default) instead of 4 MiB,
/// which bounds the memory of each response being compressed.
pub const BROTLI_WINDOW: i32 = 19;
/// zstd's window, as a power of two: 512 KiB, for the same reason.
pub const ZSTD_WINDOW: u32 = 19;

/// Encoded bytes are handed to the client once this many are ready (or sooner, when
/// the upstream has nothing more ready).
const SEND_AT: usize = 32 * 1024;
/// The output room given to the encoder at each call.
const ROOM: usize = 16 * 1024;

/// `[gateway.compression]`, ready for the request path.
#[derive(Debug)]
pub struct Policy {
    /// Media types as (type, subtype); `None` for a `*` subtype.
    types: Vec<(String, Option<String>)>,
    min_size: u64,
    algorithms: Vec<Coding>,
    levels: Levels,
}

/// What a request allows its response: the coding to use, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked(Option<Coding>);

impl Policy {
    pub fn new(c: &Compression) -> Policy {
        let types = c
            .types
            .iter()
            .filter_map(|t| {
                let (ty, sub) = t.split_once('/')?;
                let sub = (sub != "*").then(|| sub.to_ascii_lowercase());
                Some((ty.to_ascii_lowercase(), sub))
            })
            .collect();
        Policy {
            types,
            min_size: c.min_size,
            algorithms: c.algorithms.clone(),
            levels: c.levels,
        }
    }

    /// The request's side, read before it is forwarded: the coding its
    /// `Accept-Encoding` prefers among the configured ones, none for HEAD or a `Range`
    /// request (a range is of the identity representation).
    pub fn asked(&self, method: &Method, headers: &HeaderMap) -> Asked {
        if method == Method::HEAD || headers.contains_key(header::RANGE) {
            return Asked(None);
        }
        Asked(choose(&self.algorithms, headers))
    }

    /// The response's side, on its head (hop-by-hop headers already gone): rewrites the
    /// headers and returns the encoder when the body is to be compressed.
    pub fn respond(
        &self,
        asked: Asked,
        status: StatusCode,
        h: &mut HeaderMap,
    ) -> Option<(Coding, Encoding)> {
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if bodiless
            || status == StatusCode::PARTIAL_CONTENT
            || h.contains_key(header::CONTENT_RANGE)
            || !self.compressible(h.get(header::CONTENT_TYPE))
            || encoded(h)
            || no_transform(h)
        {
            return None;
        }
        // An empty body stays empty (an encoded one would be 9 to 20 bytes).
        if content_length(h).is_some_and(|n| n < self.min_size.max(1)) {
            return None;
        }
        add_vary(h);
        let coding = asked.0?;
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
        h.remove(header::CONTENT_LENGTH);
        // Ranges of the encoded form are not served.
        h.remove(header::ACCEPT_RANGES);
        weaken_etag(h);
        Some((coding, Encoding::new(coding, self.levels)))
    }

    /// Whether `Content-Type` names one of the configured types (parameters aside).
    fn compressible(&self, ct: Option<&HeaderValue>) -> bool {
        let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let essence = ct.split(';').next().unwrap_or("").trim();
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        let (ty, sub) = (ty.trim(), sub.trim());
        self.types.iter().any(|(t, s)| {
            (t == "*" || t.eq_ignore_ascii_case(ty))
                && s.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(sub))
        })
    }
}

/// The configured coding the client prefers: the highest q-value (an explicit one, else
/// that of `*`), ties to the first in `algorithms`; none when every one is refused
/// (q=0) or unmentioned. No `Accept-Encoding` at all: none (identity).
fn choose(algorithms: &[Coding], headers: &HeaderMap) -> Option<Coding> {
    // Thousandths; `None` while unmentioned.
    let mut explicit: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let slot = |c: Coding| match c {
        Coding::Gzip => 0,
        Coding::Brotli => 1,
        Coding::Zstd => 2,
    };
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let mut q = Some(1000);
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = qvalue(v.trim());
                    }
                }
            }
            // A malformed q-value: the element says nothing.
            let Some(q) = q else { continue };
            let target = if name == "*" {
                &mut star
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                &mut explicit[slot(Coding::Gzip)]
            } else if name.eq_ignore_ascii_case("br") {
                &mut explicit[slot(Coding::Brotli)]
            } else if name.eq_ignore_ascii_case("zstd") {
                &mut explicit[slot(Coding::Zstd)]
            } else {
                continue;
            };
            // Named twice: the lower weight holds (a refusal is never overridden).
            *target = Some(target.map_or(q, |old| old.min(q)));
        }
    }
    let mut best: Option<(Coding, u16)> = None;
    for &c in algorithms {
        let q = explicit[slot(c)].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
}

/// An RFC 9110 §12.4.2 qvalue in thousandths: `0`, `0.5`, `1`, `1.000` (more than three
/// decimals are tolerated and cut); `None` when it is not one.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A `Content-Encoding` other than identity: the upstream encoded it already.
fn encoded(h: &HeaderMap) -> bool {
    h.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',').any(|c| {
                let c = c.trim();
                !c.is_empty() && !c.eq_ignore_ascii_case("identity")
            })
        })
    })
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6).
fn no_transform(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Vary: Accept-Encoding`, merged into the one `Vary` (kept as is when it says `*` or
/// already names it).
fn add_vary(h: &mut HeaderMap) {
    let mut names: Vec<String> = Vec::new();
    for v in h.get_all(header::VARY) {
        let Ok(s) = v.to_str() else { return };
        for n in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if n == "*" || n.eq_ignore_ascii_case("accept-encoding") {
                return;
            }
            names.push(n.to_owned());
        }
    }
    names.push("Accept-Encoding".to_owned());
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        h.insert(header::VARY, v);
    }
}

/// A strong `ETag` made weak (`W/"..."`): the encoded bytes differ from the upstream's.
fn weaken_etag(h: &mut HeaderMap) {
    let Some(tag) = h.get(header::ETAG) else {
        return;
    };
    if tag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(tag.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&weak) {
        h.insert(header::ETAG, v);
    }
}

/// One response body's encoder and what it has produced but not yet handed on.
pub struct Encoding {
    codec: Box<dyn EncodeV2 + Send>,
    out: BytesMut,
    /// Input went in since the last flush.
    dirty: bool,
    /// Trailers held back behind the encoder's last bytes.
    pub held: Option<HeaderMap>,
    /// The end of the stream was written.
    pub finished: bool,
}

impl Encoding {
    pub fn new(coding: Coding, levels: Levels) -> Encoding {
        let level = |n: u32| Level::Precise(n as i32);
        let codec: Box<dyn EncodeV2 + Send> = match coding {
            Coding::Gzip => Box::new(GzipEncoder::new(level(levels.gzip).into())),
            Coding::Brotli => Box::new(BrotliEncoder::new(
                async_compression::brotli::EncoderParams::default()
                    .quality(level(levels.br))
                    .window_size(BROTLI_WINDOW),
            )),
            Coding::Zstd => Box::new(ZstdEncoder::new_with_params(
                levels.zstd as i32,
                &[async_compression::zstd::CParameter::window_log(ZSTD_WINDOW)],
            )),
        };
        Encoding {
            codec,
            out: BytesMut::new(),
            dirty: false,
            held: None,
            finished: false,
        }
    }

    /// Encode one chunk of the upstream's body; the encoded bytes when enough are
    /// ready to send.
    pub fn data(&mut self, data: &[u8]) -> io::Result<Option<Bytes>> {
        let mut input = PartialBuffer::new(data);
        while !input.unwritten().is_empty() {
            let before = input.written_len();
            let wrote = self.step(|c, w| c.encode(&mut input, w).map(|()| true))?;
            if wrote == 0 && input.written_len() == before {
                return Err(io::Error::other("the encoder made no progress"));
            }
        }
        self.dirty |= !data.is_empty();
        Ok((self.out.len() >= SEND_AT).then(|| self.out.split().freeze()))
    }

    /// Everything encoded so far, flushed out of the encoder: the upstream has nothing
    /// more ready for now.
    pub fn flush(&mut self) -> io::Result<Option<Bytes>> {
        if self.dirty {
            while !self.step_until(|c, w| c.flush(w))? {}
            self.dirty = false;
        }
        Ok(self.take())
    }

    /// The end of the stream: the encoder's last bytes.
    pub fn finish(&mut self) -> io::Result<Option<Bytes>> {
        if !self.finished {
            while !self.step_until(|c, w| c.finish(w))? {}
            self.finished = true;
        }
        Ok(self.take())
    }

    fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// One call of the encoder with output room; whether it says it is done.
    fn step_until(
        &mut self,
        f: impl FnOnce(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let mut done = false;
        self.step(|c, w| {
            done = f(c, w)?;
            Ok(done)
        })?;
        Ok(done)
    }

    /// One call of the encoder on fresh output room; the bytes it wrote.
    fn step(
        &mut self,
        f: impl FnOnce(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<usize> {
        let at = self.out.len();
        self.out.resize(at + ROOM, 0);
        let mut w = WriteBuffer::new_initialized(&mut self.out[at..]);
        let r = f(&mut *self.codec, &mut w);
        let wrote = w.written_len();
        self.out.truncate(at + wrote);
        r.map(|_| wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(&Compression::default())
    }

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    fn pick(v: &str) -> Option<&'static str> {
        policy().asked(&Method::GET, &ae(v)).0.map(Coding::token)
    }

    #[test]
    fn accept_encoding_by_q_then_configured_order() {
        // Default order: zstd, br, gzip.
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip, br"), Some("br"));
        assert_eq!(pick("gzip"), Some("gzip"));
        assert_eq!(pick("GZIP"), Some("gzip"));
        assert_eq!(pick("x-gzip"), Some("gzip"));
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), Some("gzip"));
        assert_eq!(pick("br;q=0.8 , gzip;q=0.8"), Some("br"));
        assert_eq!(pick("zstd;q=0, br;q=0, gzip;q=0.001"), Some("gzip"));
        assert_eq!(pick("*"), Some("zstd"));
        assert_eq!(pick("*;q=0.1, zstd;q=0"), Some("br"));
        assert_eq!(pick("gzip;q=0, *"), Some("zstd"));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("deflate, compress"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("gzip;q=0.000"), None);
        // Malformed weights: the element says nothing.
        assert_eq!(pick("br;q=2, gzip"), Some("gzip"));
        assert_eq!(pick("br;q=abc"), None);
        assert_eq!(pick("br;Q=0.5;foo=bar"), Some("br"));
        // A refusal is not overridden by a repeat.
        assert_eq!(pick("gzip;q=0, gzip"), None);
        assert_eq!(policy().asked(&Method::GET, &HeaderMap::new()), Asked(None));
        assert_eq!(policy().asked(&Method::HEAD, &ae("gzip")), Asked(None));
        let mut ranged = ae("gzip");
        ranged.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        assert_eq!(policy().asked(&Method::GET, &ranged), Asked(None));
        let mut two = ae("gzip;q=0.5");
        two.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br;q=0.9"),
        );
        assert_eq!(
            policy().asked(&Method::GET, &two),
            Asked(Some(Coding::Brotli))
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0.0001"), Some(0));
        assert_eq!(qvalue("1.5"), None);
        assert_eq!(qvalue("-0"), None);
        assert_eq!(qvalue(""), None);
        assert_eq!(qvalue("0.x"), None);
    }

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn response_head_rewritten() {
        let p = policy();
        let gz = Asked(Some(Coding::Gzip));
        let mut h = head(&[
            ("content-type", "Text/HTML; charset=utf-8"),
            ("content-length", "5000"),
            ("etag", "\"abc\""),
            ("accept-ranges", "bytes"),
            ("vary", "Accept-Language"),
        ]);
        assert!(p.respond(gz, StatusCode::OK, &mut h).is_some());
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["etag"], "W/\"abc\"");
        assert_eq!(h["vary"], "Accept-Language, Accept-Encoding");
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("accept-ranges"));

        // Not asked: only Vary.
        let mut h = head(&[("content-type", "application/json")]);
        assert!(p.respond(Asked(None), StatusCode::OK, &mut h).is_none());
        assert_eq!(h["vary"], "Accept-Encoding");

        // Never: another type, already encoded, a range, no-transform, too small.
        for pairs in [
            &[("content-type", "image/png")][..],
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
            &[
                ("content-type", "text/plain"),
                ("content-range", "bytes 0-9/100"),
            ],
            &[
                ("content-type", "text/plain"),
                ("cache-control", "public, No-Transform"),
            ],
            &[("content-type", "text/plain"), ("content-length", "1023")],
            &[("content-type", "text/plain"), ("content-length", "0")],
            &[],
        ] {
            let mut h = head(pairs);
            let before = h.clone();
            assert!(p.respond(gz, StatusCode::OK, &mut h).is_none(), "{pairs:?}");
            assert_eq!(h, before, "{pairs:?}");
        }
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::SWITCHING_PROTOCOLS,
        ] {
            let mut h = head(&[("content-type", "text/plain")]);
            assert!(p.respond(gz, status, &mut h).is_none());
        }
        // identity is no coding; an existing Vary naming it or * stays.
        let mut h = head(&[
            ("content-type", "text/css"),
            ("content-encoding", "identity"),
            ("vary", "accept-encoding"),
            ("etag", "W/\"x\""),
        ]);
        assert!(p.respond(gz, StatusCode::NOT_FOUND, &mut h).is_some());
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["vary"], "accept-encoding");
        assert_eq!(h["etag"], "W/\"x\"");
    }

    #[test]
    fn streams_decode_to_the_input() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a text body\n").into_bytes())
            .collect();
        for c in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let mut e = Encoding::new(c, Levels::default());
            let mut out = Vec::new();
            for (i, chunk) in text.chunks(7000).enumerate() {
                out.extend(e.data(chunk).unwrap().unwrap_or_default());
                if i % 3 == 0 {
                    // A flush makes everything so far decodable at once.
                    let flushed = e.flush().unwrap().unwrap_or_default();
                    out.extend(flushed);
                    assert!(!out.is_empty());
                }
            }
            out.extend(e.finish().unwrap().unwrap_or_default());
            assert!(out.len() < text.len() / 4, "{c:?}: {}", out.len());
            // Size only: decoding is checked end to end with independent decoders
            // (tests/compression.rs).
        }
    }
}
