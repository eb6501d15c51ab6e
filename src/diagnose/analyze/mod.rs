//! The analyzer: detectors read a [`Bundle`] (never the live gateway) and emit
//! findings with SPEC §5's ids; [`analyze`] ranks them and writes the headline.
//!
//! Each detector is a function `fn(&Bundle) -> Vec<Finding>` in the file of its
//! family: [`lifecycle`] (crash loops, crashes, signals, health flapping, suppressed
//! recycles), [`resources`] (memory growth, CPU), [`requests`] (slow endpoints,
//! response timeouts, queue saturation, the app's own 5xx), [`network`] (refused
//! connects, keep-alive races, DNS, TLS, oversized response headers).
//!
//! Ranking: a finding claims the failed requests (5xx users got) it explains; the
//! most claims first, then severity, then [`DETECTORS`] order (the more specific
//! detector first). The headline answers "why did users get 502/503/504?" with the
//! top finding and the share of the failed requests it explains; with no failed
//! request and nothing worth a warning it is `no_problem_found`.

pub mod lifecycle;
pub mod network;
pub mod requests;
pub mod resources;

use super::bundle::{parse_ts, Access, Bundle};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One finding (SPEC §5).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// One of SPEC §5's ids (`crash_loop`, ...), or one added by a detector here.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub app: Option<String>,
    pub instances: Vec<String>,
    /// Counts, time range, example request ids, log lines, and the detector's numbers.
    pub evidence: Map<String, Value>,
    pub mitigation: String,
    /// Indices into the bundle's access lines of the failed requests this explains.
    #[serde(skip)]
    pub claims: Vec<usize>,
    /// Where to mark it on the report's timeline (unix ms).
    #[serde(skip)]
    pub at_ms: Option<u64>,
}

impl Finding {
    pub fn new(id: &'static str, severity: Severity, title: String) -> Finding {
        Finding {
            id,
            severity,
            title,
            app: None,
            instances: Vec::new(),
            evidence: Map::new(),
            mitigation: String::new(),
            claims: Vec::new(),
            at_ms: None,
        }
    }

    pub fn app(mut self, app: &str) -> Finding {
        self.app = Some(app.to_owned());
        self
    }

    pub fn mitigation(mut self, text: impl Into<String>) -> Finding {
        self.mitigation = text.into();
        self
    }

    pub fn with(mut self, key: &str, v: impl Into<Value>) -> Finding {
        self.evidence.insert(key.to_owned(), v.into());
        self
    }

    /// Claim these failed requests: their count, time range and a few ids go into
    /// the evidence.
    pub fn claim(mut self, b: &Bundle, idx: Vec<usize>) -> Finding {
        let reqs: Vec<&Access> = idx.iter().map(|&i| &b.access[i]).collect();
        self.evidence.extend(requests_evidence(&reqs));
        if self.at_ms.is_none() {
            self.at_ms = reqs.first().map(|r| r.t);
        }
        self.claims = idx;
        self
    }
}

/// count, from, to, request_ids (up to 5), statuses.
pub fn requests_evidence(reqs: &[&Access]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("count".into(), json!(reqs.len()));
    if let (Some(f), Some(l)) = (
        reqs.iter().map(|r| r.t).min(),
        reqs.iter().map(|r| r.t).max(),
    ) {
        m.insert("from".into(), json!(ts(f)));
        m.insert("to".into(), json!(ts(l)));
    }
    m.insert(
        "request_ids".into(),
        json!(reqs
            .iter()
            .take(5)
            .map(|r| r.request_id.clone())
            .collect::<Vec<_>>()),
    );
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for r in reqs {
        *by_status.entry(r.status.to_string()).or_default() += 1;
    }
    if !by_status.is_empty() {
        m.insert("statuses".into(), json!(by_status));
    }
    m
}

/// RFC 3339 of unix ms.
pub fn ts(ms: u64) -> String {
    crate::observe::time::rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
}

/// Indices of failed requests matching `f`.
pub fn failed_where(b: &Bundle, f: impl Fn(&Access) -> bool) -> Vec<usize> {
    b.access
        .iter()
        .enumerate()
        .filter(|(_, a)| a.failed() && f(a))
        .map(|(i, _)| i)
        .collect()
}

/// Failed requests the gateway answered with one of `errors`.
pub fn failed_with(b: &Bundle, errors: &[&str]) -> Vec<usize> {
    failed_where(b, |a| {
        a.gateway_made && a.error.as_deref().is_some_and(|e| errors.contains(&e))
    })
}

/// The time of an event line.
pub fn event_ms(e: &Value) -> u64 {
    e["ts"].as_str().and_then(parse_ts).unwrap_or(0)
}

