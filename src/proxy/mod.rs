//! The proxy: listeners, the request path, gateway-made responses.
//!
//! [`server`] accepts connections and hands each request to [`forward::handle`], the
//! phase driver. Routes point at [`crate::upstream::Pool`]s; the proxy asks a pool
//! for a peer and never knows whether it is a remote server or an instance that the
//! supervisor runs.

pub mod accept;
pub mod answer;
pub mod forward;
pub mod headers;
pub mod log;
pub mod pages;
pub mod prepare;
pub mod respond;
pub mod retry;
pub mod route;
pub mod server;
pub mod tunnel;

use crate::config::{self, App, Config, Limits, Upstream};
use crate::observe::access::AccessLog;
use crate::observe::events::Events;
use crate::upstream::conn::Connector;
use crate::upstream::dns::{Resolver, Target};
use crate::upstream::tls::Tls;
use crate::upstream::{Peer, Pool, PoolSettings};
use http::HeaderValue;
use route::{Route, Router};
use std::io;
use std::sync::{Arc, RwLock};

/// Everything the request path reads, shared by all connections.
pub struct Gateway {
    router: RwLock<Arc<Router>>,
    pub pages: pages::Pages,
    pub access: AccessLog,
    pub limits: Limits,
    /// Whether Proxy-Status carries `details=`.
    pub details: bool,
    /// `gateway.trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `gateway.underscores_in_headers`: forward header names with `_`.
    pub underscores_in_headers: bool,
    /// This gateway's name in `Via`, unique per process: `healgate-<hex>`.
    pub via_token: String,
    via_h1: HeaderValue,
    via_h2: HeaderValue,
    /// Hosts that mean "this gateway" in absolute-form requests.
    own_hosts: Vec<String>,
    /// Response-header and client-body timeouts of requests in flight.
    pub deadlines: Arc<crate::upstream::deadline::Deadlines>,
    /// `timeouts.client_body`: a request body that makes no progress this long → 408.
    pub client_body_timeout: std::time::Duration,
}

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
                .and_then(|p| p.upstreams.iter().find(|(u, _)| u == up))
                .map(|(_, pool)| pool.clone());
            let pool = match reused {
                Some(p) => p,
                None => upstream_pool(up, g, events)?,
            };
            pools.upstreams.push((up.clone(), pool));
        }
        for app in &cfg.apps {
            let same_pool = |a: &App| {
                a.name == app.name
                    && a.max_concurrency == app.max_concurrency
                    && a.queue == app.queue
                    && a.retry == app.retry
            };
            let reused = previous
                .and_then(|p| p.apps.iter().find(|(a, _)| same_pool(a)))
                .map(|(_, pool)| pool.clone());
            let pool = reused.unwrap_or_else(|| app_pool(app, g, events));
            pools.apps.push((app.clone(), pool));
        }
        Ok(pools)
    }

    /// The routing table over these pools.
    pub fn router(&self) -> Router {
        let mut routes = Vec::new();
        let named = self
            .upstreams
            .iter()
            .map(|(u, p)| (&u.routes, p))
            .chain(self.apps.iter().map(|(a, p)| (&a.routes, p)));
        for (r, pool) in named {
            for prefix in &r.prefixes {
                routes.push(Route {
                    name: pool.name.clone(),
                    host: r.host.clone(),
                    prefix: prefix.clone(),
                    strip_prefix: r.strip_prefix,
                    pool: pool.clone(),
                });
            }
        }
        Router::new(routes)
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
            Tls::new(&up.tls)
                .map_err(|e| io::Error::new(e.kind(), format!("upstream {}: {e}", up.name)))?,
        )
    } else {
        None
    };
    let connector = Connector {
        resolver: Resolver::new(&up.dns, g.timeouts.dns),
        tls,
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

impl Gateway {
    /// The gateway for `cfg`, routing over `router`.
    pub fn new(cfg: &Config, access: AccessLog, router: Router) -> io::Result<Gateway> {
        let g = &cfg.gateway;
        let pages = pages::Pages::new(
            cfg.errors.support_url.clone(),
            cfg.errors.details,
            cfg.errors.pages_dir.as_deref(),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("errors.pages_dir: {e}")))?;
        let via_token = format!("healgate-{:08x}", crate::upstream::rand_u64() as u32);
        let mut own_hosts: Vec<String> = g.listen.iter().map(|a| a.ip().to_string()).collect();
        own_hosts.extend([
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]);
        Ok(Gateway {
            router: RwLock::new(Arc::new(router)),
            pages,
            access,
            limits: g.limits.clone(),
            details: cfg.errors.details,
            trusted_proxies: g.trusted_proxies.clone(),
            underscores_in_headers: g.underscores_in_headers,
            via_h1: HeaderValue::from_str(&format!("1.1 {via_token}")).expect("ascii"),
            via_h2: HeaderValue::from_str(&format!("2 {via_token}")).expect("ascii"),
            via_token,
            own_hosts,
            deadlines: crate::upstream::deadline::Deadlines::new(),
            client_body_timeout: g.timeouts.client_body,
        })
    }

    /// The current routing table.
    pub fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swap the routing table atomically (reload).
    pub fn set_router(&self, router: Router) {
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(router);
    }

    /// Whether `host` names this gateway itself (its listen addresses or localhost).
    pub fn is_own_host(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| {
            self.own_hosts
                .iter()
                .any(|o| o == h.trim_start_matches('[').trim_end_matches(']'))
        })
    }
}
