//! Request and lifecycle metrics: recorded with plain atomics where a request ends
//! (`proxy::log::Record::finish`) and where a retry, a queue wait or an event happens,
//! encoded only when `/metrics` is scraped, by `prometheus-client` (Prometheus text, or
//! OpenMetrics when asked for). Names follow SPEC §6 (OpenTelemetry's HTTP conventions
//! in Prometheus form, healgate's own under `healgate_`). No label is ever a request
//! path or id: apps, instances, methods (a closed list), status codes, causes (a closed
//! list), rule kinds and event kinds.

use super::events::Event;
use crate::error::Cause;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// `http_server_request_duration_seconds` bucket bounds: OpenTelemetry's advice.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The methods named in the `http_request_method` label; any other is `_OTHER`
/// (OpenTelemetry's rule, which keeps the label bounded).
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The index of `method` in [`METHODS`].
pub fn method_index(method: Option<&http::Method>) -> usize {
    let Some(m) = method else {
        return METHODS.len() - 1;
    };
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|known| *known == m.as_str())
        .unwrap_or(METHODS.len() - 1)
}

/// Bucket bounds of the fine latency histogram kept per second for the history (µs):
/// 100 µs × 1.25ⁱ, up to about 2 minutes, so a percentile is within 12 %.
pub const FINE_BUCKETS: usize = 64;

/// The fine buckets' upper bounds in ns (each 5/4 of the one before).
const FINE_BOUNDS_NS: [u64; FINE_BUCKETS] = {
    let mut b = [0u64; FINE_BUCKETS];
    b[0] = 100_000;
    let mut i = 1;
    while i < FINE_BUCKETS {
        b[i] = b[i - 1] * 5 / 4;
        i += 1;
    }
    b
};

fn fine_bound_us(i: usize) -> f64 {
    FINE_BOUNDS_NS[i] as f64 / 1000.0
}

/// The fine bucket of a duration (a binary search: no float math per request).
fn fine_bucket(d: Duration) -> usize {
    let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
    FINE_BOUNDS_NS
        .partition_point(|ub| *ub < ns)
        .min(FINE_BUCKETS - 1)
}

/// The `q` quantile (0..1) of a fine histogram, in ms; `None` without observations.
pub fn fine_quantile_ms(counts: &[u32; FINE_BUCKETS], q: f64) -> Option<f32> {
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen += u64::from(*c);
        if seen >= want {
            return Some((fine_bound_us(i) / 1000.0) as f32);
        }
    }
    None
}

/// One histogram series: counts per bucket (the last is `+Inf`) and the sum.
#[derive(Default)]
struct Cells {
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Cells {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let b = DURATION_BOUNDS.partition_point(|ub| *ub < s);
        self.buckets[b].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their bounds).
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = DURATION_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        (self.sum_ns.load(Relaxed) as f64 / 1e9, count, buckets)
    }
}

/// What one app's requests did during the current second, for the history: taken
/// (and reset) once a second by [`AppMeter::take_second`].
pub struct Second {
    requests: AtomicU32,
    /// Gateway-made errors by [`Cause`] (index = `Cause::index`).
    errors: [AtomicU32; Cause::ALL.len()],
    /// 5xx the app itself answered (passed through).
    app_5xx: AtomicU32,
    latency: [AtomicU32; FINE_BUCKETS],
}

