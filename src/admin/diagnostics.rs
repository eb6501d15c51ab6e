//! The diagnose routes: `POST /api/v1/diagnose` starts a bundle, `GET
//! /api/v1/diagnostics` lists them (with the steps of one being collected), `GET
//! /api/v1/diagnostics/{name}/report.html` serves a report.

use super::routes::{error, full, json_response, Body};
use super::AdminState;
use crate::diagnose::{Refused, Request, DEFAULT_WINDOW};
use http::{header, HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// `POST /api/v1/diagnose` body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DiagnoseBody {
    app: Option<String>,
    window: Option<String>,
    #[serde(default)]
    dumps: bool,
    reason: Option<String>,
}

/// Start a bundle: 202 `{"ok":true,"name":..,"path":..,"list":..}`; 429 with
/// `Retry-After` past the rate limit; 404 for an unknown app; 400 for a bad body.
pub(super) fn start(state: &AdminState, body: &[u8]) -> Response<Body> {
    let Some(d) = &state.diagnostics else {
        return error(
            StatusCode::NOT_FOUND,
            "this gateway does not collect diagnostics",
        );
    };
    let parsed: DiagnoseBody = if body.iter().all(u8::is_ascii_whitespace) {
        DiagnoseBody::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        r#"bad body: {e}; expected {{"app": "web", "window": "15m", "dumps": false}} (all optional)"#
                    ),
                )
            }
        }
    };
    let window = match parsed.window.as_deref() {
        None | Some("") => DEFAULT_WINDOW,
        Some(w) => match crate::diagnose::parse_window(w) {
            Ok(d) => d,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        },
    };
    let req = Request {
        app: parsed.app.filter(|a| !a.is_empty()),
        window,
        dumps: parsed.dumps,
        reason: parsed
            .reason
            .unwrap_or_else(|| "requested through the admin API".to_owned()),
    };
    match d.start(req, None) {
        Ok(name) => json_response(
            StatusCode::ACCEPTED,
            &json!({"ok": true, "name": name, "path": d.dir().join(&name).display().to_string(),
                    "report": format!("/api/v1/diagnostics/{name}/report.html")}),
        ),
        Err(Refused::RateLimited { retry_after_s }) => {
            let msg = Refused::RateLimited { retry_after_s }.to_string();
            let mut resp = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"ok": false, "error": msg, "retry_after_s": retry_after_s}),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            resp
        }
        Err(e @ Refused::UnknownApp(_)) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"ok": false, "error": e.to_string()}),
        ),
    }
}

/// `GET /api/v1/diagnostics`.
pub(super) fn list(state: &AdminState) -> Response<Body> {
    match &state.diagnostics {
        Some(d) => json_response(StatusCode::OK, &d.list()),
        None => json_response(StatusCode::OK, &json!({"diagnostics": []})),
    }
}

/// `GET /api/v1/diagnostics/{name}/report.html`: the page, as it is on disk.
pub(super) fn report(state: &AdminState, name: &str) -> Response<Body> {
    let Some(html) = state.diagnostics.as_ref().and_then(|d| d.report_html(name)) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no report for bundle {name:?}"),
        );
    };
    let mut resp = Response::new(full(html));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The page runs only its own inline script and fetches nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"),
    );
    resp
}
