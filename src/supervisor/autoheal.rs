//! AutoHeal rules: when a trigger holds for an instance, with the measured value and
//! the threshold that made it fire. The actor applies the guard rails and actions.

use super::sampler::Sample;
use crate::config::{Autoheal, Trigger};
use crate::upstream::stats::{Matcher, Window};
use crate::upstream::Peer;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A rule that fired.
#[derive(Debug, Clone)]
pub struct Firing {
    /// Index of the rule in `[[app.autoheal.rule]]`.
    pub rule: usize,
    /// e.g. `memory_above 64MiB`.
    pub trigger: String,
    pub measured: Value,
    pub threshold: Value,
}

/// The sliding windows an instance's stats need: one per windowed rule, in rule order.
pub fn windows(ah: Option<&Autoheal>) -> Vec<Window> {
    let Some(ah) = ah else { return Vec::new() };
    ah.rules
        .iter()
        .filter_map(|r| match &r.when {
            Trigger::SlowRequests {
                count,
                slower_than,
                within,
                path,
            } => Some(Window::new(
                Matcher::Slower(*slower_than),
                path.clone(),
                *count as usize,
                *within,
            )),
            Trigger::Status {
                codes,
                count,
                within,
                path,
            } => Some(Window::new(
                Matcher::Status(codes.0, codes.1),
                path.clone(),
                *count as usize,
                *within,
            )),
            _ => None,
        })
        .collect()
}

/// Which window (see [`windows`]) belongs to rule `rule`.
pub fn window_of(ah: &Autoheal, rule: usize) -> Option<usize> {
    let windowed = |t: &Trigger| matches!(t, Trigger::SlowRequests { .. } | Trigger::Status { .. });
    if !windowed(&ah.rules.get(rule)?.when) {
        return None;
    }
    Some(
        ah.rules[..rule]
            .iter()
            .filter(|r| windowed(&r.when))
            .count(),
    )
}

/// What a rule needs to remember between ticks for one instance.
#[derive(Debug, Default, Clone, Copy)]
pub struct Held {
    /// Since when the condition of a `for` trigger has held.
    pub since: Option<Instant>,
}

/// Whether rule `idx` fires for this instance now.
pub fn check(
    ah: &Autoheal,
    idx: usize,
    peer: &Peer,
    sample: Option<&Sample>,
    failing_since: Option<Instant>,
    held: &mut Held,
    now: Instant,
) -> Option<Firing> {
    let rule = ah.rules.get(idx)?;
    let fire = |trigger: String, measured: Value, threshold: Value| {
        Some(Firing {
            rule: idx,
            trigger,
            measured,
            threshold,
        })
    };
    match &rule.when {
        Trigger::MemoryAbove(limit) => {
            let rss = sample?.rss;
            (rss > *limit).then_some(())?;
            fire(
                format!("memory_above {}", mib(*limit)),
                json!(rss),
                json!(*limit),
            )
        }
        Trigger::CpuAbove { percent, for_ } => {
            let pct = sample?.cpu_pct;
            if pct <= *percent {
                held.since = None;
                return None;
            }
            let since = *held.since.get_or_insert(now);
            (now.duration_since(since) >= *for_).then_some(())?;
            fire(
                format!("cpu_above {percent}% for {for_:?}"),
                json!(round1(pct)),
                json!(*percent),
            )
        }
        Trigger::Requests { count } => {
            let n = peer.stats.requests.load(Ordering::Relaxed);
            (n >= *count).then_some(())?;
            fire(format!("requests {count}"), json!(n), json!(*count))
        }
        Trigger::SlowRequests {
            count,
            slower_than,
            within,
            ..
        } => {
            let trigger =
                format!("slow_requests {count} slower than {slower_than:?} within {within:?}");
            let hits = full_window(ah, idx, peer, now)?;
            fire(trigger, json!(hits), json!(*count))
        }
        Trigger::Status {
            codes,
            count,
            within,
            ..
        } => {
            let trigger = format!("status {}-{} x{count} within {within:?}", codes.0, codes.1);
            let hits = full_window(ah, idx, peer, now)?;
            fire(trigger, json!(hits), json!(*count))
        }
        Trigger::Unhealthy { for_ } => {
            let since = failing_since?;
            let d = now.duration_since(since);
            (d >= *for_).then_some(())?;
            fire(
                format!("unhealthy for {for_:?}"),
                json!(round1(d.as_secs_f64())),
                json!(for_.as_secs_f64()),
            )
        }
    }
}

