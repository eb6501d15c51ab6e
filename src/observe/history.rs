//! Metric history in memory: per app and per instance, one point a second for 15
//! minutes and one a minute for 24 hours, in rings allocated once at their full size
//! (memory does not grow with uptime), plus marks (restarts, recycles, reloads, scale
//! changes) for the time axis. Fed once a second by [`History::tick`]; served by
//! `GET /api/v1/history`.

use super::events::Event;
use super::metrics::{fine_quantile_ms, AppMeter, SecondCounts, Snapshot, FINE_BUCKETS};
use crate::error::Cause;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Points at 1 s resolution (15 minutes).
pub const SECONDS: usize = 15 * 60;
/// Points at 1 min resolution (24 hours).
pub const MINUTES: usize = 24 * 60;
/// Marks kept (the newest).
const MARKS: usize = 2000;

/// One point of a series.
#[derive(Clone, Copy)]
struct Point {
    /// Unix seconds at the point's start.
    t: u64,
    requests: u32,
    /// Gateway-made errors by cause.
    errors: [u32; Cause::ALL.len()],
    app_5xx: u32,
    /// Gateway-made errors in all (instances know only this, not the causes).
    failed: u32,
    /// Response-time percentiles in ms (NaN: no request).
    p50: f32,
    p95: f32,
    p99: f32,
    inflight: u32,
    queue: u32,
    memory: u64,
    cpu_pct: f32,
    restarts: u32,
}

impl Point {
    fn empty(t: u64) -> Point {
        Point {
            t,
            requests: 0,
            errors: [0; Cause::ALL.len()],
            app_5xx: 0,
            failed: 0,
            p50: f32::NAN,
            p95: f32::NAN,
            p99: f32::NAN,
            inflight: 0,
            queue: 0,
            memory: 0,
            cpu_pct: 0.0,
            restarts: 0,
        }
    }
}

/// A ring of points allocated at its full size.
struct Ring {
    points: Vec<Point>,
    /// Where the next point goes once full.
    next: usize,
    cap: usize,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring {
            points: Vec::with_capacity(cap),
            next: 0,
            cap,
        }
    }

    fn push(&mut self, p: Point) {
        if self.points.len() < self.cap {
            self.points.push(p);
        } else {
            self.points[self.next] = p;
            self.next = (self.next + 1) % self.cap;
        }
    }

    /// Oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &Point> {
        let (newer, older) = self.points.split_at(self.next.min(self.points.len()));
        older.iter().chain(newer.iter())
    }

    fn last(&self) -> Option<&Point> {
        if self.points.len() < self.cap || self.next == 0 {
            self.points.last()
        } else {
            self.points.get(self.next - 1)
        }
    }
}

/// An instance's cumulative counters at a tick: its peer's, and its restarts.
#[derive(Clone, Default)]
struct Seen {
    requests: u64,
    errors: u64,
    status_5xx: u64,
    /// Response times per bucket of the peer's histogram.
    buckets: Vec<u64>,
    restarts: u32,
}

/// The minute being built from seconds.
struct Minute {
    t: u64,
    point: Point,
    latency: [u32; FINE_BUCKETS],
    cpu_sum: f32,
    seconds: u32,
}

impl Minute {
    fn new(t: u64) -> Minute {
        Minute {
            t,
            point: Point::empty(t),
            latency: [0; FINE_BUCKETS],
            cpu_sum: 0.0,
            seconds: 0,
        }
    }
}

/// The series of one app or instance.
struct Track {
    seconds: Ring,
    minutes: Ring,
    minute: Minute,
    /// What an instance's counters were at the last tick (to take differences).
    last: Option<Seen>,
    /// Last tick it was seen in (instances that are gone are dropped).
    seen: u64,
}

impl Track {
    fn new(t: u64) -> Track {
        Track {
            seconds: Ring::new(SECONDS),
            minutes: Ring::new(MINUTES),
            minute: Minute::new(t / 60 * 60),
            last: None,
            seen: t,
        }
    }

