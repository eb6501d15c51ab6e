//! Detectors of the instances' lifecycle: crash loops, single crashes, deaths by a
//! signal (OOM suspicion), health-check flapping, AutoHeal recycles held back.

use super::{event_ms, failed_where, mib, resources, Finding, Severity};
use crate::diagnose::bundle::Bundle;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Errors a dying or restarting instance gives its requests.
const DEATH_ERRORS: [&str; 4] = [
    "connection_terminated",
    "destination_unavailable",
    "connection_refused",
    "http_response_incomplete",
];

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The app's own line for an exit: `error_line`, else the end of `reason`.
fn error_line(e: &Value) -> String {
    e["error_line"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| s(e, "reason").to_owned())
}

/// `crash_loop`: instances that exit fast again and again; the failed requests of
/// the app from its first exit on that a dying or absent instance explains.
pub fn crash_loop(b: &Bundle) -> Vec<Finding> {
    let mut by_app: BTreeMap<String, Vec<&(u64, Value)>> = BTreeMap::new();
    for e in b.events_of("crash_loop") {
        by_app.entry(s(&e.1, "app").to_owned()).or_default().push(e);
    }
    let mut out = Vec::new();
    for (app, loops) in by_app {
        let exits: Vec<&(u64, Value)> = b
            .events_of("instance_exited")
            .filter(|(_, e)| e["app"] == app.as_str())
            .collect();
        let first = exits.first().map_or(loops[0].0, |e| e.0);
        let last = exits.last().map(|e| &e.1);
        let line = last
            .map(error_line)
            .unwrap_or_else(|| s(&loops[0].1, "reason").to_owned());
        let mut instances: Vec<String> = exits
            .iter()
            .map(|e| s(&e.1, "instance").to_owned())
            .collect();
        instances.sort();
        instances.dedup();
        let claims = failed_where(b, |a| {
            a.app == app
                && a.t + 1000 >= first
                && a.gateway_made
                && a.error
                    .as_deref()
                    .is_some_and(|e| DEATH_ERRORS.contains(&e))
        });
        let codes: Vec<Value> = exits
            .iter()
            .map(|e| json!({"ts": e.1["ts"], "instance": e.1["instance"], "code": e.1["code"], "signal": e.1["signal_name"], "uptime_s": e.1["uptime_s"]}))
            .collect();
        let mut lines: Vec<String> = last
            .and_then(|e| e["error_context"].as_array().or(e["stderr"].as_array()))
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if lines.is_empty() {
            lines.push(line.clone());
        }
        let mut f = Finding::new(
            "crash_loop",
            Severity::Critical,
            format!(
                "{app} is in a crash loop: {} exits, the app says `{line}`",
                exits.len()
            ),
        )
        .app(&app)
        .with("exits", codes)
        .with("error_line", line.clone())
        .with("lines", lines)
        .mitigation(format!(
            "The app exits by itself: fix what `{line}` says (its output is in output/{app}/). \
             healgate restarts it with a growing backoff; while it loops, requests get 503 or 502. \
             Run the command by hand with the same env to see it fail."
        ))
        .claim(b, claims);
        f.instances = instances;
        f.at_ms = Some(first);
        out.push(f);
    }
    out
}

/// `instance_crashed` (added to SPEC's list by this detector): an instance exited
/// with a code, not in a crash loop; the requests it took with it.
pub fn instance_crashed(b: &Bundle) -> Vec<Finding> {
    let looping: Vec<String> = b
        .events_of("crash_loop")
        .map(|(_, e)| s(e, "app").to_owned())
        .collect();
    let mut out = Vec::new();
    let exits: Vec<&(u64, Value)> = b
        .events_of("instance_exited")
        .filter(|(_, e)| e["signal"].is_null() && !looping.contains(&s(e, "app").to_owned()))
        .collect();
    let mut by_app: BTreeMap<String, Vec<&(u64, Value)>> = BTreeMap::new();
    for e in exits {
        by_app.entry(s(&e.1, "app").to_owned()).or_default().push(e);
    }
    for (app, exits) in by_app {
        let near = |t: u64| {
            exits
                .iter()
                .any(|(et, _)| t + 3000 >= *et && t <= et + 5000)
        };
        let claims = failed_where(b, |a| {
            a.app == app
                && a.gateway_made
                && a.error
                    .as_deref()
                    .is_some_and(|e| DEATH_ERRORS.contains(&e))
                && near(a.t)
        });
        let last = &exits[exits.len() - 1].1;
        let line = error_line(last);
        let mut instances: Vec<String> = exits
            .iter()
            .map(|e| s(&e.1, "instance").to_owned())
            .collect();
        instances.sort();
        instances.dedup();
        let mut f = Finding::new(
            "instance_crashed",
            Severity::Critical,
            format!(
                "{} exited with code {} ({} exit{} in the window): `{line}`",
                s(last, "instance"),
                last["code"],
                exits.len(),
                if exits.len() == 1 { "" } else { "s" }
            ),
        )
        .app(&app)
        .with("error_line", line.clone())
        .with("lines", last["stderr"].clone())
        .with("exits", exits.iter().map(|e| json!({"ts": e.1["ts"], "instance": e.1["instance"], "code": e.1["code"], "uptime_s": e.1["uptime_s"]})).collect::<Vec<_>>())
        .mitigation(format!(
            "The app crashed on its own (`{line}`); healgate restarted it. Fix the error; requests in flight on the dying instance failed (502), later ones went to the others."
        ))
        .claim(b, claims);
        f.instances = instances;
        f.at_ms = Some(exits[0].0);
        out.push(f);
    }
    out
}

