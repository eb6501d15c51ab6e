//! The proxy: listeners, the request path, gateway-made responses.
//!
//! [`server`] accepts connections and hands each request to [`forward::handle`], the
//! phase driver. Routes point at [`crate::upstream::Pool`]s; the proxy asks a pool
//! for a peer and never knows whether it is a remote server or an instance that the
//! supervisor runs.

pub mod accept;
pub mod answer;
pub mod client;
pub mod compress;
pub mod forward;
pub mod headers;
pub mod heads;
pub mod log;
pub mod pages;
pub mod prepare;
pub mod proxy_protocol;
pub mod respond;
pub mod retry;
pub mod route;
pub mod server;
pub mod stream;
pub mod tunnel;

use crate::config::{Config, Limits};
use crate::observe::access::AccessLog;
use http::HeaderValue;
use route::Router;
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
    /// Per listener (in `gateway.listen` order): whether its connections start with a
    /// PROXY protocol header.
    pub proxy_protocol: Vec<bool>,
    /// The same for the HTTPS listeners, in `gateway.tls.listen` order.
    pub tls_proxy_protocol: Vec<bool>,
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
    /// The meter of requests that reach no app (unparsed, no route).
    pub unrouted: Arc<crate::observe::metrics::AppMeter>,
    /// `gateway.tls`: the HTTPS listeners' certificates and server configuration.
    pub edge: Option<Arc<crate::tls::Edge>>,
    /// `gateway.tls.hsts`, sent on HTTPS answers that have none.
    pub hsts: Option<HeaderValue>,
    /// `gateway.tls.redirect_http`: plain-HTTP requests are answered 308 to https.
    pub redirect_http: bool,
    /// The port of the first HTTPS listener (known once bound), for redirects.
    pub https_port: std::sync::OnceLock<u16>,
    /// Paths a redirect leaves alone: the apps' and upstreams' health paths.
    pub health_paths: Vec<String>,
    /// Failed TLS handshakes by reason (`healgate_tls_handshake_failures_total`).
    pub handshake_failures: Arc<crate::observe::metrics::Tally>,
    /// `[gateway.compression]`; `None`: responses pass as they are.
    pub compression: Option<compress::Policy>,
    /// ACME validates by HTTP-01: `/.well-known/acme-challenge/` is answered from
    /// the edge's pending challenges before routing. Off: those paths are routed like
    /// any other. A reload that changes `gateway.tls.acme` sets it.
    pub acme_http01: std::sync::atomic::AtomicBool,
}

/// Whether ACME validates by HTTP-01 (then the gateway answers its challenges).
pub fn http01(acme: Option<&crate::config::Acme>) -> bool {
    acme.is_some_and(|a| a.challenge == crate::config::AcmeChallenge::Http01)
}

impl Gateway {
    /// The gateway for `cfg`, routing over `router`.
    pub fn new(
        cfg: &Config,
        access: AccessLog,
        router: Router,
        metrics: &crate::observe::metrics::Metrics,
    ) -> io::Result<Gateway> {
        let g = &cfg.gateway;
        let pages = pages::Pages::new(
            cfg.errors.support_url.clone(),
            cfg.errors.details,
            cfg.errors.pages_dir.as_deref(),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("errors.pages_dir: {e}")))?;
        let edge = match &g.tls {
            Some(t) => Some(crate::tls::Edge::new(t).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("gateway.tls: {e}"))
            })?),
            None => None,
        };
        let hsts = match g.tls.as_ref().and_then(|t| t.hsts.as_deref()) {
            Some(v) => Some(HeaderValue::from_str(v).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "gateway.tls.hsts: not a header value",
                )
            })?),
            None => None,
        };
        let mut health_paths: Vec<String> = cfg
            .apps
            .iter()
            .filter_map(|a| a.health.path.clone())
            .chain(
                cfg.upstreams
                    .iter()
                    .filter_map(|u| u.health.as_ref().and_then(|h| h.path.clone())),
            )
            .collect();
        health_paths.sort();
        health_paths.dedup();
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
            proxy_protocol: g
                .listen
                .iter()
                .map(|a| g.proxy_protocol.contains(a))
                .collect(),
            tls_proxy_protocol: g
                .tls
                .as_ref()
                .map(|t| t.proxy_protocol.clone())
                .unwrap_or_default(),
            underscores_in_headers: g.underscores_in_headers,
            via_h1: HeaderValue::from_str(&format!("1.1 {via_token}")).expect("ascii"),
            via_h2: HeaderValue::from_str(&format!("2 {via_token}")).expect("ascii"),
            via_token,
            own_hosts,
            deadlines: crate::upstream::deadline::Deadlines::new(),
            client_body_timeout: g.timeouts.client_body,
            unrouted: metrics.unrouted(),
            redirect_http: g.tls.as_ref().is_some_and(|t| t.redirect_http),
            edge,
            hsts,
            https_port: Default::default(),
            health_paths,
            handshake_failures: metrics.handshake_failures.clone(),
            compression: g.compression.as_ref().map(compress::Policy::new),
            acme_http01: http01(g.tls.as_ref().and_then(|t| t.acme.as_ref())).into(),
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
