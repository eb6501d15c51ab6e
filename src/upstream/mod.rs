//! Upstreams: pools of peers the proxy sends to, how one is picked, how a failing one
//! leaves rotation and comes back.
//!
//! A [`Pool`] is what a route points at: the servers of an `[[upstream]]`, or (later)
//! the instances the supervisor publishes for an `[[app]]`. The proxy asks a pool for
//! a [`Lease`] on a peer and never knows where the peers came from.

pub mod conn;
pub mod deadline;
pub mod dns;
pub mod h1;
pub mod h2;
pub mod health;
pub mod registry;
pub mod stats;
pub mod tls;

use crate::config::{Eject, Queue, Retry};
use crate::error::{Cause, ProxyError};
use crate::observe::events::{Ejection, Event, Events};
use crate::observe::metrics::AppMeter;
use conn::{Connector, IdlePool};
use dns::Target;
use std::cell::Cell;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One server or instance requests can go to.
pub struct Peer {
    /// `api#1`, `web#2`: stable, used in logs, events and pages.
    pub id: Arc<str>,
    pub target: Target,
    pub tls: bool,
    /// Requests sent and not yet completed (the balancing signal).
    outstanding: AtomicU32,
    /// Active health checks' verdict (true when there are none).
    healthy: AtomicBool,
    /// Takes no new requests (being replaced or removed).
    draining: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Out of rotation until this many ms after the pool's epoch; 0 = in rotation.
    ejected_until_ms: AtomicU64,
    /// Ejections in a row: the cool-down doubles with each, up to 8x.
    ejections: AtomicU32,
    pub conns: IdlePool,
    /// Its HTTP/2 connections (`protocol = "h2"`, or `"auto"` when ALPN chose h2).
    pub h2: h2::H2Conns,
    /// `protocol = "auto"`: the server chose HTTP/1.1 by ALPN (so connect for h1).
    pub alpn_h1: AtomicBool,
    /// An instance the supervisor runs (its exits are reported through `mark_exited`).
    pub supervised: bool,
    /// Requests measured on this peer.
    pub stats: stats::PeerStats,
    exit: std::sync::Mutex<Option<Arc<ExitNotice>>>,
    exit_notify: Notify,
    /// Its last health checks and rotation changes (for status and the dashboard).
    pub notes: PeerNotes,
}

/// How many health checks and rotation changes a peer keeps.
const NOTES_KEPT: usize = 10;

/// One health check result, or one change of rotation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Note {
    pub ts: String,
    /// The check passed / the peer is in rotation.
    pub ok: bool,
    /// Why (`health check GET /healthz answered 500`, `connection refused` ...).
    pub reason: String,
}

/// A peer's last health checks and rotation changes, newest last.
#[derive(Debug, Default)]
pub struct PeerNotes {
    checks: std::sync::Mutex<std::collections::VecDeque<Note>>,
    rotation: std::sync::Mutex<std::collections::VecDeque<Note>>,
}

impl PeerNotes {
    fn push(list: &std::sync::Mutex<std::collections::VecDeque<Note>>, ok: bool, reason: &str) {
        let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == NOTES_KEPT {
            l.pop_front();
        }
        l.push_back(Note {
            ts: crate::observe::time::rfc3339_millis(std::time::SystemTime::now()),
            ok,
            reason: reason.to_owned(),
        });
    }

    pub fn checks(&self) -> Vec<Note> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn rotation(&self) -> Vec<Note> {
        self.rotation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The bounded label of a health check's result.
pub fn check_result(verdict: &Result<(), String>) -> &'static str {
    match verdict {
        Ok(()) => "ok",
        Err(why) if why.contains("refused") => "refused",
        Err(why) if why.contains("no answer within") || why.contains("timed out") => "timeout",
        Err(why) if why.contains("answered 5") => "status_5xx",
        Err(why) if why.contains("answered") => "status_other",
        Err(_) => "error",
    }
}

/// How a supervised instance's process ended, as the proxy needs to know it.
#[derive(Debug)]
pub struct ExitNotice {
    /// e.g. `web#2 (pid 4242) exited with code 1 after 12.3s: RuntimeError: boom`.
    pub reason: String,
    /// It ended by itself (an exit code, SIGSEGV, SIGABRT ...), so a request in flight
    /// may be the cause; false for SIGKILL/SIGTERM from outside.
    pub self_inflicted: bool,
    /// Requests in flight on it when the exit was seen (filled in by `mark_exited`).
    pub inflight: u32,
}

impl Peer {
    /// A peer in rotation.
    pub fn new(id: &str, target: Target, tls: bool) -> Peer {
        Peer {
            id: Arc::from(id),
            target,
            tls,
            outstanding: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            conns: IdlePool::default(),
            h2: h2::H2Conns::default(),
            alpn_h1: AtomicBool::new(false),
            supervised: false,
            stats: stats::PeerStats::default(),
            exit: std::sync::Mutex::new(None),
            exit_notify: Notify::new(),
            notes: PeerNotes::default(),
        }
    }