/// A detector.
pub type Detector = fn(&Bundle) -> Vec<Finding>;

/// Every detector, the more specific first (ties in ranking go to the earlier one).
pub const DETECTORS: &[(&str, Detector)] = &[
    ("crash_loop", lifecycle::crash_loop),
    ("killed_by_signal", lifecycle::killed_by_signal),
    ("instance_crashed", lifecycle::instance_crashed),
    (
        "response_header_too_large",
        network::response_header_too_large,
    ),
    ("dns_failure", network::dns_failure),
    ("tls_failure", network::tls_failure),
    ("connection_refused", network::connection_refused),
    ("queue_saturation", requests::queue_saturation),
    ("slow_endpoint", requests::slow_endpoint),
    ("response_timeout", requests::response_timeout),
    ("keepalive_race", network::keepalive_race),
    ("memory_growth", resources::memory_growth),
    ("high_cpu", resources::high_cpu),
    ("health_flapping", lifecycle::health_flapping),
    ("autoheal_suppressed", lifecycle::autoheal_suppressed),
    ("app_errors", requests::app_errors),
];

/// What the analyzer concluded.
#[derive(Debug, Clone)]
pub struct Report {
    pub created: String,
    pub app: Option<String>,
    pub from: String,
    pub to: String,
    pub headline: String,
    pub findings: Vec<Finding>,
    /// Requests and failed requests in the window.
    pub requests: usize,
    pub failed: usize,
}

impl Report {
    /// `report.json` (SPEC §5).
    pub fn to_json(&self) -> Value {
        json!({
            "version": 1,
            "created": self.created,
            "app": self.app,
            "window": {"from": self.from, "to": self.to},
            "headline": self.headline,
            "findings": self.findings,
        })
    }
}

