//! One admin request: authenticate, route, run the handler, answer JSON.

use super::{dashboard, AdminState};
use crate::supervisor::control::{Command, ControlError, InstanceId, Reply};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{json, Value};

/// Largest request body accepted (commands carry a few bytes of JSON).
const MAX_BODY: usize = 64 * 1024;

/// The answer body type: whole (JSON, text) or a stream (`/api/v1/logs?follow=1`).
pub(super) type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A whole body.
pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A matched route.
#[derive(Debug, PartialEq)]
enum Route {
    Index,
    Healthz,
    Status,
    Events,
    Metrics,
    History,
    Incidents,
    Logs,
    Restart(String),
    Scale(String),
    Recycle(String),
    Reload,
    /// `/assets/{name}` (the dashboard's files).
    Asset(String),
    Login,
    LoginCode,
    Diagnose,
    Diagnostics,
    Report(String),
    /// `/api/v1/requests/{id}`: the story of one request (`healgate why`).
    Request(String),
    Environment,
    Processes,
}

impl Route {
    /// Served without a token (and showing no data).
    fn is_public(&self) -> bool {
        matches!(
            self,
            Route::Index | Route::Healthz | Route::Asset(_) | Route::Login
        )
    }

    /// The methods this route accepts, for the check and for `Allow`.
    fn methods(&self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        match self {
            Route::Index
            | Route::Healthz
            | Route::Status
            | Route::Events
            | Route::Metrics
            | Route::History
            | Route::Incidents
            | Route::Logs
            | Route::Diagnostics
            | Route::Report(_)
            | Route::Request(_)
            | Route::Environment
            | Route::Processes
            | Route::Asset(_) => GET,
            Route::Diagnose => POST,
            Route::Restart(_) | Route::Scale(_) | Route::Recycle(_) | Route::Reload => POST,
            Route::Login | Route::LoginCode => POST,
        }
    }
}

/// Why a path matched no route.
#[derive(Debug, PartialEq)]
enum NoRoute {
    NotFound,
    /// A path segment with a broken `%XX` escape or invalid UTF-8.
    BadEscape,
}

/// Whether this build serves `path` (what the dashboard asks before it polls a route).
pub(super) fn exists(path: &str) -> bool {
    route(path).is_ok()
}

/// Match `path` (still percent-encoded) to a route.
fn route(path: &str) -> Result<Route, NoRoute> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let named = |raw: &str| -> Result<String, NoRoute> {
        let name = percent_decode(raw).ok_or(NoRoute::BadEscape)?;
        if name.is_empty() {
            Err(NoRoute::NotFound)
        } else {
            Ok(name)
        }
    };
    match segments.as_slice() {
        [""] => Ok(Route::Index),
        ["healthz"] => Ok(Route::Healthz),
        ["metrics"] => Ok(Route::Metrics),
        ["api", "v1", "status"] => Ok(Route::Status),
        ["api", "v1", "history"] => Ok(Route::History),
        ["api", "v1", "incidents"] => Ok(Route::Incidents),
        ["api", "v1", "logs"] => Ok(Route::Logs),
        ["api", "v1", "events"] => Ok(Route::Events),
        ["api", "v1", "reload"] => Ok(Route::Reload),
        ["api", "v1", "apps", app, "restart"] => Ok(Route::Restart(named(app)?)),
        ["api", "v1", "apps", app, "scale"] => Ok(Route::Scale(named(app)?)),
        ["api", "v1", "instances", id, "recycle"] => Ok(Route::Recycle(named(id)?)),
        ["assets", name] => Ok(Route::Asset(named(name)?)),
        ["api", "v1", "login"] => Ok(Route::Login),
        ["api", "v1", "login", "code"] => Ok(Route::LoginCode),
        ["api", "v1", "diagnose"] => Ok(Route::Diagnose),
        ["api", "v1", "diagnostics"] => Ok(Route::Diagnostics),
        ["api", "v1", "diagnostics", name, "report.html"] => Ok(Route::Report(named(name)?)),
        ["api", "v1", "requests", id] => Ok(Route::Request(named(id)?)),
        ["api", "v1", "environment"] => Ok(Route::Environment),
        ["api", "v1", "processes"] => Ok(Route::Processes),
        _ => Err(NoRoute::NotFound),
    }
}