    /// A peer for an instance the supervisor runs on `127.0.0.1:port`, measured with
    /// `stats` (which carries the app's AutoHeal windows).
    pub fn instance(id: &str, port: u16, stats: stats::PeerStats) -> Peer {
        Peer {
            supervised: true,
            stats,
            ..Peer::new(
                id,
                Target::addr(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                false,
            )
        }
    }

    /// The supervisor saw this instance's process end.
    pub fn mark_exited(&self, mut notice: ExitNotice) {
        notice.inflight = self.outstanding();
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(notice));
        self.draining.store(true, Ordering::Relaxed);
        self.conns.clear();
        self.h2.clear();
        self.exit_notify.notify_waiters();
    }

    /// How the process ended, waiting up to `wait` for the supervisor to learn it
    /// (a reset connection is often seen a moment before the exit is reaped).
    pub async fn exit_notice(&self, wait: Duration) -> Option<Arc<ExitNotice>> {
        if !self.supervised {
            return None;
        }
        let notified = self.exit_notify.notified();
        if let Some(n) = self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(n);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests in flight on this peer.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether active health checks pass.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the peer takes no new requests.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stop sending new requests here (in-flight ones finish).
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        if on {
            self.conns.clear();
            self.h2.clear();
        }
    }
}

/// What a pool needs to know beyond its peers.
pub struct PoolSettings {
    /// Per peer; 0 = unlimited.
    pub max_concurrency: u32,
    pub queue: Queue,
    pub retry: Retry,
    pub eject: Eject,
    pub response_header_timeout: Duration,
    /// With no peer ready, wait in the queue (apps whose instances are starting)
    /// instead of failing at once.
    pub wait_for_peers: bool,
}

/// The peers of one upstream or app, and how to reach them.
pub struct Pool {
    pub name: Arc<str>,
    peers: RwLock<Arc<Vec<Arc<Peer>>>>,
    pub settings: PoolSettings,
    pub connector: Connector,
    waiting: AtomicUsize,
    wakeup: Notify,
    budget: RetryBudget,
    events: Events,
    epoch: Instant,
    /// Why the pool has no peer, when the supervisor knows (e.g. a crash loop).
    unavailable_reason: RwLock<Option<String>>,
    /// Requests retried after an instance crashed by itself go one at a time, so a
    /// request that crashes instances cannot take others down with it.
    pub crash_lane: Arc<tokio::sync::Semaphore>,
    /// Its requests' measurements (kept by name across reloads).
    pub meter: Arc<AppMeter>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why [`Pool::pick`] found no peer.
enum Pick {
    /// A peer and its index in the pool's list.
    Peer(Arc<Peer>, u32),
    /// Peers exist but all are at `max_concurrency` (or starting): wait.
    Busy,
    /// No peer can take requests; the text says why.
    Unavailable(String),
}

impl Pool {
    /// A pool with these peers.
    pub fn new(
        name: &str,
        peers: Vec<Arc<Peer>>,
        settings: PoolSettings,
        connector: Connector,
        events: Events,
    ) -> Pool {
        Pool {
            name: Arc::from(name),
            peers: RwLock::new(Arc::new(peers)),
            budget: RetryBudget::new(settings.retry.budget_percent),
            settings,
            connector,
            waiting: AtomicUsize::new(0),
            wakeup: Notify::new(),
            epoch: Instant::now(),
            unavailable_reason: RwLock::new(None),
            crash_lane: Arc::new(tokio::sync::Semaphore::new(1)),
            meter: events.monitor().metrics.app(name),
            events,
        }
    }

