//! The checked configuration model: what the rest of healgate reads.
//!
//! Only `config/` sees raw TOML; everything here is validated, with defaults
//! filled in and units converted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[gateway]`: listeners, timeouts, limits.
    pub gateway: Gateway,
    /// `[admin]`: the control API and dashboard.
    pub admin: Admin,
    /// `[errors]`: the gateway's own error pages.
    pub errors: ErrorPages,
    /// `[[upstream]]`, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[[app]]`, in file order.
    pub apps: Vec<App>,
    /// `[[alert]]`, in file order.
    pub alerts: Vec<Alert>,
}

/// `[gateway]`: the listener side.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// Addresses to accept HTTP/1.1 and h2c on. Default `["127.0.0.1:8080"]`.
    pub listen: Vec<SocketAddr>,
    /// The `listen` addresses whose connections start with a PROXY protocol header
    /// (v1 or v2, from a load balancer in front): `{ addr = "...", proxy_protocol =
    /// true }`. Default none.
    pub proxy_protocol: Vec<SocketAddr>,
    /// Logs, events, diagnostics, admin token. Default `healgate-data`, relative to
    /// the config file's directory.
    pub data_dir: PathBuf,
    /// Proxy worker threads; 0 = one per core. Default 0.
    pub workers: usize,
    /// Write `logs/access.jsonl`. Default true.
    pub access_log: bool,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed (CIDRs, e.g.
    /// another load balancer in front). Default none: from every other peer those
    /// headers are replaced by the gateway's own.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forward request header names that contain `_`. Default false: they are dropped
    /// (CGI/WSGI servers read `Content_Length` as `Content-Length`), as nginx does.
    pub underscores_in_headers: bool,
    /// `[gateway.timeouts]`.
    pub timeouts: Timeouts,
    /// `[gateway.limits]`.
    pub limits: Limits,
    /// How long in-flight requests may finish after SIGTERM. Default 30s.
    pub shutdown_grace: Duration,
    /// `[gateway.logs]`.
    pub logs: Logs,
    /// `[gateway.tls]`: HTTPS listeners. Default none.
    pub tls: Option<EdgeTls>,
    /// `[gateway.compression]`: compress responses for clients that accept it.
    /// Default off.
    pub compression: Option<Compression>,
}

/// `[gateway.tls]`: HTTPS listeners (TLS 1.2 and 1.3; HTTP/2 and HTTP/1.1 by ALPN).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeTls {
    /// Addresses to accept TLS on. At least one.
    pub listen: Vec<SocketAddr>,
    /// Per `listen` entry: its connections start with a PROXY protocol header, sent
    /// before the TLS handshake (`{ addr = "...", proxy_protocol = true }`).
    pub proxy_protocol: Vec<bool>,
    /// Certificate and key files (PEM); SNI picks among them by their names. Re-read
    /// when they change and on reload.
    pub certs: Vec<CertFiles>,
    /// `acme = { ... }`: certificates obtained and renewed automatically.
    pub acme: Option<Acme>,
    /// Plain-HTTP listeners answer `308` to the same URL on https (health paths and
    /// ACME HTTP-01 challenges excepted). Default false.
    pub redirect_http: bool,
    /// The `Strict-Transport-Security` value sent on HTTPS answers. Default none.
    pub hsts: Option<String>,
}

/// One `certs` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `gateway.tls.acme`: RFC 8555 certificates for `domains`.
#[derive(Debug, Clone, PartialEq)]
pub struct Acme {
    /// The names of the certificate (one certificate for all of them).
    pub domains: Vec<String>,
    /// The account's contact. Default none.
    pub email: Option<String>,
    /// The ACME directory URL. Default Let's Encrypt's production directory.
    pub directory: String,
    /// Extra PEM roots trusted for the directory's HTTPS (a private ACME server).
    pub ca: Option<PathBuf>,
    /// How the server validates control of the names. Default TLS-ALPN-01.
    pub challenge: AcmeChallenge,
    /// Renew this long before expiry. Default 30 days.
    pub renew_before: Duration,
}

