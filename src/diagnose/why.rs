//! `healgate why REQUEST_ID` and `GET /api/v1/requests/{id}`: the story of one
//! request, told from the access log (its line: route, attempts, outcome), the event
//! log (what its instances did around it: exits with the app's own error line,
//! restarts, recycles, crash loops, incidents) and the incidents, with what to change.
//!
//! The access log is searched from its end in blocks ([`super::scan`]), the live file
//! first and then the rotated ones, and the search stops at the newest line with the
//! id; the event log is read newest first until a minute before the request.

use super::scan;
use crate::config::Config;
use crate::observe::incidents::Incident;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// How far around a request events are looked at (milliseconds).
const CONTEXT_MS: i64 = 60_000;
/// How close to an attempt an instance's exit must be to explain it.
const EXIT_NEAR_MS: i64 = 3_000;

/// The story of one request (the `--json` answer and the API's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Story {
    pub request_id: String,
    /// One line: the status and why.
    pub headline: String,
    /// When, what, from whom, how it ended.
    pub summary: String,
    /// Each attempt, in order.
    pub attempts: Vec<AttemptStory>,
    /// Why it failed, in plain words (none for a success).
    pub cause: Option<String>,
    /// Why it was or was not sent again.
    pub retry: Option<String>,
    /// What the gateway did about it afterwards (a restart ...).
    pub after: Vec<String>,
    /// What else was happening: incidents, recycles, crash loops, reloads.
    pub context: Vec<String>,
    /// What to change.
    pub advice: Vec<String>,
    /// The access-log line as written.
    pub request: Value,
    /// The events the story used, oldest first.
    pub events: Vec<Value>,
    /// Where the line was found, and what the search cost.
    pub search: Search,
}

/// One attempt of the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptStory {
    pub number: u32,
    /// The instance or server, e.g. `web#2`.
    pub upstream: String,
    /// Its process id at the time, when the event log says.
    pub pid: Option<u32>,
    /// A Proxy-Status type, or the status it answered.
    pub outcome: String,
    /// The outcome in words.
    pub text: String,
}

/// Where the access line was found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    pub file: String,
    pub bytes_read: u64,
    pub took_ms: f64,
}

/// What the story is told from.
pub struct Sources<'a> {
    pub data_dir: &'a Path,
    /// The gateway's config (for the numbers in the advice), when known.
    pub config: Option<&'a Config>,
    /// The incidents (live); `None`: read `data_dir/incidents.json`.
    pub incidents: Option<Vec<Incident>>,
}

/// Why there is no story.
#[derive(Debug)]
pub enum NotFound {
    /// No access line has this id.
    Unknown { searched: String, bytes: u64 },
    /// Not an id a request could have.
    Invalid(String),
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFound::Unknown { searched, bytes } => write!(
                f,
                "no request with this id in {searched} ({:.1} MB searched): it may be older than the kept logs, from another gateway, or the access log is off (gateway.access_log)",
                *bytes as f64 / 1e6
            ),
            NotFound::Invalid(why) => f.write_str(why),
        }
    }
}

