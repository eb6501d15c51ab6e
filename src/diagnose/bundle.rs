//! A diagnostic bundle on disk: what [`collect`] writes and [`Bundle::load`] reads back
//! for the analyzer.
//!
//! ```text
//! diagnostics/<timestamp>/
//!   bundle.json            created, app, window {from, to}, reason, what was collected
//!   facts.json             what the analyzer needs from the config (timeouts, limits,
//!                          each app's concurrency, queue, AutoHeal limits, upstreams)
//!   access.jsonl           the access-log lines of the window (of the app)
//!   events.jsonl           the event-log lines of the window (of the app, and the gateway's)
//!   history/<app>.json     History::series of the app, {"1s": .., "1m": ..}
//!   history/<app>/<instance>.json   the same per instance
//!   output/<app>/<instance>.log     each instance's output tail (redacted)
//!   processes/<time>-<instance>-<pid>/   capture.rs: status, limits, open files,
//!                          threads, native stacks (gdb / eu-stack), core with --dumps
//!   config.txt             the effective (checked) config, redacted
//!   healgate.toml          the config file, redacted (when there is one)
//!   environment.json       the gateway's environment and each app's env, redacted
//!   report.json, report.html
//! ```
//!
//! Redaction: every value under a name that names a secret (environment, app `env`,
//! the config file's keys, `admin.token`) is known ([`Secrets`]) and replaced in every
//! file of the bundle by a last sweep; free text (output, stacks, command lines, the
//! config) also goes through [`redact`](crate::observe::redact::redact)'s patterns.
//! The one exception is a core (`--dumps`): a process's memory cannot be redacted; it
//! is written only when asked for.

use super::{Progress, Request};
use crate::config::Config;
use crate::observe::history::History;
use crate::observe::redact::{self, Secrets, MARK};
use crate::supervisor::control::AppStatus;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most access-log lines kept (the newest of the window).
const MAX_ACCESS: usize = 200_000;
/// Most event lines kept.
const MAX_EVENTS: usize = 50_000;
/// Output tail per instance.
const TAIL_BYTES: u64 = 64 * 1024;
const TAIL_LINES: usize = 400;
/// How long `gcore` may take.
const CORE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a bundle is collected from.
pub struct Sources<'a> {
    pub data_dir: &'a Path,
    pub config: &'a Config,
    pub config_path: Option<&'a Path>,
    pub history: &'a History,
    /// The supervisor's view now (instances and their pids).
    pub apps: Vec<AppStatus>,
}

/// Unix milliseconds of an RFC 3339 UTC time as the gateway writes it
/// (`2026-11-22T04:21:04.123Z` or without the fraction).
pub fn parse_ts(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = if b.get(19) == Some(&b'.') {
        let frac: String = ts[20..].chars().take_while(char::is_ascii_digit).collect();
        let mut f: String = frac.chars().take(3).collect();
        while f.len() < 3 {
            f.push('0');
        }
        f.parse::<i64>().ok()?
    } else {
        0
    };
    // Howard Hinnant's days-from-civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms;
    u64::try_from(t).ok()
}