/// An ACME challenge type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737), answered on the HTTPS listeners.
    TlsAlpn01,
    /// HTTP-01, answered on the plain-HTTP listeners.
    Http01,
}

/// `[gateway.compression]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    /// Media types to compress (`text/*` matches every text type). Default
    /// text/*, application/json, application/javascript, image/svg+xml.
    pub types: Vec<String>,
    /// Responses with a smaller Content-Length are sent as they are. Default 1 KiB.
    pub min_size: u64,
    /// The codings offered, best first (on equal q-values the first wins). Default
    /// zstd, br, gzip.
    pub algorithms: Vec<Coding>,
    /// Each coding's level.
    pub levels: Levels,
}

/// `[gateway.compression] levels`: how hard each coding works on answers made on the
/// fly (CPU per byte against size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// zlib's scale, 1-9. Default 5 (nginx's `gzip_comp_level` defaults to 1, zlib's
    /// own default is 6).
    pub gzip: u32,
    /// brotli's quality, 0-11. Default 4 (about gzip 9's size at about gzip 5's cost;
    /// 11 is for files compressed once, ahead of time).
    pub br: u32,
    /// zstd's level, 1-19. Default 3 (its own default).
    pub zstd: u32,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            gzip: 5,
            br: 4,
            zstd: 3,
        }
    }
}

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
    Zstd,
}

impl Coding {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_size: 1024,
            algorithms: vec![Coding::Zstd, Coding::Brotli, Coding::Gzip],
            levels: Levels::default(),
        }
    }
}

/// `[gateway.logs]`: size-based rotation. A file that grows past its size is renamed
/// `x.1` (older ones shift to `x.2` ... and the one past the count is deleted) and a
/// new one is started. SIGUSR1 reopens every log file (for an external logrotate).
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    /// Rotate `access.jsonl` and `events.jsonl` past this size. Default 100MiB; 0: never.
    pub max_size: u64,
    /// Rotated access and event logs kept. Default 5.
    pub keep: u32,
    /// Rotate each app instance's output log (`logs/apps/<app>/<instance>.log`) past
    /// this size. Default 10MiB; 0: never.
    pub app_max_size: u64,
    /// Rotated app output logs kept per instance. Default 3.
    pub app_keep: u32,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            max_size: 100 * 1024 * 1024,
            keep: 5,
            app_max_size: 10 * 1024 * 1024,
            app_keep: 3,
        }
    }
}

/// `[gateway.timeouts]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// TCP (and TLS) connect to an upstream. Default 2s. → 504 connection_timeout.
    pub connect: Duration,
    /// Request sent → response header received. Default 30s. → 504 http_response_timeout.
    pub response_header: Duration,
    /// Accept → first request header complete. Default 10s. → 408.
    pub client_header: Duration,
    /// Longest wait for the next bytes of a request body being uploaded. Default 60s.
    /// → 408 `http_request_error`, the client's failure (never counted against a peer).
    pub client_body: Duration,
    /// Idle keep-alive time of a client connection between requests. Default 75s.
    pub client_idle: Duration,
    /// A name lookup. Default 2s. → 504 dns_timeout.
    pub dns: Duration,
    /// Longest idle time of a pooled upstream connection. Default 1500ms: below the
    /// keep-alive timeouts of common app servers (gunicorn 2s, uvicorn/Node 5s).
    pub upstream_idle: Duration,
}

