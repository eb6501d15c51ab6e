//! The status snapshot: what each app actor publishes and what admin and CLI read.

use super::app::Actor;
use super::control::{self, AppState, AppStatus, InstanceStatus};
use super::instance::{InstanceState, CRASH_LOOP_AFTER};
use super::process;
use super::sampler::Sample;
use crate::upstream::stats::PeerStats;
use crate::upstream::{Peer, Pool};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// What status readers see of a slot.
#[derive(Clone)]
pub(super) struct SlotView {
    pub(super) id: String,
    pub(super) pid: Option<u32>,
    pub(super) port: u16,
    pub(super) state: InstanceState,
    pub(super) started: Option<Instant>,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<String>,
    pub(super) peer: Option<Arc<Peer>>,
    pub(super) sample: Option<Sample>,
    pub(super) revision: Option<String>,
}

#[derive(Clone)]
pub(super) struct AppView {
    pub(super) name: String,
    pub(super) state: AppState,
    pub(super) target: u32,
    pub(super) reason: Option<String>,
    pub(super) slots: Vec<SlotView>,
    /// The config's revision and the stable one (see [`AppStatus`]).
    pub(super) revision: String,
    pub(super) stable_revision: String,
}

/// Status views of every app: (name, view, the pool it publishes into).
pub(super) type Views = Arc<RwLock<Vec<(String, Arc<RwLock<AppView>>, Arc<Pool>)>>>;

pub(super) fn request_stats(st: &PeerStats) -> control::RequestStats {
    use std::sync::atomic::Ordering::Relaxed;
    let by_class = st
        .by_class
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{}xx", i + 1), c.load(Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    control::RequestStats {
        total: st.requests.load(Relaxed),
        by_class,
        errors: st
            .errors()
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect(),
        p50_ms: st.quantile_ms(0.5),
        p99_ms: st.quantile_ms(0.99),
    }
}

pub(super) fn app_status(v: &AppView, pool: &Pool) -> AppStatus {
    let instances: Vec<InstanceStatus> = v
        .slots
        .iter()
        .map(|s| {
            let (memory_bytes, cpu_s) = match &s.sample {
                Some(x) => (x.rss, x.cpu_s),
                None => s.pid.and_then(process::stats).unwrap_or((0, 0.0)),
            };
            InstanceStatus {
                id: s.id.clone(),
                pid: s.pid,
                port: s.port,
                state: s.state,
                uptime_s: s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0),
                memory_bytes,
                cpu_s,
                inflight: s.peer.as_ref().map(|p| p.outstanding()).unwrap_or(0),
                restarts: s.restarts,
                last_exit: s.last_exit.clone(),
                cpu_pct: s
                    .sample
                    .map(|x| (x.cpu_pct * 10.0).round() / 10.0)
                    .unwrap_or(0.0),
                threads: s.sample.map(|x| x.threads).unwrap_or(0),
                open_files: s.sample.map(|x| x.open_files).unwrap_or(0),
                requests: s
                    .peer
                    .as_ref()
                    .map(|p| request_stats(&p.stats))
                    .unwrap_or_default(),
                health: s
                    .peer
                    .as_ref()
                    .map(|p| p.notes.checks())
                    .unwrap_or_default(),
                rotation: s
                    .peer
                    .as_ref()
                    .map(|p| p.notes.rotation())
                    .unwrap_or_default(),
                revision: s.revision.clone(),
            }
        })
        .collect();
    let revisions: std::collections::BTreeSet<&str> = v
        .slots
        .iter()
        .filter_map(|s| s.revision.as_deref())
        .collect();
    AppStatus {
        name: v.name.clone(),
        state: v.state,
        target: v.target,
        ready: instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready)
            .count() as u32,
        queued: pool.queued(),
        mixed_revisions: revisions.len() > 1,
        instances,
        reason: v.reason.clone(),
        revision: v.revision.clone(),
        stable_revision: v.stable_revision.clone(),
    }
}