    /// Add one second's point (with its latency histogram, when known).
    fn push(&mut self, p: Point, latency: Option<&[u32; FINE_BUCKETS]>) {
        self.seconds.push(p);
        let minute_t = p.t / 60 * 60;
        if minute_t != self.minute.t {
            let done = std::mem::replace(&mut self.minute, Minute::new(minute_t));
            if done.seconds > 0 {
                self.minutes.push(finish_minute(done));
            }
        }
        let m = &mut self.minute;
        let a = &mut m.point;
        a.requests += p.requests;
        for (x, y) in a.errors.iter_mut().zip(p.errors) {
            *x += y;
        }
        a.app_5xx += p.app_5xx;
        a.failed += p.failed;
        a.inflight = a.inflight.max(p.inflight);
        a.queue = a.queue.max(p.queue);
        a.memory = a.memory.max(p.memory);
        a.restarts += p.restarts;
        m.cpu_sum += p.cpu_pct;
        m.seconds += 1;
        match latency {
            Some(l) => {
                for (x, y) in m.latency.iter_mut().zip(l) {
                    *x += y;
                }
            }
            None => {
                // Coarse instance percentiles: keep the worst second's.
                a.p50 = max_nan(a.p50, p.p50);
                a.p95 = max_nan(a.p95, p.p95);
                a.p99 = max_nan(a.p99, p.p99);
            }
        }
    }
}

fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

fn finish_minute(m: Minute) -> Point {
    let mut p = m.point;
    p.cpu_pct = m.cpu_sum / m.seconds.max(1) as f32;
    if m.latency.iter().any(|c| *c > 0) {
        p.p50 = fine_quantile_ms(&m.latency, 0.50).unwrap_or(f32::NAN);
        p.p95 = fine_quantile_ms(&m.latency, 0.95).unwrap_or(f32::NAN);
        p.p99 = fine_quantile_ms(&m.latency, 0.99).unwrap_or(f32::NAN);
    }
    p
}

/// A moment worth marking on the time axis.
#[derive(Clone)]
struct Mark {
    t: u64,
    app: String,
    kind: &'static str,
    instance: Option<String>,
    text: String,
}

#[derive(Default)]
struct Inner {
    apps: BTreeMap<String, Track>,
    instances: BTreeMap<String, (String, Track)>,
    marks: VecDeque<Mark>,
    last_tick: u64,
}

/// Every app's and instance's series.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// What the ticker hands over for an app: its meter's second and its current gauges.
pub struct AppSecond {
    pub name: String,
    pub counts: SecondCounts,
    pub inflight: u32,
}

impl History {
    /// One second passed (`now`: unix seconds): take every meter's second and the
    /// snapshot's gauges into a point each.
    pub fn tick(&self, now: u64, meters: &[Arc<AppMeter>], snap: &Snapshot) {
        let seconds: Vec<AppSecond> = meters
            .iter()
            .filter(|m| !m.name.is_empty())
            .map(|m| AppSecond {
                name: m.name.to_string(),
                counts: m.take_second(),
                inflight: m.active().max(0) as u32,
            })
            .collect();
        self.record(now, &seconds, snap);
    }