/// Decode `%XX` escapes; `None` for a broken escape (which `percent-encoding` would
/// keep as it is) or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let broken = s.split('%').skip(1).any(|after| {
        !after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

/// The value of query parameter `name`, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(&v.replace('+', " ")).unwrap_or_default())
    })
}

/// Compare in time independent of where the first difference is.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `req` carries `Authorization: Bearer <token>`; the error says what is wrong.
fn authorize<B>(req: &Request<B>, token: &str) -> Result<(), &'static str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization: Bearer <token> (the token is admin.token in the data directory, or admin.token in the config)")?;
    let value = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let (scheme, given) = value
        .split_once(' ')
        .ok_or("malformed Authorization header: expected Bearer <token>")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("unsupported Authorization scheme: expected Bearer <token>");
    }
    if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err("wrong admin token")
    }
}

/// The DNS rebinding defence: a browser tricked into calling the admin API from a
/// page sends that page's host name in `Host`. Only an IP literal or `localhost`
/// (what the CLI, scripts and the dashboard on its own address send) is answered.
fn host_allowed<B>(req: &Request<B>) -> Result<(), String> {
    let Some(host) = req.headers().get(header::HOST) else {
        return Ok(());
    };
    let raw = host.to_str().unwrap_or("");
    let name = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => raw.rsplit_once(':').map_or(raw, |(h, _)| h),
    };
    let literal = name.parse::<std::net::IpAddr>().is_ok();
    if literal || name.eq_ignore_ascii_case("localhost") {
        Ok(())
    } else {
        Err(format!(
            "Host {raw:?} is not an address of this admin API: only IP addresses and localhost are answered (DNS rebinding defence)"
        ))
    }
}

/// Answer one admin request.
pub(super) async fn handle<B>(state: &AdminState, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    if let Err(why) = host_allowed(&req) {
        return error(StatusCode::FORBIDDEN, &why);
    }
    let matched = route(&path);
    let public = matches!(&matched, Ok(r) if r.is_public()
        || (state.metrics_public && *r == Route::Metrics));
    if !public {
        if let Err(why) = authorize(&req, &state.token) {
            let mut resp = error(StatusCode::UNAUTHORIZED, why);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let route = match matched {
        Ok(r) => r,
        Err(NoRoute::NotFound) => {
            return error(StatusCode::NOT_FOUND, &format!("no such route: {path}"))
        }
        Err(NoRoute::BadEscape) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("malformed %-escape in {path}"),
            )
        }
    };
    let methods = route.methods();
    if !methods.contains(req.method()) {
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} {path}: method not allowed (allowed: {allow})",
                req.method()
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    let query = req.uri().query().map(str::to_owned);
    match route {
        Route::Index => dashboard::index(req.headers()),
        Route::Asset(name) => dashboard::asset_response(req.headers(), &name, query.as_deref()),
        Route::Login => {
            let headers = req.headers().clone();
            match read_body(req).await {
                Ok(body) => dashboard::login(state, &headers, &body),
                Err(resp) => resp,
            }
        }
        Route::LoginCode => dashboard::issue_code(state),
        Route::Diagnose => match read_body(req).await {
            Ok(body) => super::diagnostics::start(state, &body),
            Err(resp) => resp,
        },
        Route::Diagnostics => super::diagnostics::list(state),
        Route::Report(name) => super::diagnostics::report(state, &name),
        Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Route::Request(id) => super::requests::story(state, id).await,
        Route::Environment => super::environment::environment(state),
        Route::Processes => super::environment::processes(state),
        Route::Status => status(state),
        Route::Events => events(state, query.as_deref()),
        Route::Metrics => metrics(state, req.headers()),
        Route::History => history(state, query.as_deref()),
        Route::Logs => {
            let q = query.as_deref();
            match super::logs::Query::parse(
                query_param(q, "app"),
                query_param(q, "lines"),
                query_param(q, "since"),
                query_param(q, "follow"),
            ) {
                Ok(q) => super::logs::answer(state, q),
                Err(why) => error(StatusCode::BAD_REQUEST, &why),
            }
        }
        Route::Incidents => json_response(
            StatusCode::OK,
            &json!({"incidents": state.events.monitor().incidents.list()}),
        ),
        Route::Reload => match &state.control {
            Some(handle) => command_response(handle.send(Command::Reload).await),
            None => error(StatusCode::NOT_FOUND, "this gateway does not offer reload"),
        },
        Route::Restart(app) => {
            // A restart takes no body; any body is ignored.
            let command = Command::Restart { app: app.clone() };
            command_response(run(state, command, Missing::App(&app)).await)
        }
        Route::Scale(app) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let instances = match parse_scale(&body) {
                Ok(n) => n,
                Err(why) => return error(StatusCode::BAD_REQUEST, &why),
            };
            let command = Command::Scale {
                app: app.clone(),
                instances,
            };
            command_response(run(state, command, Missing::App(&app)).await)
        }
        Route::Recycle(instance) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let reason = match parse_recycle(&body) {
                Ok(r) => r,
                Err(why) => return error(StatusCode::BAD_REQUEST, &why),
            };
            let Some(id) = InstanceId::parse(&instance) else {
                let unknown = match &state.control {
                    Some(_) => ControlError::UnknownInstance(instance),
                    None => ControlError::NoApps(format!("instance {instance:?}")),
                };
                return command_response(Err(unknown));
            };
            let command = Command::Recycle {
                instance: id,
                reason,
            };
            command_response(run(state, command, Missing::Instance(&instance)).await)
        }
    }
}