fn rfc3339_of_ms(ms: u64) -> String {
    crate::observe::time::rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every value the config and the environment hold under a secret name.
pub fn secrets_of(config: &Config, config_text: Option<&str>) -> Secrets {
    let mut s = Secrets::default();
    for (k, v) in std::env::vars() {
        s.add_named(&k, &v);
    }
    if let Some(t) = &config.admin.token {
        s.add(t);
    }
    for a in &config.apps {
        for (k, v) in &a.env {
            s.add_named(k, v);
        }
        for arg in &a.command {
            s.add_named("", arg);
        }
    }
    for a in &config.alerts {
        if let Some(w) = &a.webhook {
            s.add_named("webhook", &w.to_string());
            s.add_named("", &w.to_string());
        }
    }
    if let Some(text) = config_text {
        if let Ok(doc) = text.parse::<toml_edit::DocumentMut>() {
            walk_toml(doc.as_item(), "", &mut s);
        }
    }
    s
}

fn walk_toml(item: &toml_edit::Item, name: &str, s: &mut Secrets) {
    use toml_edit::Item;
    match item {
        Item::Value(v) => walk_value(v, name, s),
        Item::Table(t) => {
            for (k, i) in t.iter() {
                walk_toml(i, k, s);
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                for (k, i) in t.iter() {
                    walk_toml(i, k, s);
                }
            }
        }
        Item::None => {}
    }
}

fn walk_value(v: &toml_edit::Value, name: &str, s: &mut Secrets) {
    use toml_edit::Value as V;
    match v {
        V::String(x) => s.add_named(name, x.value()),
        V::Array(a) => {
            for x in a.iter() {
                walk_value(x, name, s);
            }
        }
        V::InlineTable(t) => {
            for (k, x) in t.iter() {
                walk_value(x, k, s);
            }
        }
        _ => {}
    }
}

/// Redact every string of a JSON value (its keys stay); `request_id`s and times keep
/// their long hex runs (only known secrets are replaced in them).
fn redact_json(v: &mut Value, secrets: &Secrets, key: &str) {
    match v {
        Value::String(s) => {
            let keep_hex = matches!(key, "request_id" | "ts" | "request_ids" | "id");
            *s = if keep_hex {
                secrets.known(s)
            } else {
                secrets.redact(s)
            };
        }
        Value::Array(a) => {
            for x in a {
                redact_json(x, secrets, key);
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                redact_json(x, secrets, k);
            }
        }
        _ => {}
    }
}

/// The lines of a JSONL log (the rotated `.1` first, then the current file) whose
/// `ts` is in `[from, to]` and that `keep` accepts, the newest `max`, redacted.
fn slice_jsonl(
    path: &Path,
    from: u64,
    to: u64,
    max: usize,
    secrets: &Secrets,
    keep: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let mut out = std::collections::VecDeque::new();
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    for p in [rotated.as_path(), path] {
        let Ok(f) = std::fs::File::open(p) else {
            continue;
        };
        for line in io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some(t) = v.get("ts").and_then(Value::as_str).and_then(parse_ts) else {
                continue;
            };
            if t < from || t > to || !keep(&v) {
                continue;
            }
            redact_json(&mut v, secrets, "");
            out.push_back(v.to_string());
            if out.len() > max {
                out.pop_front();
            }
        }
    }
    out.into()
}

/// The last [`TAIL_LINES`] lines (at most [`TAIL_BYTES`]) of a file.
fn tail(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(io::SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial line
    }
    let from = lines.len().saturating_sub(TAIL_LINES);
    Ok(lines[from..].join("\n") + "\n")
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text)
}

fn file_name(id: &str) -> String {
    id.replace(['#', '/'], "-")
}

/// What the analyzer needs from the config, as JSON.
fn facts(config: &Config) -> Value {
    let ms = |d: Duration| d.as_millis() as u64;
    let apps: Vec<Value> = config
        .apps
        .iter()
        .map(|a| {
            use crate::config::Trigger;
            let rules = a.autoheal.as_ref().map(|h| h.rules.as_slice()).unwrap_or(&[]);
            let memory_limit = rules
                .iter()
                .filter_map(|r| match r.when {
                    Trigger::MemoryAbove(b) => Some(b),
                    _ => None,
                })
                .min();
            json!({
                "name": a.name,
                "kind": "app",
                "instances": a.instances,
                "max_concurrency": a.max_concurrency,
                "queue_size": a.queue.size,
                "queue_timeout_ms": ms(a.queue.timeout),
                "memory_limit_bytes": memory_limit,
                "min_uptime_ms": a.autoheal.as_ref().map(|h| ms(h.min_uptime)),
                "max_recycles": a.autoheal.as_ref().map(|h| json!({"count": h.max_recycles.0, "within_s": h.max_recycles.1.as_secs()})),
                "health_path": a.health.path,
                "health_interval_ms": ms(a.health.interval),
                "autoscale_max": a.autoscale.as_ref().map(|s| s.max),
            })
        })
        .chain(config.upstreams.iter().map(|u| {
            json!({
                "name": u.name,
                "kind": "upstream",
                "servers": u.servers.iter().map(|s| format!("{}{}:{}", if s.tls {"https://"} else {""}, s.host, s.port)).collect::<Vec<_>>(),
                "max_concurrency": u.max_concurrency,
                "instances": u.servers.len(),
            })
        }))
        .collect();
    let t = &config.gateway.timeouts;
    json!({
        "timeouts": {
            "connect_ms": ms(t.connect),
            "response_header_ms": ms(t.response_header),
            "dns_ms": ms(t.dns),
        },
        "limits": {"response_header_bytes": config.gateway.limits.response_header},
        "apps": apps,
    })
}