    /// [`tick`](Self::tick) with the seconds already taken (tests drive this with a
    /// simulated clock).
    pub fn record(&self, now: u64, seconds: &[AppSecond], snap: &Snapshot) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now <= inner.last_tick {
            return;
        }
        inner.last_tick = now;
        // Instances first: the app's memory and CPU are their sums.
        let mut per_app: BTreeMap<&str, (u64, f32, u32)> = BTreeMap::new();
        for i in &snap.instances {
            let peer = snap
                .peers
                .iter()
                .find(|p| p.instance == i.instance && p.app == i.app);
            let (_, track) = inner
                .instances
                .entry(i.instance.clone())
                .or_insert_with(|| (i.app.clone(), Track::new(now)));
            track.seen = now;
            let mut p = Point::empty(now);
            p.memory = i.memory_bytes;
            p.cpu_pct = i.cpu_pct as f32;
            p.inflight = i.inflight;
            if let Some(peer) = peer {
                let seen = Seen {
                    requests: peer.requests,
                    errors: peer.errors,
                    status_5xx: peer.status_5xx,
                    buckets: peer.buckets.iter().map(|(_, c)| *c).collect(),
                    restarts: i.restarts,
                };
                let before = track.last.take().unwrap_or_else(|| seen.clone());
                // A new process starts its counters afresh.
                let d = |now: u64, before: u64| if now >= before { now - before } else { now };
                p.requests = d(seen.requests, before.requests) as u32;
                let errors = d(seen.errors, before.errors) as u32;
                p.app_5xx = (d(seen.status_5xx, before.status_5xx) as u32).saturating_sub(errors);
                p.failed = errors;
                let delta: Vec<u64> = seen
                    .buckets
                    .iter()
                    .zip(before.buckets.iter().chain(std::iter::repeat(&0)))
                    .map(|(n, b)| d(*n, *b))
                    .collect();
                let bounds: Vec<f64> = peer.buckets.iter().map(|(ub, _)| *ub).collect();
                p.p50 = coarse_quantile_ms(&delta, &bounds, 0.50);
                p.p95 = coarse_quantile_ms(&delta, &bounds, 0.95);
                p.p99 = coarse_quantile_ms(&delta, &bounds, 0.99);
                p.restarts = i.restarts.saturating_sub(before.restarts);
                track.last = Some(seen);
            } else {
                let before = track.last.as_ref().map_or(i.restarts, |l| l.restarts);
                p.restarts = i.restarts.saturating_sub(before);
                track.last.get_or_insert_with(Seen::default).restarts = i.restarts;
            }
            let e = per_app.entry(i.app.as_str()).or_default();
            e.0 += p.memory;
            e.1 += p.cpu_pct;
            e.2 += p.restarts;
            track.push(p, None);
        }
        inner.instances.retain(|_, (_, t)| t.seen == now);
        for s in seconds {
            let track = inner
                .apps
                .entry(s.name.clone())
                .or_insert_with(|| Track::new(now));
            let c = &s.counts;
            let mut p = Point::empty(now);
            p.requests = c.requests;
            p.errors = c.errors;
            p.app_5xx = c.app_5xx;
            p.failed = c.errors.iter().sum();
            p.p50 = fine_quantile_ms(&c.latency, 0.50).unwrap_or(f32::NAN);
            p.p95 = fine_quantile_ms(&c.latency, 0.95).unwrap_or(f32::NAN);
            p.p99 = fine_quantile_ms(&c.latency, 0.99).unwrap_or(f32::NAN);
            p.inflight = s.inflight;
            p.queue = snap
                .queues
                .iter()
                .find(|(n, _)| *n == s.name)
                .map_or(0, |(_, q)| *q as u32);
            if let Some((mem, cpu, restarts)) = per_app.get(s.name.as_str()) {
                p.memory = *mem;
                p.cpu_pct = *cpu;
                p.restarts = *restarts;
            }
            track.push(p, Some(&c.latency));
        }
    }

    /// Remember an event worth marking on the time axis.
    pub fn on_event(&self, event: &Event, now: u64) {
        let (app, instance, text) = match event {
            Event::InstanceExited {
                app,
                instance,
                reason,
                ..
            } => (app, Some(instance), reason.clone()),
            Event::InstanceRecycled {
                app,
                instance,
                reason,
                ..
            } => (
                app,
                Some(instance),
                format!("{instance} recycled: {reason}"),
            ),
            Event::CrashLoop {
                app,
                instance,
                reason,
                ..
            } => (app, Some(instance), format!("crash loop: {reason}")),
            Event::Scaled { app, from, to, .. } => (app, None, format!("scaled {from} → {to}")),
            Event::AutohealFired {
                app,
                instance,
                rule,
                ..
            } => (app, Some(instance), format!("AutoHeal: {}", rule.trigger)),
            Event::InstanceEjected {
                app,
                instance,
                reason,
                ..
            } => (app, Some(instance), format!("{instance} ejected: {reason}")),
            Event::ConfigReloaded { .. } => {
                return self.mark(Mark {
                    t: now,
                    app: String::new(),
                    kind: event.kind(),
                    instance: None,
                    text: "config reloaded".into(),
                })
            }
            _ => return,
        };
        self.mark(Mark {
            t: now,
            app: app.clone(),
            kind: event.kind(),
            instance: instance.cloned(),
            text,
        });
    }

    fn mark(&self, m: Mark) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.marks.len() == MARKS {
            inner.marks.pop_front();
        }
        inner.marks.push_back(m);
    }

    /// The series of `app` (or of one of its instances) at 1 s or 1 min resolution,
    /// as the history API answers it; `None` when there is no such series.
    pub fn series(&self, app: &str, instance: Option<&str>, minutes: bool) -> Option<Value> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let track = match instance {
            Some(id) => match inner.instances.get(id) {
                Some((a, t)) if a == app => t,
                _ => return None,
            },
            None => inner.apps.get(app)?,
        };
        let ring = if minutes {
            &track.minutes
        } else {
            &track.seconds
        };
        let points: Vec<&Point> = ring.iter().collect();
        let col = |f: &dyn Fn(&Point) -> Value| -> Value {
            Value::Array(points.iter().map(|p| f(p)).collect())
        };
        let ms = |x: f32| {
            if x.is_nan() {
                Value::Null
            } else {
                json!((x * 100.0).round() / 100.0)
            }
        };
        let mut errors = Map::new();
        for c in Cause::ALL {
            if points.iter().any(|p| p.errors[c.index()] > 0) {
                errors.insert(
                    c.proxy_status().to_owned(),
                    col(&|p| json!(p.errors[c.index()])),
                );
            }
        }
        if instance.is_some() {
            errors.insert("gateway".into(), col(&|p| json!(p.failed)));
        }
        errors.insert("app_5xx".into(), col(&|p| json!(p.app_5xx)));
        let from = points.first().map_or(0, |p| p.t);
        let mut out = json!({
            "app": app,
            "instance": instance,
            "res": if minutes { "1m" } else { "1s" },
            "step_s": if minutes { 60 } else { 1 },
            "t": col(&|p| json!(p.t)),
            "requests": col(&|p| json!(p.requests)),
            "errors": errors,
            "p50_ms": col(&|p| ms(p.p50)),
            "p95_ms": col(&|p| ms(p.p95)),
            "p99_ms": col(&|p| ms(p.p99)),
            "inflight": col(&|p| json!(p.inflight)),
            "queue": col(&|p| json!(p.queue)),
            "memory_bytes": col(&|p| json!(p.memory)),
            "cpu_pct": col(&|p| json!((p.cpu_pct * 10.0).round() / 10.0)),
            "restarts": col(&|p| json!(p.restarts)),
            "marks": inner.marks.iter()
                .filter(|m| m.t >= from && (m.app == app || m.app.is_empty()))
                .filter(|m| instance.is_none() || m.instance.as_deref() == instance)
                .map(|m| json!({"t": m.t, "kind": m.kind, "instance": m.instance, "text": m.text}))
                .collect::<Vec<_>>(),
        });
        if instance.is_none() {
            let mut per = Map::new();
            for (id, (a, t)) in &inner.instances {
                if a != app {
                    continue;
                }
                let r = if minutes { &t.minutes } else { &t.seconds };
                // Aligned on the app's time axis: null where the instance has no point.
                let by_t: BTreeMap<u64, &Point> = r.iter().map(|p| (p.t, p)).collect();
                let aligned = |f: &dyn Fn(&Point) -> Value| -> Value {
                    Value::Array(
                        points
                            .iter()
                            .map(|p| by_t.get(&p.t).map_or(Value::Null, |q| f(q)))
                            .collect(),
                    )
                };
                per.insert(
                    id.clone(),
                    json!({
                        "memory_bytes": aligned(&|p| json!(p.memory)),
                        "cpu_pct": aligned(&|p| json!((p.cpu_pct * 10.0).round() / 10.0)),
                        "requests": aligned(&|p| json!(p.requests)),
                    }),
                );
            }
            out["instances"] = Value::Object(per);
        }
        Some(out)
    }

    /// The error share and request count of `app` over the last `seconds` points:
    /// gateway-made errors / requests.
    pub fn recent(&self, app: &str, seconds: usize) -> Option<Recent> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let track = inner.apps.get(app)?;
        // The newest `seconds` points, read from the end of the ring.
        let mut r = Recent::default();
        let mut p95 = f32::NAN;
        for p in track.seconds.iter().rev().take(seconds) {
            r.points += 1;
            r.requests += u64::from(p.requests);
            r.errors += u64::from(p.failed);
            r.app_5xx += u64::from(p.app_5xx);
            p95 = max_nan(p95, p.p95);
        }
        Some(Recent {
            memory: track.seconds.last().map_or(0, |p| p.memory),
            ..r
        })
    }
}