/// `POST .../scale` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    instances: u32,
}

/// `POST .../recycle` body (optional).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecycleBody {
    reason: Option<String>,
}

fn parse_scale(body: &[u8]) -> Result<u32, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(r#"missing body: expected {"instances": N}"#.to_owned());
    }
    serde_json::from_slice::<ScaleBody>(body)
        .map(|b| b.instances)
        .map_err(|e| format!(r#"bad body: {e}; expected {{"instances": N}} with N a whole number"#))
}

fn parse_recycle(body: &[u8]) -> Result<String, String> {
    const DEFAULT: &str = "requested through the admin API";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT.to_owned());
    }
    let parsed = serde_json::from_slice::<RecycleBody>(body)
        .map_err(|e| format!(r#"bad body: {e}; expected nothing or {{"reason": "..."}}"#))?;
    Ok(parsed
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| DEFAULT.to_owned()))
}

/// The request body, up to [`MAX_BODY`]; else the error response.
async fn read_body<B>(req: Request<B>) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}"),
        )),
    }
}

/// What a command names, for the answer when there is no supervisor.
enum Missing<'a> {
    App(&'a str),
    Instance(&'a str),
}

/// Send `command` to the supervisor and wait for its outcome.
async fn run(state: &AdminState, command: Command, names: Missing<'_>) -> Reply {
    match &state.control {
        Some(handle) => handle.send(command).await,
        None => Err(ControlError::NoApps(match names {
            Missing::App(app) => format!("app {app:?}"),
            Missing::Instance(id) => format!("instance {id:?}"),
        })),
    }
}

/// Ok → 200; a refusal → its [`ControlError::status`].
fn command_response(outcome: Reply) -> Response<Body> {
    match outcome {
        Ok(done) => json_response(
            StatusCode::OK,
            &json!({"ok": true, "message": done.message}),
        ),
        Err(e) => json_response(e.status(), &json!({"ok": false, "error": e.to_string()})),
    }
}

fn status(state: &AdminState) -> Response<Body> {
    let apps = state
        .control
        .as_ref()
        .map(|h| h.status())
        .unwrap_or_default();
    let uptime = (state.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let mut incidents = state.events.monitor().incidents.list();
    let incidents_open = incidents.iter().filter(|i| i.ended.is_none()).count();
    incidents.sort_by_key(|i| i.ended.is_some());
    incidents.truncate(5);
    let answer = super::StatusAnswer {
        incidents,
        incidents_open,
        apps,
        uptime_s: uptime,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    json_response(
        StatusCode::OK,
        &serde_json::to_value(answer).unwrap_or_default(),
    )
}

fn events(state: &AdminState, query: Option<&str>) -> Response<Body> {
    let since = match query_param(query, "since") {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("since must be a whole number, got {s:?}"),
                )
            }
        },
    };
    let items = state.events.since(since);
    let last = items.last().map_or(since, |(seq, _)| *seq);
    let events: Vec<Value> = items
        .into_iter()
        .map(|(seq, event)| json!({"seq": seq, "event": event}))
        .collect();
    json_response(StatusCode::OK, &json!({"events": events, "last": last}))
}