/// Tell the story of the request `id`.
pub fn explain(src: &Sources<'_>, id: &str) -> Result<Story, NotFound> {
    let id = id.trim();
    if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control()) {
        return Err(NotFound::Invalid(format!(
            "{id:?} is not a request id (the X-Request-Id of a response, e.g. 402ae6a2c46b751a9a60a868bf7da570)"
        )));
    }
    let logs = src.data_dir.join("logs");
    let access = logs.join("access.jsonl");
    let needle = format!(
        "\"request_id\":{}",
        serde_json::to_string(id).unwrap_or_default()
    );
    let began = Instant::now();
    let (found, bytes) = match scan::find_newest(&access, needle.as_bytes()) {
        Ok(f) => (f.line, f.bytes_read),
        Err(_) => (None, 0),
    };
    let took_ms = began.elapsed().as_secs_f64() * 1000.0;
    let Some((line, file)) = found else {
        return Err(NotFound::Unknown {
            searched: format!("{} and its rotated files", access.display()),
            bytes,
        });
    };
    let request: Value = serde_json::from_slice(&line).map_err(|e| {
        NotFound::Invalid(format!(
            "the access line with this id in {} is not JSON ({e})",
            file.display()
        ))
    })?;
    let req = Req::read(&request);
    let events = events_around(&logs.join("events.jsonl"), &req);
    let incidents = match &src.incidents {
        Some(list) => list.clone(),
        None => std::fs::read_to_string(src.data_dir.join("incidents.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    };
    let mut story = tell(&req, &events, &incidents, src.config);
    story.request_id = id.to_owned();
    story.request = request;
    story.search = Search {
        file: file.display().to_string(),
        bytes_read: bytes,
        took_ms: (took_ms * 1000.0).round() / 1000.0,
    };
    Ok(story)
}

/// The fields of an access line the story reads.
struct Req {
    ts: String,
    /// When it ended and began, Unix milliseconds.
    end: i64,
    start: i64,
    method: String,
    host: String,
    path: String,
    client: String,
    status: u16,
    duration_ms: f64,
    route: Option<String>,
    upstream: Option<String>,
    attempts: u32,
    gateway_made: bool,
    error: Option<String>,
    details: Option<String>,
    /// (peer, outcome) of every attempt.
    tried: Vec<(String, String)>,
}

impl Req {
    fn read(v: &Value) -> Req {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let ts = s("ts").unwrap_or_default();
        let duration_ms = v.get("duration_ms").and_then(Value::as_f64).unwrap_or(0.0);
        let end = parse_ts(&ts).unwrap_or(0);
        let upstream = s("upstream");
        let error = s("error");
        let status = v.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
        let mut tried: Vec<(String, String)> = v
            .get("tried")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t.get("upstream")?.as_str()?.to_owned(),
                    t.get("outcome")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        let gateway_made = s("source").as_deref() == Some("gateway");
        if tried.is_empty() {
            if let Some(u) = &upstream {
                let outcome = match (&error, gateway_made) {
                    (Some(e), true) => e.clone(),
                    _ => status.to_string(),
                };
                tried.push((u.clone(), outcome));
            }
        }
        Req {
            end,
            start: end - duration_ms.ceil() as i64,
            ts,
            method: s("method").unwrap_or_default(),
            host: s("host").unwrap_or_default(),
            path: s("path").unwrap_or_default(),
            client: s("client").unwrap_or_default(),
            status,
            duration_ms,
            route: s("route"),
            upstream,
            attempts: v.get("attempts").and_then(Value::as_u64).unwrap_or(0) as u32,
            gateway_made,
            error,
            details: s("details"),
            tried,
        }
    }
}

/// The events of the request's app (and the gateway's own) from a minute before it
/// began to a minute after it ended, oldest first.
fn events_around(path: &Path, req: &Req) -> Vec<Value> {
    let (from, to) = (req.start - CONTEXT_MS, req.end + CONTEXT_MS);
    let mut out = Vec::new();
    'files: for file in scan::files_newest_first(path) {
        let Ok(mut lines) = scan::BackLines::open(&file) else {
            continue;
        };
        while let Ok(Some(line)) = lines.next_line() {
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let Some(at) = ev.get("ts").and_then(Value::as_str).and_then(parse_ts) else {
                continue;
            };
            if at < from {
                break 'files;
            }
            let app = ev.get("app").and_then(Value::as_str).unwrap_or("");
            let ours = req.route.as_deref() == Some(app) || app == "healgate";
            if at <= to && ours {
                out.push(ev);
            }
        }
    }
    out.reverse();
    out
}

/// `2026-12-02T05:10:21.477Z` (or without the fraction) → Unix milliseconds.
pub fn parse_ts(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = if b.get(19) == Some(&b'.') {
        num(20..23).unwrap_or(0)
    } else {
        0
    };
    // Days from civil (Howard Hinnant), the inverse of observe::time's.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// Seconds between two instants in words: `0.6 s`, `12 ms`.
fn gap(ms: i64) -> String {
    let ms = ms.abs();
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn when(at: i64, req: &Req) -> String {
    if at < req.start {
        format!("{} before it", gap(req.start - at))
    } else if at > req.end {
        format!("{} after it", gap(at - req.end))
    } else {
        "while it was in flight".to_owned()
    }
}

fn field<'a>(ev: &'a Value, k: &str) -> Option<&'a str> {
    ev.get(k).and_then(Value::as_str)
}

fn kind(ev: &Value) -> &str {
    field(ev, "kind").unwrap_or("")
}

fn at(ev: &Value) -> i64 {
    field(ev, "ts").and_then(parse_ts).unwrap_or(0)
}

fn is_idempotent(method: &str) -> bool {
    http::Method::from_bytes(method.as_bytes())
        .map(|m| crate::error::is_idempotent(&m))
        .unwrap_or(false)
}

/// How a Proxy-Status type reads in a sentence.
fn outcome_text(outcome: &str) -> String {
    if let Ok(code) = outcome.parse::<u16>() {
        return format!("answered {code}");
    }
    let words = match outcome {
        "connection_terminated" => "the connection closed before the response header",
        "connection_refused" => "the connect was refused (nothing listening)",
        "connection_timeout" => "the connect timed out (packets dropped or the host down)",
        "dns_error" => "the name did not resolve",
        "dns_timeout" => "the name lookup timed out",
        "http_response_timeout" => "no response header in time",
        "http_response_header_section_size" => "the response header was too large",
        "http_protocol_error" => "the response was not valid HTTP",
        "tls_protocol_error" => "the TLS handshake failed",
        "tls_certificate_error" => "the server's certificate was refused",
        "destination_ip_unroutable" => "no route to the address",
        "destination_ip_prohibited" => "a firewall rule refused the connect",
        other => return other.replace('_', " "),
    };
    words.to_owned()
}

/// The config's numbers for the request's route (an app or an upstream).
struct Limits {
    kind: &'static str,
    max_concurrency: u32,
    queue_size: usize,
    queue_timeout: std::time::Duration,
    instances: Option<u32>,
    response_header_timeout: std::time::Duration,
    response_header_limit: usize,
}

fn limits(config: Option<&Config>, route: Option<&str>) -> Option<Limits> {
    let (config, route) = (config?, route?);
    let gw = &config.gateway;
    if let Some(a) = config.apps.iter().find(|a| a.name == route) {
        return Some(Limits {
            kind: "app",
            max_concurrency: a.max_concurrency,
            queue_size: a.queue.size,
            queue_timeout: a.queue.timeout,
            instances: Some(a.instances),
            response_header_timeout: gw.timeouts.response_header,
            response_header_limit: gw.limits.response_header,
        });
    }
    let u = config.upstreams.iter().find(|u| u.name == route)?;
    Some(Limits {
        kind: "upstream",
        max_concurrency: u.max_concurrency,
        queue_size: u.queue.size,
        queue_timeout: u.queue.timeout,
        instances: None,
        response_header_timeout: gw.timeouts.response_header,
        response_header_limit: gw.limits.response_header,
    })
}

/// The newest event of `kinds` for `instance` at or before `t`.
fn last_before<'a>(
    events: &'a [Value],
    instance: &str,
    kinds: &[&str],
    t: i64,
) -> Option<&'a Value> {
    events
        .iter()
        .rev()
        .find(|e| field(e, "instance") == Some(instance) && kinds.contains(&kind(e)) && at(e) <= t)
}

