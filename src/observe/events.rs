//! Lifecycle events: `logs/events.jsonl`, one JSON object per state change (SPEC §5).
//!
//! Every kind is one variant of [`Event`] with its fields, so one kind has the same
//! fields wherever it is emitted. [`Events::emit`] is the one call that records an
//! event: it writes the log line (`ts`, `kind`, `app`, then the kind's fields), logs
//! it to stderr, and keeps it in a ring for the admin API.

use super::jsonl::JsonlSender;
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// How many recent events are kept in memory.
const RING: usize = 1000;

/// The name of the gateway itself in events that concern no app.
pub const GATEWAY: &str = "healgate";

/// What an AutoHeal rule saw when it fired (or would have): the rule's index, its
/// trigger, the measured value and the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub rule: usize,
    /// e.g. `memory_above 64MiB`.
    pub trigger: String,
    pub measured: Value,
    pub threshold: Value,
}

/// One lifecycle event. `app` is an app or upstream name (`healgate` for the gateway
/// itself); `instance` an instance or server id (`web#2`); `pid` the process
/// concerned (0 when there is none).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The gateway runs (its own pid).
    GatewayStarted { app: &'static str, pid: u32 },
    /// The gateway stopped, on this signal.
    GatewayStopped { app: &'static str, signal: String },
    /// A reload found an invalid file; nothing changed.
    ConfigRejected {
        app: &'static str,
        problems: Vec<String>,
    },
    /// A reload applied: apps and upstreams by what happened to them, and whether
    /// any route was added, removed or changed.
    ConfigReloaded {
        app: &'static str,
        added: Vec<String>,
        changed: Vec<String>,
        removed: Vec<String>,
        unchanged: Vec<String>,
        routes_changed: bool,
        notes: Vec<String>,
    },
    /// A process was started for a slot.
    InstanceStarted {
        app: String,
        instance: String,
        pid: u32,
        port: u16,
    },
    /// It answers its health path (or port): it serves now.
    InstanceReady {
        app: String,
        instance: String,
        pid: u32,
        port: u16,
        startup_ms: u64,
    },
    /// A process exited by itself (or failed to start).
    InstanceExited {
        app: String,
        instance: String,
        pid: u32,
        uptime_s: f64,
        reason: String,
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal number and name, when a signal ended it.
        signal: Option<i32>,
        signal_name: Option<&'static str>,
        /// Why it could not be started or waited for.
        error: Option<String>,
        /// Its last stderr lines (up to 10), redacted.
        stderr: Vec<String>,
        /// The stderr line that explains the exit (an error, exception or panic;
        /// else the last meaningful line), redacted; also the end of `reason`.
        #[serde(skip_serializing_if = "Option::is_none")]
        error_line: Option<String>,
        /// A few stderr lines around `error_line`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        error_context: Vec<String>,
    },
    /// A slot restarts after its backoff.
    InstanceRestarting {
        app: String,
        instance: String,
        attempt: u32,
        delay_ms: u64,
    },
    /// Fast exits in a row: a crash loop.
    CrashLoop {
        app: String,
        instance: String,
        fast_exits: u32,
        reason: String,
    },
    /// A process leaves rotation; in-flight requests finish.
    InstanceDraining {
        app: String,
        instance: String,
        pid: u32,
        inflight: u32,
    },
    /// A process stopped on purpose has exited.
    InstanceStopped {
        app: String,
        instance: String,
        pid: u32,
        uptime_s: f64,
        /// How it ended (`exited with code 0`, `killed by signal 15 (SIGTERM)`).
        exit: String,
    },
    /// A recycle starts its replacement.
    InstanceRecycling {
        app: String,
        instance: String,
        pid: u32,
        reason: String,
    },
    /// A replacement serves; the old process (`old_pid`) drains.
    InstanceRecycled {
        app: String,
        instance: String,
        pid: u32,
        old_pid: u32,
        reason: String,
    },
    /// A replacement did not get ready; the old process keeps serving.
    RecycleFailed {
        app: String,
        instance: String,
        pid: u32,
        reason: String,
    },
    /// The number of instances changed.
    Scaled {
        app: String,
        from: u32,
        to: u32,
        reason: String,
    },
    /// A reload's new revision of an app did not get ready (or its roll could not
    /// start): the roll stopped, the instances it replaced were rolled back, and the
    /// app stays on `stays_on`. `instance` and `pid` name the new process that failed,
    /// `reason` its exit or timeout with the app's own line, `error_line` that line.
    ReloadFailed {
        app: String,
        instance: Option<String>,
        pid: u32,
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_line: Option<String>,
        /// The revision the reload asked for.
        revision: String,
        /// The revision the app's instances keep running.
        stays_on: String,
    },
    /// An AutoHeal rule fired; its actions follow.
    AutohealFired {
        app: String,
        instance: String,
        pid: u32,
        #[serde(flatten)]
        rule: Rule,
        actions: Vec<String>,
    },
    /// A rule held but its recycle was not allowed (`max_recycles`).
    AutohealSuppressed {
        app: String,
        instance: String,
        pid: u32,
        #[serde(flatten)]
        rule: Rule,
        reason: String,
    },
    /// One action of a firing ran.
    AutohealAction {
        app: String,
        instance: String,
        pid: u32,
        action: String,
        outcome: String,
        /// Where a `diagnose` capture was written.
        path: Option<String>,
    },
    /// A peer left rotation: passive ejection (`by` = `passive`, with the failures
    /// and the cool-down) or failing health checks (`by` = `health_check`).
    InstanceEjected {
        app: String,
        instance: String,
        reason: String,
        by: Ejection,
        consecutive_failures: Option<u32>,
        cooldown_ms: Option<u64>,
    },
    /// A peer is back in rotation.
    InstanceReadmitted {
        app: String,
        instance: String,
        reason: String,
    },
    /// An incident opened: the app cannot serve as it should (`cause`:
    /// `no_ready_instance`, `crash_loop`, `error_rate`).
    IncidentOpened {
        app: String,
        id: String,
        cause: String,
        title: String,
    },
    /// It cleared.
    IncidentClosed {
        app: String,
        id: String,
        cause: String,
        duration_s: u64,
        requests_affected: u64,
    },
    /// An `[[alert]]` rule's condition held for its `for` duration.
    AlertFired {
        app: String,
        alert: String,
        /// One readable sentence (the notification's `text`).
        text: String,
    },
    /// It no longer holds.
    AlertResolved {
        app: String,
        alert: String,
        text: String,
    },
    /// The gateway itself is short of file descriptors, local ports or memory (at
    /// most one every 10 s; `held_back` counts the ones not reported).
    GatewayResourcesExhausted {
        app: String,
        reason: String,
        held_back: u64,
        advice: &'static str,
    },
    /// The HTTPS listeners serve these certificates now (`trigger`: `start`,
    /// `changed` when a file changed on disk, `reload`).
    CertificatesLoaded {
        app: &'static str,
        trigger: &'static str,
        certificates: Vec<CertificateSummary>,
    },
    /// A certificate file changed (or a reload named one) that does not load: the
    /// certificates served before stay.
    CertificatesRejected {
        app: &'static str,
        trigger: &'static str,
        error: String,
    },
    /// ACME: a certificate stored by an earlier run is served again (no order).
    AcmeCertificateLoaded {
        app: &'static str,
        names: Vec<String>,
        not_after: String,
        serial: String,
        path: String,
    },
    /// ACME: an account was registered with the directory (its key stays in
    /// `data_dir/acme/`, never in a log).
    AcmeAccountCreated {
        app: &'static str,
        directory: String,
    },
    /// ACME: an order for these names was placed, and why.
    AcmeOrderStarted {
        app: &'static str,
        domains: Vec<String>,
        directory: String,
        reason: String,
    },
    /// ACME: a challenge is answered (`tls-alpn-01` or `http-01`) and the server
    /// told to validate it.
    AcmeChallenge {
        app: &'static str,
        challenge: &'static str,
        domain: String,
    },
    /// ACME: a certificate was issued, stored and is served now.
    AcmeCertificateObtained {
        app: &'static str,
        names: Vec<String>,
        not_after: String,
        serial: String,
        path: String,
    },
    /// ACME: when the served certificate will be renewed.
    AcmeRenewalScheduled {
        app: &'static str,
        names: Vec<String>,
        not_after: String,
        renew_at: String,
        in_s: u64,
    },
    /// ACME: a step failed; the whole order is tried again in `retry_in_s`.
    AcmeFailed {
        app: &'static str,
        step: &'static str,
        error: String,
        retry_in_s: u64,
    },
}

/// One certificate an HTTPS listener serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateSummary {
    /// Its file, or `acme`.
    pub source: String,
    pub names: Vec<String>,
    pub not_after: String,
    pub days_left: u64,
}