/// What the last seconds of an app looked like (incidents and alerts read it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Recent {
    pub points: usize,
    pub requests: u64,
    /// Gateway-made errors.
    pub errors: u64,
    /// 5xx the app answered itself.
    pub app_5xx: u64,
    /// The worst second's p95.
    pub p95_ms: Option<f32>,
    pub memory: u64,
}

impl Recent {
    /// Server errors of any origin (gateway-made or the app's 5xx) per request.
    pub fn server_error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            (self.errors + self.app_5xx) as f64 / self.requests as f64
        }
    }

    /// Gateway-made errors per request (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A percentile of per-bucket counts with these upper bounds (s), in ms.
fn coarse_quantile_ms(counts: &[u64], bounds: &[f64], q: f64) -> f32 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return f32::NAN;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (c, ub) in counts.iter().zip(bounds) {
        seen += c;
        if seen >= want {
            return if ub.is_finite() {
                (ub * 1000.0) as f32
            } else {
                f32::NAN
            };
        }
    }
    f32::NAN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::{InstanceSample, Metrics, PeerSample};
    use std::time::Duration;

    fn snap(restarts: u32, requests: u64) -> Snapshot {
        Snapshot {
            instances: vec![InstanceSample {
                app: "web".into(),
                instance: "web#1".into(),
                state: "ready",
                memory_bytes: 50 << 20,
                cpu_s: 1.0,
                cpu_pct: 12.5,
                inflight: 1,
                restarts,
            }],
            peers: vec![PeerSample {
                app: "web".into(),
                instance: "web#1".into(),
                buckets: vec![(0.001, requests), (f64::INFINITY, 0)],
                sum_s: 0.0,
                requests,
                errors: 0,
                status_5xx: 0,
            }],
            queues: vec![("web".into(), 2)],
            states: &["ready"],
        }
    }

    #[test]
    fn seconds_become_points_and_minutes() {
        let m = Metrics::default();
        let web = m.app("web");
        let h = History::default();
        let t0 = 1_800_000_000 / 60 * 60;
        for s in 0..120u64 {
            for _ in 0..10 {
                web.record(0, 200, None, Duration::from_millis(2));
            }
            if s % 10 == 0 {
                web.record(
                    0,
                    502,
                    Some(Cause::ConnectionRefused),
                    Duration::from_millis(1),
                );
            }
            h.tick(
                t0 + s,
                std::slice::from_ref(&web),
                &snap(u32::from(s >= 60), 10 * (s + 1)),
            );
        }
        let v = h.series("web", None, false).unwrap();
        assert_eq!(v["t"].as_array().unwrap().len(), 120);
        assert_eq!(v["requests"][0], 11);
        assert_eq!(v["requests"][1], 10);
        assert_eq!(v["errors"]["connection_refused"][10], 1);
        assert_eq!(v["queue"][0], 2);
        assert_eq!(v["memory_bytes"][0], 50 << 20);
        let p50 = v["p50_ms"][1].as_f64().unwrap();
        assert!((2.0..2.5).contains(&p50), "{p50}");
        assert_eq!(v["instances"]["web#1"]["requests"][5], 10);
        let m = h.series("web", None, true).unwrap();
        // The first minute is done; the second is still being built.
        assert_eq!(m["t"].as_array().unwrap().len(), 1);
        assert_eq!(m["requests"][0], 606);
        assert_eq!(m["errors"]["connection_refused"][0], 6);
        let restarts: u64 = v["restarts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(restarts, 1);
        let r = h.recent("web", 60).unwrap();
        assert_eq!((r.requests, r.errors), (606, 6));
        assert!(h.series("nope", None, false).is_none());
    }

    #[test]
    fn rings_stop_growing_at_their_size() {
        let h = History::default();
        let web = Metrics::default().app("web");
        let t0 = 1_800_000_000;
        for s in 0..(SECONDS as u64 + 300) {
            h.tick(t0 + s, std::slice::from_ref(&web), &snap(0, s));
        }
        let v = h.series("web", None, false).unwrap();
        let t = v["t"].as_array().unwrap();
        assert_eq!(t.len(), SECONDS);
        assert_eq!(t[0], t0 + 300, "oldest first");
        assert_eq!(t[SECONDS - 1], t0 + SECONDS as u64 + 299);
    }
}