/// Build the story from the parsed line, the events and the incidents.
fn tell(req: &Req, events: &[Value], incidents: &[Incident], config: Option<&Config>) -> Story {
    let mut used: Vec<Value> = Vec::new();
    let mut after = Vec::new();
    let mut advice = Vec::new();
    let lim = limits(config, req.route.as_deref());
    let route = req.route.clone().unwrap_or_default();

    // Each attempt, and the exit that explains a dead connection.
    let mut exit_of_last: Option<Value> = None;
    let mut attempts = Vec::new();
    for (i, (peer, outcome)) in req.tried.iter().enumerate() {
        let pid = last_before(
            events,
            peer,
            &["instance_started", "instance_ready"],
            req.end,
        )
        .and_then(|e| e.get("pid")?.as_u64())
        .map(|p| p as u32);
        let pid_text = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let mut text = format!("{peer}{pid_text}: {}", outcome_text(outcome));
        let died = matches!(
            outcome.as_str(),
            "connection_terminated" | "connection_refused"
        );
        if died {
            let exit = events.iter().find(|e| {
                kind(e) == "instance_exited"
                    && field(e, "instance") == Some(peer)
                    && at(e) >= req.start - EXIT_NEAR_MS
                    && at(e) <= req.end + EXIT_NEAR_MS
            });
            if let Some(exit) = exit {
                text.push_str(&format!(
                    "; {} {}",
                    exit_headline(exit),
                    when(at(exit), req)
                ));
                used.push(exit.clone());
                exit_of_last = Some(exit.clone());
            }
        }
        attempts.push(AttemptStory {
            number: i as u32 + 1,
            upstream: peer.clone(),
            pid,
            outcome: outcome.clone(),
            text,
        });
    }

    let who = match (&req.upstream, req.gateway_made) {
        (Some(u), false) => format!("answered by {u}"),
        _ => "answered by the gateway itself".to_owned(),
    };
    let summary = format!(
        "{} {}{} from {} at {}, route {}: {} in {} ms, {who}, {} attempt{}",
        req.method,
        req.host,
        req.path,
        if req.client.is_empty() {
            "-"
        } else {
            &req.client
        },
        req.ts,
        if route.is_empty() { "(none)" } else { &route },
        req.status,
        req.duration_ms,
        req.attempts,
        if req.attempts == 1 { "" } else { "s" }
    );

    let error = req.error.as_deref();
    let details = req.details.clone().unwrap_or_default();
    let mut cause = None;
    let mut retry = None;
    let headline;
    match (error, req.gateway_made) {
        (None, false) => {
            let peer = req.upstream.clone().unwrap_or_else(|| route.clone());
            headline = format!("{} from {peer} in {} ms", req.status, req.duration_ms);
            if req.status >= 500 {
                cause = Some(format!(
                    "the app itself answered {} (passed through untouched): the gateway is not the problem",
                    req.status
                ));
                advice.push(format!(
                    "look at {peer}'s own log (logs/apps/{route}/{peer}.log) around {}",
                    req.ts
                ));
            }
            if req.tried.len() > 1 {
                retry = Some(format!(
                    "retried: {} attempts, the last one answered",
                    req.tried.len()
                ));
            }
        }
        (error, _) => {
            let error = error.unwrap_or("");
            let peer = req.upstream.clone().unwrap_or_default();
            headline = match (&exit_of_last, error) {
                (Some(exit), "connection_terminated") => format!(
                    "{} {error}: {} while handling it",
                    req.status,
                    exit_headline(exit)
                ),
                (Some(exit), _) => format!("{} {error}: {}", req.status, exit_headline(exit)),
                _ => format!(
                    "{} {error}: {}",
                    req.status,
                    if details.is_empty() {
                        outcome_text(error)
                    } else {
                        details.clone()
                    }
                ),
            };
            let (c, r, a) = cause_of(req, error, &details, exit_of_last.as_ref(), lim.as_ref());
            cause = c;
            retry = r;
            advice.extend(a);
            if let Some(exit) = &exit_of_last {
                let instance = field(exit, "instance").unwrap_or(&peer).to_owned();
                let t = at(exit);
                let started = events.iter().find(|e| {
                    kind(e) == "instance_started"
                        && field(e, "instance") == Some(&instance)
                        && at(e) >= t
                });
                match started {
                    Some(s) => {
                        let pid = s.get("pid").and_then(Value::as_u64).unwrap_or(0);
                        let mut line = format!(
                            "{instance} was restarted {} after the exit (pid {pid})",
                            gap(at(s) - t)
                        );
                        if let Some(r) = events.iter().find(|e| {
                            kind(e) == "instance_ready"
                                && field(e, "instance") == Some(&instance)
                                && e.get("pid").and_then(Value::as_u64) == Some(pid)
                        }) {
                            line.push_str(&format!(", ready {} after the exit", gap(at(r) - t)));
                            used.push(r.clone());
                        }
                        used.push(s.clone());
                        after.push(line);
                    }
                    None => {
                        if let Some(cl) = events.iter().find(|e| {
                            kind(e) == "crash_loop"
                                && field(e, "instance") == Some(&instance)
                                && at(e) >= t
                        }) {
                            after.push(format!(
                                "{instance} was not restarted at once: a crash loop ({})",
                                field(cl, "reason").unwrap_or("fast exits in a row")
                            ));
                        } else {
                            after.push(format!(
                                "no restart of {instance} is in the event log within a minute"
                            ));
                        }
                    }
                }
            }
        }
    }

    // What else was happening.
    let mut context = Vec::new();
    for e in events {
        let k = kind(e);
        let t = at(e);
        let near = t >= req.start - 30_000 && t <= req.end + 5_000;
        if !near || used.iter().any(|u| u == e) {
            continue;
        }
        let who = field(e, "instance").unwrap_or(field(e, "app").unwrap_or(""));
        let line = match k {
            "instance_exited" => Some(exit_words(e, "")),
            "crash_loop" => Some(format!(
                "{who} was in a crash loop: {}",
                field(e, "reason").unwrap_or("")
            )),
            "instance_recycling" | "instance_recycled" | "recycle_failed" => Some(format!(
                "{who} {}: {}",
                k.trim_start_matches("instance_").replace('_', " "),
                field(e, "reason").unwrap_or("")
            )),
            "instance_draining" => Some(format!("{who} was draining")),
            "instance_ejected" => Some(format!(
                "{who} was taken out of rotation: {}",
                field(e, "reason").unwrap_or("")
            )),
            "scaled" => Some(format!(
                "{who} scaled from {} to {}: {}",
                e.get("from").unwrap_or(&Value::Null),
                e.get("to").unwrap_or(&Value::Null),
                field(e, "reason").unwrap_or("")
            )),
            "config_reloaded" => Some("the config was reloaded".to_owned()),
            "reload_failed" => Some(format!(
                "a reload failed: {}",
                field(e, "reason").unwrap_or("")
            )),
            "autoheal_fired" => Some(format!(
                "AutoHeal fired on {who}: rule {}",
                field(e, "rule").unwrap_or("?")
            )),
            "gateway_resources_exhausted" => Some(format!(
                "the gateway was short of resources: {}",
                field(e, "reason").unwrap_or("")
            )),
            _ => None,
        };
        if let Some(line) = line {
            context.push(format!(
                "{} ({})",
                line.trim_end_matches(": "),
                when(t, req)
            ));
            used.push(e.clone());
        }
    }
    let start_s = (req.start / 1000) as u64;
    let end_s = (req.end / 1000) as u64;
    for i in incidents {
        let ours = req.route.as_deref() == Some(i.app.as_str());
        let overlaps = i.started_unix <= end_s && i.ended_unix.is_none_or(|e| e >= start_s);
        if ours && overlaps {
            context.push(format!(
                "incident {} was open ({}: {}), since {}",
                i.id, i.cause, i.title, i.started
            ));
        }
    }
    used.sort_by_key(at);
    used.dedup();
    Story {
        request_id: String::new(),
        headline,
        summary,
        attempts,
        cause,
        retry,
        after,
        context,
        advice,
        request: Value::Null,
        events: used,
        search: Search {
            file: String::new(),
            bytes_read: 0,
            took_ms: 0.0,
        },
    }
}

