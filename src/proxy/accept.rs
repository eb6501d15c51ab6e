//! The accept phase: every request on every connection, first or later, gets the same
//! checks before it is routed: `Via` loop (508), header section size (431), framing
//! (400 on TE + CL or repeated lengths), CONNECT (400), and Host (RFC 9112 §3.2: 400
//! for an HTTP/1.1 request without Host or with two; RFC 9113 §8.3.1: 400 for an h2
//! request whose `host` differs from its `:authority`). The request is routed and
//! forwarded by one authority, [`authority`]: the target's when it has one.

use super::headers;
use super::Gateway;
use crate::error::{Cause, ProxyError};
use http::header::{self, HeaderValue};
use http::{Request, Version};

/// The authority a request is routed and forwarded by: the request target's (an
/// absolute-form HTTP/1.1 target replaces Host, RFC 9112 §3.2.2; h2's `:authority`),
/// else the Host header.
pub fn authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// The request id: the client's when it is valid, else a new one.
pub fn request_id<B>(req: &Request<B>) -> HeaderValue {
    match req.headers().get(&headers::X_REQUEST_ID) {
        Some(v) if headers::valid_request_id(v) => v.clone(),
        _ => headers::new_request_id(),
    }
}

/// The checks. `Err` becomes a gateway-made response.
pub fn check<B>(gw: &Gateway, req: &Request<B>) -> Result<(), ProxyError> {
    // One pass over the header section: its size, Via, Host and the framing headers.
    let mut size = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let (mut looped, mut te, mut cl, mut hosts) = (false, false, 0, 0);
    let mut host = None;
    for (k, v) in req.headers() {
        size += k.as_str().len() + v.len() + 4;
        if *k == header::HOST {
            hosts += 1;
            host = Some(v);
        } else if *k == header::VIA {
            looped |= headers::via_names(v, &gw.via_token);
        } else if *k == header::TRANSFER_ENCODING {
            te = true;
        } else if *k == header::CONTENT_LENGTH {
            cl += 1;
        }
    }
    if looped {
        return Err(ProxyError::new(
            Cause::Loop,
            format!(
                "the request already passed through this gateway ({})",
                gw.via_token
            ),
        ));
    }
    if size > gw.limits.request_header {
        return Err(ProxyError::new(
            Cause::RequestHeaderTooLarge,
            format!(
                "request header section of {size} bytes exceeds {}",
                gw.limits.request_header
            ),
        ));
    }
    if te && cl > 0 {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "both Transfer-Encoding and Content-Length (ambiguous framing)",
        ));
    }
    if cl > 1 {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "more than one Content-Length",
        ));
    }
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "CONNECT tunnels are not offered",
        ));
    }
    if hosts > 1 {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "more than one Host header (RFC 9112 §3.2)",
        ));
    }
    match (req.version(), host, req.uri().authority()) {
        (Version::HTTP_11, None, _) => Err(ProxyError::new(
            Cause::BadRequest,
            "an HTTP/1.1 request without Host (RFC 9112 §3.2)",
        )),
        (Version::HTTP_2, Some(h), Some(a)) if !same_authority(h, a.as_str()) => {
            Err(ProxyError::new(
                Cause::BadRequest,
                format!(
                    "host {:?} differs from :authority {:?} (RFC 9113 §8.3.1)",
                    String::from_utf8_lossy(h.as_bytes()),
                    a.as_str()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Whether a Host value names the same authority as `authority` (case aside).
fn same_authority(host: &HeaderValue, authority: &str) -> bool {
    host.as_bytes().eq_ignore_ascii_case(authority.as_bytes())
}

/// The token of an ACME HTTP-01 validation request (`GET
/// /.well-known/acme-challenge/<token>`, RFC 8555 §8.3), if this is one.
pub fn acme_token<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return None;
    }
    let token = req
        .uri()
        .path()
        .strip_prefix(crate::tls::certs::HTTP01_PREFIX)?;
    // base64url, as the RFC says: nothing that could name another path.
    (!token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(token)
}