/// `[gateway.limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Request header section, bytes. Default 32KiB. → 431.
    pub request_header: usize,
    /// Response header section, bytes. Default 64KiB. → 502 http_response_header_section_size.
    pub response_header: usize,
    /// Client connections served at once; beyond it new connections wait in the
    /// listen backlog (never an out-of-memory). Default `None`: derived from the file
    /// descriptor limit (half of it, less a reserve, as each may need an upstream
    /// connection too).
    pub max_connections: Option<u32>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Default `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// From the file or env `HEALGATE_ADMIN_TOKEN`; `None` = generate into data_dir.
    pub token: Option<String>,
    /// `/metrics` without the token (a Prometheus scraper on a trusted network).
    /// Default false: every route but `/healthz` and the dashboard's assets needs it.
    pub metrics_public: bool,
}

/// `[errors]`: the pages the gateway makes itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorPages {
    /// An `http(s)://` link shown on error pages. Default none.
    pub support_url: Option<String>,
    /// Put `details=` in Proxy-Status and the cause on pages. Default false.
    pub details: bool,
    /// Optional `502.html`, `503.html`, ... overrides; relative to the config file's
    /// directory.
    pub pages_dir: Option<PathBuf>,
}

/// Where requests go: path prefixes, optionally for one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    /// Path prefixes, each starting with `/`. Longest match wins.
    pub prefixes: Vec<String>,
    /// Only requests for this host (without port, lowercase). `None` = any host.
    pub host: Option<String>,
    /// Strip the matched prefix before forwarding. Default false.
    pub strip_prefix: bool,
}

/// `queue = { size, timeout }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Waiting requests beyond it get 503 connection_limit_reached. Default 1024.
    pub size: usize,
    /// Longest wait. Default 5s.
    pub timeout: Duration,
}

/// `health = { ... }`: active HTTP health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Path to GET; 2xx and 3xx are healthy. `None` (apps only): the port accepting is enough.
    /// Required in an upstream's `health`.
    pub path: Option<String>,
    /// Default 5s for upstreams, 2s for apps.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Consecutive failures to leave rotation. Default 3.
    pub unhealthy_after: u32,
    /// Consecutive successes to come back. Default 1.
    pub healthy_after: u32,
}

/// `retry = { attempts, budget_percent }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts per request including the first. Default 3.
    pub attempts: u32,
    /// Retries allowed as a percentage of requests (plus a small floor). Default 20.
    pub budget_percent: u32,
}

/// `eject = { consecutive_failures, cooldown }`: passive ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Eject {
    /// Consecutive transport failures before a peer leaves rotation. Default 3.
    pub consecutive_failures: u32,
    /// Time out of rotation before it is tried again. Default 10s.
    pub cooldown: Duration,
}

/// One `servers` entry: `host:port`, `[v6]:port`, or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// A hostname (lowercase) or an IP literal (without brackets).
    pub host: String,
    /// Always given in the file; never 0.
    pub port: u16,
    /// Speak TLS to this server (written `https://host:port`).
    pub tls: bool,
}

/// `protocol`: the HTTP version spoken to an upstream's servers or an app's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default).
    #[default]
    H1,
    /// HTTP/2: prior knowledge (h2c) on plain connections, ALPN `h2` over TLS.
    H2,
    /// Over TLS, what the server picks by ALPN (`h2` or `http/1.1`); HTTP/1.1 on plain
    /// connections. Only for `[[upstream]]`.
    Auto,
}

impl Protocol {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::Auto => "auto",
        }
    }
}

/// `dns = { resolvers, refresh }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// Name servers to ask; empty = the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    /// How often a resolved name is looked up again. Default 30s.
    pub refresh: Duration,
}

/// TLS settings for an upstream whose servers use `https://`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    /// PEM file of extra CA certificates to trust (besides the webpki roots); relative to
    /// the config file's directory.
    pub ca: Option<PathBuf>,
    /// SNI and certificate name; default the server's host.
    pub server_name: Option<String>,
}

