//! Per-peer request measurements: counters by status class and by Proxy-Status
//! error, a response-time histogram, and the sliding windows AutoHeal rules count in.
//!
//! The proxy records each completed request with [`PeerStats::record`]: a few atomic
//! increments, plus (only for peers with windowed rules) a timestamp pushed into a
//! ring no longer than the rule's count. A window rule fires when its ring holds
//! `count` hits and the oldest is younger than `within`: an exact sliding window in
//! O(count) memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (ms) of the response-time buckets; the last bucket is unbounded.
pub const BUCKETS_MS: [u64; 13] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// What a windowed rule counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Requests slower than this (to the end of the response).
    Slower(Duration),
    /// Responses with a status in this range (inclusive).
    Status(u16, u16),
}

/// One windowed rule's hits on one peer.
#[derive(Debug)]
pub struct Window {
    pub matcher: Matcher,
    /// Only requests whose path starts with this.
    pub path: Option<String>,
    pub count: usize,
    pub within: Duration,
    hits: Mutex<VecDeque<Instant>>,
}

impl Window {
    /// A window counting `matcher` hits, `count` within `within`.
    pub fn new(matcher: Matcher, path: Option<String>, count: usize, within: Duration) -> Window {
        Window {
            matcher,
            path,
            count: count.max(1),
            within,
            hits: Mutex::new(VecDeque::new()),
        }
    }

    fn observe(&self, status: u16, took: Duration, path: &str, now: Instant) {
        let hit = match self.matcher {
            Matcher::Slower(t) => took > t,
            Matcher::Status(lo, hi) => (lo..=hi).contains(&status),
        };
        if !hit || self.path.as_deref().is_some_and(|p| !path.starts_with(p)) {
            return;
        }
        let mut h = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == self.count {
            h.pop_front();
        }
        h.push_back(now);
    }

    /// Hits within the window now.
    pub fn hits(&self, now: Instant) -> usize {
        let h = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        h.iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.within)
            .count()
    }

    /// Whether `count` hits fall within the window.
    pub fn full(&self, now: Instant) -> bool {
        self.hits(now) >= self.count
    }

    /// Forget the hits (the rule fired).
    pub fn clear(&self) {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Everything measured about requests on one peer.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub requests: AtomicU64,
    /// 1xx .. 5xx.
    pub by_class: [AtomicU64; 5],
    /// Histogram over [`BUCKETS_MS`] plus one overflow bucket.
    pub latency: [AtomicU64; 14],
    pub latency_sum_us: AtomicU64,
    /// Gateway-made errors on this peer, by Proxy-Status type.
    errors: Mutex<HashMap<&'static str, u64>>,
    /// AutoHeal windows (empty for peers without windowed rules).
    pub windows: Vec<Window>,
}

impl PeerStats {
    /// Stats with these rule windows.
    pub fn with_windows(windows: Vec<Window>) -> PeerStats {
        PeerStats {
            windows,
            ..PeerStats::default()
        }
    }

    /// Whether `record` needs the request path.
    pub fn wants_path(&self) -> bool {
        self.windows.iter().any(|w| w.path.is_some())
    }

    /// One completed request.
    pub fn record(&self, status: u16, took: Duration, path: &str, error: Option<&'static str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.by_class.get((status / 100).saturating_sub(1) as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ms = took.as_millis() as u64;
        let b = BUCKETS_MS
            .iter()
            .position(|ub| ms <= *ub)
            .unwrap_or(BUCKETS_MS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(e) = error {
            *self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(e)
                .or_default() += 1;
        }
        if !self.windows.is_empty() {
            let now = Instant::now();
            for w in &self.windows {
                w.observe(status, took, path, now);
            }
        }
    }

    /// Gateway-made errors by type.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort();
        v
    }

    /// An estimate of the `q` quantile (0..1) of response time, in ms (bucket bound).
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(*BUCKETS_MS.get(i).unwrap_or(&u64::MAX));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_slides() {
        let w = Window::new(
            Matcher::Status(500, 599),
            None,
            3,
            Duration::from_millis(100),
        );
        let t0 = Instant::now();
        w.observe(500, Duration::ZERO, "/", t0);
        w.observe(200, Duration::ZERO, "/", t0);
        w.observe(502, Duration::ZERO, "/", t0);
        assert!(!w.full(t0), "two hits of three");
        w.observe(503, Duration::ZERO, "/", t0 + Duration::from_millis(50));
        assert!(w.full(t0 + Duration::from_millis(60)));
        // 150 ms later the first two hits have slid out.
        assert!(!w.full(t0 + Duration::from_millis(150)));
        assert_eq!(w.hits(t0 + Duration::from_millis(150)), 1);
    }

    #[test]
    fn path_filters_and_slowness() {
        let w = Window::new(
            Matcher::Slower(Duration::from_millis(10)),
            Some("/api".into()),
            2,
            Duration::from_secs(60),
        );
        let now = Instant::now();
        w.observe(200, Duration::from_millis(50), "/static/x", now);
        w.observe(200, Duration::from_millis(5), "/api/x", now);
        assert_eq!(w.hits(now), 0);
        w.observe(200, Duration::from_millis(50), "/api/x", now);
        w.observe(200, Duration::from_millis(50), "/api/y", now);
        assert!(w.full(now));
    }

    #[test]
    fn counters_and_quantiles() {
        let s = PeerStats::default();
        for ms in [1, 3, 3, 40, 2000] {
            s.record(200, Duration::from_millis(ms), "/", None);
        }
        s.record(
            502,
            Duration::from_millis(1),
            "/",
            Some("connection_terminated"),
        );
        assert_eq!(s.requests.load(Ordering::Relaxed), 6);
        assert_eq!(s.by_class[1].load(Ordering::Relaxed), 5);
        assert_eq!(s.by_class[4].load(Ordering::Relaxed), 1);
        assert_eq!(s.quantile_ms(0.5), Some(5));
        assert_eq!(s.errors(), vec![("connection_terminated", 1)]);
    }
}