impl CertificateSummary {
    /// The summary of each loaded certificate.
    pub fn of(loaded: &[crate::tls::certs::Loaded]) -> Vec<CertificateSummary> {
        loaded
            .iter()
            .map(|l| CertificateSummary {
                source: l.source.clone(),
                names: l.names.clone(),
                not_after: super::time::rfc3339(l.not_after),
                days_left: l.remaining().as_secs() / 86_400,
            })
            .collect()
    }
}

/// What took a peer out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ejection {
    Passive,
    HealthCheck,
}

impl Event {
    /// The kind's name, as in the `kind` field (the one place to count events by kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::GatewayStarted { .. } => "gateway_started",
            Event::GatewayStopped { .. } => "gateway_stopped",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::InstanceStarted { .. } => "instance_started",
            Event::InstanceReady { .. } => "instance_ready",
            Event::InstanceExited { .. } => "instance_exited",
            Event::InstanceRestarting { .. } => "instance_restarting",
            Event::CrashLoop { .. } => "crash_loop",
            Event::InstanceDraining { .. } => "instance_draining",
            Event::InstanceStopped { .. } => "instance_stopped",
            Event::InstanceRecycling { .. } => "instance_recycling",
            Event::InstanceRecycled { .. } => "instance_recycled",
            Event::RecycleFailed { .. } => "recycle_failed",
            Event::Scaled { .. } => "scaled",
            Event::ReloadFailed { .. } => "reload_failed",
            Event::AutohealFired { .. } => "autoheal_fired",
            Event::AutohealSuppressed { .. } => "autoheal_suppressed",
            Event::AutohealAction { .. } => "autoheal_action",
            Event::InstanceEjected { .. } => "instance_ejected",
            Event::InstanceReadmitted { .. } => "instance_readmitted",
            Event::GatewayResourcesExhausted { .. } => "gateway_resources_exhausted",
            Event::IncidentOpened { .. } => "incident_opened",
            Event::IncidentClosed { .. } => "incident_closed",
            Event::AlertFired { .. } => "alert_fired",
            Event::AlertResolved { .. } => "alert_resolved",
            Event::CertificatesLoaded { .. } => "certificates_loaded",
            Event::CertificatesRejected { .. } => "certificates_rejected",
            Event::AcmeCertificateLoaded { .. } => "acme_certificate_loaded",
            Event::AcmeAccountCreated { .. } => "acme_account_created",
            Event::AcmeOrderStarted { .. } => "acme_order_started",
            Event::AcmeChallenge { .. } => "acme_challenge",
            Event::AcmeCertificateObtained { .. } => "acme_certificate_obtained",
            Event::AcmeRenewalScheduled { .. } => "acme_renewal_scheduled",
            Event::AcmeFailed { .. } => "acme_failed",
        }
    }
}