/// Collect a bundle into `dir` (created), telling each step to `progress`. `first`:
/// an instance captured before anything else.
pub fn collect(
    src: &Sources<'_>,
    req: &Request,
    dir: &Path,
    first: Option<(String, u32)>,
    progress: &Progress,
) -> io::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let to = now_ms();
    let from = to.saturating_sub(req.window.as_millis() as u64);
    let config_text = src
        .config_path
        .and_then(|p| std::fs::read_to_string(p).ok());
    let secrets = secrets_of(src.config, config_text.as_deref());
    let app = req.app.as_deref();
    let procs_dir = dir.join("processes");
    let mut captured: Vec<Value> = Vec::new();
    let mut capture = |id: &str, pid: u32, progress: &Progress| {
        progress.step(format!(
            "capturing {id} (pid {pid}): status, limits, open files, threads, stacks"
        ));
        match super::capture::capture_process(&procs_dir, id, pid, &req.reason) {
            Ok(p) => {
                let mut core = None;
                if req.dumps {
                    progress.step(format!("writing a core of {id} (pid {pid}) with gcore"));
                    core = gcore(&p, pid);
                }
                captured.push(json!({"instance": id, "pid": pid, "dir": p.strip_prefix(dir).unwrap_or(&p).display().to_string(), "core": core}));
            }
            Err(e) => captured.push(json!({"instance": id, "pid": pid, "error": e.to_string()})),
        }
    };
    if let Some((id, pid)) = &first {
        capture(id, *pid, progress);
    }

    progress.step("reading the access log");
    let logs = src.data_dir.join("logs");
    let of_app = |v: &Value| -> bool {
        let Some(a) = app else { return true };
        let route = v.get("route").and_then(Value::as_str);
        let up = v
            .get("upstream")
            .and_then(Value::as_str)
            .map(|u| u.split('#').next().unwrap_or(u));
        route == Some(a) || up == Some(a)
    };
    let access = slice_jsonl(
        &logs.join("access.jsonl"),
        from,
        to,
        MAX_ACCESS,
        &secrets,
        of_app,
    );
    write(&dir.join("access.jsonl"), &lines(&access))?;

    progress.step("reading the event log");
    let events = slice_jsonl(
        &logs.join("events.jsonl"),
        from,
        to,
        MAX_EVENTS,
        &secrets,
        |v| {
            let Some(a) = app else { return true };
            let e = v.get("app").and_then(Value::as_str);
            e == Some(a) || e == Some(crate::observe::events::GATEWAY)
        },
    );
    write(&dir.join("events.jsonl"), &lines(&events))?;

    progress.step("reading the metric history");
    let names: Vec<String> = src
        .config
        .apps
        .iter()
        .map(|a| a.name.clone())
        .chain(src.config.upstreams.iter().map(|u| u.name.clone()))
        .filter(|n| app.is_none_or(|a| a == n))
        .collect();
    for name in &names {
        let seconds = src.history.series(name, None, false);
        let minutes = src.history.series(name, None, true);
        let instances: Vec<String> = seconds
            .as_ref()
            .and_then(|s| s.get("instances"))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        write(
            &dir.join("history")
                .join(format!("{}.json", file_name(name))),
            &json!({"1s": seconds, "1m": minutes}).to_string(),
        )?;
        for id in instances {
            let s = src.history.series(name, Some(&id), false);
            let m = src.history.series(name, Some(&id), true);
            write(
                &dir.join("history")
                    .join(file_name(name))
                    .join(format!("{}.json", file_name(&id))),
                &json!({"1s": s, "1m": m}).to_string(),
            )?;
        }
    }

    progress.step("reading each instance's output");
    for a in src
        .config
        .apps
        .iter()
        .filter(|a| app.is_none_or(|n| n == a.name))
    {
        let d = logs.join("apps").join(&a.name);
        let Ok(files) = std::fs::read_dir(&d) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            if let Ok(text) = tail(&p) {
                let name = f.file_name().to_string_lossy().replace('#', "-");
                write(
                    &dir.join("output").join(&a.name).join(name),
                    &secrets.redact(&text),
                )?;
            }
        }
    }

    for a in src.apps.iter().filter(|a| app.is_none_or(|n| n == a.name)) {
        for i in &a.instances {
            let Some(pid) = i.pid else { continue };
            if first.as_ref().is_some_and(|(id, _)| *id == i.id) {
                continue;
            }
            capture(&i.id, pid, progress);
        }
    }

    progress.step("writing the effective config and the environment");
    write(
        &dir.join("config.txt"),
        &secrets.redact(&format!("{:#?}\n", src.config)),
    )?;
    if let Some(text) = &config_text {
        write(&dir.join("healgate.toml"), &secrets.redact(text))?;
    }
    write(
        &dir.join("facts.json"),
        &serde_json::to_string_pretty(&facts(src.config)).unwrap_or_default(),
    )?;
    let env_of = |pairs: &mut dyn Iterator<Item = (String, String)>| -> Value {
        let mut m = Map::new();
        for (k, v) in pairs {
            let shown = if redact::names_secret(&k) {
                MARK.to_owned()
            } else {
                secrets.redact(&v)
            };
            m.insert(k, Value::String(shown));
        }
        Value::Object(m)
    };
    let apps_env: BTreeMap<String, Value> = src
        .config
        .apps
        .iter()
        .map(|a| (a.name.clone(), env_of(&mut a.env.iter().cloned())))
        .collect();
    let environment = json!({
        "gateway": env_of(&mut std::env::vars()),
        "apps": apps_env,
    });
    write(
        &dir.join("environment.json"),
        &serde_json::to_string_pretty(&environment).unwrap_or_default(),
    )?;

    progress.step("redacting the bundle");
    sweep(dir, &secrets)?;
    let manifest = json!({
        "version": 1,
        "created": rfc3339_of_ms(to),
        "app": app,
        "window": {"from": rfc3339_of_ms(from), "to": rfc3339_of_ms(to), "seconds": req.window.as_secs()},
        "reason": req.reason,
        "dumps": req.dumps,
        "gateway": {"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")},
        "counts": {"access": access.len(), "events": events.len(), "apps": names},
        "processes": captured,
        "collect_ms": started.elapsed().as_millis() as u64,
        "secrets_redacted": secrets.len(),
    });
    write(
        &dir.join("bundle.json"),
        &serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )
}

