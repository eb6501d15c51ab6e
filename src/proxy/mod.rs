//! The proxy: listeners, the request path, gateway-made responses.
//!
//! [`server`] accepts connections and hands each request to [`forward::handle`], the
//! phase driver. Routes point at [`crate::upstream::Pool`]s; the proxy asks a pool
//! for a peer and never knows whether it is a remote server or an instance that the
//! supervisor runs.

pub mod error;
pub mod forward;
pub mod headers;
pub mod pages;
pub mod route;
pub mod server;

use crate::config::{Config, Health, Limits};
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
    /// This gateway's name in `Via`, unique per process: `healgate-<hex>`.
    pub via_token: String,
    via_h1: HeaderValue,
    via_h2: HeaderValue,
    /// Hosts that mean "this gateway" in absolute-form requests.
    own_hosts: Vec<String>,
}

/// A pool with active health checks to run.
pub struct Checked {
    pub pool: Arc<Pool>,
    pub health: Health,
}

/// What [`Gateway::from_config`] builds besides the gateway itself.
pub struct Built {
    pub gateway: Gateway,
    /// Upstream pools with active health checks.
    pub checks: Vec<Checked>,
    /// Each app with the (empty) pool its routes point at, for the supervisor to fill.
    pub apps: Vec<(crate::config::App, Arc<Pool>)>,
}

impl Gateway {
    /// Build the gateway and its upstream pools from a checked config.
    pub fn from_config(cfg: &Config, access: AccessLog, events: &Events) -> io::Result<Built> {
        let g = &cfg.gateway;
        let mut routes = Vec::new();
        let mut checks = Vec::new();
        for up in &cfg.upstreams {
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
            let tls =
                if up.servers.iter().any(|s| s.tls) {
                    Some(Tls::new(&up.tls).map_err(|e| {
                        io::Error::new(e.kind(), format!("upstream {}: {e}", up.name))
                    })?)
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
            let pool = Arc::new(Pool::new(
                &up.name,
                peers,
                settings,
                connector,
                events.clone(),
            ));
            if let Some(h) = &up.health {
                checks.push(Checked {
                    pool: pool.clone(),
                    health: h.clone(),
                });
            }
            for prefix in &up.routes.prefixes {
                routes.push(Route {
                    name: pool.name.clone(),
                    host: up.routes.host.clone(),
                    prefix: prefix.clone(),
                    strip_prefix: up.routes.strip_prefix,
                    pool: pool.clone(),
                });
            }
        }
        let mut apps = Vec::new();
        for app in &cfg.apps {
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
                eject: crate::config::Eject::default(),
                response_header_timeout: g.timeouts.response_header,
                wait_for_peers: true,
            };
            let pool = Arc::new(Pool::new(
                &app.name,
                Vec::new(),
                settings,
                connector,
                events.clone(),
            ));
            for prefix in &app.routes.prefixes {
                routes.push(Route {
                    name: pool.name.clone(),
                    host: app.routes.host.clone(),
                    prefix: prefix.clone(),
                    strip_prefix: app.routes.strip_prefix,
                    pool: pool.clone(),
                });
            }
            apps.push((app.clone(), pool));
        }
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
        Ok(Built {
            gateway: Gateway {
                router: RwLock::new(Arc::new(Router::new(routes))),
                pages,
                access,
                limits: g.limits.clone(),
                details: cfg.errors.details,
                via_h1: HeaderValue::from_str(&format!("1.1 {via_token}")).expect("ascii"),
                via_h2: HeaderValue::from_str(&format!("2 {via_token}")).expect("ascii"),
                via_token,
                own_hosts,
            },
            checks,
            apps,
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
