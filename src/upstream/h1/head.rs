//! Response head parsing: the status line and header section with `httparse`, into
//! a `HeaderMap` whose values share the read buffer, and the body's framing decided
//! as RFC 9112 §6.3 says. Refused (→ 502 `http_protocol_error`): anything `httparse`
//! rejects, `Transfer-Encoding` with `Content-Length`, conflicting or malformed
//! `Content-Length` values, a `101` to a request that asked for no upgrade.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Header fields parsed without a heap allocation.
const MAX_HEADERS: usize = 100;
/// Most header fields in one response, whatever `limits.response_header` allows.
const MAX_FIELDS: usize = 8192;

/// Offsets of one field's name and value in the head: (name, its length, value, its
/// length).
type Field = (u32, u32, u32, u32);

/// The status line and where each field is, before the head is split off.
struct Raw {
    len: usize,
    code: u16,
    minor: u8,
    reason: Option<(usize, usize)>,
    count: usize,
}

enum Parsed {
    Partial,
    Head(Raw),
    /// More fields than `fields` holds.
    TooMany,
}

/// One `httparse` pass over `buf` with room for `fields.len()` fields.
fn parse_raw(buf: &BytesMut, fields: &mut [Field], limit: usize) -> Result<Parsed, Malformed> {
    let mut stack = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
    let mut heap;
    let slots = if fields.len() <= MAX_HEADERS {
        &mut stack[..fields.len()]
    } else {
        heap = vec![std::mem::MaybeUninit::<httparse::Header>::uninit(); fields.len()];
        &mut heap[..]
    };
    let mut res = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Ok(Parsed::TooMany),
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
    Ok(Parsed::Head(Raw {
        len,
        code: res.code.unwrap_or(0),
        minor: res.version.unwrap_or(1),
        // A reason phrase that is not UTF-8 comes back as a `""` outside `buf`: none.
        reason: res.reason.and_then(|r| {
            let at = (r.as_ptr() as usize).checked_sub(base)?;
            (at + r.len() <= len).then_some((at, r.len()))
        }),
        count,
    }))
}

/// The header names seen on one connection, as sent and as parsed: a peer sends the
/// same few names in every response, and parsing a non-standard one costs a
/// validation, a lowercase copy and an allocation each time.
#[derive(Default)]
pub(crate) struct Names(Vec<(Box<[u8]>, HeaderName)>);

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
    pub(crate) framing: Framing,
    /// The connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    /// `101 Switching Protocols`: the connection now carries another protocol.
    Upgrade,
}

impl Head {
    /// A `101 Switching Protocols` to an upgrade request.
    pub fn is_upgrade(&self) -> bool {
        self.framing == Framing::Upgrade
    }
}

/// Why a response head was refused.
#[derive(Debug)]
pub(crate) enum Malformed {
    TooLarge(String),
    Invalid(String),
}

/// Parse a response head at the start of `buf`. On success it is split off `buf`
/// (header values share its memory: no copies).
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    method: &Method,
    limit: usize,
    upgrade: bool,
) -> Result<Option<Head>, Malformed> {
    // Most responses fit the stack arrays; a larger header section is parsed again
    // with room for as many fields as `limit` bytes can hold (4 bytes the smallest).
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let heap: Vec<Field>;
    let (fields, raw) = match parse_raw(buf, &mut fields, limit)? {
        Parsed::Partial => return Ok(None),
        Parsed::Head(raw) => (&fields[..], raw),
        Parsed::TooMany => {
            let most = (limit / 4).clamp(MAX_HEADERS + 1, MAX_FIELDS);
            let mut more = vec![(0, 0, 0, 0); most];
            let parsed = parse_raw(buf, &mut more, limit)?;
            heap = more;
            match parsed {
                Parsed::Partial => return Ok(None),
                Parsed::Head(raw) => (&heap[..], raw),
                Parsed::TooMany => {
                    return Err(Malformed::TooLarge(format!("has more than {most} fields")))
                }
            }
        }
    };
    let Raw {
        len,
        code,
        minor,
        reason,
        count,
    } = raw;
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
    // `Content-Length: 5, 5` or the same value twice: relayed as one value.
    let (mut cl_fields, mut cl_list) = (0, false);
    for &(n, nl, v, vl) in &fields[..count] {
        let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
        let name = names.get(&head[n..n + nl])?;
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl))
            .map_err(|_| Malformed::Invalid(format!("value of {name}")))?;
        if name == header::CONTENT_LENGTH {
            cl_fields += 1;
            cl_list |= value.as_bytes().contains(&b',');
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
    if let (Some(n), true) = (length, cl_fields > 1 || cl_list) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
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
        if !chunked {
            // RFC 9112 §6.3 frames it by the close, but Transfer-Encoding is hop by
            // hop: relayed, its coding (gzip ...) would be silently lost.
            return Err(Malformed::Invalid(format!(
                "Transfer-Encoding {:?} does not end in chunked (its coding would be lost)",
                headers
                    .get(header::TRANSFER_ENCODING)
                    .map(|v| lossy(v.as_bytes()))
                    .unwrap_or_default()
            )));
        }
        Framing::Chunked
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

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
        assert!(
            invalid("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
                .contains("does not end in chunked")
        );
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
        let values: Vec<_> = h.headers.get_all("content-length").iter().collect();
        assert_eq!(values, ["5"], "one value relayed");
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.headers.get_all("content-length").iter().count(), 1);
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
    fn many_fields_are_taken_up_to_the_size_limit() {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..300 {
            raw.push_str(&format!("X-F{i}: v\r\n"));
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        let h = head(&raw).unwrap().unwrap();
        assert_eq!(h.headers.len(), 301);
        assert_eq!(h.headers["x-f299"], "v");
        // The size limit still holds.
        let mut small = BytesMut::from(raw.as_str());
        let refused = parse_head(&mut small, &mut Names::default(), &Method::GET, 1024, false);
        assert!(matches!(refused, Err(Malformed::TooLarge(_))));
    }

    /// Found by the `response_head` fuzz target: `httparse` hands back a reason that
    /// is not UTF-8 as a `""` that is not in the buffer, and its offset was computed
    /// as if it were (an overflow, then a slice out of range: a panic).
    #[test]
    fn a_reason_that_is_not_utf8_is_dropped_not_a_panic() {
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 HT\xff\xff\r\nX-Empty:\r\n\r\n"[..]);
        let h = parse_head(&mut buf, &mut Names::default(), &Method::GET, 1024, false);
        let h = h.unwrap().unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.reason, None);
        assert_eq!(h.headers["x-empty"], "");
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
}