fn lines(v: &[String]) -> String {
    let mut s = v.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Replace every known secret in every file under `dir` (cores excepted).
fn sweep(dir: &Path, secrets: &Secrets) -> io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            sweep(&p, secrets)?;
            continue;
        }
        let core = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("core"));
        if core {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        // The logs were redacted field by field (their request ids are long hex
        // runs, which the patterns would take); the history is numbers.
        let structured = p.extension().and_then(|e| e.to_str()) == Some("jsonl")
            || p.components().any(|c| c.as_os_str() == "history");
        let clean = if structured {
            secrets.known(&text)
        } else {
            secrets.redact(&text)
        };
        if clean != text {
            std::fs::write(&p, clean)?;
        }
    }
    Ok(())
}

/// `gcore -o <dir>/core <pid>` when installed; the core's file name.
fn gcore(dir: &Path, pid: u32) -> Option<String> {
    let mut child = std::process::Command::new("gcore")
        .arg("-o")
        .arg(dir.join("core"))
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + CORE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let name = format!("core.{pid}");
    dir.join(&name).exists().then_some(name)
}

/// A bundle read back: what the analyzer sees.
#[derive(Debug, Default, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    /// `bundle.json`.
    pub manifest: Value,
    /// `facts.json`.
    pub facts: Value,
    pub from_ms: u64,
    pub to_ms: u64,
    pub access: Vec<Access>,
    /// Event lines, oldest first, with their time.
    pub events: Vec<(u64, Value)>,
    /// App name → its `{"1s": series, "1m": series}`.
    pub history: BTreeMap<String, Value>,
    /// Instance id → its `{"1s": .., "1m": ..}`.
    pub instance_history: BTreeMap<String, Value>,
    /// Instance id (`web#1`) → its output tail lines.
    pub output: BTreeMap<String, Vec<String>>,
}

/// One access-log line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    pub t: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub app: String,
    pub upstream: Option<String>,
    pub attempts: u32,
    /// `gateway` or `upstream`.
    pub gateway_made: bool,
    pub error: Option<String>,
    pub details: Option<String>,
    /// Outcomes of each attempt when retried.
    pub tried: Vec<String>,
}