/// `[[upstream]]`: servers on other machines.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// `[a-z0-9_-]+`, unique among apps and upstreams.
    pub name: String,
    /// At least one.
    pub servers: Vec<ServerAddr>,
    /// `routes`, `host`, `strip_prefix`.
    pub routes: Routes,
    /// `dns = { resolvers, refresh }`.
    pub dns: Dns,
    /// `health = { path, ... }`; `None` (absent): no active checks, only passive ejection.
    pub health: Option<Health>,
    /// `tls = { ca, server_name }`, for `https://` servers.
    pub tls: UpstreamTls,
    /// `protocol = "h1" | "h2" | "auto"`. Default `h1`.
    pub protocol: Protocol,
    /// Per server; 0 = unlimited. Default 0.
    pub max_concurrency: u32,
    /// Where requests wait for a free slot.
    pub queue: Queue,
    /// Safe retries.
    pub retry: Retry,
    /// Passive ejection of failing servers.
    pub eject: Eject,
}

/// `[[app]]`: an app whose instances healgate runs.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// `[a-z0-9_-]+`, unique among apps and upstreams.
    pub name: String,
    /// argv, at least the program; `{port}` is replaced per instance.
    pub command: Vec<String>,
    /// Working directory. Default `.`, relative to the config file's directory.
    pub cwd: PathBuf,
    /// Extra environment, in file order. `PORT` is always set per instance (a `PORT`
    /// here is dropped with a warning).
    pub env: Vec<(String, String)>,
    /// Instances to run (the starting count when `autoscale` is set). Default 1, at least 1.
    pub instances: u32,
    /// Most instances `healgate scale` (or the admin API) may ask for. Default 64, and
    /// never below `instances` or `autoscale.max`.
    pub max_instances: u32,
    /// `routes`, `host`, `strip_prefix`.
    pub routes: Routes,
    /// Per instance; 0 = unlimited. Default 64.
    pub max_concurrency: u32,
    /// `protocol = "h1" | "h2"` (h2: prior knowledge, the instances speak h2c).
    /// Default `h1`.
    pub protocol: Protocol,
    /// Where requests wait for a free slot.
    pub queue: Queue,
    /// Health checks of each instance; when `health` is absent, [`Health::app_default`].
    pub health: Health,
    /// Longest time from spawn to the first passing check. Default 60s.
    pub startup_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping an instance. Default 30s.
    pub shutdown_grace: Duration,
    /// Safe retries.
    pub retry: Retry,
    /// `[app.autoheal]`; `None`: no recycling rules.
    pub autoheal: Option<Autoheal>,
    /// `[app.autoscale]`; `None`: a fixed number of `instances`.
    pub autoscale: Option<Autoscale>,
}

/// `[app.autoheal]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoheal {
    /// No rule fires on a younger instance. Default 60s.
    pub min_uptime: Duration,
    /// At most `count` recycles per app `within`. Default 5 per 1h.
    pub max_recycles: (u32, Duration),
    /// `[[app.autoheal.rule]]`, in file order.
    pub rules: Vec<AutohealRule>,
}

/// `[[app.autoheal.rule]]`: when a trigger fires on an instance, run the actions.
#[derive(Debug, Clone, PartialEq)]
pub struct AutohealRule {
    /// `when = { <trigger> = ... }`: exactly one trigger.
    pub when: Trigger,
    /// Default `[Recycle]`.
    pub actions: Vec<Action>,
}

/// What makes an autoheal rule fire on one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// `memory_above = "512MiB"`: working set of the instance's process tree, bytes.
    MemoryAbove(u64),
    /// `cpu_above = { percent, for }`: CPU above `percent` (100 = one core) for a while.
    CpuAbove {
        /// Percent of one core.
        percent: f64,
        /// How long it must stay above. Default 1m.
        for_: Duration,
    },
    /// `requests = { count }`: the instance has served `count` requests.
    Requests {
        /// Requests served since the instance started.
        count: u64,
    },
    /// `slow_requests = { count, slower_than, within, path? }`.
    SlowRequests {
        /// Slow requests needed to fire.
        count: u32,
        /// A request slower than this counts.
        slower_than: Duration,
        /// The sliding window they are counted in.
        within: Duration,
        /// Only requests under this path prefix count; `None` = all.
        path: Option<String>,
    },
    /// `status = { codes, count, within, path? }`: responses with these statuses.
    Status {
        /// Inclusive range within 100..=599; `"502"` is `(502, 502)`.
        codes: (u16, u16),
        /// Matching responses needed to fire.
        count: u32,
        /// The sliding window they are counted in.
        within: Duration,
        /// Only requests under this path prefix count; `None` = all.
        path: Option<String>,
    },
    /// `unhealthy = { for }`: failing health checks for a while.
    Unhealthy {
        /// How long the instance must stay unhealthy.
        for_: Duration,
    },
}