/// `killed_by_signal`: an instance died by a signal; SIGKILL after its memory grew is
/// an out-of-memory kill, most likely.
pub fn killed_by_signal(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    for (t, e) in b
        .events_of("instance_exited")
        .filter(|(_, e)| !e["signal"].is_null())
    {
        let (app, id) = (s(e, "app"), s(e, "instance"));
        let sig = e["signal_name"]
            .as_str()
            .map_or_else(|| e["signal"].to_string(), str::to_owned);
        let trend = b
            .instance_history
            .get(id)
            .map(|h| resources::trend_before(&h["1s"], t / 1000))
            .unwrap_or_default();
        let oom = sig == "SIGKILL" && trend.rise_bytes > 16.0 * 1024.0 * 1024.0;
        let title = if oom {
            format!(
                "{id} was killed by {sig} after its memory grew {} (to {}): an out-of-memory kill, most likely",
                mib(trend.rise_bytes),
                mib(trend.peak_bytes)
            )
        } else {
            format!("{id} was killed by {sig}: `{}`", error_line(e))
        };
        let claims = failed_where(b, |a| {
            a.app == app
                && a.gateway_made
                && a.error
                    .as_deref()
                    .is_some_and(|x| DEATH_ERRORS.contains(&x))
                && a.t + 3000 >= *t
                && a.t <= t + 5000
        });
        let mut f = Finding::new("killed_by_signal", Severity::Critical, title)
            .app(app)
            .with("signal", sig.clone())
            .with("oom_suspected", oom)
            .with("memory_trend", json!({"rise_bytes": trend.rise_bytes, "peak_bytes": trend.peak_bytes, "bytes_per_s": trend.per_s, "points": trend.points}))
            .with("lines", e["stderr"].clone())
            .mitigation(if oom {
                "The kernel's OOM killer (or a container limit) ended it: find the leak (the memory trend is in history/), \
                 give it more memory, or add an AutoHeal `memory_above` rule below the limit so healgate recycles it gracefully first."
                    .to_owned()
            } else {
                format!("Something sent {sig}: check the host (dmesg, systemd, an operator) and the app's signal handling.")
            })
            .claim(b, claims);
        f.instances = vec![id.to_owned()];
        f.at_ms = Some(*t);
        out.push(f);
    }
    out
}

/// `health_flapping`: an instance ejected by its health check and readmitted again
/// and again; claims the app's 503 destination_unavailable in the meantime.
pub fn health_flapping(b: &Bundle) -> Vec<Finding> {
    let mut by: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (t, e) in b
        .events_of("instance_ejected")
        .filter(|(_, e)| e["by"] == "health_check")
    {
        by.entry((s(e, "app").to_owned(), s(e, "instance").to_owned()))
            .or_default()
            .push(*t);
    }
    let mut out = Vec::new();
    for ((app, id), times) in by {
        let readmitted = b
            .events_of("instance_readmitted")
            .filter(|(_, e)| e["instance"] == id.as_str())
            .count();
        if times.len() < 2 || readmitted == 0 {
            continue;
        }
        let claims = failed_where(b, |a| {
            a.app == app
                && a.gateway_made
                && a.error.as_deref() == Some("destination_unavailable")
                && a.t >= times[0]
        });
        let mut f = Finding::new(
            "health_flapping",
            Severity::Warning,
            format!("{id} failed its health check and came back {} times", times.len()),
        )
        .app(&app)
        .with("ejections", times.len())
        .with("readmissions", readmitted)
        .mitigation(
            "The health check flips: the app answers it slowly or intermittently under load. Make the health path cheap \
             (no database call), raise health.timeout, or unhealthy_after so that one slow answer does not eject it.",
        )
        .claim(b, claims);
        f.instances = vec![id];
        f.at_ms = times.first().copied();
        out.push(f);
    }
    out
}