impl Actor {
    /// Update what status readers see.
    pub(super) fn refresh(&self) {
        let slots: Vec<SlotView> = self
            .slots
            .values()
            .map(|s| {
                let p = s.current.as_ref();
                SlotView {
                    id: s.id.clone(),
                    pid: p.and_then(|p| p.pid),
                    port: p.map(|p| p.port).unwrap_or(0),
                    state: s.state(),
                    started: p.map(|p| p.started),
                    restarts: s.restarts,
                    last_exit: s.last_exit.clone(),
                    peer: p.map(|p| p.peer.clone()),
                    sample: p.and_then(|p| p.sample),
                    revision: p.map(|p| p.rev.id.clone()),
                }
            })
            .collect();
        let ready = slots
            .iter()
            .filter(|s| s.state == InstanceState::Ready)
            .count();
        let looping = self
            .slots
            .values()
            .any(|s| s.fast_exits >= CRASH_LOOP_AFTER);
        let state = if self.shutdown.is_some() {
            AppState::Stopping
        } else if ready == 0 && looping {
            AppState::CrashLoop
        } else if ready == 0 {
            AppState::Starting
        } else {
            AppState::Running
        };
        let reason = (state == AppState::CrashLoop).then(|| {
            self.slots
                .values()
                .find(|s| s.fast_exits >= CRASH_LOOP_AFTER)
                .and_then(|s| s.last_exit.clone())
                .unwrap_or_default()
        });
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        *v = AppView {
            name: self.app.name.clone(),
            state,
            target: self.target,
            reason,
            slots,
            revision: self.wanted.id.clone(),
            stable_revision: self.stable.id.clone(),
        };
    }
}

/// What the metrics and their history read once a second and at a scrape: the
/// instances of `apps` as the supervisor sees them, and every peer of `pools` (apps'
/// instances and upstreams' servers) as the proxy measured it.
pub fn metrics_snapshot(
    apps: &[AppStatus],
    pools: &[Arc<Pool>],
) -> crate::observe::metrics::Snapshot {
    use crate::observe::metrics::{InstanceSample, PeerSample, Snapshot};
    use crate::upstream::stats::BUCKETS_MS;
    use std::sync::atomic::Ordering::Relaxed;
    const STATES: [&str; InstanceState::ALL.len()] = {
        let mut out = [""; InstanceState::ALL.len()];
        let mut i = 0;
        while i < out.len() {
            out[i] = InstanceState::ALL[i].as_str();
            i += 1;
        }
        out
    };
    let instances = apps
        .iter()
        .flat_map(|a| {
            a.instances.iter().map(|i| InstanceSample {
                app: a.name.clone(),
                instance: i.id.clone(),
                state: i.state.as_str(),
                memory_bytes: i.memory_bytes,
                cpu_s: i.cpu_s,
                cpu_pct: i.cpu_pct,
                inflight: i.inflight,
                restarts: i.restarts,
            })
        })
        .collect();
    let mut peers = Vec::new();
    let mut queues = Vec::new();
    for pool in pools {
        queues.push((pool.name.to_string(), pool.queued()));
        for peer in pool.peers().iter() {
            let st = &peer.stats;
            let buckets = BUCKETS_MS
                .iter()
                .map(|ms| *ms as f64 / 1000.0)
                .chain([f64::INFINITY])
                .zip(st.latency.iter().map(|c| c.load(Relaxed)))
                .collect();
            peers.push(PeerSample {
                app: pool.name.to_string(),
                instance: peer.id.to_string(),
                buckets,
                sum_s: st.latency_sum_us.load(Relaxed) as f64 / 1e6,
                requests: st.requests.load(Relaxed),
                errors: st.errors().iter().map(|(_, n)| n).sum(),
                status_5xx: st.by_class[4].load(Relaxed),
            });
        }
    }
    Snapshot {
        instances,
        peers,
        queues,
        states: &STATES,
    }
}

/// What incidents are judged by, per app and upstream: the supervisor's view of its
/// instances and the history's last minute and second.
pub fn incident_conditions(
    apps: &[AppStatus],
    pools: &[Arc<Pool>],
    history: &crate::observe::history::History,
) -> Vec<crate::observe::incidents::AppCondition> {
    pools
        .iter()
        .map(|pool| {
            let name = pool.name.to_string();
            let app = apps.iter().find(|a| a.name == name);
            crate::observe::incidents::AppCondition {
                target: app.map_or(0, |a| a.target),
                ready: app.map_or(0, |a| a.ready),
                crash_loop: app.is_some_and(|a| a.state == AppState::CrashLoop),
                remote: app.is_none(),
                minute: history.recent(&name, 60).unwrap_or_default(),
                second_errors: history.recent(&name, 1).map_or(0, |r| r.errors),
                app: name,
            }
        })
        .collect()
}
