//! `healgate probe URL|APP|UPSTREAM`: one request walked the way the gateway would
//! send it, from this machine, with the gateway's settings (its resolvers, connect
//! and response timeouts, TLS trust, header limit, pool idle time): DNS through each
//! configured resolver, TCP to each address, TLS, HTTP. Every hop gets a timing and a
//! verdict; the report ends with the hop that failed, the `Proxy-Status` error the
//! gateway would answer with (through [`Cause`]'s one mapping) and what to change.

use crate::config::{Config, UpstreamTls};
use crate::error::Cause;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway's settings a probe uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect: Duration,
    pub dns_timeout: Duration,
    pub response_header: Duration,
    pub header_limit: usize,
    pub upstream_idle: Duration,
}

impl Settings {
    pub fn of(config: &Config) -> Settings {
        let gw = &config.gateway;
        Settings {
            connect: gw.timeouts.connect,
            dns_timeout: gw.timeouts.dns,
            response_header: gw.timeouts.response_header,
            header_limit: gw.limits.response_header,
            upstream_idle: gw.timeouts.upstream_idle,
        }
    }
}

/// One server to walk to.
#[derive(Debug, Clone)]
pub struct Server {
    /// `web#1`, `api.internal:8000`, or the URL.
    pub label: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The path and query of the request.
    pub path: String,
    /// An upstream's `dns.resolvers` (empty: the system resolver, as the gateway).
    pub resolvers: Vec<SocketAddr>,
    pub tls_config: UpstreamTls,
}

/// How a hop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// Works, but something is worth changing.
    Warn,
    Fail,
}

/// One hop: `dns`, `tcp`, `tls` or `http`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    pub hop: String,
    /// Through what: a resolver, an address.
    pub via: String,
    pub verdict: Verdict,
    pub ms: Option<f64>,
    /// What was seen, in words.
    pub text: String,
    /// The Proxy-Status error the gateway would answer with, when it failed.
    pub error: Option<String>,
    /// The status the gateway would answer with, when it failed.
    pub status: Option<u16>,
    /// What to change, when it failed or warned.
    pub advice: Option<String>,
    /// Details for scripts (answers, TTL, certificate chain, header size ...).
    pub facts: Value,
}

/// Every hop to one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub server: String,
    pub hops: Vec<Hop>,
}

/// The whole probe (what `--json` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    /// `url`, `app` or `upstream`.
    pub kind: String,
    pub servers: Vec<ServerReport>,
    /// Every hop passed (warnings allowed).
    pub ok: bool,
    /// The first hop that failed.
    pub failing: Option<Failing>,
    /// The last line: the failing hop with its error and advice, or that all passed.
    pub conclusion: String,
}

/// The hop that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failing {
    pub server: String,
    pub hop: String,
    pub via: String,
    pub error: String,
    pub status: u16,
    pub advice: String,
}

fn ms(since: Instant) -> Option<f64> {
    Some((since.elapsed().as_secs_f64() * 1e6).round() / 1e3)
}

fn hop(
    name: &str,
    via: impl Into<String>,
    verdict: Verdict,
    took: Option<f64>,
    text: String,
) -> Hop {
    Hop {
        hop: name.to_owned(),
        via: via.into(),
        verdict,
        ms: took,
        text,
        error: None,
        status: None,
        advice: None,
        facts: Value::Null,
    }
}

impl Hop {
    fn failed(mut self, cause: Cause, advice: String) -> Hop {
        self.verdict = Verdict::Fail;
        self.error = Some(cause.proxy_status().to_owned());
        self.status = Some(cause.status().as_u16());
        self.advice = Some(advice);
        self
    }

    fn facts(mut self, facts: Value) -> Hop {
        self.facts = facts;
        self
    }
}