impl Default for Second {
    fn default() -> Second {
        Second {
            requests: AtomicU32::new(0),
            errors: std::array::from_fn(|_| AtomicU32::new(0)),
            app_5xx: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// A second's counts, taken.
#[derive(Clone)]
pub struct SecondCounts {
    pub requests: u32,
    pub errors: [u32; Cause::ALL.len()],
    pub app_5xx: u32,
    pub latency: [u32; FINE_BUCKETS],
}

/// The request measurements of one app or upstream (its pool's, kept across reloads).
pub struct AppMeter {
    pub name: Arc<str>,
    /// `http_server_request_duration_seconds` by (method, status, cause) key.
    series: RwLock<HashMap<u32, Arc<Cells>>>,
    /// `http_server_active_requests`.
    active: AtomicI64,
    /// Retries by the cause of the failed attempt.
    retries: [AtomicU64; Cause::ALL.len()],
    /// Time spent in the queue by requests that waited.
    queue_wait: Cells,
    second: Second,
}

impl AppMeter {
    fn new(name: Arc<str>) -> AppMeter {
        AppMeter {
            name,
            series: RwLock::default(),
            active: AtomicI64::new(0),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
            queue_wait: Cells::default(),
            second: Second::default(),
        }
    }

    /// A request was routed here and is in flight.
    pub fn started(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    /// A request this meter [`started`](Self::started) ended.
    pub fn ended(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// Requests in flight now.
    pub fn active(&self) -> i64 {
        self.active.load(Relaxed)
    }

    /// One request ended: `error` is the cause when the gateway made the answer.
    pub fn record(&self, method: usize, status: u16, error: Option<Cause>, took: Duration) {
        let key = (method as u32) << 16
            | u32::from(status.min(999)) << 6
            | error.map_or(0, |c| c.index() as u32 + 1);
        let seen = {
            let series = self.series.read().unwrap_or_else(|p| p.into_inner());
            match series.get(&key) {
                Some(cells) => {
                    cells.observe(took);
                    true
                }
                None => false,
            }
        };
        if !seen {
            self.series
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_default()
                .observe(took);
        }
        let s = &self.second;
        s.requests.fetch_add(1, Relaxed);
        match error {
            Some(c) => {
                s.errors[c.index()].fetch_add(1, Relaxed);
            }
            None if status >= 500 => {
                s.app_5xx.fetch_add(1, Relaxed);
            }
            None => {}
        }
        s.latency[fine_bucket(took)].fetch_add(1, Relaxed);
    }

    /// A failed attempt is retried.
    pub fn retried(&self, cause: Cause) {
        self.retries[cause.index()].fetch_add(1, Relaxed);
    }

    /// A request waited this long in the queue for a free instance.
    pub fn queued_for(&self, waited: Duration) {
        self.queue_wait.observe(waited);
    }

    /// This second's counts, reset to zero.
    pub fn take_second(&self) -> SecondCounts {
        let s = &self.second;
        SecondCounts {
            requests: s.requests.swap(0, Relaxed),
            errors: std::array::from_fn(|i| s.errors[i].swap(0, Relaxed)),
            app_5xx: s.app_5xx.swap(0, Relaxed),
            latency: std::array::from_fn(|i| s.latency[i].swap(0, Relaxed)),
        }
    }
}

/// One instance as the supervisor last measured it (for gauges at scrape time).
#[derive(Debug, Clone, Default)]
pub struct InstanceSample {
    pub app: String,
    pub instance: String,
    pub state: &'static str,
    pub memory_bytes: u64,
    pub cpu_s: f64,
    pub cpu_pct: f64,
    pub inflight: u32,
    pub restarts: u32,
}

/// One peer's response-time histogram (`http_client_request_duration_seconds`).
#[derive(Debug, Clone, Default)]
pub struct PeerSample {
    pub app: String,
    pub instance: String,
    /// (upper bound in seconds, count in that bucket), the last `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_s: f64,
    /// Requests and gateway-made errors on it so far (for the history's deltas).
    pub requests: u64,
    pub errors: u64,
    pub status_5xx: u64,
}

/// What the gauges read at a scrape or a history tick: the supervisor's instances,
/// the pools' peers and queues. Built by the gateway (`run.rs`), which sees both.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub instances: Vec<InstanceSample>,
    pub peers: Vec<PeerSample>,
    /// Requests waiting per app or upstream.
    pub queues: Vec<(String, usize)>,
    /// Instance states that exist (for the state gauge's zeroes).
    pub states: &'static [&'static str],
}

/// Every metric the gateway keeps.
#[derive(Default)]
pub struct Metrics {
    apps: RwLock<BTreeMap<Arc<str>, Arc<AppMeter>>>,
    /// Requests that matched no route or were never parsed (`app=""`).
    unrouted: Mutex<Option<Arc<AppMeter>>>,
    events: Mutex<BTreeMap<&'static str, u64>>,
    /// (app, reason) → restarts.
    restarts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (app, rule kind, action) → runs.
    autoheal: Mutex<BTreeMap<(String, String, String), u64>>,
    /// (app, result) → active health checks.
    health_checks: Mutex<BTreeMap<(String, String), u64>>,
    /// (alert, app) → firing.
    alerts: Mutex<BTreeMap<(String, String), bool>>,
    /// App → open incidents.
    incidents_open: Mutex<BTreeMap<String, u64>>,
    /// Failed TLS handshakes on the HTTPS listeners, by reason.
    pub handshake_failures: Arc<Tally>,
}

/// Counts by a fixed label value (a reason, a kind).
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<&'static str, u64>>);

impl Tally {
    /// One more of `key`.
    pub fn add(&self, key: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Every key and its count.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Metrics {
    /// The meter of app or upstream `name`, created on first use and kept for the
    /// life of the process (a pool rebuilt by a reload keeps its counts).
    pub fn app(&self, name: &str) -> Arc<AppMeter> {
        if let Some(m) = self
            .apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return m.clone();
        }
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(AppMeter::new(Arc::from(name))))
            .clone()
    }

    /// The meter of requests that reached no app.
    pub fn unrouted(&self) -> Arc<AppMeter> {
        self.unrouted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| Arc::new(AppMeter::new(Arc::from(""))))
            .clone()
    }

    /// Every app meter.
    pub fn apps(&self) -> Vec<Arc<AppMeter>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Count an event (by kind, and what it means: a restart, an AutoHeal action).
    pub fn on_event(&self, event: &Event) {
        *self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(event.kind())
            .or_default() += 1;
        let restart = match event {
            Event::InstanceRestarting { app, .. } => Some((app, "crash")),
            Event::InstanceRecycled { app, reason, .. } => Some((app, recycle_reason(reason))),
            _ => None,
        };
        if let Some((app, reason)) = restart {
            *self
                .restarts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((app.clone(), reason))
                .or_default() += 1;
        }
        if let Event::AutohealFired {
            app, rule, actions, ..
        } = event
        {
            let kind = rule.trigger.split_whitespace().next().unwrap_or("rule");
            let mut heal = self.autoheal.lock().unwrap_or_else(|p| p.into_inner());
            for action in actions {
                *heal
                    .entry((app.clone(), kind.to_owned(), action.clone()))
                    .or_default() += 1;
            }
        }
    }

    /// One active health check on a peer of `app` ended: `ok`, or why not.
    pub fn health_check(&self, app: &str, result: &str) {
        *self
            .health_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((app.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// Whether alert `name` fires now for `app`.
    pub fn set_alert(&self, name: &str, app: &str, firing: bool) {
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name.to_owned(), app.to_owned()), firing);
    }

    /// How many incidents of `app` are open.
    pub fn set_incidents_open(&self, app: &str, open: u64) {
        self.incidents_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_owned(), open);
    }

    /// The exposition text of every metric: Prometheus text 0.0.4, or OpenMetrics
    /// (with `# EOF`) when `openmetrics`.
    pub fn encode(self: &Arc<Self>, snapshot: Snapshot, openmetrics: bool) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Scrape {
            metrics: self.clone(),
            snapshot,
        }));
        let mut out = String::with_capacity(16 * 1024);
        let done = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        if let Err(e) = done {
            tracing::error!("encoding /metrics failed: {e}");
        }
        out
    }
}