impl Event {
    /// How loud it is on stderr: trouble (a crash, a crash loop, a failed recycle or
    /// reload, the gateway short of resources) at WARN or ERROR, the rest at INFO.
    pub fn level(&self) -> tracing::Level {
        match self {
            Event::CrashLoop { .. } | Event::GatewayResourcesExhausted { .. } => {
                tracing::Level::ERROR
            }
            Event::InstanceExited { .. }
            | Event::RecycleFailed { .. }
            | Event::ReloadFailed { .. }
            | Event::ConfigRejected { .. }
            | Event::InstanceEjected { .. }
            | Event::AutohealSuppressed { .. }
            | Event::IncidentOpened { .. }
            | Event::AlertFired { .. }
            | Event::CertificatesRejected { .. }
            | Event::AcmeFailed { .. } => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        }
    }
}

/// An event as one plain stderr line: `event <kind> app=web instance=web#1 pid=123 ...`
/// (the fields in order, strings quoted only when they hold spaces, quotes or `=`;
/// lists and objects as compact JSON; newlines escaped). The timestamp is the log
/// line's own.
fn plain(value: &Value) -> String {
    let mut out = String::from("event");
    let Some(map) = value.as_object() else {
        return format!("event {value}");
    };
    if let Some(kind) = map.get("kind").and_then(Value::as_str) {
        out.push(' ');
        out.push_str(kind);
    }
    for (k, v) in map {
        if k == "ts" || k == "kind" || v.is_null() {
            continue;
        }
        let text = match v {
            Value::String(s)
                if !s.is_empty()
                    && !s.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') =>
            {
                s.clone()
            }
            // JSON quoting escapes newlines and quotes: still one line.
            other => other.to_string(),
        };
        out.push_str(&format!(" {k}={text}"));
    }
    out
}