/// Walk to every server; the report with its conclusion.
pub async fn probe(target: &str, kind: &str, servers: &[Server], s: &Settings) -> Report {
    let mut reports = Vec::new();
    for server in servers {
        reports.push(ServerReport {
            server: server.label.clone(),
            hops: walk(server, s).await,
        });
    }
    let failing = reports.iter().find_map(|r| {
        r.hops
            .iter()
            .find(|h| h.verdict == Verdict::Fail)
            .map(|h| Failing {
                server: r.server.clone(),
                hop: h.hop.clone(),
                via: h.via.clone(),
                error: h.error.clone().unwrap_or_default(),
                status: h.status.unwrap_or(502),
                advice: h.advice.clone().unwrap_or_default(),
            })
    });
    let conclusion = match &failing {
        Some(f) => format!(
            "FAIL at {} ({}, {}): the gateway would answer {} with Proxy-Status: healgate; error={}. {}",
            f.hop.to_uppercase(),
            f.server,
            f.via,
            f.status,
            f.error,
            f.advice
        ),
        None if reports.is_empty() => "nothing to probe".to_owned(),
        None => {
            let warned = reports
                .iter()
                .flat_map(|r| &r.hops)
                .filter(|h| h.verdict == Verdict::Warn)
                .count();
            let total: f64 = reports
                .iter()
                .flat_map(|r| &r.hops)
                .filter_map(|h| h.ms)
                .sum();
            format!(
                "OK: every hop passed for {} server{} ({total:.1} ms in all){}",
                reports.len(),
                if reports.len() == 1 { "" } else { "s" },
                if warned > 0 {
                    format!(", {warned} warning{}", if warned == 1 { "" } else { "s" })
                } else {
                    String::new()
                }
            )
        }
    };
    Report {
        target: target.to_owned(),
        kind: kind.to_owned(),
        ok: failing.is_none() && !reports.is_empty(),
        servers: reports,
        failing,
        conclusion,
    }
}

/// DNS → TCP → TLS → HTTP to one server, stopping at the first hop that fails.
async fn walk(server: &Server, s: &Settings) -> Vec<Hop> {
    let mut hops = Vec::new();
    let (dns_hops, addrs) = dns(server, s).await;
    let dns_failed = addrs.is_empty();
    hops.extend(dns_hops);
    if dns_failed {
        return hops;
    }
    // TCP to each address, as the gateway tries them in order; the first that
    // accepts carries the rest.
    let mut stream = None;
    for addr in &addrs {
        let (h, tcp) = connect(*addr, s).await;
        hops.push(h);
        if let Some(tcp) = tcp {
            if stream.is_none() {
                stream = Some(tcp);
            }
        }
    }
    let Some(tcp) = stream else {
        return hops;
    };
    // One refused address among several that answer is a warning: the gateway moves on.
    if hops
        .iter()
        .any(|h| h.hop == "tcp" && h.verdict == Verdict::Pass)
    {
        for h in hops
            .iter_mut()
            .filter(|h| h.hop == "tcp" && h.verdict == Verdict::Fail)
        {
            h.verdict = Verdict::Warn;
            h.error = None;
            h.status = None;
        }
    }
    let authority = if (server.port == 80 && !server.tls) || (server.port == 443 && server.tls) {
        server.host.clone()
    } else {
        format!("{}:{}", server.host, server.port)
    };
    if server.tls {
        let (h, tls) = handshake(tcp, server, s).await;
        hops.push(h);
        if let Some(tls) = tls {
            hops.push(http(tls, &authority, &server.path, s).await);
        }
    } else {
        hops.push(http(tcp, &authority, &server.path, s).await);
    }
    hops
}

// ---------------------------------------------------------------- DNS

