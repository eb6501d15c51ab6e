//! The upstream registry: every pool a config asks for (one per `[[upstream]]` and
//! per `[[app]]`), rebuilt on reload keeping the pools that did not change, and the
//! active health checks of the upstream pools.

use super::conn::Connector;
use super::dns::{Resolver, Target};
use super::tls::Tls;
use super::{Peer, Pool, PoolSettings};
use crate::config::diff::{same_app_pool, same_upstream_pool};
use crate::config::{self, App, Config, Upstream};
use crate::observe::events::Events;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use tokio::sync::watch;

/// Every pool a config asks for, with the config each was built from.
#[derive(Default, Clone)]
pub struct Pools {
    pub upstreams: Vec<(Upstream, Arc<Pool>)>,
    pub apps: Vec<(App, Arc<Pool>)>,
}

impl Pools {
    /// Build the pools of `cfg`, reusing from `previous` every pool whose settings did
    /// not change (its connections, health verdicts and queue stay as they are).
    pub fn build(cfg: &Config, events: &Events, previous: Option<&Pools>) -> io::Result<Pools> {
        let g = &cfg.gateway;
        let mut pools = Pools::default();
        for up in &cfg.upstreams {
            let reused = previous
                .and_then(|p| p.upstreams.iter().find(|(u, _)| same_upstream_pool(u, up)))
                .map(|(_, pool)| pool.clone());
            let pool = match reused {
                Some(p) => p,
                None => upstream_pool(up, g, events)?,
            };
            pools.upstreams.push((up.clone(), pool));
        }
        for app in &cfg.apps {
            let reused = previous
                .and_then(|p| p.apps.iter().find(|(a, _)| same_app_pool(a, app)))
                .map(|(_, pool)| pool.clone());
            let pool = reused.unwrap_or_else(|| app_pool(app, g, events));
            pools.apps.push((app.clone(), pool));
        }
        Ok(pools)
    }

    /// Every route: (the routes' config, the pool they point at), upstreams first.
    pub fn routes(&self) -> impl Iterator<Item = (&config::Routes, &Arc<Pool>)> {
        self.upstreams
            .iter()
            .map(|(u, p)| (&u.routes, p))
            .chain(self.apps.iter().map(|(a, p)| (&a.routes, p)))
    }
}

/// The pool of an `[[upstream]]`: its servers as peers, DNS, TLS.
pub fn upstream_pool(up: &Upstream, g: &config::Gateway, events: &Events) -> io::Result<Arc<Pool>> {
    let peers = up
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Arc::new(Peer::new(
                &format!("{}#{}", up.name, i + 1),
                Target::new(&s.host, s.port),
                s.tls,
            ))
        })
        .collect();
    let tls = if up.servers.iter().any(|s| s.tls) {
        Some(
            Tls::new(&up.tls, up.protocol)
                .map_err(|e| io::Error::new(e.kind(), format!("upstream {}: {e}", up.name)))?,
        )
    } else {
        None
    };
    let connector = Connector {
        resolver: Resolver::new(&up.dns, g.timeouts.dns),
        tls,
        protocol: up.protocol,
        connect_timeout: g.timeouts.connect,
        dns_timeout: g.timeouts.dns,
        dns_refresh: up.dns.refresh,
        response_header_limit: g.limits.response_header,
        idle_limit: g.timeouts.upstream_idle,
    };
    let settings = PoolSettings {
        max_concurrency: up.max_concurrency,
        queue: up.queue.clone(),
        retry: up.retry.clone(),
        eject: up.eject.clone(),
        response_header_timeout: g.timeouts.response_header,
        wait_for_peers: false,
    };
    Ok(Arc::new(Pool::new(
        &up.name,
        peers,
        settings,
        connector,
        events.clone(),
    )))
}

/// The (empty) pool of an `[[app]]`, for the supervisor to publish instances into.
pub fn app_pool(app: &App, g: &config::Gateway, events: &Events) -> Arc<Pool> {
    let connector = Connector {
        resolver: Resolver::System,
        tls: None,
        protocol: app.protocol,
        connect_timeout: g.timeouts.connect,
        dns_timeout: g.timeouts.dns,
        dns_refresh: std::time::Duration::from_secs(30),
        response_header_limit: g.limits.response_header,
        idle_limit: g.timeouts.upstream_idle,
    };
    let settings = PoolSettings {
        max_concurrency: app.max_concurrency,
        queue: app.queue.clone(),
        retry: app.retry.clone(),
        eject: config::Eject::default(),
        response_header_timeout: g.timeouts.response_header,
        wait_for_peers: true,
    };
    Arc::new(Pool::new(
        &app.name,
        Vec::new(),
        settings,
        connector,
        events.clone(),
    ))
}

/// The health-check task of every upstream pool that has a health path.
pub struct HealthChecks {
    /// By pool (its address).
    tasks: HashMap<usize, tokio::task::JoinHandle<()>>,
    stop: watch::Receiver<bool>,
}

impl HealthChecks {
    /// No checks yet; the ones started later stop when `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> HealthChecks {
        HealthChecks {
            tasks: HashMap::new(),
            stop,
        }
    }

    /// Run checks for every upstream pool of `pools` that has none running (a reused
    /// pool keeps its task and its streaks); stop those of pools that are gone.
    pub fn sync(&mut self, pools: &Pools) {
        let mut keep = HashMap::new();
        for (up, pool) in &pools.upstreams {
            let key = Arc::as_ptr(pool) as usize;
            match self.tasks.remove(&key) {
                Some(t) => {
                    keep.insert(key, t);
                }
                None => {
                    if let Some(h) = &up.health {
                        let t = tokio::spawn(super::health::run(
                            pool.clone(),
                            h.clone(),
                            self.stop.clone(),
                        ));
                        keep.insert(key, t);
                    }
                }
            }
        }
        self.stop_all();
        self.tasks = keep;
    }

    /// Stop every check.
    pub fn stop_all(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}