/// Run every detector over `b` and rank.
pub fn analyze(b: &Bundle) -> Report {
    let mut findings: Vec<(usize, Finding)> = Vec::new();
    for (order, (_, detect)) in DETECTORS.iter().enumerate() {
        for f in detect(b) {
            findings.push((order, f));
        }
    }
    let failed: Vec<usize> = failed_where(b, |_| true);
    let total = failed.len();
    findings.sort_by(|(oa, a), (ob, b)| {
        b.claims
            .len()
            .cmp(&a.claims.len())
            .then(b.severity.cmp(&a.severity))
            .then(oa.cmp(ob))
    });
    let mut findings: Vec<Finding> = findings.into_iter().map(|(_, f)| f).collect();
    for f in &mut findings {
        let share = if total == 0 {
            0.0
        } else {
            f.claims.len() as f64 / total as f64
        };
        f.evidence.insert(
            "explains".into(),
            json!({"failed": f.claims.len(), "of": total, "share": (share * 1000.0).round() / 1000.0}),
        );
    }
    let headline = headline(b, &findings, total);
    if findings.is_empty() {
        let mut f = Finding::new(
            "no_problem_found",
            Severity::Info,
            format!(
                "No problem found: {} requests in the window, {} failed; no crash, restart, timeout or error pattern",
                b.access.len(),
                total
            ),
        )
        .with("requests", b.access.len())
        .with("failed", total)
        .with("events", b.events.len())
        .mitigation("Nothing to change. If users still report errors, widen the window (--window 1h) or diagnose while it happens.");
        if let Some(a) = b.manifest["app"].as_str() {
            f = f.app(a);
        }
        findings.push(f);
    }
    Report {
        created: b.manifest["created"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        app: b.manifest["app"].as_str().map(str::to_owned),
        from: b.manifest["window"]["from"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        to: b.manifest["window"]["to"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        headline,
        findings,
        requests: b.access.len(),
        failed: total,
    }
}

fn headline(b: &Bundle, findings: &[Finding], total: usize) -> String {
    let window = b.manifest["window"]["seconds"]
        .as_u64()
        .map_or(String::new(), |s| {
            if s % 60 == 0 {
                format!(" in the last {} min", s / 60)
            } else {
                format!(" in the last {s} s")
            }
        });
    if total == 0 {
        return match findings.first() {
            Some(f) if f.severity >= Severity::Warning => format!(
                "No request failed{window} ({} served), but: {}",
                b.access.len(),
                f.title
            ),
            _ => format!(
                "No problem found: {} requests{window}, none failed",
                b.access.len()
            ),
        };
    }
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for a in b.access.iter().filter(|a| a.failed()) {
        *by_status.entry(a.status).or_default() += 1;
    }
    let statuses = by_status
        .iter()
        .map(|(s, n)| format!("{n}× {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    match findings.first() {
        Some(f) if !f.claims.is_empty() => {
            let pct = f.claims.len() * 100 / total;
            let gateway_ok = if f.id == "app_errors" {
                " The gateway is not the problem: it passed the app's answers through."
            } else {
                ""
            };
            format!(
                "Users got {total} failed response{}{window} ({statuses}). Most likely cause: {} (explains {} of {total} failed request{}, {pct}%).{gateway_ok}",
                if total == 1 { "" } else { "s" },
                f.title,
                f.claims.len(),
                if total == 1 { "" } else { "s" }
            )
        }
        _ => format!(
            "Users got {total} failed responses{window} ({statuses}); no detector explains them: read access.jsonl and events.jsonl in the bundle"
        ),
    }
}

/// A short human size.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// A short human duration from ms.
pub fn secs(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// Columns of a series: `t` and one named column, as (unix s, value) pairs, values
/// present only.
pub fn column(series: &Value, name: &str) -> Vec<(u64, f64)> {
    let t = series["t"].as_array().cloned().unwrap_or_default();
    let v = series[name].as_array().cloned().unwrap_or_default();
    t.iter()
        .zip(v.iter())
        .filter_map(|(t, v)| Some((t.as_u64()?, v.as_f64()?)))
        .collect()
}

#[cfg(test)]
pub mod fixture {
    //! Bundles built in memory for detector tests.
    use super::*;

    /// A bundle with a 15-minute window ending at `T0 + 900 s`.
    pub const T0: u64 = 1_795_000_000_000;

    pub fn bundle() -> Bundle {
        Bundle {
            manifest: json!({"created": ts(T0 + 900_000), "app": null,
                "window": {"from": ts(T0), "to": ts(T0 + 900_000), "seconds": 900}}),
            facts: json!({"timeouts": {"response_header_ms": 1000, "connect_ms": 2000},
                "limits": {"response_header_bytes": 65536},
                "apps": [{"name": "web", "kind": "app", "instances": 1, "max_concurrency": 1,
                          "queue_size": 2, "queue_timeout_ms": 5000, "memory_limit_bytes": 67108864u64}]}),
            from_ms: T0,
            to_ms: T0 + 900_000,
            ..Bundle::default()
        }
    }

    /// An access line at `T0 + at_ms`.
    pub fn req(at_ms: u64, path: &str, status: u16, error: Option<&str>, ms: f64) -> Access {
        Access {
            t: T0 + at_ms,
            request_id: format!("{:032x}", at_ms),
            method: "GET".into(),
            path: path.into(),
            status,
            duration_ms: ms,
            app: "web".into(),
            upstream: Some("web#1".into()),
            attempts: 1,
            gateway_made: error.is_some(),
            error: error.map(str::to_owned),
            details: None,
            tried: Vec::new(),
        }
    }

    /// An event line at `T0 + at_ms`.
    pub fn event(at_ms: u64, mut v: Value) -> (u64, Value) {
        v["ts"] = json!(ts(T0 + at_ms));
        if v.get("app").is_none() {
            v["app"] = json!("web");
        }
        (T0 + at_ms, v)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    #[test]
    fn the_top_finding_explains_the_most_failures_with_its_share() {
        let mut b = bundle();
        for i in 0..9 {
            b.access.push(req(
                i * 100,
                "/slow",
                504,
                Some("http_response_timeout"),
                1000.0,
            ));
        }
        b.access.push(req(
            5000,
            "/",
            502,
            Some("http_response_header_section_size"),
            3.0,
        ));
        b.access.push(req(6000, "/", 200, None, 3.0));
        let r = analyze(&b);
        assert_eq!(r.findings[0].id, "slow_endpoint", "{:?}", r.findings);
        assert!(
            r.headline.contains("explains 9 of 10 failed requests, 90%"),
            "{}",
            r.headline
        );
        assert!(r
            .findings
            .iter()
            .any(|f| f.id == "response_header_too_large"));
        let j = r.to_json();
        assert_eq!(j["version"], 1);
        assert_eq!(j["findings"][0]["evidence"]["explains"]["failed"], 9);
        let keys: Vec<&String> = j["findings"][0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "app",
                "evidence",
                "id",
                "instances",
                "mitigation",
                "severity",
                "title"
            ]
        );
    }

    #[test]
    fn nothing_wrong_is_no_problem_found() {
        let mut b = bundle();
        b.access.push(req(0, "/", 200, None, 3.0));
        let r = analyze(&b);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].id, "no_problem_found");
        assert!(r.headline.starts_with("No problem found"), "{}", r.headline);
    }
}