async fn dns(server: &Server, s: &Settings) -> (Vec<Hop>, Vec<SocketAddr>) {
    if let Ok(ip) = server.host.parse::<IpAddr>() {
        let h = hop(
            "dns",
            "(address)",
            Verdict::Pass,
            None,
            format!("{ip} is an address: no lookup"),
        );
        return (vec![h], vec![SocketAddr::new(ip, server.port)]);
    }
    if server.resolvers.is_empty() {
        return system_dns(server, s).await;
    }
    let mut hops = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for r in &server.resolvers {
        let (h, found) = resolver_dns(server, *r, s).await;
        hops.push(h);
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    // The gateway asks them all: one that fails while another answers is a warning.
    if !addrs.is_empty() {
        for h in hops.iter_mut().filter(|h| h.verdict == Verdict::Fail) {
            h.verdict = Verdict::Warn;
            h.error = None;
            h.status = None;
        }
    }
    (hops, addrs)
}

/// getaddrinfo, as the gateway resolves when an upstream names no resolvers.
async fn system_dns(server: &Server, s: &Settings) -> (Vec<Hop>, Vec<SocketAddr>) {
    let via = "system resolver (getaddrinfo: /etc/hosts, /etc/resolv.conf)";
    let began = Instant::now();
    let looked = tokio::time::timeout(
        s.dns_timeout,
        tokio::net::lookup_host((server.host.as_str(), server.port)),
    )
    .await;
    let took = ms(began);
    match looked {
        Ok(Ok(it)) => {
            let addrs: Vec<SocketAddr> = it.collect();
            if addrs.is_empty() {
                let h = hop(
                    "dns",
                    via,
                    Verdict::Fail,
                    took,
                    format!("{}: no addresses", server.host),
                );
                return (
                    vec![h.failed(Cause::DnsError, dns_advice(server, false, s))],
                    addrs,
                );
            }
            let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let h = hop(
                "dns",
                via,
                Verdict::Pass,
                took,
                format!(
                    "{} → {} (TTL not reported by getaddrinfo)",
                    server.host,
                    ips.join(", ")
                ),
            )
            .facts(json!({"answers": ips}));
            (vec![h], addrs)
        }
        Ok(Err(e)) => {
            let h = hop(
                "dns",
                via,
                Verdict::Fail,
                took,
                format!("{}: {e}", server.host),
            );
            (
                vec![h.failed(Cause::DnsError, dns_advice(server, false, s))],
                Vec::new(),
            )
        }
        Err(_) => {
            let h = hop(
                "dns",
                via,
                Verdict::Fail,
                took,
                format!(
                    "{}: no answer within timeouts.dns = {:?}",
                    server.host, s.dns_timeout
                ),
            );
            (
                vec![h.failed(Cause::DnsTimeout, dns_advice(server, true, s))],
                Vec::new(),
            )
        }
    }
}

/// One configured name server, asked alone (as `upstream::dns` builds it).
async fn resolver_dns(server: &Server, r: SocketAddr, s: &Settings) -> (Hop, Vec<SocketAddr>) {
    let config =
        ResolverConfig::from_parts(None, vec![], vec![NameServerConfig::new(r, Protocol::Udp)]);
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    let opts = builder.options_mut();
    opts.timeout = s.dns_timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    let resolver = builder.build();
    let via = format!("resolver {r}");
    let began = Instant::now();
    let looked = tokio::time::timeout(
        s.dns_timeout + Duration::from_millis(100),
        resolver.lookup_ip(server.host.as_str()),
    )
    .await;
    let took = ms(began);
    match looked {
        Ok(Ok(ips)) => {
            let ttl = ips.as_lookup().records().iter().map(|r| r.ttl()).min();
            let list: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
            let addrs: Vec<SocketAddr> = ips
                .iter()
                .map(|ip| SocketAddr::new(ip, server.port))
                .collect();
            let text = format!(
                "{} → {}{}",
                server.host,
                list.join(", "),
                ttl.map(|t| format!(", TTL {t}s")).unwrap_or_default()
            );
            (
                hop("dns", via, Verdict::Pass, took, text)
                    .facts(json!({"answers": list, "ttl_s": ttl})),
                addrs,
            )
        }
        Ok(Err(e)) => {
            let timed_out = e.proto().is_some_and(|p| {
                matches!(p.kind(), hickory_resolver::proto::ProtoErrorKind::Timeout)
            });
            let (cause, text) = if timed_out {
                (
                    Cause::DnsTimeout,
                    format!(
                        "{}: no answer from {r} within timeouts.dns = {:?}",
                        server.host, s.dns_timeout
                    ),
                )
            } else if e.is_nx_domain() {
                (
                    Cause::DnsError,
                    format!(
                        "{}: NXDOMAIN (the name does not exist) from {r}",
                        server.host
                    ),
                )
            } else {
                (Cause::DnsError, format!("{}: {e}", server.host))
            };
            let h = hop("dns", via, Verdict::Fail, took, text);
            (
                h.failed(cause, dns_advice(server, timed_out, s)),
                Vec::new(),
            )
        }
        Err(_) => {
            let h = hop(
                "dns",
                via,
                Verdict::Fail,
                took,
                format!(
                    "{}: no answer from {r} within timeouts.dns = {:?}",
                    server.host, s.dns_timeout
                ),
            );
            (
                h.failed(Cause::DnsTimeout, dns_advice(server, true, s)),
                Vec::new(),
            )
        }
    }
}

fn dns_advice(server: &Server, timed_out: bool, s: &Settings) -> String {
    if timed_out {
        format!(
            "No resolver answered for {} within timeouts.dns = {:?}: check that the resolvers (dns.resolvers, or /etc/resolv.conf) are reachable from the gateway, or raise timeouts.dns.",
            server.host, s.dns_timeout
        )
    } else {
        format!(
            "{} does not resolve: fix the name in servers (a typo?), create its DNS record, or point dns.resolvers at the servers that know it.",
            server.host
        )
    }
}

// ---------------------------------------------------------------- TCP

async fn connect(addr: SocketAddr, s: &Settings) -> (Hop, Option<TcpStream>) {
    let via = addr.to_string();
    let began = Instant::now();
    match tokio::time::timeout(s.connect, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            let took = ms(began);
            (
                hop(
                    "tcp",
                    via,
                    Verdict::Pass,
                    took,
                    format!("connected to {addr}"),
                ),
                Some(tcp),
            )
        }
        Ok(Err(e)) => {
            let cause = Cause::of_connect(&e);
            let took = ms(began);
            let (text, advice) = match cause {
                Cause::ConnectionRefused => (
                    format!("{addr} refused the connection: nothing listens on port {} (the host answered with a reset)", addr.port()),
                    format!("Nothing listens on {addr}: start the server, or fix the port in the config (an app's instance may be restarting: `healgate status`)."),
                ),
                Cause::Unroutable => (
                    format!("no route to {addr}: {e}"),
                    format!("The gateway's host has no route to {}: check the address, the network and its routes.", addr.ip()),
                ),
                Cause::Prohibited => (
                    format!("a local firewall rule refused the connect to {addr}: {e}"),
                    "A firewall rule on the gateway's host refuses this connect: allow it (iptables/nftables OUTPUT).".to_owned(),
                ),
                Cause::GatewayResources => (
                    format!("the gateway's host is short of resources: {e}"),
                    "Raise the file descriptor limit (ulimit -n / LimitNOFILE) or free local ports.".to_owned(),
                ),
                _ => (format!("connect to {addr} failed: {e}"), format!("The connect to {addr} failed: {e}.")),
            };
            (
                hop("tcp", via, Verdict::Fail, took, text).failed(cause, advice),
                None,
            )
        }
        Err(_) => {
            let took = ms(began);
            let text = format!(
                "{addr} did not answer within timeouts.connect = {:?}: the packets are dropped (a firewall or security group) or the host is down",
                s.connect
            );
            let advice = format!(
                "Nothing came back from {addr}, not even a refusal: a firewall drops the packets or the host is down. Allow the gateway to reach port {} on {} (firewall, security group), or fix the address.",
                addr.port(),
                addr.ip()
            );
            (
                hop("tcp", via, Verdict::Fail, took, text).failed(Cause::ConnectTimeout, advice),
                None,
            )
        }
    }
}