/// An event as written: when, then the event.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    event: &'a Event,
}

/// The event feed.
#[derive(Clone, Default)]
pub struct Events {
    sink: Option<JsonlSender>,
    ring: Arc<Mutex<Ring>>,
    monitor: Arc<super::monitor::Monitor>,
}

#[derive(Default)]
struct Ring {
    seq: u64,
    items: VecDeque<(u64, Value)>,
}

impl Events {
    /// A feed writing to `sink` (None: memory and stderr only).
    pub fn new(sink: Option<JsonlSender>) -> Events {
        Events {
            sink,
            ring: Arc::default(),
            monitor: Arc::default(),
        }
    }

    /// What every event also feeds: metrics, history marks, incident timelines.
    pub fn monitor(&self) -> &Arc<super::monitor::Monitor> {
        &self.monitor
    }

    /// Record one event: the JSONL line, stderr, the ring.
    pub fn emit(&self, event: Event) {
        let value = to_json(&event, SystemTime::now());
        self.monitor.on_event(&event, &value);
        let line = value.to_string();
        let text = plain(&value);
        self.monitor.event_line(&value, &text);
        match event.level() {
            tracing::Level::ERROR => tracing::error!(target: "healgate::event", "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "healgate::event", "{text}"),
            _ => tracing::info!(target: "healgate::event", "{text}"),
        }
        if let Some(sink) = &self.sink {
            sink.send(line);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.seq += 1;
        let seq = ring.seq;
        ring.items.push_back((seq, value));
        if ring.items.len() > RING {
            ring.items.pop_front();
        }
    }

    /// Events with a sequence number above `since`, oldest first, with their numbers.
    pub fn since(&self, since: u64) -> Vec<(u64, Value)> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.items
            .iter()
            .filter(|(s, _)| *s > since)
            .cloned()
            .collect()
    }
}

/// The JSON object of one event at `at`.
fn to_json(event: &Event, at: SystemTime) -> Value {
    let line = Line {
        ts: super::time::rfc3339_millis(at),
        event,
    };
    serde_json::to_value(line).unwrap_or_else(|e| {
        serde_json::json!({"kind": event.kind(), "error": format!("unserializable event: {e}")})
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_on_stderr_is_one_plain_line() {
        let v = json!({"ts": "2026-01-01T00:00:00.000Z", "kind": "instance_exited",
            "app": "web", "instance": "web#1", "pid": 12, "reason": "exited with code 1",
            "stderr": ["Traceback", "  boom\n"], "error": null});
        let text = plain(&v);
        assert_eq!(
            text,
            r#"event instance_exited app=web instance=web#1 pid=12 reason="exited with code 1" stderr=["Traceback","  boom\n"]"#
        );
        assert!(!text.contains('\n') && !text.contains("ts="));
    }

    fn rule() -> Rule {
        Rule {
            rule: 0,
            trigger: "memory_above".into(),
            measured: json!(629145600u64),
            threshold: json!(536870912u64),
        }
    }

    /// One event of every kind, with the fields it must carry besides `ts`, `kind`
    /// and `app`.
    fn every_kind() -> Vec<(Event, &'static [&'static str])> {
        let (app, id) = ("web".to_owned(), "web#1".to_owned());
        vec![
            (
                Event::GatewayStarted {
                    app: GATEWAY,
                    pid: 1,
                },
                &["pid"],
            ),
            (
                Event::GatewayStopped {
                    app: GATEWAY,
                    signal: "SIGTERM".into(),
                },
                &["signal"],
            ),
            (
                Event::ConfigRejected {
                    app: GATEWAY,
                    problems: vec!["x".into()],
                },
                &["problems"],
            ),
            (
                Event::ConfigReloaded {
                    app: GATEWAY,
                    added: vec![],
                    changed: vec!["web".into()],
                    removed: vec![],
                    unchanged: vec![],
                    routes_changed: false,
                    notes: vec![],
                },
                &[
                    "added",
                    "changed",
                    "removed",
                    "unchanged",
                    "routes_changed",
                    "notes",
                ],
            ),
            (
                Event::InstanceStarted {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    port: 4000,
                },
                &["instance", "pid", "port"],
            ),
            (
                Event::InstanceReady {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    port: 4000,
                    startup_ms: 120,
                },
                &["instance", "pid", "port", "startup_ms"],
            ),
            (
                Event::InstanceExited {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    uptime_s: 1.5,
                    reason: "web#1 (pid 2) exited with code 1".into(),
                    code: Some(1),
                    signal: None,
                    signal_name: None,
                    error: None,
                    stderr: vec!["Traceback".into()],
                    error_line: None,
                    error_context: vec![],
                },
                &[
                    "instance",
                    "pid",
                    "uptime_s",
                    "reason",
                    "code",
                    "signal",
                    "signal_name",
                    "error",
                    "stderr",
                ],
            ),
            (
                Event::InstanceRestarting {
                    app: app.clone(),
                    instance: id.clone(),
                    attempt: 1,
                    delay_ms: 500,
                },
                &["instance", "attempt", "delay_ms"],
            ),
            (
                Event::CrashLoop {
                    app: app.clone(),
                    instance: id.clone(),
                    fast_exits: 3,
                    reason: "r".into(),
                },
                &["instance", "fast_exits", "reason"],
            ),
            (
                Event::InstanceDraining {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    inflight: 0,
                },
                &["instance", "pid", "inflight"],
            ),
            (
                Event::InstanceStopped {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    uptime_s: 3.0,
                    exit: "exited with code 0".into(),
                },
                &["instance", "pid", "uptime_s", "exit"],
            ),
            (
                Event::InstanceRecycling {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    reason: "r".into(),
                },
                &["instance", "pid", "reason"],
            ),
            (
                Event::InstanceRecycled {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 3,
                    old_pid: 2,
                    reason: "r".into(),
                },
                &["instance", "pid", "old_pid", "reason"],
            ),
            (
                Event::RecycleFailed {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 3,
                    reason: "r".into(),
                },
                &["instance", "pid", "reason"],
            ),
            (
                Event::Scaled {
                    app: app.clone(),
                    from: 2,
                    to: 3,
                    reason: "requested".into(),
                },
                &["from", "to", "reason"],
            ),
            (
                Event::ReloadFailed {
                    app: app.clone(),
                    instance: Some(id.clone()),
                    pid: 3,
                    reason: "web#2 (pid 3) exited with code 1 after 0.2s: RuntimeError: bad".into(),
                    error_line: Some("RuntimeError: bad".into()),
                    revision: "9f8e7d6c".into(),
                    stays_on: "1a2b3c4d".into(),
                },
                &[
                    "instance",
                    "pid",
                    "reason",
                    "error_line",
                    "revision",
                    "stays_on",
                ],
            ),
            (
                Event::AutohealFired {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    rule: rule(),
                    actions: vec!["recycle".into()],
                },
                &[
                    "instance",
                    "pid",
                    "rule",
                    "trigger",
                    "measured",
                    "threshold",
                    "actions",
                ],
            ),
            (
                Event::AutohealSuppressed {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    rule: rule(),
                    reason: "max_recycles".into(),
                },
                &[
                    "instance",
                    "pid",
                    "rule",
                    "trigger",
                    "measured",
                    "threshold",
                    "reason",
                ],
            ),
            (
                Event::AutohealAction {
                    app: app.clone(),
                    instance: id.clone(),
                    pid: 2,
                    action: "diagnose".into(),
                    outcome: "captured".into(),
                    path: Some("/tmp/x".into()),
                },
                &["instance", "pid", "action", "outcome", "path"],
            ),
            (
                Event::InstanceEjected {
                    app: app.clone(),
                    instance: id.clone(),
                    reason: "r".into(),
                    by: Ejection::Passive,
                    consecutive_failures: Some(5),
                    cooldown_ms: Some(10_000),
                },
                &[
                    "instance",
                    "reason",
                    "by",
                    "consecutive_failures",
                    "cooldown_ms",
                ],
            ),
            (
                Event::InstanceReadmitted {
                    app: app.clone(),
                    instance: id,
                    reason: "r".into(),
                },
                &["instance", "reason"],
            ),
            (
                Event::GatewayResourcesExhausted {
                    app: app.clone(),
                    reason: "r".into(),
                    held_back: 3,
                    advice: "raise it",
                },
                &["reason", "held_back", "advice"],
            ),
            (
                Event::IncidentOpened {
                    app: app.clone(),
                    id: "web-1".into(),
                    cause: "crash_loop".into(),
                    title: "t".into(),
                },
                &["id", "cause", "title"],
            ),
            (
                Event::IncidentClosed {
                    app: app.clone(),
                    id: "web-1".into(),
                    cause: "crash_loop".into(),
                    duration_s: 5,
                    requests_affected: 3,
                },
                &["id", "cause", "duration_s", "requests_affected"],
            ),
            (
                Event::AlertFired {
                    app: app.clone(),
                    alert: "a".into(),
                    text: "t".into(),
                },
                &["alert", "text"],
            ),
            (
                Event::AlertResolved {
                    app,
                    alert: "a".into(),
                    text: "t".into(),
                },
                &["alert", "text"],
            ),
            (
                Event::CertificatesLoaded {
                    app: GATEWAY,
                    trigger: "start",
                    certificates: Vec::new(),
                },
                &["trigger", "certificates"],
            ),
            (
                Event::CertificatesRejected {
                    app: GATEWAY,
                    trigger: "changed",
                    error: "e".into(),
                },
                &["trigger", "error"],
            ),
            (
                Event::AcmeCertificateLoaded {
                    app: GATEWAY,
                    names: vec!["example.com".into()],
                    not_after: "2027-01-01T00:00:00Z".into(),
                    serial: "0a1b".into(),
                    path: "data/acme/example.com/cert.pem".into(),
                },
                &["names", "not_after", "serial", "path"],
            ),
            (
                Event::AcmeAccountCreated {
                    app: GATEWAY,
                    directory: "https://acme.example/dir".into(),
                },
                &["directory"],
            ),
            (
                Event::AcmeOrderStarted {
                    app: GATEWAY,
                    domains: vec!["example.com".into()],
                    directory: "https://acme.example/dir".into(),
                    reason: "no certificate yet".into(),
                },
                &["domains", "directory", "reason"],
            ),
            (
                Event::AcmeChallenge {
                    app: GATEWAY,
                    challenge: "http-01",
                    domain: "example.com".into(),
                },
                &["challenge", "domain"],
            ),
            (
                Event::AcmeCertificateObtained {
                    app: GATEWAY,
                    names: vec!["example.com".into()],
                    not_after: "2027-01-01T00:00:00Z".into(),
                    serial: "0a1b".into(),
                    path: "data/acme/example.com/cert.pem".into(),
                },
                &["names", "not_after", "serial", "path"],
            ),
            (
                Event::AcmeRenewalScheduled {
                    app: GATEWAY,
                    names: vec!["example.com".into()],
                    not_after: "2027-01-01T00:00:00Z".into(),
                    renew_at: "2026-12-02T00:00:00Z".into(),
                    in_s: 3600,
                },
                &["names", "not_after", "renew_at", "in_s"],
            ),
            (
                Event::AcmeFailed {
                    app: GATEWAY,
                    step: "order",
                    error: "e".into(),
                    retry_in_s: 60,
                },
                &["step", "error", "retry_in_s"],
            ),
        ]
    }

    #[test]
    fn every_kind_carries_ts_kind_app_and_its_fields() {
        let kinds = every_kind();
        let mut seen = std::collections::HashSet::new();
        for (event, fields) in &kinds {
            let v = to_json(event, SystemTime::UNIX_EPOCH);
            let obj = v.as_object().expect("an object");
            assert_eq!(obj["ts"], "1970-01-01T00:00:00.000Z", "{v}");
            assert_eq!(obj["kind"], event.kind(), "{v}");
            assert!(obj["app"].is_string(), "{v}");
            let mut want: Vec<&str> = vec!["ts", "kind", "app"];
            want.extend(fields.iter());
            let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{}", event.kind());
            assert!(seen.insert(event.kind()), "{} twice", event.kind());
        }
        assert_eq!(seen.len(), 35, "a kind without a test case");
    }

    #[test]
    fn fields_keep_their_spec_names_and_values() {
        let v = to_json(
            &Event::AutohealFired {
                app: "web".into(),
                instance: "web#2".into(),
                pid: 42,
                rule: rule(),
                actions: vec!["diagnose".into(), "recycle".into()],
            },
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            v,
            json!({
                "ts": "1970-01-01T00:00:00.000Z", "kind": "autoheal_fired", "app": "web",
                "instance": "web#2", "pid": 42, "rule": 0, "trigger": "memory_above",
                "measured": 629145600u64, "threshold": 536870912u64,
                "actions": ["diagnose", "recycle"],
            })
        );
    }

    #[test]
    fn the_ring_keeps_order_and_numbers() {
        let events = Events::new(None);
        for pid in 1..=3 {
            events.emit(Event::GatewayStarted { app: GATEWAY, pid });
        }
        let newer = events.since(1);
        assert_eq!(newer.len(), 2);
        assert_eq!(newer[0].0, 2);
        assert_eq!(newer[1].1["pid"], 3);
    }
}