/// The bounded reason label of a recycle, from its free-text reason.
fn recycle_reason(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("autoheal") || r.contains("rule") {
        "autoheal"
    } else if r.contains("reload") || r.contains("rolling") || r.contains("restart") {
        "rolling_restart"
    } else {
        "recycle"
    }
}

/// One scrape: the metrics plus the snapshot the gauges read.
struct Scrape {
    metrics: Arc<Metrics>,
    snapshot: Snapshot,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A family of counters or gauges with their label sets.
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels<'_>, V)],
    encode: impl Fn(V, prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        encode(*value, metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(v: u64, e: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(e)
}

fn gauge_i(v: i64, e: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(e)
}

fn gauge_f(v: f64, e: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(e)
}

fn histogram(
    mut e: prometheus_client::encoding::MetricEncoder,
    (sum, count, buckets): &(f64, u64, Vec<(f64, u64)>),
) -> Result<(), std::fmt::Error> {
    e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let mut meters = m.apps();
        if let Some(u) = m.unrouted.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            meters.push(u);
        }
        // Requests.
        let mut requests = enc.encode_descriptor(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests, by app, method, status and (for answers the gateway made) the Proxy-Status error type",
            None,
            MetricType::Histogram,
        )?;
        for meter in &meters {
            let mut series: Vec<(u32, Arc<Cells>)> = meter
                .series
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, c)| (*k, c.clone()))
                .collect();
            series.sort_by_key(|(k, _)| *k);
            for (key, cells) in series {
                let method = METHODS[(key >> 16) as usize % METHODS.len()];
                let status = ((key >> 6) & 0x3ff).to_string();
                let cause = (key & 0x3f) as usize;
                let mut labels: Labels = vec![
                    ("app", &meter.name),
                    ("http_request_method", method),
                    ("http_response_status_code", &status),
                ];
                if let Some(c) = cause.checked_sub(1).and_then(|i| Cause::ALL.get(i)) {
                    labels.push(("error_type", c.metric_label()));
                }
                histogram(requests.encode_family(&labels)?, &cells.read())?;
            }
        }
        let active: Vec<(Labels, i64)> = meters
            .iter()
            .map(|a| (vec![("app", &*a.name)], a.active()))
            .collect();
        family(
            &mut enc,
            "http_server_active_requests",
            "Requests in flight",
            MetricType::Gauge,
            &active,
            gauge_i,
        )?;
        // Per upstream instance.
        let mut client = enc.encode_descriptor(
            "http_client_request_duration_seconds",
            "Duration of requests to each upstream instance or server",
            None,
            MetricType::Histogram,
        )?;
        for p in &self.snapshot.peers {
            let labels: Labels = vec![("app", &p.app), ("instance", &p.instance)];
            let count = p.buckets.iter().map(|(_, c)| c).sum();
            histogram(
                client.encode_family(&labels)?,
                &(p.sum_s, count, p.buckets.clone()),
            )?;
        }
        // Instances.
        let snap = &self.snapshot;
        let mut states: Vec<(Labels, i64)> = Vec::new();
        for i in &snap.instances {
            for s in snap.states {
                states.push((
                    vec![("app", &i.app), ("instance", &i.instance), ("state", s)],
                    i64::from(i.state == *s),
                ));
            }
        }
        family(
            &mut enc,
            "healgate_instance_state",
            "1 for the state each instance is in",
            MetricType::Gauge,
            &states,
            gauge_i,
        )?;
        let per = |f: &dyn Fn(&InstanceSample) -> f64| -> Vec<(Labels, f64)> {
            snap.instances
                .iter()
                .map(|i| (vec![("app", &*i.app), ("instance", &*i.instance)], f(i)))
                .collect()
        };
        family(
            &mut enc,
            "healgate_instance_memory_working_set_bytes",
            "Working set (resident memory) of each instance's process tree",
            MetricType::Gauge,
            &per(&|i| i.memory_bytes as f64),
            gauge_f,
        )?;
        let cpu = per(&|i| i.cpu_s);
        family(
            &mut enc,
            "healgate_instance_cpu_seconds",
            "CPU time used by each instance's process tree",
            MetricType::Counter,
            &cpu,
            |v, e| ConstCounter::new(v).encode(e),
        )?;
        family(
            &mut enc,
            "healgate_instance_inflight_requests",
            "Requests in flight on each instance",
            MetricType::Gauge,
            &per(&|i| f64::from(i.inflight)),
            gauge_f,
        )?;
        family(
            &mut enc,
            "healgate_instance_restarts",
            "Times each instance's process was replaced",
            MetricType::Counter,
            &per(&|i| f64::from(i.restarts)),
            |v, e| ConstCounter::new(v).encode(e),
        )?;
        let restarts = m.restarts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows: Vec<(Labels, u64)> = restarts
            .iter()
            .map(|((app, reason), n)| (vec![("app", &**app), ("reason", *reason)], *n))
            .collect();
        family(
            &mut enc,
            "healgate_restarts",
            "Instance restarts by reason (crash, recycle, autoheal, rolling_restart)",
            MetricType::Counter,
            &rows,
            counter,
        )?;
        // Retries and queues.
        let mut retries: Vec<(Labels, u64)> = Vec::new();
        for meter in &meters {
            for c in Cause::ALL {
                let n = meter.retries[c.index()].load(Relaxed);
                if n > 0 {
                    retries.push((vec![("app", &meter.name), ("reason", c.metric_label())], n));
                }
            }
        }
        family(
            &mut enc,
            "healgate_retries",
            "Requests retried on another peer, by the failure of the attempt before",
            MetricType::Counter,
            &retries,
            counter,
        )?;
        let queues: Vec<(Labels, i64)> = snap
            .queues
            .iter()
            .map(|(app, n)| (vec![("app", &**app)], *n as i64))
            .collect();
        family(
            &mut enc,
            "healgate_queue_depth",
            "Requests waiting for a free instance",
            MetricType::Gauge,
            &queues,
            gauge_i,
        )?;
        let mut wait = enc.encode_descriptor(
            "healgate_queue_wait_seconds",
            "Time requests waited in the queue",
            None,
            MetricType::Histogram,
        )?;
        for meter in &meters {
            if meter.name.is_empty() {
                continue;
            }
            let labels: Labels = vec![("app", &meter.name)];
            histogram(wait.encode_family(&labels)?, &meter.queue_wait.read())?;
        }
        // Health, AutoHeal, events, alerts, incidents.
        let checks = m
            .health_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rows: Vec<(Labels, u64)> = checks
            .iter()
            .map(|((app, result), n)| (vec![("app", &**app), ("result", &**result)], *n))
            .collect();
        family(
            &mut enc,
            "healgate_health_checks",
            "Active health checks by result",
            MetricType::Counter,
            &rows,
            counter,
        )?;
        let heal = m.autoheal.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows: Vec<(Labels, u64)> = heal
            .iter()
            .map(|((app, rule, action), n)| {
                (
                    vec![("app", &**app), ("rule", &**rule), ("action", &**action)],
                    *n,
                )
            })
            .collect();
        family(
            &mut enc,
            "healgate_autoheal_actions",
            "AutoHeal actions by the rule (its trigger kind) that fired them",
            MetricType::Counter,
            &rows,
            counter,
        )?;
        let rows: Vec<(Labels, u64)> = m
            .handshake_failures
            .counts()
            .into_iter()
            .map(|(reason, n)| (vec![("reason", reason)], n))
            .collect();
        family(
            &mut enc,
            "healgate_tls_handshake_failures",
            "Failed TLS handshakes on the HTTPS listeners, by reason",
            MetricType::Counter,
            &rows,
            counter,
        )?;
        let events = m.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows: Vec<(Labels, u64)> = events
            .iter()
            .map(|(kind, n)| (vec![("kind", *kind)], *n))
            .collect();
        family(
            &mut enc,
            "healgate_events",
            "Lifecycle events by kind",
            MetricType::Counter,
            &rows,
            counter,
        )?;
        let alerts = m.alerts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows: Vec<(Labels, i64)> = alerts
            .iter()
            .map(|((name, app), firing)| {
                (
                    vec![("alert", &**name), ("app", &**app)],
                    i64::from(*firing),
                )
            })
            .collect();
        family(
            &mut enc,
            "healgate_alerts_firing",
            "1 while an alert fires",
            MetricType::Gauge,
            &rows,
            gauge_i,
        )?;
        let open = m
            .incidents_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rows: Vec<(Labels, i64)> = open
            .iter()
            .map(|(app, n)| (vec![("app", &**app)], *n as i64))
            .collect();
        family(
            &mut enc,
            "healgate_incidents_open",
            "Open incidents per app",
            MetricType::Gauge,
            &rows,
            gauge_i,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_buckets_bound_their_durations() {
        for us in [1u64, 99, 100, 101, 500, 12_345, 999_999, 60_000_000] {
            let d = Duration::from_micros(us);
            let b = fine_bucket(d);
            assert!(
                fine_bound_us(b) >= us as f64 || b == FINE_BUCKETS - 1,
                "{us}"
            );
            if b > 0 {
                assert!(
                    fine_bound_us(b - 1) < us as f64,
                    "{us}: bucket {b} too high"
                );
            }
        }
        let mut counts = [0u32; FINE_BUCKETS];
        counts[fine_bucket(Duration::from_millis(2))] = 90;
        counts[fine_bucket(Duration::from_millis(200))] = 10;
        let p50 = fine_quantile_ms(&counts, 0.5).unwrap();
        let p99 = fine_quantile_ms(&counts, 0.99).unwrap();
        assert!((2.0..2.5).contains(&p50), "{p50}");
        assert!((200.0..250.0).contains(&p99), "{p99}");
        assert_eq!(fine_quantile_ms(&[0; FINE_BUCKETS], 0.5), None);
    }

    #[test]
    fn methods_are_a_closed_list() {
        assert_eq!(METHODS[method_index(Some(&http::Method::GET))], "GET");
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(METHODS[method_index(Some(&odd))], "_OTHER");
        assert_eq!(METHODS[method_index(None)], "_OTHER");
    }

    #[test]
    fn the_exposition_counts_what_was_recorded() {
        let m = Arc::new(Metrics::default());
        let web = m.app("web");
        let get = method_index(Some(&http::Method::GET));
        web.record(get, 200, None, Duration::from_millis(3));
        web.record(get, 200, None, Duration::from_millis(30));
        web.record(
            get,
            502,
            Some(Cause::ConnectionRefused),
            Duration::from_millis(1),
        );
        web.retried(Cause::ConnectionRefused);
        let text = m.encode(Snapshot::default(), false);
        assert!(text.contains(
            "http_server_request_duration_seconds_count{app=\"web\",http_request_method=\"GET\",http_response_status_code=\"200\"} 2"
        ), "{text}");
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{app=\"web\",http_request_method=\"GET\",http_response_status_code=\"200\",le=\"0.005\"} 1"
        ), "{text}");
        assert!(text.contains("error_type=\"connection_refused\""), "{text}");
        assert!(
            text.contains("healgate_retries_total{app=\"web\",reason=\"connection_refused\"} 1"),
            "{text}"
        );
        let second = web.take_second();
        assert_eq!(second.requests, 3);
        assert_eq!(second.errors[Cause::ConnectionRefused.index()], 1);
        assert_eq!(web.take_second().requests, 0, "taken and reset");
        let om = m.encode(Snapshot::default(), true);
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