// ---------------------------------------------------------------- TLS

/// The verifier the gateway uses (webpki with its roots), recording what the server
/// presented and what the check said.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Mutex<Option<Presented>>,
}

/// The chain a server presented (leaf first) and what the verifier said of it.
type Presented = (Vec<CertificateDer<'static>>, Result<(), rustls::Error>);

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((chain, r.as_ref().map(|_| ()).map_err(Clone::clone)));
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One certificate as a person reads it.
fn describe(der: &CertificateDer<'_>) -> Value {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, c)) => {
            let mut names = Vec::new();
            if let Ok(Some(san)) = c.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            names.push((*d).to_owned())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(b) => {
                            names.push(match b.len() {
                                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                                    .to_string(),
                                16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                                    .to_string(),
                                _ => format!("{b:?}"),
                            })
                        }
                        _ => {}
                    }
                }
            }
            let date = |t: i64| {
                crate::observe::time::rfc3339(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
            };
            json!({
                "subject": c.subject().to_string(),
                "issuer": c.issuer().to_string(),
                "names": names,
                "not_before": date(c.validity().not_before.timestamp()),
                "not_after": date(c.validity().not_after.timestamp()),
                "not_after_unix": c.validity().not_after.timestamp(),
            })
        }
        Err(e) => json!({"unparsable": e.to_string()}),
    }
}

