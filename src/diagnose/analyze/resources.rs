//! Detectors of resources: memory that grows (a leak, and when it reaches the limit)
//! and CPU pinned high.

use super::{column, mib, Finding, Severity};
use crate::diagnose::bundle::Bundle;
use serde_json::{json, Value};

/// Memory over the seconds before a time.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Trend {
    /// From the lowest point to the highest after it.
    pub rise_bytes: f64,
    pub peak_bytes: f64,
    /// The rise per second over that stretch.
    pub per_s: f64,
    pub points: usize,
    /// When the peak was (unix s).
    pub peak_t: u64,
}

/// The biggest rise of `memory_bytes` in a 1 s series: the largest (later high −
/// earlier low), up to time `before` (unix s).
pub fn trend_before(series: &Value, before: u64) -> Trend {
    let pts: Vec<(u64, f64)> = column(series, "memory_bytes")
        .into_iter()
        .filter(|(t, m)| *t <= before && *m > 0.0)
        .collect();
    let mut best = Trend {
        points: pts.len(),
        ..Trend::default()
    };
    let mut low: Option<(u64, f64)> = None;
    for &(t, m) in &pts {
        if low.is_none_or(|(_, l)| m < l) {
            low = Some((t, m));
        }
        if let Some((lt, l)) = low {
            if m - l > best.rise_bytes {
                best.rise_bytes = m - l;
                best.peak_bytes = m;
                best.peak_t = t;
                best.per_s = if t > lt {
                    (m - l) / (t - lt) as f64
                } else {
                    0.0
                };
            }
        }
    }
    if best.peak_bytes == 0.0 {
        best.peak_bytes = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    }
    best
}

