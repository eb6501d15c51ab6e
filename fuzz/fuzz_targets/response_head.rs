//! The upstream response head parser (`upstream::h1` `parse_head`).
//!
//! Input: one flags byte (bit 0: the request was HEAD; bit 1: it asked for an
//! upgrade; bit 2: a 256-byte header limit instead of 64 KiB), then the bytes the
//! peer sent. Invariants, beyond not panicking:
//! - the per-connection name cache changes no result (parsed twice, cache warm);
//! - a parsed head is split off exactly: what follows it is left untouched, and one
//!   byte less is "incomplete", never another head or a refusal;
//! - the framing agrees with the headers as relayed: never Transfer-Encoding with
//!   Content-Length, at most one Content-Length (digits), chunked only when the last
//!   coding is chunked, a length only from Content-Length, bodiless statuses and
//!   HEAD framed empty, 101 only when an upgrade was asked;
//! - keep-alive never survives `Connection: close`, nor HTTP/1.0 without keep-alive.
#![no_main]

use bytes::BytesMut;
use healgate::fuzzing::{parse_response_head, Framing, NameCache, ResponseHead};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{StatusCode, Version};
use libfuzzer_sys::fuzz_target;

/// What must not depend on the name cache.
fn summary(r: &Result<Option<ResponseHead>, String>) -> String {
    match r {
        Ok(Some(h)) => format!(
            "{} {:?} {:?} {:?} {:?} {}",
            h.status, h.version, h.headers, h.reason, h.framing, h.keep_alive
        ),
        Ok(None) => "partial".into(),
        Err(e) => format!("refused: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 != 0;
    let upgrade = flags & 2 != 0;
    let limit = if flags & 4 != 0 { 256 } else { 64 * 1024 };
    let mut names = NameCache::default();
    let mut buf = BytesMut::from(raw);
    let first = parse_response_head(&mut buf, &mut names, head_request, limit, upgrade);
    let mut again = BytesMut::from(raw);
    let second = parse_response_head(&mut again, &mut names, head_request, limit, upgrade);
    assert_eq!(
        summary(&first),
        summary(&second),
        "the name cache changed the result"
    );
    if matches!(first, Ok(None)) {
        // (A refused head may be consumed: the connection is dropped after it.)
        assert_eq!(&buf[..], raw, "an incomplete head leaves the buffer alone");
    }
    let Ok(Some(head)) = first else {
        return;
    };

    // Split off exactly.
    let len = raw.len() - buf.len();
    assert_eq!(&buf[..], &raw[len..], "what follows the head is untouched");
    assert!(len <= limit, "a head of {len} bytes over the limit {limit}");
    assert!(
        raw[..len].ends_with(b"\n"),
        "a head ends with its empty line"
    );
    let mut short = BytesMut::from(&raw[..len - 1]);
    let cut = parse_response_head(&mut short, &mut names, head_request, limit, upgrade);
    assert!(
        matches!(cut, Ok(None)),
        "one byte less is incomplete, not {}",
        summary(&cut)
    );

    // The framing agrees with the headers.
    let h = &head.headers;
    let te: Vec<&[u8]> = h
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let cl: Vec<&[u8]> = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert!(te.is_empty() || cl.is_empty(), "TE with CL relayed: {h:?}");
    assert!(
        cl.len() <= 1,
        "Content-Length relayed more than once: {cl:?}"
    );
    let length = cl.first().map(|v| {
        let v = v.trim_ascii();
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit),
            "Content-Length relayed as {v:?}"
        );
        std::str::from_utf8(v)
            .unwrap()
            .parse::<u64>()
            .expect("a u64")
    });
    let chunked = te.last().is_some_and(|v| {
        v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    let status = head.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    assert_eq!(
        status == StatusCode::SWITCHING_PROTOCOLS,
        head.framing == Framing::Upgrade,
        "101 and only 101 switches protocols"
    );
    match head.framing {
        Framing::Upgrade => assert!(upgrade, "a 101 to a request that asked for none"),
        Framing::Length(n) if bodiless => assert_eq!(n, 0, "{status} with a body"),
        Framing::Length(n) => {
            assert_eq!(length, Some(n), "length {n} not from Content-Length {cl:?}");
            assert!(te.is_empty());
        }
        Framing::Chunked => {
            assert!(!bodiless, "{status} framed chunked");
            assert!(chunked, "chunked framing, but Transfer-Encoding {te:?}");
        }
        Framing::UntilClose => {
            assert!(!bodiless, "{status} framed until close");
            assert!(
                te.is_empty() && cl.is_empty(),
                "until close with {te:?} {cl:?}"
            );
        }
    }
    if !bodiless && !te.is_empty() && status != StatusCode::SWITCHING_PROTOCOLS {
        assert_eq!(
            head.framing,
            Framing::Chunked,
            "a non-chunked coding relayed"
        );
    }

    // Keep-alive.
    let tokens = |want: &[u8]| {
        h.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(want))
        })
    };
    if tokens(b"close") {
        assert!(!head.keep_alive, "keep-alive despite Connection: close");
    }
    if head.version == Version::HTTP_10 && !tokens(b"keep-alive") {
        assert!(!head.keep_alive, "HTTP/1.0 kept alive without asking");
    }
});