async fn handshake(
    tcp: TcpStream,
    server: &Server,
    s: &Settings,
) -> (Hop, Option<tokio_rustls::client::TlsStream<TcpStream>>) {
    let name = server
        .tls_config
        .server_name
        .clone()
        .unwrap_or_else(|| server.host.clone());
    let via = format!("server name {name}");
    let roots = match crate::upstream::tls::roots(&server.tls_config) {
        Ok(r) => r,
        Err(e) => {
            let h = hop("tls", via, Verdict::Fail, None, format!("{e}"));
            return (
                h.failed(Cause::TlsCertificate, format!("Fix tls.ca: {e}.")),
                None,
            );
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => {
            let h = hop("tls", via, Verdict::Fail, None, format!("no verifier: {e}"));
            return (h.failed(Cause::Internal, format!("{e}")), None);
        }
    };
    let recording = Arc::new(Recording {
        inner: verifier,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            let mut c = b
                .dangerous()
                .with_custom_certificate_verifier(recording.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            let h = hop("tls", via, Verdict::Fail, None, format!("{e}"));
            return (h.failed(Cause::Internal, format!("{e}")), None);
        }
    };
    let server_name = match ServerName::try_from(name.clone()) {
        Ok(n) => n,
        Err(e) => {
            let h = hop(
                "tls",
                via,
                Verdict::Fail,
                None,
                format!("{name:?} is not a TLS server name: {e}"),
            );
            return (
                h.failed(
                    Cause::TlsProtocol,
                    "Set tls.server_name to the name on the server's certificate.".to_owned(),
                ),
                None,
            );
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let began = Instant::now();
    let done = tokio::time::timeout(s.connect, connector.connect(server_name, tcp)).await;
    let took = ms(began);
    let seen = recording
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let chain: Vec<Value> = seen
        .as_ref()
        .map(|(c, _)| c.iter().map(describe).collect())
        .unwrap_or_default();
    let leaf = chain.first().cloned().unwrap_or(Value::Null);
    let names = leaf["names"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let not_after = leaf["not_after"].as_str().unwrap_or("?").to_owned();
    match done {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let version = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            let suite = conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default();
            let left_days = leaf["not_after_unix"].as_i64().map(|t| {
                (t - SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64)
                    / 86_400
            });
            let text = format!(
                "{version} {suite}; certificate for {names}, issued by {}, valid until {not_after}{}; {} in the chain",
                leaf["issuer"].as_str().unwrap_or("?"),
                left_days.map(|d| format!(" ({d} days left)")).unwrap_or_default(),
                chain.len()
            );
            let mut h = hop("tls", via, Verdict::Pass, took, text)
                .facts(json!({"version": version, "cipher_suite": suite, "chain": chain}));
            if left_days.is_some_and(|d| d < 14) {
                h.verdict = Verdict::Warn;
                h.advice = Some(format!(
                    "The certificate expires on {not_after}: renew it soon."
                ));
            }
            (h, Some(tls))
        }
        Ok(Err(e)) => {
            let verdict = seen.as_ref().and_then(|(_, r)| r.as_ref().err().cloned());
            let facts = json!({"chain": chain});
            let (cause, text, advice) = match verdict {
                Some(rustls::Error::InvalidCertificate(ce)) => {
                    let (text, advice) = certificate_words(&ce, &name, &names, &not_after);
                    (Cause::TlsCertificate, text, advice)
                }
                Some(other) => (Cause::TlsCertificate, format!("the certificate was refused: {other}"), "Fix the server's certificate or tls.ca.".to_owned()),
                None => (
                    Cause::TlsProtocol,
                    format!("TLS handshake failed: {e}"),
                    "The server did not complete a TLS handshake: check that the port speaks TLS (https:// in servers only for TLS ports) and its TLS versions (1.2 or 1.3).".to_owned(),
                ),
            };
            (
                hop("tls", via, Verdict::Fail, took, text)
                    .facts(facts)
                    .failed(cause, advice),
                None,
            )
        }
        Err(_) => {
            let h = hop(
                "tls",
                via,
                Verdict::Fail,
                took,
                format!("no TLS handshake within timeouts.connect = {:?}", s.connect),
            );
            (h.failed(Cause::ConnectTimeout, "The server accepted TCP but did not finish TLS: is the port a TLS port? Is the server overloaded?".to_owned()), None)
        }
    }
}

/// The words and advice for a refused certificate.
fn certificate_words(
    ce: &CertificateError,
    name: &str,
    names: &str,
    not_after: &str,
) -> (String, String) {
    match ce {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
            format!("the certificate expired on {not_after} (names: {names})"),
            format!("The server's certificate expired on {not_after}: renew it (and reload the server)."),
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
            "the certificate is not valid yet".to_owned(),
            "The certificate's not-before is in the future: check the server's and this host's clocks.".to_owned(),
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
            format!("the certificate is for {names}, not {name}"),
            format!("The certificate names {names}, not {name}: set tls.server_name to one of them, or give the server a certificate for {name}."),
        ),
        CertificateError::UnknownIssuer => (
            format!("the certificate for {names} is issued by an authority the gateway does not trust"),
            "Add the issuing CA's certificate with tls.ca (PEM), or use a publicly trusted certificate.".to_owned(),
        ),
        other => (
            format!("the certificate was refused: {other:?}"),
            "Fix the server's certificate or tls.ca.".to_owned(),
        ),
    }
}

// ---------------------------------------------------------------- HTTP

async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    authority: &str,
    path: &str,
    s: &Settings,
) -> Hop {
    let via = format!("GET {path}");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: healgate-probe/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let began = Instant::now();
    if let Err(e) = io.write_all(request.as_bytes()).await {
        let h = hop(
            "http",
            via,
            Verdict::Fail,
            ms(began),
            format!("sending the request failed: {e}"),
        );
        return h.failed(
            Cause::ConnectionTerminated,
            "The server closed the connection as the request was sent.".to_owned(),
        );
    }
    let sent = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut first_byte: Option<f64> = None;
    let deadline = tokio::time::Instant::now() + s.response_header;
    let limit_kib = s.header_limit as f64 / 1024.0;
    let end = loop {
        if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > s.header_limit {
            let h = hop(
                "http",
                via,
                Verdict::Fail,
                ms(sent),
                format!("the response header is larger than limits.response_header = {limit_kib:.0} KiB (more than {} bytes read without its end)", buf.len()),
            );
            return h.facts(json!({"header_bytes_at_least": buf.len(), "limit": s.header_limit})).failed(
                Cause::ResponseHeaderTooLarge,
                format!("Raise [gateway.limits] response_header above {limit_kib:.0} KiB, or make the app send fewer or smaller headers (cookies)."),
            );
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                let h = hop("http", via, Verdict::Fail, ms(sent), format!("the server closed the connection after {} bytes, before the response header ended", buf.len()));
                return h.failed(Cause::ConnectionTerminated, format!("The server closed the connection without answering GET {path}: look at its log."));
            }
            Ok(Ok(n)) => {
                if first_byte.is_none() {
                    first_byte = ms(sent);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(Err(e)) => {
                let h = hop(
                    "http",
                    via,
                    Verdict::Fail,
                    ms(sent),
                    format!("reading the response failed: {e}"),
                );
                return h.failed(
                    Cause::ConnectionTerminated,
                    "The server reset the connection before answering: look at its log.".to_owned(),
                );
            }
            Err(_) => {
                let h = hop(
                    "http",
                    via,
                    Verdict::Fail,
                    ms(sent),
                    format!(
                        "no response header within timeouts.response_header = {:?}",
                        s.response_header
                    ),
                );
                return h.failed(Cause::ResponseTimeout, format!("GET {path} took longer than timeouts.response_header = {:?}: make it faster, or raise timeouts.response_header.", s.response_header));
            }
        }
    };
    if end > s.header_limit {
        let h = hop("http", via, Verdict::Fail, ms(sent), format!("the response header is {:.1} KiB, more than limits.response_header = {limit_kib:.0} KiB", end as f64 / 1024.0));
        return h.facts(json!({"header_bytes": end, "limit": s.header_limit})).failed(
            Cause::ResponseHeaderTooLarge,
            format!("The response header is {:.1} KiB: raise [gateway.limits] response_header above it (now {limit_kib:.0} KiB), or make the app send fewer or smaller headers (cookies).", end as f64 / 1024.0),
        );
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let code = match resp.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => resp.code.unwrap_or(0),
        Ok(httparse::Status::Partial) | Err(_) => {
            let h = hop(
                "http",
                via,
                Verdict::Fail,
                ms(sent),
                format!(
                    "the response is not valid HTTP/1.1: {:?}",
                    String::from_utf8_lossy(&buf[..end.min(120)])
                ),
            );
            return h.failed(Cause::ProtocolError, "The server's answer is not HTTP/1.1: is this the right port (TLS, HTTP/2 only, another protocol)?".to_owned());
        }
    };
    let keep_alive = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("keep-alive"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("timeout=")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        });
    let ttfb = first_byte.unwrap_or(0.0);
    let mut text = format!(
        "{code} {}; header {:.1} KiB of {limit_kib:.0} KiB allowed (limits.response_header); first byte after {ttfb:.1} ms (timeouts.response_header = {:?})",
        resp.reason.unwrap_or(""),
        end as f64 / 1024.0,
        s.response_header
    );
    let mut verdict = Verdict::Pass;
    let mut advice = None;
    match keep_alive {
        Some(t) => {
            let ka = Duration::from_secs(t);
            text.push_str(&format!("; Keep-Alive timeout={t}s vs the pool's idle limit {:?} (timeouts.upstream_idle)", s.upstream_idle));
            if ka <= s.upstream_idle {
                text.push_str(": the gateway idles its connections less than the server's timeout, as the header asks");
            }
        }
        None => text.push_str(&format!(
            "; no Keep-Alive timeout announced: the pool keeps idle connections at most {:?} (timeouts.upstream_idle), which must be shorter than the server's own idle timeout",
            s.upstream_idle
        )),
    }
    if ttfb > s.response_header.as_secs_f64() * 1000.0 / 2.0 {
        verdict = Verdict::Warn;
        advice = Some(format!("The first byte took {ttfb:.0} ms, more than half of timeouts.response_header = {:?}: slower moments will be 504s.", s.response_header));
    }
    if end * 4 > s.header_limit * 3 {
        verdict = Verdict::Warn;
        advice = Some(format!("The response header uses {:.0}% of limits.response_header: a little more and it is a 502.", end as f64 * 100.0 / s.header_limit as f64));
    }
    if code >= 500 {
        verdict = Verdict::Warn;
        advice = Some(format!(
            "The server itself answered {code} (the gateway passes it through): look at its log."
        ));
    }
    let mut h = hop("http", via, verdict, ms(began), text).facts(json!({
        "status": code,
        "header_bytes": end,
        "header_limit": s.header_limit,
        "first_byte_ms": ttfb,
        "keep_alive_timeout_s": keep_alive,
        "upstream_idle_ms": s.upstream_idle.as_millis() as u64,
        "response_header_timeout_ms": s.response_header.as_millis() as u64,
    }));
    h.advice = advice;
    h
}

/// The report as text, for a person: one line per hop, then the conclusion.
pub fn render(r: &Report) -> String {
    let mut out = format!("probe {} ({})\n", r.target, r.kind);
    for server in &r.servers {
        out.push_str(&format!("\n{}\n", server.server));
        for h in &server.hops {
            let mark = match h.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            let took =
                h.ms.map(|m| format!("{m:>9.1} ms"))
                    .unwrap_or_else(|| format!("{:>12}", "-"));
            out.push_str(&format!(
                "  {mark} {:<4} {took}  {}: {}\n",
                h.hop, h.via, h.text
            ));
            if h.verdict == Verdict::Warn {
                if let Some(a) = &h.advice {
                    out.push_str(&format!("       {a}\n"));
                }
            }
        }
    }
    out.push('\n');
    out.push_str(&r.conclusion);
    out.push('\n');
    out
}