    /// A snapshot of the peers.
    pub fn peers(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the set of peers (the supervisor publishing its ready instances).
    pub fn set_peers(&self, peers: Vec<Arc<Peer>>) {
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(peers);
        self.wakeup.notify_waiters();
    }

    /// Say why no peer can serve (shown as details of 503s), or clear it.
    pub fn set_unavailable_reason(&self, reason: Option<String>) {
        *self
            .unavailable_reason
            .write()
            .unwrap_or_else(|p| p.into_inner()) = reason;
        self.wakeup.notify_waiters();
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn is_ejected(&self, p: &Peer, now_ms: u64) -> bool {
        let until = p.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Power of two random choices, least outstanding requests, among peers that are
    /// healthy, not draining, not ejected and below `max_concurrency`; peers already
    /// `tried` for this request are avoided while others are available.
    fn pick(&self, tried: u64) -> Pick {
        let peers = self.peers();
        let now = self.now_ms();
        let max = self.settings.max_concurrency;
        let in_rotation = |p: &Peer| p.is_healthy() && !p.is_draining();
        let has_room = |p: &Peer| max == 0 || p.outstanding() < max;
        let was_tried = |i: usize| i < 64 && tried & (1 << i) != 0;

        for avoid_tried in [true, false] {
            let ok = |i: usize, p: &Peer| {
                in_rotation(p)
                    && !self.is_ejected(p, now)
                    && has_room(p)
                    && !(avoid_tried && was_tried(i))
            };
            if let Some((i, p)) = p2c(&peers, ok) {
                return Pick::Peer(p, i as u32);
            }
        }
        // None free. Busy peers in rotation mean: wait for a slot.
        if peers
            .iter()
            .any(|p| in_rotation(p) && !self.is_ejected(p, now))
        {
            return Pick::Busy;
        }
        // All peers in rotation are passively ejected: try the one whose cool-down
        // ends first rather than fail without trying (its real error is more useful).
        if let Some((i, p)) = peers
            .iter()
            .enumerate()
            .filter(|(_, p)| in_rotation(p) && has_room(p))
            .min_by_key(|(_, p)| p.ejected_until_ms.load(Ordering::Relaxed))
        {
            return Pick::Peer(p.clone(), i as u32);
        }
        let reason = self
            .unavailable_reason
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = reason {
            return Pick::Unavailable(r);
        }
        if self.settings.wait_for_peers || peers.iter().any(|p| in_rotation(p)) {
            return Pick::Busy;
        }
        Pick::Unavailable(describe_unavailable(&self.name, &peers))
    }

    /// A lease on a peer: now, or after waiting in the bounded FIFO queue.
    pub async fn acquire(self: &Arc<Self>, tried: u64) -> Result<Lease, ProxyError> {
        // Fast path: a free peer, without registering as a waiter.
        match self.pick(tried) {
            Pick::Peer(peer, index) => return Ok(Lease::new(self.clone(), peer, index)),
            Pick::Unavailable(why) => return Err(ProxyError::new(Cause::NoHealthyPeer, why)),
            Pick::Busy => {}
        }
        let mut slot: Option<QueueSlot<'_>> = None;
        let mut deadline = None;
        loop {
            // Registered before looking again, so a slot freed in between wakes us.
            let mut notified = pin!(self.wakeup.notified());
            notified.as_mut().enable();
            match self.pick(tried) {
                Pick::Peer(peer, index) => return Ok(Lease::new(self.clone(), peer, index)),
                Pick::Unavailable(why) => return Err(ProxyError::new(Cause::NoHealthyPeer, why)),
                Pick::Busy => {
                    if slot.is_none() {
                        let q = &self.settings.queue;
                        if self.waiting.fetch_add(1, Ordering::AcqRel) >= q.size {
                            self.waiting.fetch_sub(1, Ordering::AcqRel);
                            return Err(ProxyError::new(
                                Cause::QueueFull,
                                format!("{}: queue full ({} waiting)", self.name, q.size),
                            ));
                        }
                        slot = Some(QueueSlot {
                            waiting: &self.waiting,
                            meter: &self.meter,
                            since: Instant::now(),
                        });
                        deadline = Some(tokio::time::Instant::now() + q.timeout);
                    }
                    let until = deadline.expect("set with the slot");
                    if tokio::time::timeout_at(until, notified).await.is_err() {
                        let reason = self
                            .unavailable_reason
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone();
                        let why = match reason {
                            Some(r) => format!(
                                "waited {:?} in the queue: {r}",
                                self.settings.queue.timeout
                            ),
                            None => format!(
                                "{}: waited {:?} in the queue for a free slot",
                                self.name, self.settings.queue.timeout
                            ),
                        };
                        let cause = if reason_is_unavailable(&self.peers()) {
                            Cause::NoHealthyPeer
                        } else {
                            Cause::QueueFull
                        };
                        return Err(ProxyError::new(cause, why));
                    }
                }
            }
        }
    }

    /// Ask the retry budget for one retry.
    pub fn allow_retry(&self) -> bool {
        self.budget.withdraw()
    }

    /// Count a request toward the retry budget.
    pub fn note_request(&self) {
        self.budget.deposit();
    }

    /// A request on `peer` ended well enough to show the peer is alive.
    pub fn record_success(&self, peer: &Peer) {
        if peer.consecutive_failures.swap(0, Ordering::Relaxed) != 0
            && peer.ejected_until_ms.swap(0, Ordering::Relaxed) != 0
        {
            peer.ejections.store(0, Ordering::Relaxed);
            PeerNotes::push(
                &peer.notes.rotation,
                true,
                "a request succeeded after the cool-down",
            );
            self.events.emit(Event::InstanceReadmitted {
                app: self.name.to_string(),
                instance: peer.id.to_string(),
                reason: "a request succeeded after the cool-down".into(),
            });
        }
    }

    /// A transport failure on `peer`: after `eject.consecutive_failures` in a row it
    /// leaves rotation for the cool-down (doubling with each ejection in a row).
    pub fn record_failure(&self, peer: &Peer, err: &ProxyError) {
        if err.cause == Cause::GatewayResources {
            self.gateway_short(err);
        }
        if !err.cause.is_peer_failure() {
            return;
        }
        let n = peer.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let e = &self.settings.eject;
        if n < e.consecutive_failures {
            return;
        }
        let now = self.now_ms();
        if self.is_ejected(peer, now) {
            return;
        }
        let k = peer.ejections.fetch_add(1, Ordering::Relaxed).min(3);
        let cooldown = e.cooldown * (1 << k);
        peer.ejected_until_ms
            .store(now + cooldown.as_millis() as u64, Ordering::Relaxed);
        peer.conns.clear();
        peer.h2.clear();
        PeerNotes::push(&peer.notes.rotation, false, &err.to_string());
        self.events.emit(Event::InstanceEjected {
            app: self.name.to_string(),
            instance: peer.id.to_string(),
            reason: err.to_string(),
            by: Ejection::Passive,
            consecutive_failures: Some(n),
            cooldown_ms: Some(cooldown.as_millis() as u64),
        });
    }

    /// The gateway itself is out of file descriptors, local ports or memory: a loud
    /// event (at most one every 10 s in the whole process, with how many were held
    /// back) naming what to raise. Never counted against the peer.
    fn gateway_short(&self, err: &ProxyError) {
        static LAST_MS: AtomicU64 = AtomicU64::new(0);
        static HELD: AtomicU64 = AtomicU64::new(0);
        let now = self.now_ms().max(1);
        let last = LAST_MS.load(Ordering::Relaxed);
        if last != 0 && now < last + 10_000
            || LAST_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            HELD.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tracing::error!(
            "{err}: the gateway is short of a resource; raise its file descriptor limit \
             (ulimit -n, systemd LimitNOFILE) or its local port range"
        );
        self.events.emit(Event::GatewayResourcesExhausted {
            app: self.name.to_string(),
            reason: err.to_string(),
            held_back: HELD.swap(0, Ordering::Relaxed),
            advice: "raise the file descriptor limit (ulimit -n, LimitNOFILE) or net.ipv4.ip_local_port_range",
        });
    }

    /// One active health check of `peer` ended: counted and noted (the verdict on
    /// rotation is [`set_health`](Self::set_health)'s, after the streak rule).
    pub fn health_checked(&self, peer: &Peer, verdict: &Result<(), String>) {
        self.events
            .monitor()
            .metrics
            .health_check(&self.name, check_result(verdict));
        match verdict {
            Ok(()) => PeerNotes::push(&peer.notes.checks, true, "passed"),
            Err(why) => PeerNotes::push(&peer.notes.checks, false, why),
        }
    }

    /// Active health verdict for `peer`, with events on change.
    pub fn set_health(&self, peer: &Peer, healthy: bool, why: &str) {
        if peer.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                peer.consecutive_failures.store(0, Ordering::Relaxed);
                peer.ejected_until_ms.store(0, Ordering::Relaxed);
                peer.ejections.store(0, Ordering::Relaxed);
                self.wakeup.notify_waiters();
            } else {
                peer.conns.clear();
                peer.h2.clear();
            }
            PeerNotes::push(&peer.notes.rotation, healthy, why);
            let (app, instance, reason) =
                (self.name.to_string(), peer.id.to_string(), why.to_owned());
            self.events.emit(if healthy {
                Event::InstanceReadmitted {
                    app,
                    instance,
                    reason,
                }
            } else {
                Event::InstanceEjected {
                    app,
                    instance,
                    reason,
                    by: Ejection::HealthCheck,
                    consecutive_failures: None,
                    cooldown_ms: None,
                }
            });
        }
    }
}

fn reason_is_unavailable(peers: &[Arc<Peer>]) -> bool {
    !peers.iter().any(|p| p.is_healthy() && !p.is_draining())
}

fn describe_unavailable(name: &str, peers: &[Arc<Peer>]) -> String {
    if peers.is_empty() {
        return format!("{name}: no servers");
    }
    let unhealthy = peers.iter().filter(|p| !p.is_healthy()).count();
    let draining = peers.iter().filter(|p| p.is_draining()).count();
    format!(
        "{name}: none of {} servers can take requests ({unhealthy} failing health checks, {draining} draining)",
        peers.len()
    )
}

/// Two random candidates among those `ok` accepts; the one with fewer outstanding
/// requests wins. No allocation: two passes over the list.
fn p2c(peers: &[Arc<Peer>], ok: impl Fn(usize, &Peer) -> bool) -> Option<(usize, Arc<Peer>)> {
    let n = peers.iter().enumerate().filter(|(i, p)| ok(*i, p)).count();
    if n == 0 {
        return None;
    }
    let nth = |k: usize| peers.iter().enumerate().filter(|(i, p)| ok(*i, p)).nth(k);
    if n == 1 {
        return nth(0).map(|(i, p)| (i, p.clone()));
    }
    let a = (rand_u64() % n as u64) as usize;
    let mut b = (rand_u64() % (n as u64 - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (pa, pb) = (nth(a)?, nth(b)?);
    let (i, p) = if pb.1.outstanding() < pa.1.outstanding() {
        pb
    } else {
        pa
    };
    Some((i, p.clone()))
}

/// A fast thread-local xorshift generator, seeded from the std hasher's random keys.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A place in the queue; leaving it (served, timed out, or cancelled) frees it.
/// A place in the queue: leaving it (served, timed out or gone) frees it and records
/// the wait.
struct QueueSlot<'a> {
    waiting: &'a AtomicUsize,
    meter: &'a AppMeter,
    since: Instant,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.meter.queued_for(self.since.elapsed());
    }
}

/// One request's claim on a peer: counts as outstanding until dropped, and then
/// wakes one queued request.
pub struct Lease {
    pub pool: Arc<Pool>,
    pub peer: Arc<Peer>,
    /// The peer's index in the pool's list when it was picked.
    pub index: u32,
}

impl Lease {
    fn new(pool: Arc<Pool>, peer: Arc<Peer>, index: u32) -> Lease {
        peer.outstanding.fetch_add(1, Ordering::AcqRel);
        Lease { pool, peer, index }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.peer.outstanding.fetch_sub(1, Ordering::AcqRel);
        if self.pool.waiting.load(Ordering::Acquire) > 0 {
            self.pool.wakeup.notify_one();
        }
    }
}

/// Retries as a share of requests: each request deposits `percent`% of a token,
/// each retry takes one. Starts with (and never holds more than) a small reserve so a
/// quiet service can still retry, while a failing busy one cannot multiply its load.
struct RetryBudget {
    /// In thousandths of a token.
    balance: AtomicI64,
    deposit: i64,
}

const RESERVE: i64 = 10_000;
const CAP: i64 = 100_000;

impl RetryBudget {
    fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            balance: AtomicI64::new(RESERVE),
            deposit: i64::from(percent) * 10,
        }
    }

    fn deposit(&self) {
        if self.balance.load(Ordering::Relaxed) < CAP {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> Arc<Peer> {
        Arc::new(Peer::new(id, Target::new("127.0.0.1", 1), false))
    }

    #[test]
    fn p2c_prefers_fewer_outstanding() {
        let peers = vec![peer("a#1"), peer("a#2")];
        peers[0].outstanding.store(5, Ordering::Relaxed);
        for _ in 0..100 {
            let (i, p) = p2c(&peers, |_, _| true).unwrap();
            assert_eq!((i, &*p.id), (1, "a#2"));
        }
    }

    #[test]
    fn p2c_spreads_over_equal_peers() {
        let peers = vec![peer("a#1"), peer("a#2"), peer("a#3")];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(p2c(&peers, |_, _| true).unwrap().1.id.clone());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn budget_limits_retries_to_a_share() {
        let b = RetryBudget::new(20);
        let mut allowed = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                allowed += 1;
            }
        }
        // 20% of 1000 plus the reserve of 10.
        assert!((200..=211).contains(&allowed), "{allowed}");
    }
}
