//! Header work on the request path: hop-by-hop removal, forwarding headers, request
//! ids, `Via` and loop detection, `Keep-Alive` parsing.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`: the port of the listener the client connected to.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Prefix`: the path prefix the gateway stripped (`strip_prefix`).
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `Proxy-Status` (RFC 9209).
pub static PROXY_STATUS: HeaderName = HeaderName::from_static("proxy-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request's `TE` lists `trailers` (RFC 9110 §10.1.4).
pub fn te_trailers(h: &HeaderMap) -> bool {
    h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    })
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
/// `Trailer` is end to end: it stays, so trailers can reach a client that takes them.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons of
    // standard names) instead of a hash lookup per hop-by-hop header.
    let hop = |k: &HeaderName| {
        *k == header::CONNECTION
            || *k == KEEP_ALIVE
            || *k == PROXY_CONNECTION
            || *k == header::TE
            || *k == header::TRANSFER_ENCODING
            || *k == header::UPGRADE
    };
    if !h.keys().any(hop) {
        return;
    }
    if let Some(conn) = h.get(header::CONNECTION).cloned() {
        if let Ok(list) = conn.to_str() {
            for name in list.split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    h.remove(name);
                }
            }
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        h.remove(name);
    }
}

/// A client-sent id is kept when it is 1..=128 visible characters of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// A new random request id: 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    let (a, b) = (crate::upstream::rand_u64(), crate::upstream::rand_u64());
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[(byte >> 4) as usize];
        buf[2 * i + 1] = HEX[(byte & 15) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

/// Whether one `Via` value names `token` as a hop.
pub fn via_names(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| {
            s.split(',')
                .any(|hop| hop.split_whitespace().nth(1) == Some(token))
        })
        .unwrap_or(false)
}

/// The protocol a client asks to switch to (`Upgrade`, with `upgrade` listed in
/// `Connection`), when the gateway relays such switches: HTTP/1.1 only, and not `h2c`
/// (the gateway speaks h2c itself, prior knowledge only).
pub fn upgrade_request(version: http::Version, h: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let asked = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let proto = h.get(header::UPGRADE)?;
    let h2c = proto.to_str().map_or(true, |p| {
        p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
    });
    (asked && !h2c).then(|| proto.clone())
}

/// What the upstream's `Keep-Alive` header says of reusing the connection: `timeout=N`
/// as a duration, zero for `max=1` (no further request), `None` without the header.
pub fn keep_alive(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(&KEEP_ALIVE)?.to_str().ok()?;
    let mut timeout = None;
    for p in v.split(',') {
        let Some((k, val)) = p.trim().split_once('=') else {
            continue;
        };
        let (k, val) = (k.trim(), val.trim());
        if k.eq_ignore_ascii_case("max") && val == "1" {
            return Some(Duration::ZERO);
        }
        if k.eq_ignore_ascii_case("timeout") {
            timeout = val.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    timeout
}

/// The routing key of a `Host` value: no port, no trailing dot, lowercase (borrowed
/// unless it had to be lowercased).
pub fn routing_host(h: &HeaderValue) -> Option<std::borrow::Cow<'_, str>> {
    let raw = strip_port(h.to_str().ok()?).trim_end_matches('.');
    Some(if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        raw.to_ascii_lowercase().into()
    } else {
        raw.into()
    })
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_websocket_like_h1_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            upgrade_request(http::Version::HTTP_11, &h)
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(upgrade_request(http::Version::HTTP_10, &h), None);
        assert_eq!(upgrade_request(http::Version::HTTP_2, &h), None);
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(
            upgrade_request(http::Version::HTTP_11, &h),
            None,
            "h2c is not relayed"
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(
            upgrade_request(http::Version::HTTP_11, &h),
            None,
            "not in Connection"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!valid_request_id(&HeaderValue::from_static("has space")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        let a = new_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_request_id());
    }

    #[test]
    fn keep_alive_values() {
        let mut h = HeaderMap::new();
        h.insert("keep-alive", HeaderValue::from_static("timeout=5, max=1"));
        assert_eq!(keep_alive(&h), Some(Duration::ZERO), "max=1: no reuse");
        h.insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
        assert_eq!(keep_alive(&h), Some(Duration::from_secs(5)));
        h.remove("keep-alive");
        assert_eq!(keep_alive(&h), None);
    }

    #[test]
    fn via_loop() {
        let mut h = HeaderMap::new();
        h.insert(
            "via",
            HeaderValue::from_static("1.1 edge, 1.1 healgate-ab12"),
        );
        let v = h.get("via").unwrap();
        assert!(via_names(v, "healgate-ab12"));
        assert!(!via_names(v, "healgate-ffff"));
    }

    #[test]
    fn hosts() {
        assert_eq!(strip_port("Example.com:8080"), "Example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("host"), "host");
    }
}