/// What an autoheal rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a replacement, move traffic to it, then stop the instance (overlapping).
    Recycle,
    /// Record an `autoheal_fired` event only.
    Log,
    /// Collect a diagnostic bundle of the instance.
    Diagnose,
    /// argv; `{pid}` and `{instance}` are replaced.
    Command(Vec<String>),
}

/// `[app.autoscale]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Fewest instances. Default 1, at least 1.
    pub min: u32,
    /// Most instances. Required, at least `min`.
    pub max: u32,
    /// In-flight requests per instance to aim for. Default 16.
    pub target_inflight: u32,
    /// Optional CPU percent per instance to aim for.
    pub target_cpu: Option<f64>,
    /// Least time between two scaling steps. Default 30s.
    pub cooldown: Duration,
}

// Defaults, in one place: the values the doc comments above promise.

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            proxy_protocol: Vec::new(),
            data_dir: PathBuf::from("healgate-data"),
            workers: 0,
            access_log: true,
            trusted_proxies: Vec::new(),
            underscores_in_headers: false,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
            logs: Logs::default(),
            tls: None,
            compression: None,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response_header: Duration::from_secs(30),
            client_header: Duration::from_secs(10),
            client_body: Duration::from_secs(60),
            client_idle: Duration::from_secs(75),
            dns: Duration::from_secs(2),
            upstream_idle: Duration::from_millis(1500),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_header: 32 * 1024,
            response_header: 64 * 1024,
            max_connections: None,
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
            metrics_public: false,
        }
    }
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            size: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Health {
    /// An app's checks when `health` is absent or partly given: no path (the port
    /// accepting is enough), every 2s, 1s timeout, 3 failures out, 1 success back.
    pub fn app_default() -> Self {
        Health {
            path: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 1,
        }
    }

    /// An upstream's checks of `path`: every 5s, 1s timeout, 3 failures out, 1 success back.
    pub fn upstream_default(path: String) -> Self {
        Health {
            path: Some(path),
            interval: Duration::from_secs(5),
            ..Health::app_default()
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            budget_percent: 20,
        }
    }
}

impl Default for Eject {
    fn default() -> Self {
        Eject {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(10),
        }
    }
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            resolvers: Vec::new(),
            refresh: Duration::from_secs(30),
        }
    }
}

impl Default for Autoheal {
    fn default() -> Self {
        Autoheal {
            min_uptime: Duration::from_secs(60),
            max_recycles: (5, Duration::from_secs(3600)),
            rules: Vec::new(),
        }
    }
}

/// `[[alert]]`: notify when a condition on an app holds for `for_`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    /// `None`: the condition is checked for every app and upstream, each on its own.
    pub app: Option<String>,
    pub condition: Condition,
    /// How long the condition must hold before it fires. Default 0 (at once).
    pub for_: Duration,
    /// JSON POSTed on firing and on resolving, retried with backoff.
    pub webhook: Option<http::Uri>,
    /// Run on firing and resolving; `{alert}`, `{state}` (`firing`/`resolved`),
    /// `{app}` and `{text}` are replaced in its arguments.
    pub command: Option<Vec<String>>,
}

/// What an alert watches (one per rule).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Gateway-made errors per request over the last minute, 0..1.
    ErrorRateAbove(f64),
    /// The p95 response time over the last minute.
    P95Above(Duration),
    /// The working set of the app's instances together.
    MemoryAbove(u64),
    CrashLoop,
    /// An incident is open.
    Incident,
}
