//! Alerts: `[[alert]]` rules checked once a second against each app's last minute
//! (from the history) and its state (crash loop, open incident). A rule fires once its
//! condition has held for `for`, and resolves once when it stops holding: one
//! notification each, as an event (`alert_fired`, `alert_resolved`), a gauge, and a
//! delivery ([`deliver`]) to a webhook (JSON with a readable `text`, retried with
//! backoff) and/or a command, on tasks of their own: the proxy never waits for them.

use super::incidents::AppCondition;
use crate::config::{Alert, Condition};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Delivery attempts of one webhook notification (waiting 1, 2, 4, 8 s between).
const ATTEMPTS: u32 = 5;
/// One attempt's limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A firing or a resolution, to emit and deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub alert: String,
    pub app: String,
    pub firing: bool,
    /// One sentence a person reads (Slack/Mattermost show it as is).
    pub text: String,
    pub webhook: Option<http::Uri>,
    pub command: Option<Vec<String>>,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Default, Clone, Copy)]
struct RuleState {
    /// Since when the condition holds (unix seconds).
    since: Option<u64>,
    firing: bool,
}

/// The rules and where each (rule, app) stands.
#[derive(Default)]
pub struct Alerts {
    rules: Mutex<Vec<Alert>>,
    state: Mutex<BTreeMap<(String, String), RuleState>>,
}

impl Alerts {
    /// Use these rules from now on (start and reload). A rule that is gone or changed
    /// starts over (a firing one is not resolved: it no longer exists).
    pub fn set_rules(&self, rules: Vec<Alert>) {
        let mut old = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.retain(|(name, _), _| {
            rules.iter().any(|r| &r.name == name) && old.iter().any(|r| &r.name == name)
        });
        *old = rules;
    }

    /// One second: which rules fire or resolve now.
    pub fn tick(
        &self,
        now: u64,
        apps: &[AppCondition],
        open: &BTreeMap<String, u64>,
    ) -> Vec<Notice> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for rule in &rules {
            for a in apps
                .iter()
                .filter(|a| rule.app.as_ref().is_none_or(|n| *n == a.app))
            {
                let holds = holds(&rule.condition, a, open);
                let st = state.entry((rule.name.clone(), a.app.clone())).or_default();
                match (holds, st.firing) {
                    (Some(_), true) => {}
                    (Some(what), false) => {
                        let since = *st.since.get_or_insert(now);
                        if now.saturating_sub(since) >= rule.for_.as_secs() {
                            st.firing = true;
                            let held = if rule.for_.is_zero() {
                                String::new()
                            } else {
                                format!(" for {}s", now - since)
                            };
                            out.push(notice(
                                rule,
                                a,
                                true,
                                now,
                                format!("[healgate] FIRING {}: {}: {what}{held}", rule.name, a.app),
                            ));
                        }
                    }
                    (None, true) => {
                        *st = RuleState::default();
                        out.push(notice(
                            rule,
                            a,
                            false,
                            now,
                            format!(
                                "[healgate] RESOLVED {}: {}: {} no longer holds",
                                rule.name,
                                a.app,
                                describe(&rule.condition)
                            ),
                        ));
                    }
                    (None, false) => st.since = None,
                }
            }
        }
        out
    }
}

fn notice(rule: &Alert, a: &AppCondition, firing: bool, at: u64, text: String) -> Notice {
    Notice {
        alert: rule.name.clone(),
        app: a.app.clone(),
        firing,
        text,
        webhook: rule.webhook.clone(),
        command: rule.command.clone(),
        at,
    }
}

/// What the condition is, in words.
fn describe(c: &Condition) -> String {
    match c {
        Condition::ErrorRateAbove(r) => format!("error rate above {:.1}%", r * 100.0),
        Condition::P95Above(d) => format!("p95 above {d:?}"),
        Condition::MemoryAbove(b) => format!("memory above {} MiB", b >> 20),
        Condition::CrashLoop => "crash loop".into(),
        Condition::Incident => "open incident".into(),
    }
}

