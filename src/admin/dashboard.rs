//! The live dashboard: its page and assets, embedded in the binary, and the login
//! that turns a one-time code into the admin token.
//!
//! The page and `/assets/*` are public and show no data: the page's script asks for
//! the token (or exchanges the `#login=<code>` fragment of a one-time link) and then
//! reads the API like any client, with `Authorization: Bearer`. Every answer here
//! carries a strict `Content-Security-Policy` (nothing but this origin; no inline
//! script or style), `X-Content-Type-Options: nosniff` and no referrer. The page is
//! revalidated on every load (`no-cache` + `ETag`); it names its assets with
//! `?v=<hash of all assets>`, and an asset asked for with the current hash is cached
//! for a year (`immutable`), any other way revalidated.

use super::login::Refused;
use super::routes::{error, exists, json_response, Body};
use super::AdminState;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::OnceLock;

/// Sent with the page and every asset.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    hash: u64,
}

const fn asset(name: &'static str, body: &'static [u8], content_type: &'static str) -> Asset {
    Asset {
        name,
        body,
        content_type,
        hash: fnv1a(body, 0xcbf2_9ce4_8422_2325),
    }
}

/// 64-bit FNV-1a, continuing from `hash` (a content hash for ETags, not security).
const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const PAGE: &str = include_str!("assets/index.html");

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    asset(
        "dashboard.js",
        include_bytes!("assets/dashboard.js"),
        "text/javascript; charset=utf-8",
    ),
    asset(
        "dashboard.css",
        include_bytes!("assets/dashboard.css"),
        "text/css; charset=utf-8",
    ),
    asset(
        "uPlot.iife.min.js",
        include_bytes!("assets/uplot/uPlot.iife.min.js"),
        "text/javascript; charset=utf-8",
    ),
    asset(
        "uPlot.min.css",
        include_bytes!("assets/uplot/uPlot.min.css"),
        "text/css; charset=utf-8",
    ),
    asset(
        "favicon.svg",
        include_bytes!("assets/favicon.svg"),
        "image/svg+xml",
    ),
];

/// The hash of the page and all assets: the `v=` the page puts on asset URLs.
const VERSION: u64 = {
    let mut h = fnv1a(PAGE.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let mut i = 0;
    while i < ASSETS.len() {
        h = fnv1a(ASSETS[i].body, h);
        i += 1;
    }
    h
};

/// The API routes the page reads that a gateway may not have yet; the page asks for
/// only those this build serves (listed in its `<meta name="healgate-api">`), and
/// shows "no data yet" for the others.
const OPTIONAL_API: &[(&str, &str)] = &[
    ("history", "/api/v1/history"),
    ("incidents", "/api/v1/incidents"),
    ("logs", "/api/v1/logs"),
    ("diagnostics", "/api/v1/diagnostics"),
    ("environment", "/api/v1/environment"),
    ("processes", "/api/v1/processes"),
];

/// The page with its asset version and API list filled in, and its ETag.
fn page() -> &'static (Bytes, String) {
    static PAGE_BODY: OnceLock<(Bytes, String)> = OnceLock::new();
    PAGE_BODY.get_or_init(|| {
        let api: Vec<&str> = OPTIONAL_API
            .iter()
            .filter(|(_, path)| exists(path))
            .map(|(name, _)| *name)
            .collect();
        let body = PAGE
            .replace("@VERSION@", &format!("{VERSION:016x}"))
            .replace("@API@", &api.join(" "));
        let etag = format!("\"{:016x}\"", fnv1a(body.as_bytes(), 0xcbf2_9ce4_8422_2325));
        (Bytes::from(body), etag)
    })
}

/// `GET /`: the dashboard page.
pub(super) fn index(headers: &HeaderMap) -> Response<Body> {
    let (body, etag) = page();
    serve(
        headers,
        body.clone(),
        "text/html; charset=utf-8",
        etag,
        "no-cache",
    )
}

/// `GET /assets/{name}`; `query` is the request's query (`v=<version>`).
pub(super) fn asset_response(
    headers: &HeaderMap,
    name: &str,
    query: Option<&str>,
) -> Response<Body> {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return error(StatusCode::NOT_FOUND, &format!("no such asset: {name}"));
    };
    let current = format!("v={VERSION:016x}");
    let cache = if query == Some(current.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag = format!("\"{:016x}\"", a.hash);
    serve(
        headers,
        Bytes::from_static(a.body),
        a.content_type,
        &etag,
        cache,
    )
}

/// 200 with `body`, or 304 when the client's `If-None-Match` names `etag`.
fn serve(
    headers: &HeaderMap,
    body: Bytes,
    content_type: &'static str,
    etag: &str,
    cache: &'static str,
) -> Response<Body> {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        let mut r = Response::new(super::routes::full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(super::routes::full(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `POST /api/v1/login` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    code: String,
}

/// `POST /api/v1/login` (public): `{"code": "..."}` → `{"token": "..."}` for a live
/// one-time code. Only JSON (so a page elsewhere cannot post it without a CORS
/// preflight, which is never granted) and only from this origin when the browser
/// names one; failures are rate-limited (429 with `Retry-After`).
pub(super) fn login(state: &AdminState, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let ours = host.is_some_and(|h| origin.to_str().ok() == Some(&format!("http://{h}")));
        if !ours {
            return error(
                StatusCode::FORBIDDEN,
                "a login from another origin is not accepted",
            );
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        );
    }
    let code = match serde_json::from_slice::<LoginBody>(body) {
        Ok(b) => b.code,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(r#"bad body: {e}; expected {{"code": "..."}}"#),
            )
        }
    };
    match state.logins.redeem(code.trim()) {
        Ok(()) => {
            tracing::info!("admin: a one-time login code was used");
            json_response(StatusCode::OK, &json!({"token": state.token}))
        }
        Err(Refused::Invalid) => {
            tracing::warn!("admin: a login with an unknown, used or expired code was refused");
            error(
                StatusCode::UNAUTHORIZED,
                "this login code is unknown, used or expired (codes work once, for 10 minutes); use the admin token instead",
            )
        }
        Err(Refused::TooMany(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed logins; try again in {secs} s"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

/// `POST /api/v1/login/code` (token required): a fresh one-time code, for a link
/// `http://<admin>/#login=<code>`.
pub(super) fn issue_code(state: &AdminState) -> Response<Body> {
    match state.logins.issue() {
        Ok(code) => json_response(
            StatusCode::OK,
            &json!({"code": code, "expires_in_s": super::login::CODE_LIFETIME.as_secs()}),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot make a login code: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_with_the_version() {
        let (body, etag) = page();
        let text = std::str::from_utf8(body).unwrap();
        let v = format!("?v={VERSION:016x}");
        for a in [
            "dashboard.js",
            "dashboard.css",
            "uPlot.iife.min.js",
            "uPlot.min.css",
        ] {
            assert!(text.contains(&format!("assets/{a}{v}")), "{a}");
        }
        assert!(!text.contains('@'), "every placeholder filled");
        assert!(!text.contains("<script>"), "no inline script");
        assert!(etag.starts_with('"'));
    }

    #[test]
    fn versioned_assets_are_immutable_others_revalidated() {
        let none = HeaderMap::new();
        let v = format!("v={VERSION:016x}");
        let r = asset_response(&none, "dashboard.js", Some(&v));
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert!(h[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        let r = asset_response(&none, "dashboard.js", Some("v=old"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, r.headers()[header::ETAG].clone());
        let r = asset_response(&again, "dashboard.js", None);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            asset_response(&none, "../mod.rs", None).status(),
            StatusCode::NOT_FOUND
        );
    }
}