/// `web#3 (pid 4121) exited with code 1`.
fn exit_headline(exit: &Value) -> String {
    let instance = field(exit, "instance").unwrap_or("the instance");
    let pid = exit.get("pid").and_then(Value::as_u64).unwrap_or(0);
    let how = match (
        exit.get("code").and_then(Value::as_i64),
        field(exit, "signal_name"),
    ) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by {sig}"),
        (None, None) => match exit.get("signal").and_then(Value::as_i64) {
            Some(n) => format!("was killed by signal {n}"),
            None => "exited".to_owned(),
        },
    };
    format!("{instance} (pid {pid}) {how}")
}

/// The exit with the app's own line: ``web#3 (pid 4121) exited with code 1{also}:
/// `RuntimeError: ...` (from its stderr)``.
fn exit_words(exit: &Value, also: &str) -> String {
    let mut s = exit_headline(exit);
    s.push_str(also);
    match field(exit, "error_line") {
        Some(line) => s.push_str(&format!(": `{line}` (from its stderr)")),
        None => {
            if let Some(e) = field(exit, "error") {
                s.push_str(&format!(": {e}"));
            }
        }
    }
    s
}

/// (cause, retry, advice) for a gateway-made answer of type `error`.
fn cause_of(
    req: &Req,
    error: &str,
    details: &str,
    exit: Option<&Value>,
    lim: Option<&Limits>,
) -> (Option<String>, Option<String>, Vec<String>) {
    let route = req.route.clone().unwrap_or_default();
    let peer = req.upstream.clone().unwrap_or_else(|| route.clone());
    let mut advice = Vec::new();
    let sent_retry = || -> Option<String> {
        if req.tried.len() > 1 {
            return Some(format!(
                "retried: {} attempts ({}), none answered",
                req.tried.len(),
                req.tried
                    .iter()
                    .map(|(p, o)| format!("{p} {o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !is_idempotent(&req.method) {
            return Some(format!(
                "not retried because {} is not idempotent and the request had been sent",
                req.method
            ));
        }
        if details.contains("the only request in flight") {
            return Some(
                "not retried: it was the only request in flight when the instance died, so it is the likely cause of the crash (a request that crashes an instance is not sent to another one)".to_owned(),
            );
        }
        if details.contains("retried at most once") || details.contains("retry") {
            return Some(format!("not retried: {details}"));
        }
        None
    };
    let (cause, retry) = match error {
        "connection_terminated" => match exit {
            Some(e) => {
                advice.push(match field(e, "error_line") {
                    Some(line) => format!(
                        "fix the app's error `{line}` (the full output is in logs/apps/{route}/{}.log)",
                        field(e, "instance").unwrap_or(&peer)
                    ),
                    None => format!("find out why {} exited (logs/apps/{route}/)", field(e, "instance").unwrap_or(&peer)),
                });
                (Some(exit_words(e, " while handling it")), sent_retry())
            }
            None => {
                advice.push(format!(
                    "{peer} closed the connection without an answer and did not exit: check its keep-alive timeout (it must outlast the pool's idle time, timeouts.upstream_idle) and whether a worker died (logs/apps/{route}/)"
                ));
                (Some(format!("{peer} closed or reset the connection before the response header: {details}")), sent_retry())
            }
        },
        "connection_limit_reached" => {
            let full = details.contains("queue full");
            let (what, change) = match lim {
                Some(l) => {
                    let capacity = match l.instances {
                        Some(n) => format!("{n} instance{} × max_concurrency = {}", if n == 1 { "" } else { "s" }, l.max_concurrency),
                        None => format!("max_concurrency = {} per server", l.max_concurrency),
                    };
                    (
                        format!(
                            "every slot of {route} was busy ({capacity}) and {} (queue.size = {}, queue.timeout = {:?})",
                            if full { "the queue was full" } else { "the wait in the queue timed out" },
                            l.queue_size,
                            l.queue_timeout
                        ),
                        format!(
                            "raise [{}] queue.size (now {}) or queue.timeout (now {:?}) to absorb bursts, max_concurrency (now {}) if the app can serve more at once, or {} (instances, [app.autoscale])",
                            if l.kind == "app" { "app" } else { "upstream" },
                            l.queue_size,
                            l.queue_timeout,
                            l.max_concurrency,
                            if l.kind == "app" { "run more instances" } else { "add servers" }
                        ),
                    )
                }
                None => (
                    format!("every slot of {route} was busy and {}", if full { "its queue was full" } else { "the wait in its queue timed out" }),
                    "raise queue.size / queue.timeout, max_concurrency, or the number of instances (autoscale)".to_owned(),
                ),
            };
            advice.push(change);
            (
                Some(format!("{what}: {details}")),
                Some("not sent anywhere: it never left the queue".to_owned()),
            )
        }
        "http_response_timeout" => {
            let limit = lim.map_or("timeouts.response_header".to_owned(), |l| {
                format!("timeouts.response_header = {:?}", l.response_header_timeout)
            });
            advice.push(format!(
                "make {} faster, or raise {limit} if such a wait is expected",
                req.path
            ));
            (
                Some(format!(
                    "{peer} sent no response header within {limit}: {details}"
                )),
                Some("not retried: a slow upstream is not sent the request twice".to_owned()),
            )
        }
        "http_response_header_section_size" => {
            let limit = lim.map_or("limits.response_header".to_owned(), |l| {
                format!("limits.response_header = {} bytes", l.response_header_limit)
            });
            advice.push(format!("raise [gateway.limits] response_header (now {limit}), or make the app send fewer or smaller headers (cookies)"));
            (
                Some(format!(
                    "{peer}'s response header was larger than {limit}: {details}"
                )),
                Some("not retried: the response had begun".to_owned()),
            )
        }
        "connection_refused" => {
            advice.push(match exit {
                Some(_) => format!("the instance was down: see the exit above; `healgate status` shows {route}'s instances"),
                None => format!("check that {peer} listens; `healgate probe {route}` walks DNS, TCP, TLS and HTTP from the gateway"),
            });
            (
                Some(format!("nothing listened on {peer}'s port: {details}")),
                sent_retry(),
            )
        }
        "connection_timeout"
        | "dns_error"
        | "dns_timeout"
        | "tls_protocol_error"
        | "tls_certificate_error"
        | "destination_ip_unroutable"
        | "destination_ip_prohibited" => {
            advice.push(format!(
                "`healgate probe {route}` names the hop that fails and what to change"
            ));
            (
                Some(format!("{}: {details}", outcome_text(error))),
                sent_retry(),
            )
        }
        "destination_unavailable" => {
            advice.push(format!("`healgate status` shows why {route} has no instance in rotation; fix the exit it names"));
            (
                Some(format!(
                    "no instance or server of {route} could take it: {details}"
                )),
                Some("not sent anywhere: nothing was in rotation".to_owned()),
            )
        }
        "destination_not_found" => {
            advice.push(format!(
                "no route matches {}{}: add one (routes = [...]) or fix the link",
                req.host, req.path
            ));
            (
                Some(format!("no route matches {}{}", req.host, req.path)),
                None,
            )
        }
        "http_request_error" => (
            Some(format!("the client's request was refused: {details}")),
            Some("the client's fault: nothing was sent upstream".to_owned()),
        ),
        "" if req.status == 499 => (
            Some(format!(
                "the client closed the connection after {} ms, before the answer",
                req.duration_ms
            )),
            None,
        ),
        _ => (
            Some(if details.is_empty() {
                outcome_text(error)
            } else {
                details.to_owned()
            }),
            sent_retry(),
        ),
    };
    (cause, retry, advice)
}

/// The story as text, for a person.
pub fn render(s: &Story) -> String {
    let mut out = format!(
        "request {}\n  {}\n\n  {}\n",
        s.request_id, s.headline, s.summary
    );
    if !s.attempts.is_empty() {
        out.push_str("\nattempts:\n");
        for a in &s.attempts {
            out.push_str(&format!("  {}. {}\n", a.number, a.text));
        }
    }
    let section = |out: &mut String, title: &str, items: &[String]| {
        if !items.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for i in items {
                out.push_str(&format!("  - {i}\n"));
            }
        }
    };
    if let Some(c) = &s.cause {
        out.push_str(&format!("\ncause: {c}\n"));
    }
    if let Some(r) = &s.retry {
        out.push_str(&format!("retry: {r}\n"));
    }
    section(&mut out, "then", &s.after);
    section(&mut out, "meanwhile", &s.context);
    section(&mut out, "what to change", &s.advice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_read_back() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_321_264_123);
        let s = crate::observe::time::rfc3339_millis(t);
        assert_eq!(parse_ts(&s), Some(1_795_321_264_123));
        assert_eq!(parse_ts("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_ts("nonsense"), None);
    }

    fn crash_line() -> Value {
        json!({"ts":"2026-12-02T05:10:21.477Z","request_id":"r1","client":"127.0.0.1","method":"POST",
            "host":"h","path":"/crash","status":502,"bytes":1,"duration_ms":2.8,"route":"web",
            "upstream":"web#1","attempts":1,"source":"gateway","error":"connection_terminated",
            "details":"web#1 (pid 5840) exited with code 1 after 2.9s: RuntimeError: boom (pid 5840) while the request was in flight (the only request in flight: not retried)",
            "tried":[{"upstream":"web#1","outcome":"connection_terminated"}]})
    }

    fn crash_events() -> Vec<Value> {
        vec![
            json!({"app":"web","instance":"web#1","kind":"instance_started","pid":5840,"port":1,"ts":"2026-12-02T05:10:18.531Z"}),
            json!({"app":"web","code":1,"error_line":"RuntimeError: boom (pid 5840)","instance":"web#1","kind":"instance_exited","pid":5840,"reason":"x","signal":null,"ts":"2026-12-02T05:10:21.476Z"}),
            json!({"app":"web","instance":"web#1","kind":"instance_started","pid":5860,"port":2,"ts":"2026-12-02T05:10:21.984Z"}),
            json!({"app":"web","instance":"web#1","kind":"instance_ready","pid":5860,"port":2,"startup_ms":1,"ts":"2026-12-02T05:10:22.086Z"}),
        ]
    }

    #[test]
    fn a_crash_names_the_instance_the_exit_the_line_and_the_restart() {
        let req = Req::read(&crash_line());
        let s = tell(&req, &crash_events(), &[], None);
        assert_eq!(
            s.headline,
            "502 connection_terminated: web#1 (pid 5840) exited with code 1 while handling it"
        );
        let cause = s.cause.unwrap();
        assert!(cause.contains("`RuntimeError: boom (pid 5840)`"), "{cause}");
        assert_eq!(s.attempts[0].pid, Some(5840));
        assert!(s.retry.unwrap().contains("POST is not idempotent"));
        assert_eq!(
            s.after,
            ["web#1 was restarted 508 ms after the exit (pid 5860), ready 610 ms after the exit"]
        );
        assert!(s.advice[0].contains("fix the app's error"));
    }

    #[test]
    fn a_success_says_who_answered() {
        let line = json!({"ts":"2026-12-02T05:10:21.490Z","request_id":"r2","method":"GET","host":"h",
            "path":"/","status":200,"bytes":17,"duration_ms":3.1,"route":"web","upstream":"web#2",
            "attempts":1,"source":"upstream"});
        let s = tell(&Req::read(&line), &[], &[], None);
        assert_eq!(s.headline, "200 from web#2 in 3.1 ms");
        assert!(s.cause.is_none() && s.advice.is_empty());
    }
}