/// Whether `c` holds for `a` now, and the measurement that says so.
fn holds(c: &Condition, a: &AppCondition, open: &BTreeMap<String, u64>) -> Option<String> {
    let m = &a.minute;
    match c {
        Condition::ErrorRateAbove(limit) => (m.requests > 0 && m.server_error_rate() > *limit)
            .then(|| {
                format!(
                    "{:.1}% of requests failed in the last minute ({} of {}: {} made by the gateway, {} 5xx from the app; limit {:.1}%)",
                    m.server_error_rate() * 100.0,
                    m.errors + m.app_5xx,
                    m.requests,
                    m.errors,
                    m.app_5xx,
                    limit * 100.0
                )
            }),
        Condition::P95Above(limit) => {
            let p95 = m.p95_ms?;
            (f64::from(p95) > limit.as_secs_f64() * 1000.0)
                .then(|| format!("p95 response time {p95:.0} ms (limit {limit:?})"))
        }
        Condition::MemoryAbove(limit) => (m.memory > *limit).then(|| {
            format!(
                "instances use {} MiB of memory (limit {} MiB)",
                m.memory >> 20,
                limit >> 20
            )
        }),
        Condition::CrashLoop => a.crash_loop.then(|| "its instances are in a crash loop".into()),
        Condition::Incident => (open.get(&a.app).copied().unwrap_or(0) > 0)
            .then(|| "an incident is open".into()),
    }
}

/// The webhook body.
pub fn payload(n: &Notice) -> serde_json::Value {
    json!({
        "text": n.text,
        "alert": n.alert,
        "app": n.app,
        "state": if n.firing { "firing" } else { "resolved" },
        "at": super::time::rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(n.at)),
        "source": "healgate",
    })
}

/// Deliver `n` to its webhook (retried with backoff) and command; runs on its own
/// task. Each failure is logged with what failed.
pub async fn deliver(n: Notice) {
    if let Some(argv) = &n.command {
        let state = if n.firing { "firing" } else { "resolved" };
        let args: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{alert}", &n.alert)
                    .replace("{state}", state)
                    .replace("{app}", &n.app)
                    .replace("{text}", &n.text)
            })
            .collect();
        match tokio::process::Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .status()
            .await
        {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!("alert {}: command {:?} {s}", n.alert, args[0]),
            Err(e) => tracing::warn!("alert {}: cannot run {:?}: {e}", n.alert, args[0]),
        }
    }
    let Some(uri) = &n.webhook else { return };
    let body = payload(&n).to_string();
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(uri, body.clone())).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return,
            Ok(Ok(status)) => tracing::warn!(
                "alert {}: webhook {uri} answered {status} (attempt {attempt} of {ATTEMPTS})",
                n.alert
            ),
            Ok(Err(e)) => tracing::warn!(
                "alert {}: webhook {uri}: {e} (attempt {attempt} of {ATTEMPTS})",
                n.alert
            ),
            Err(_) => tracing::warn!(
                "alert {}: webhook {uri}: no answer within {ATTEMPT_TIMEOUT:?} (attempt {attempt} of {ATTEMPTS})",
                n.alert
            ),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::error!(
        "alert {}: webhook {uri} not delivered after {ATTEMPTS} attempts: {}",
        n.alert,
        n.text
    );
}

/// One JSON POST over HTTP/1.1; the response status.
async fn post(uri: &http::Uri, body: String) -> Result<u16, String> {
    let authority = uri.authority().ok_or("no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("healgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::history::Recent;

    fn app(requests: u64, errors: u64) -> AppCondition {
        AppCondition {
            app: "web".into(),
            target: 1,
            ready: 1,
            crash_loop: false,
            remote: false,
            minute: Recent {
                points: 60,
                requests,
                errors,
                app_5xx: 0,
                p95_ms: None,
                memory: 0,
            },
            second_errors: 0,
        }
    }

    #[test]
    fn fires_after_for_and_resolves_once() {
        let a = Alerts::default();
        a.set_rules(vec![Alert {
            name: "errors".into(),
            app: Some("web".into()),
            condition: Condition::ErrorRateAbove(0.05),
            for_: Duration::from_secs(2),
            webhook: None,
            command: None,
        }]);
        let none = BTreeMap::new();
        assert!(
            a.tick(10, &[app(100, 10)], &none).is_empty(),
            "not yet held 2 s"
        );
        assert!(a.tick(11, &[app(100, 10)], &none).is_empty());
        let fired = a.tick(12, &[app(100, 10)], &none);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].firing);
        assert!(
            fired[0].text.contains("10.0% of requests"),
            "{}",
            fired[0].text
        );
        assert!(a.tick(13, &[app(100, 10)], &none).is_empty(), "fires once");
        let resolved = a.tick(14, &[app(100, 1)], &none);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        assert!(
            a.tick(15, &[app(100, 1)], &none).is_empty(),
            "resolves once"
        );
        assert_eq!(payload(&resolved[0])["state"], "resolved");
    }
}
