//! Name resolution for upstream servers: the system resolver, or the name servers
//! an upstream's `dns.resolvers` names; answers cached for `dns.refresh`.

use crate::config::Dns;
use crate::error::{Cause, ProxyError};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How an upstream resolves names.
pub enum Resolver {
    /// getaddrinfo: honours /etc/hosts and nsswitch like any other program here.
    System,
    /// The configured name servers, asked directly.
    Servers(Box<TokioResolver>),
}

impl Resolver {
    /// The resolver for one upstream's `dns` settings; `timeout` bounds one lookup.
    pub fn new(dns: &Dns, timeout: Duration) -> Resolver {
        if dns.resolvers.is_empty() {
            return Resolver::System;
        }
        let servers: Vec<NameServerConfig> = dns
            .resolvers
            .iter()
            .map(|a| NameServerConfig::new(*a, Protocol::Udp))
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = 0; // we cache ourselves, for `refresh`
        Resolver::Servers(Box::new(builder.build()))
    }

    /// Look `host` up, bounded by `timeout`.
    async fn lookup(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ProxyError> {
        let looked = async {
            match self {
                Resolver::System => tokio::net::lookup_host((host, port))
                    .await
                    .map(|it| it.collect::<Vec<_>>())
                    .map_err(|e| {
                        ProxyError::new(Cause::DnsError, format!("resolving {host}: {e}"))
                    }),
                Resolver::Servers(r) => match r.lookup_ip(host).await {
                    Ok(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
                    Err(e) => {
                        let timed_out = e.proto().is_some_and(|p| {
                            matches!(p.kind(), hickory_resolver::proto::ProtoErrorKind::Timeout)
                        });
                        let cause = if timed_out {
                            Cause::DnsTimeout
                        } else {
                            Cause::DnsError
                        };
                        Err(ProxyError::new(cause, format!("resolving {host}: {e}")))
                    }
                },
            }
        };
        match tokio::time::timeout(timeout, looked).await {
            Ok(Ok(addrs)) if addrs.is_empty() => Err(ProxyError::new(
                Cause::DnsError,
                format!("resolving {host}: no addresses"),
            )),
            Ok(r) => r,
            Err(_) => Err(ProxyError::new(
                Cause::DnsTimeout,
                format!("resolving {host}: no answer within {timeout:?}"),
            )),
        }
    }
}

/// One server's address: an IP literal, or a name with its cached answer.
pub struct Target {
    host: String,
    port: u16,
    literal: Option<SocketAddr>,
    cache: Mutex<Option<(Vec<SocketAddr>, Instant)>>,
}

impl Target {
    /// A target for `host:port`.
    pub fn new(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
            literal: host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port)),
            cache: Mutex::new(None),
        }
    }

    /// A target that is already an address (an instance the supervisor runs).
    pub fn addr(addr: SocketAddr) -> Target {
        Target {
            host: addr.ip().to_string(),
            port: addr.port(),
            literal: Some(addr),
            cache: Mutex::new(None),
        }
    }

    /// The host as configured.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Addresses to connect to. A fresh cached answer is used as is; a stale one is
    /// refreshed, and kept when the refresh fails (a DNS outage does not become an
    /// app outage).
    pub async fn resolve(
        &self,
        resolver: &Resolver,
        refresh: Duration,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ProxyError> {
        if let Some(a) = self.literal {
            return Ok(vec![a]);
        }
        let stale = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match &*cache {
                Some((addrs, at)) if at.elapsed() < refresh => return Ok(addrs.clone()),
                Some((addrs, _)) => Some(addrs.clone()),
                None => None,
            }
        };
        match resolver.lookup(&self.host, self.port, timeout).await {
            Ok(addrs) => {
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((addrs.clone(), Instant::now()));
                Ok(addrs)
            }
            Err(e) => match stale {
                Some(addrs) => {
                    tracing::warn!("{e}; using the previous answer {addrs:?}");
                    Ok(addrs)
                }
                None => Err(e),
            },
        }
    }
}