/// `memory_growth`: an instance whose memory grew by 32 MiB and half again or more,
/// or that AutoHeal recycled for memory; the rate and the time to the limit.
pub fn memory_growth(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut ids: Vec<String> = b.instance_history.keys().cloned().collect();
    for (_, e) in b.events_of("autoheal_fired") {
        if let Some(id) = e["instance"].as_str() {
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
    }
    for id in &ids {
        let none = Value::Null;
        let h = b.instance_history.get(id).unwrap_or(&none);
        let app = h["1s"]["app"]
            .as_str()
            .or_else(|| {
                b.events_of("autoheal_fired")
                    .find(|(_, e)| e["instance"] == id.as_str())
                    .and_then(|(_, e)| e["app"].as_str())
            })
            .unwrap_or_default()
            .to_owned();
        let mut trend = trend_before(&h["1s"], u64::MAX);
        let fired: Vec<&(u64, Value)> = b
            .events_of("autoheal_fired")
            .filter(|(_, e)| e["instance"] == id.as_str())
            .filter(|(_, e)| {
                e["trigger"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("memory_above"))
            })
            .collect();
        // An instance's own series starts afresh when its process is replaced; the
        // app's total goes on.
        if trend.rise_bytes < 1024.0 * 1024.0 {
            if let Some(a) = b.history.get(&app) {
                trend = trend_before(&a["1s"], u64::MAX);
            }
        }
        // What AutoHeal measured is a point of the trend too.
        let app_memory = b
            .history
            .get(&app)
            .map(|a| column(&a["1s"], "memory_bytes"))
            .unwrap_or_default();
        for (t, e) in &fired {
            let Some(m) = e["measured"].as_f64() else {
                continue;
            };
            let own = column(&h["1s"], "memory_bytes");
            let points = || own.iter().chain(app_memory.iter()).filter(|p| p.1 > 0.0);
            let mut low = points()
                .filter(|(pt, _)| pt * 1000 <= *t)
                .map(|p| p.1)
                .fold(f64::INFINITY, f64::min);
            if !low.is_finite() {
                // No point before it: the fresh replacement is the baseline.
                low = points().map(|p| p.1).fold(f64::INFINITY, f64::min);
            }
            if low.is_finite() && m - low > trend.rise_bytes {
                trend.rise_bytes = m - low;
            }
            trend.peak_bytes = trend.peak_bytes.max(m);
        }
        let start = trend.peak_bytes - trend.rise_bytes;
        let grew = trend.rise_bytes >= 32.0 * 1024.0 * 1024.0 && trend.rise_bytes >= 0.5 * start;
        if !grew && fired.is_empty() {
            continue;
        }
        let limit = b
            .app_facts(&app)
            .and_then(|f| f["memory_limit_bytes"].as_f64());
        let to_limit = limit
            .filter(|_| trend.per_s > 0.0)
            .map(|l| ((l - trend.peak_bytes) / trend.per_s).max(0.0));
        let per_min = trend.per_s * 60.0;
        let mut title = format!(
            "{id}'s memory grew {} at {}/min (to {})",
            mib(trend.rise_bytes),
            mib(per_min),
            mib(trend.peak_bytes)
        );
        if let (Some(l), Some(s)) = (limit, to_limit) {
            title.push_str(&format!(
                "; the {} AutoHeal limit is reached {}",
                mib(l),
                if s < 1.0 {
                    "now".to_owned()
                } else {
                    format!("in about {s:.0} s")
                }
            ));
        }
        if !fired.is_empty() {
            title.push_str(&format!(
                "; AutoHeal recycled it {} time{}",
                fired.len(),
                if fired.len() == 1 { "" } else { "s" }
            ));
        }
        let mut f = Finding::new(
            "memory_growth",
            if fired.is_empty() { Severity::Warning } else { Severity::Critical },
            title,
        )
        .app(&app)
        .with("rise_bytes", trend.rise_bytes)
        .with("peak_bytes", trend.peak_bytes)
        .with("bytes_per_min", per_min)
        .with("limit_bytes", json!(limit))
        .with("seconds_to_limit", json!(to_limit))
        .with("autoheal", fired.iter().map(|(_, e)| json!({"ts": e["ts"], "measured": e["measured"], "threshold": e["threshold"], "actions": e["actions"]})).collect::<Vec<_>>())
        .mitigation(
            "Memory grows with use and is not given back: a leak or an unbounded cache. Take a heap profile (or \
             `healgate diagnose --dumps` for a core), bound caches; until then an AutoHeal `memory_above` rule \
             recycles the instance before the kernel kills it (overlapping: no request is dropped).",
        );
        f.instances = vec![id.clone()];
        f.at_ms = fired.first().map(|e| e.0).or(Some(trend.peak_t * 1000));
        out.push(f);
    }
    out
}

/// `high_cpu`: an instance at 90% of a core or more for 10 s or more.
pub fn high_cpu(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, h) in &b.instance_history {
        let cpu = column(&h["1s"], "cpu_pct");
        let hot: Vec<&(u64, f64)> = cpu.iter().filter(|(_, c)| *c >= 90.0).collect();
        if hot.len() < 10 {
            continue;
        }
        let peak = hot.iter().map(|p| p.1).fold(0.0, f64::max);
        let app = h["1s"]["app"].as_str().unwrap_or_default();
        let mut f = Finding::new(
            "high_cpu",
            Severity::Warning,
            format!("{id} used {peak:.0}% CPU (90% or more for {} s)", hot.len()),
        )
        .app(app)
        .with("seconds_hot", hot.len())
        .with("peak_pct", peak)
        .mitigation(
            "The instance is CPU-bound: requests wait behind the work. Look at the native stacks in processes/ for the \
             hot code, scale out (healgate scale), or move the work off the request path.",
        );
        f.instances = vec![id.clone()];
        f.at_ms = hot.first().map(|p| p.0 * 1000);
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;

    #[test]
    fn growth_rate_and_time_to_the_limit() {
        let mut b = bundle();
        let t: Vec<u64> = (0..20).map(|i| 1000 + i).collect();
        let mem: Vec<u64> = (0..20).map(|i| (10 + i * 2) << 20).collect(); // 2 MiB/s from 10 MiB
        b.instance_history.insert(
            "web#1".into(),
            json!({"1s": {"app": "web", "instance": "web#1", "t": t, "memory_bytes": mem}}),
        );
        let f = memory_growth(&b);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].evidence["bytes_per_min"].as_f64().unwrap(),
            120.0 * 1024.0 * 1024.0
        );
        // Peak 48 MiB, limit 64 MiB: 8 s to go.
        assert_eq!(
            f[0].evidence["seconds_to_limit"].as_f64().unwrap().round(),
            8.0
        );
        assert!(f[0].title.contains("in about 8 s"), "{}", f[0].title);
    }

    #[test]
    fn flat_memory_and_cool_cpu_are_no_finding() {
        let mut b = bundle();
        let t: Vec<u64> = (0..30).collect();
        b.instance_history.insert("web#1".into(), json!({"1s": {"app": "web", "t": t, "memory_bytes": vec![50u64 << 20; 30], "cpu_pct": vec![95.0; 30]}}));
        assert!(memory_growth(&b).is_empty());
        assert_eq!(high_cpu(&b)[0].evidence["seconds_hot"], 30);
    }
}
