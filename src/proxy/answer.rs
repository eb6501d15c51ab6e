//! The gateway's own answers: [`error`] is the single builder of every response the
//! gateway makes itself (status, `Proxy-Status`, `Retry-After` and page text all from
//! the one mapping in [`crate::error`], the request id, a friendly page), and it
//! finishes the request's record.
//!
//! A gRPC request (`content-type: application/grpc*`) gets no page: a trailers-only
//! answer (`content-type: application/grpc`, `grpc-status` from
//! [`Cause::grpc_status`](crate::error::Cause::grpc_status), a percent-encoded
//! `grpc-message`, an empty body) with the same status, `Proxy-Status` and request id.
//! The HTTP status stays the gateway's (503, 504 ...): with a gRPC content-type,
//! clients report the `grpc-status` of such an answer whatever its HTTP status
//! (measured with grpcio 1.85, gRPC C-core, and grpc-go 1.33 in tests/grpc.rs;
//! grpc-java's `Http2ClientStreamTransportState` does the same). Without
//! `grpc-status` they map 502/503/504 all to UNAVAILABLE.

use super::headers::{PROXY_STATUS, X_REQUEST_ID};
use super::log::{End, Record};
use super::respond::ProxyBody;
use crate::error::ProxyError;
use crate::observe::access::Source;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::time::SystemTime;

/// The answer to a request the gateway could not relay, for the reason in `err`.
/// `headers` are the request's (for `Accept` and `Accept-Language`), when it has any.
pub fn error(rec: Record, headers: Option<&HeaderMap>, err: ProxyError) -> Response<ProxyBody> {
    let gw = rec.gw.clone();
    let status = err.cause.status();
    let retry_after = err.cause.retry_after();
    let details = err.details();
    let request_id = rec.request_id.to_str().unwrap_or("");
    tracing::warn!(
        request_id,
        "{} {} → {} {err}",
        rec.method.as_ref().map_or("-", |m| m.as_str()),
        rec.path(),
        status.as_u16(),
    );
    if headers.is_some_and(is_grpc) {
        return grpc_error(rec, err, &details);
    }
    let page = gw.pages.render(&super::pages::Page {
        status,
        cause: err.cause,
        request_id,
        accept: headers.and_then(|h| h.get(header::ACCEPT)),
        accept_language: headers.and_then(|h| h.get(header::ACCEPT_LANGUAGE)),
        details: Some(&details),
        retry_after,
        now: SystemTime::now(),
    });
    let bytes = page.body.len() as u64;
    let mut res = Response::new(ProxyBody::Local(Full::new(page.body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(PROXY_STATUS.clone(), err.proxy_status_header(gw.details));
    h.insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    h.insert(header::CONTENT_TYPE, page.content_type);
    h.insert(header::CONTENT_LANGUAGE, page.content_language);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Language"),
    );
    if let Some(s) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    rec.finish(End {
        status: status.as_u16(),
        bytes,
        source: Source::Gateway,
        error: Some(err.cause),
        details: Some(details),
    });
    res
}

/// `redirect_http`: a plain-HTTP request answered `308 Permanent Redirect` to the same
/// target on https (the method and body are kept by the client, RFC 9110 §15.4.9).
pub fn redirect(rec: Record, location: HeaderValue) -> Response<ProxyBody> {
    let body = bytes::Bytes::from(format!(
        "<!doctype html><title>308 Permanent Redirect</title><p>This site is served over HTTPS: <a href=\"{0}\">{0}</a></p>\n",
        super::pages::Esc(location.to_str().unwrap_or(""))
    ));
    let bytes = body.len() as u64;
    let mut res = Response::new(ProxyBody::Local(Full::new(body)));
    *res.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    rec.finish(End {
        status: 308,
        bytes,
        source: Source::Gateway,
        error: None,
        details: Some("gateway.tls.redirect_http".into()),
    });
    res
}

/// Whether a request is a gRPC call.
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// What `grpc-message` percent-encodes (gRPC over HTTP/2: `%` and every byte outside
/// printable ASCII).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// The trailers-only answer to a gRPC call (see the module doc).
fn grpc_error(rec: Record, err: ProxyError, details: &str) -> Response<ProxyBody> {
    let gw = rec.gw.clone();
    let status = err.cause.status();
    let mut message = format!(
        "healgate: {} ({})",
        status.canonical_reason().unwrap_or("error"),
        err.cause.proxy_status()
    );
    if gw.details {
        message.push_str(": ");
        message.push_str(details);
    }
    let message = utf8_percent_encode(&message, GRPC_MESSAGE).to_string();
    let mut res = Response::new(ProxyBody::Local(Full::new(Bytes::new())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(err.cause.grpc_status())),
    );
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert(GRPC_MESSAGE_HEADER.clone(), v);
    }
    h.insert(PROXY_STATUS.clone(), err.proxy_status_header(gw.details));
    h.insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    if let Some(s) = err.cause.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    rec.finish(End {
        status: status.as_u16(),
        bytes: 0,
        source: Source::Gateway,
        error: Some(err.cause),
        details: Some(details.to_owned()),
    });
    res
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE_HEADER: HeaderName = HeaderName::from_static("grpc-message");

/// The answer to an ACME HTTP-01 validation request: the key authorization of a
/// pending challenge (200, `text/plain`), else 404 `destination_not_found` (no
/// challenge with this token is pending).
pub fn acme_http01(
    rec: Record,
    headers: &HeaderMap,
    token: &str,
    authorization: Option<String>,
) -> Response<ProxyBody> {
    let Some(authorization) = authorization else {
        let err = ProxyError::new(
            crate::error::Cause::NoRoute,
            format!("no ACME HTTP-01 challenge is pending for token {token}"),
        );
        return error(rec, Some(headers), err);
    };
    let bytes = authorization.len() as u64;
    let mut res = Response::new(ProxyBody::Local(Full::new(authorization.into())));
    let h = res.headers_mut();
    h.insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rec.finish(End {
        status: 200,
        bytes,
        source: Source::Gateway,
        error: None,
        details: None,
    });
    res
}