impl Access {
    /// Parse one access line.
    pub fn from_json(v: &Value) -> Option<Access> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let upstream = s("upstream");
        let app = s("route")
            .or_else(|| {
                upstream
                    .as_ref()
                    .map(|u| u.split('#').next().unwrap_or(u).to_owned())
            })
            .unwrap_or_default();
        Some(Access {
            t: parse_ts(v.get("ts")?.as_str()?)?,
            request_id: s("request_id").unwrap_or_default(),
            method: s("method").unwrap_or_default(),
            path: s("path").unwrap_or_default(),
            status: v.get("status")?.as_u64()? as u16,
            duration_ms: v.get("duration_ms").and_then(Value::as_f64).unwrap_or(0.0),
            app,
            upstream,
            attempts: v.get("attempts").and_then(Value::as_u64).unwrap_or(1) as u32,
            gateway_made: v.get("source").and_then(Value::as_str) == Some("gateway"),
            error: s("error"),
            details: s("details"),
            tried: v
                .get("tried")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.get("outcome").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// A failure a user saw: any 5xx (the gateway's or the app's).
    pub fn failed(&self) -> bool {
        self.status >= 500
    }

    /// The path without its query.
    pub fn route_path(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }
}

impl Bundle {
    /// Read the bundle in `dir`.
    pub fn load(dir: &Path) -> io::Result<Bundle> {
        let read_json = |p: PathBuf| -> Value {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let manifest = read_json(dir.join("bundle.json"));
        if manifest.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} has no bundle.json: not a diagnostic bundle",
                    dir.display()
                ),
            ));
        }
        let ts = |k: &str| {
            manifest["window"][k]
                .as_str()
                .and_then(parse_ts)
                .unwrap_or(0)
        };
        let jsonl = |name: &str| -> Vec<Value> {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        let access = jsonl("access.jsonl")
            .iter()
            .filter_map(Access::from_json)
            .collect();
        let events = jsonl("events.jsonl")
            .into_iter()
            .filter_map(|v| Some((parse_ts(v.get("ts")?.as_str()?)?, v)))
            .collect();
        let mut history = BTreeMap::new();
        let mut instance_history = BTreeMap::new();
        if let Ok(d) = std::fs::read_dir(dir.join("history")) {
            for e in d.flatten() {
                let p = e.path();
                if p.is_dir() {
                    for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                        let v = read_json(f.path());
                        if let Some(id) = v["1s"]["instance"].as_str() {
                            instance_history.insert(id.to_owned(), v.clone());
                        }
                    }
                } else {
                    let v = read_json(p);
                    if let Some(app) = v["1s"]["app"].as_str().or(v["1m"]["app"].as_str()) {
                        history.insert(app.to_owned(), v.clone());
                    }
                }
            }
        }
        let mut output = BTreeMap::new();
        if let Ok(d) = std::fs::read_dir(dir.join("output")) {
            for a in d.flatten() {
                for f in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
                    let name = f
                        .file_name()
                        .to_string_lossy()
                        .trim_end_matches(".log")
                        .to_owned();
                    // `web-1` on disk is instance `web#1`.
                    let id = match name.rsplit_once('-') {
                        Some((a, n)) if n.bytes().all(|c| c.is_ascii_digit()) => format!("{a}#{n}"),
                        _ => name,
                    };
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    output.insert(id, text.lines().map(str::to_owned).collect());
                }
            }
        }
        Ok(Bundle {
            dir: dir.to_owned(),
            facts: read_json(dir.join("facts.json")),
            from_ms: ts("from"),
            to_ms: ts("to"),
            manifest,
            access,
            events,
            history,
            instance_history,
            output,
        })
    }

    /// The facts of app (or upstream) `name`.
    pub fn app_facts(&self, name: &str) -> Option<&Value> {
        self.facts["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
    }

    /// Events of one kind, with their time.
    pub fn events_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a (u64, Value)> + 'a {
        self.events.iter().filter(move |(_, e)| e["kind"] == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = 1_795_000_123_456u64;
        assert_eq!(parse_ts(&rfc3339_of_ms(t)), Some(t));
        assert_eq!(parse_ts("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_ts("garbage"), None);
    }

    #[test]
    fn json_strings_are_redacted_but_request_ids_kept() {
        let mut s = Secrets::default();
        s.add("hunter2hunter2");
        let id = "0123456789abcdef0123456789abcdef";
        let mut v = json!({"request_id": id, "path": "/x?token=abc", "details": "pw hunter2hunter2", "stderr": ["api_key=zzz"]});
        redact_json(&mut v, &s, "");
        assert_eq!(v["request_id"], id);
        assert_eq!(v["path"], "/x?token=[redacted]");
        assert_eq!(v["details"], "pw [redacted]");
        assert_eq!(v["stderr"][0], "api_key=[redacted]");
    }

    #[test]
    fn toml_secrets_are_known() {
        let cfg = crate::config::demo(
            "/tmp/x".into(),
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            Path::new("/bin/true"),
        );
        let text = "[admin]\ntoken = \"tok-abcdef\"\n[[app]]\nenv = { DB_PASSWORD = \"pw-secret-1\", X = \"plain\" }\n[[alert]]\nwebhook = \"http://u:hookpass@h/x\"\n";
        let s = secrets_of(&cfg, Some(text));
        let out = s.known("tok-abcdef pw-secret-1 hookpass plain");
        assert_eq!(out, "[redacted] [redacted] [redacted] plain");
    }
}