/// `autoheal_suppressed`: a rule held but its recycle was not allowed.
pub fn autoheal_suppressed(b: &Bundle) -> Vec<Finding> {
    let all: Vec<&(u64, Value)> = b.events_of("autoheal_suppressed").collect();
    let Some((t, e)) = all.first() else {
        return Vec::new();
    };
    let mut instances: Vec<String> = all
        .iter()
        .map(|(_, e)| s(e, "instance").to_owned())
        .collect();
    instances.sort();
    instances.dedup();
    let mut f = Finding::new(
        "autoheal_suppressed",
        Severity::Warning,
        format!(
            "AutoHeal wanted to recycle {} time{} but was held back: {}",
            all.len(),
            if all.len() == 1 { "" } else { "s" },
            s(e, "reason")
        ),
    )
    .app(s(e, "app"))
    .with("count", all.len())
    .with("trigger", e["trigger"].clone())
    .with("lines", all.iter().take(5).map(|(_, e)| s(e, "reason").to_owned()).collect::<Vec<_>>())
    .mitigation(
        "max_recycles stopped AutoHeal: the instances keep degrading. Fix the cause the rule measures, or raise \
         [app.autoheal] max_recycles if recycling really is the cure.",
    );
    f.instances = instances;
    f.at_ms = Some(*t);
    let _ = event_ms;
    vec![f]
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;

    fn exit(at: u64, code: Option<i32>, signal: Option<(&str, i32)>) -> (u64, Value) {
        event(
            at,
            json!({"kind": "instance_exited", "instance": "web#1", "code": code,
            "signal": signal.map(|s| s.1), "signal_name": signal.map(|s| s.0),
            "reason": "exited with code 1: RuntimeError: boom", "error_line": "RuntimeError: boom",
            "stderr": ["Traceback", "RuntimeError: boom"], "uptime_s": 1.0}),
        )
    }

    #[test]
    fn a_crash_loop_names_the_apps_line_and_claims_the_503s() {
        let mut b = bundle();
        b.events = vec![
            exit(1000, Some(1), None),
            exit(2000, Some(1), None),
            exit(4000, Some(1), None),
            event(
                4001,
                json!({"kind": "crash_loop", "instance": "web#1", "fast_exits": 3, "reason": "RuntimeError: boom"}),
            ),
        ];
        b.access
            .push(req(5000, "/", 503, Some("destination_unavailable"), 1.0));
        b.access
            .push(req(500, "/", 504, Some("http_response_timeout"), 1.0));
        let f = crash_loop(&b);
        assert_eq!(f.len(), 1);
        assert!(f[0].title.contains("RuntimeError: boom"), "{}", f[0].title);
        assert_eq!(f[0].claims, vec![0]);
        assert!(instance_crashed(&b).is_empty(), "the loop covers the exits");
    }

    #[test]
    fn a_single_crash_claims_the_requests_around_it() {
        let mut b = bundle();
        b.events = vec![exit(10_000, Some(1), None)];
        b.access.push(req(
            9_990,
            "/crash",
            502,
            Some("connection_terminated"),
            5.0,
        ));
        b.access
            .push(req(60_000, "/", 502, Some("connection_terminated"), 5.0));
        let f = instance_crashed(&b);
        assert_eq!(f[0].claims, vec![0]);
        assert_eq!(f[0].instances, ["web#1"]);
    }

    #[test]
    fn sigkill_after_growth_is_an_oom_suspicion() {
        let mut b = bundle();
        let t: Vec<u64> = (0..10).map(|i| T0 / 1000 + i).collect();
        let mem: Vec<u64> = (0..10).map(|i| (10 + i * 10) << 20).collect();
        b.instance_history
            .insert("web#1".into(), json!({"1s": {"t": t, "memory_bytes": mem}}));
        b.events = vec![exit(10_500, None, Some(("SIGKILL", 9)))];
        let f = killed_by_signal(&b);
        assert_eq!(f[0].evidence["oom_suspected"], true, "{:?}", f[0]);
        assert!(f[0].title.contains("out-of-memory"), "{}", f[0].title);
    }

    #[test]
    fn flapping_needs_two_ejections_and_a_readmission() {
        let mut b = bundle();
        let ej = |t| {
            event(
                t,
                json!({"kind": "instance_ejected", "instance": "web#1", "by": "health_check", "reason": "x"}),
            )
        };
        b.events = vec![
            ej(0),
            event(
                100,
                json!({"kind": "instance_readmitted", "instance": "web#1", "reason": "ok"}),
            ),
            ej(200),
        ];
        assert_eq!(health_flapping(&b).len(), 1);
        b.events.pop();
        assert!(health_flapping(&b).is_empty());
        b.events = vec![event(
            0,
            json!({"kind": "autoheal_suppressed", "instance": "web#1", "reason": "max_recycles 5 per 1h reached", "trigger": "memory_above 1MiB"}),
        )];
        assert!(autoheal_suppressed(&b)[0].title.contains("max_recycles"));
    }
}