/// `/api/v1/history?app=&instance=&res=1s|1m`: one series, columns for charts.
fn history(state: &AdminState, query: Option<&str>) -> Response<Body> {
    let Some(app) = query_param(query, "app").filter(|a| !a.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "history needs app=<name>");
    };
    let instance = query_param(query, "instance").filter(|i| !i.is_empty());
    let minutes = match query_param(query, "res").as_deref() {
        None | Some("") | Some("1s") => false,
        Some("1m") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("res must be 1s or 1m, got {other:?}"),
            )
        }
    };
    match state
        .events
        .monitor()
        .history
        .series(&app, instance.as_deref(), minutes)
    {
        Some(v) => json_response(StatusCode::OK, &v),
        None => error(
            StatusCode::NOT_FOUND,
            &match instance {
                Some(i) => format!("no history for instance {i:?} of app {app:?}"),
                None => format!("no history for app {app:?} (yet: a point is added every second)"),
            },
        ),
    }
}

/// `/metrics`: Prometheus text, or OpenMetrics when the scraper asks for it.
fn metrics(state: &AdminState, headers: &http::HeaderMap) -> Response<Body> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state
        .events
        .monitor()
        .metrics
        .encode((state.snapshot)(), openmetrics);
    let mut resp = Response::new(full(text));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({"error": message}))
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut text = body.to_string();
    text.push('\n');
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_names_and_instance_ids() {
        assert_eq!(route("/"), Ok(Route::Index));
        assert_eq!(route("/api/v1/status"), Ok(Route::Status));
        assert_eq!(
            route("/api/v1/instances/web%232/recycle"),
            Ok(Route::Recycle("web#2".into()))
        );
        assert_eq!(
            route("/api/v1/instances/my-app-12/recycle"),
            Ok(Route::Recycle("my-app-12".into()))
        );
        assert_eq!(
            route("/api/v1/apps/my%20app/restart"),
            Ok(Route::Restart("my app".into()))
        );
        assert_eq!(route("/api/v1/apps//restart"), Err(NoRoute::NotFound));
        assert_eq!(route("/api/v1/apps/%zz/scale"), Err(NoRoute::BadEscape));
        assert_eq!(route("/api/v2/status"), Err(NoRoute::NotFound));
    }

    #[test]
    fn only_addresses_and_localhost_are_answered() {
        let with = |host: &str| {
            let req = Request::get("/api/v1/status")
                .header(header::HOST, host)
                .body(())
                .unwrap();
            host_allowed(&req).is_ok()
        };
        for ok in [
            "127.0.0.1:9901",
            "localhost:1",
            "LOCALHOST",
            "[::1]:9901",
            "10.0.0.5",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "127.0.0.1.nip.io:9901",
            "attacker.test",
        ] {
            assert!(!with(bad), "{bad}");
        }
        let bare = Request::get("/").body(()).unwrap();
        assert!(host_allowed(&bare).is_ok(), "no Host: not a browser");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn scale_body_errors_name_the_problem() {
        assert_eq!(parse_scale(br#"{"instances": 4}"#), Ok(4));
        assert!(parse_scale(b"").unwrap_err().contains("missing body"));
        assert!(parse_scale(br#"{"instances": -1}"#)
            .unwrap_err()
            .contains("-1"));
        assert!(parse_scale(br#"{"count": 3}"#)
            .unwrap_err()
            .contains("count"));
        assert!(parse_scale(b"{instances: 3")
            .unwrap_err()
            .contains("bad body"));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("since=5&x=1"), "since").as_deref(),
            Some("5")
        );
        assert_eq!(query_param(Some("x=1"), "since"), None);
        assert_eq!(query_param(None, "since"), None);
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("caf%C3%A9%20x").as_deref(), Some("café x"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for broken in ["%", "a%2", "%zz", "%%41", "%ff"] {
            assert_eq!(percent_decode(broken), None, "{broken}");
        }
    }
}