/// The hits in rule `idx`'s window when it holds its count, else `None`.
fn full_window(ah: &Autoheal, idx: usize, peer: &Peer, now: Instant) -> Option<usize> {
    let w = peer.stats.windows.get(window_of(ah, idx)?)?;
    w.full(now).then(|| w.hits(now))
}

/// Forget what rule `idx` counted on this peer (after it fired).
pub fn reset(ah: &Autoheal, idx: usize, peer: &Peer) {
    if let Some(w) = window_of(ah, idx).and_then(|i| peer.stats.windows.get(i)) {
        w.clear();
    }
}

fn mib(b: u64) -> String {
    if b % (1024 * 1024) == 0 {
        format!("{}MiB", b / (1024 * 1024))
    } else {
        format!("{b}B")
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, AutohealRule};
    use std::time::Duration;

    fn ah(rules: Vec<Trigger>) -> Autoheal {
        Autoheal {
            min_uptime: Duration::ZERO,
            max_recycles: (5, Duration::from_secs(3600)),
            rules: rules
                .into_iter()
                .map(|when| AutohealRule {
                    when,
                    actions: vec![Action::Recycle],
                })
                .collect(),
        }
    }

    #[test]
    fn memory_and_status_rules() {
        let a = ah(vec![
            Trigger::MemoryAbove(64 << 20),
            Trigger::Status {
                codes: (500, 599),
                count: 3,
                within: Duration::from_secs(60),
                path: None,
            },
        ]);
        let peer = Peer::instance(
            "web#1",
            1,
            crate::upstream::stats::PeerStats::with_windows(windows(Some(&a))),
        );
        let now = Instant::now();
        let small = Sample {
            rss: 10 << 20,
            ..Sample::default()
        };
        let big = Sample {
            rss: 100 << 20,
            ..Sample::default()
        };
        let mut h = Held::default();
        assert!(check(&a, 0, &peer, Some(&small), None, &mut h, now).is_none());
        let f = check(&a, 0, &peer, Some(&big), None, &mut h, now).unwrap();
        assert_eq!(f.measured, json!(100u64 << 20));
        assert_eq!(f.trigger, "memory_above 64MiB");
        for _ in 0..2 {
            peer.stats.record(500, Duration::ZERO, "/", None);
        }
        assert!(check(&a, 1, &peer, None, None, &mut h, Instant::now()).is_none());
        peer.stats.record(503, Duration::ZERO, "/", None);
        assert!(check(&a, 1, &peer, None, None, &mut h, Instant::now()).is_some());
        reset(&a, 1, &peer);
        assert!(check(&a, 1, &peer, None, None, &mut h, Instant::now()).is_none());
    }

    #[test]
    fn cpu_must_hold_for_its_duration() {
        let a = ah(vec![Trigger::CpuAbove {
            percent: 80.0,
            for_: Duration::from_secs(2),
        }]);
        let peer = Peer::instance("web#1", 1, Default::default());
        let hot = Sample {
            cpu_pct: 95.0,
            ..Sample::default()
        };
        let t0 = Instant::now();
        let mut h = Held::default();
        assert!(check(&a, 0, &peer, Some(&hot), None, &mut h, t0).is_none());
        assert!(check(
            &a,
            0,
            &peer,
            Some(&hot),
            None,
            &mut h,
            t0 + Duration::from_secs(1)
        )
        .is_none());
        assert!(check(
            &a,
            0,
            &peer,
            Some(&hot),
            None,
            &mut h,
            t0 + Duration::from_secs(2)
        )
        .is_some());
    }
}
