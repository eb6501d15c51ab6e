//! Compiling the TOML document into the checked [`Config`]: defaults, units, validation.
//!
//! Each section reads every key it allows before [`TableReader::finish`], so one pass
//! reports all unknown keys and all bad values; cross-section checks (names, routes)
//! run at the end.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Table, Value};

use super::model::*;
use super::reader::{Ctx, Field, Node, Span, TableReader};

/// The most proxy worker threads `gateway.workers` may ask for.
const MAX_WORKERS: i64 = 1024;

/// Reads the whole document. Problems go to `cx`; the returned config is only
/// meaningful when `cx` has no errors.
pub(crate) fn config(cx: &mut Ctx, root: &Table, base: &Path) -> Config {
    let mut r = TableReader::root(root);
    let t = section(cx, &mut r, "gateway");
    let gateway = gateway(cx, t, base);
    let t = section(cx, &mut r, "admin");
    let admin = admin(cx, t, &gateway);
    let t = section(cx, &mut r, "errors");
    let errors = error_pages(cx, t, base);
    let mut claims = Claims::default();
    let mut apps = Vec::new();
    for t in sections(cx, &mut r, "app") {
        apps.extend(app(cx, t, base, &mut claims));
    }
    let mut upstreams = Vec::new();
    for t in sections(cx, &mut r, "upstream") {
        upstreams.extend(upstream(cx, t, base, &mut claims));
    }
    r.finish(cx);
    claims.check(cx);
    Config {
        gateway,
        admin,
        errors,
        upstreams,
        apps,
    }
}

/// A `[name]` table, when present and a table.
fn section<'d>(
    cx: &mut Ctx,
    r: &mut TableReader<'d>,
    key: &'static str,
) -> Option<TableReader<'d>> {
    r.take(key).and_then(|f| f.table(cx))
}

/// The `[[name]]` tables; none when absent.
fn sections<'d>(cx: &mut Ctx, r: &mut TableReader<'d>, key: &'static str) -> Vec<TableReader<'d>> {
    r.take(key).and_then(|f| f.tables(cx)).unwrap_or_default()
}

/// Overwrites `slot` when `value` is there.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A path from the file, relative to `base` (the config file's directory) unless absolute.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let relative = Path::new(path);
    if relative.is_absolute() {
        return relative.to_path_buf();
    }
    let relative = relative.strip_prefix(".").unwrap_or(relative);
    if base.as_os_str().is_empty() && relative.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.join(relative)
    }
}

/// A non-empty path string, resolved against `base`.
fn path_field(cx: &mut Ctx, f: &Field, base: &Path) -> Option<PathBuf> {
    f.text(cx).map(|s| resolve(base, &s))
}

// ---------------------------------------------------------------- [gateway]

fn gateway(cx: &mut Ctx, t: Option<TableReader>, base: &Path) -> Gateway {
    let mut g = Gateway {
        data_dir: resolve(base, "healgate-data"),
        ..Gateway::default()
    };
    let Some(mut t) = t else { return g };
    set(&mut g.listen, t.get(cx, "listen", listen_addrs));
    set(
        &mut g.data_dir,
        t.get(cx, "data_dir", |f, cx| path_field(cx, f, base)),
    );
    set(
        &mut g.workers,
        t.get(cx, "workers", |f, cx| f.int(cx, 0, MAX_WORKERS))
            .map(|n| n as usize),
    );
    set(&mut g.access_log, t.get(cx, "access_log", Field::bool));
    set(
        &mut g.trusted_proxies,
        t.get(cx, "trusted_proxies", trusted_proxies),
    );
    set(
        &mut g.underscores_in_headers,
        t.get(cx, "underscores_in_headers", Field::bool),
    );
    if let Some(mut tt) = section(cx, &mut t, "timeouts") {
        let d = &mut g.timeouts;
        set(
            &mut d.connect,
            tt.get(cx, "connect", Field::positive_duration),
        );
        set(
            &mut d.response_header,
            tt.get(cx, "response_header", Field::positive_duration),
        );
        set(
            &mut d.client_header,
            tt.get(cx, "client_header", Field::positive_duration),
        );
        set(
            &mut d.client_body,
            tt.get(cx, "client_body", Field::positive_duration),
        );
        set(
            &mut d.client_idle,
            tt.get(cx, "client_idle", Field::positive_duration),
        );
        set(&mut d.dns, tt.get(cx, "dns", Field::positive_duration));
        set(
            &mut d.upstream_idle,
            tt.get(cx, "upstream_idle", Field::positive_duration),
        );
        tt.finish(cx);
    }
    if let Some(mut lt) = section(cx, &mut t, "limits") {
        set(
            &mut g.limits.request_header,
            lt.get(cx, "request_header", header_limit),
        );
        set(
            &mut g.limits.response_header,
            lt.get(cx, "response_header", header_limit),
        );
        lt.finish(cx);
    }
    set(
        &mut g.shutdown_grace,
        t.get(cx, "shutdown_grace", Field::duration),
    );
    t.finish(cx);
    g
}

/// `listen`: an array of `ip:port` (a single string is taken as a list of one).
fn listen_addrs(f: &Field, cx: &mut Ctx) -> Option<Vec<SocketAddr>> {
    if let Node::Value(Value::String(_)) = f.node {
        return socket_addr(f, cx).map(|a| vec![a]);
    }
    let elements = f.array(cx, r#"an array of addresses like ["127.0.0.1:8080"]"#)?;
    if elements.is_empty() {
        f.error(
            cx,
            r#"must list at least one address, e.g. ["127.0.0.1:8080"]"#,
        );
        return None;
    }
    let addrs: Vec<_> = elements.iter().map(|e| socket_addr(e, cx)).collect();
    addrs.into_iter().collect()
}

/// `trusted_proxies`: an array of CIDRs (`10.0.0.0/8`) or single addresses.
fn trusted_proxies(f: &Field, cx: &mut Ctx) -> Option<Vec<ipnet::IpNet>> {
    let elements = f.array(cx, r#"an array of networks like ["10.0.0.0/8", "::1"]"#)?;
    let nets: Vec<_> = elements
        .iter()
        .map(|e| {
            let s = e.str(cx)?;
            let parsed = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    e.error(
                        cx,
                        format!(r#"expected a network like "10.0.0.0/8" or an address like "192.0.2.7", found {s:?}"#),
                    );
                    None
                }
            }
        })
        .collect();
    nets.into_iter().collect()
}

/// An `ip:port` to listen on.
fn socket_addr(f: &Field, cx: &mut Ctx) -> Option<SocketAddr> {
    let s = f.str(cx)?;
    match s.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let hint = if s
                .rsplit_once(':')
                .is_some_and(|(h, _)| h.parse::<std::net::IpAddr>().is_err())
            {
                " (an IP address, not a host name)"
            } else {
                ""
            };
            f.error(
                cx,
                format!(
                    r#"expected an address like "127.0.0.1:8080" or "[::]:8080"{hint}, found {s:?}"#
                ),
            );
            None
        }
    }
}

/// A header size limit: at least 1KiB.
fn header_limit(f: &Field, cx: &mut Ctx) -> Option<usize> {
    let bytes = f.size(cx)?;
    if bytes < 1024 {
        f.error(
            cx,
            format!("{bytes} bytes is too small for a header section; use at least 1KiB"),
        );
        return None;
    }
    match usize::try_from(bytes) {
        Ok(n) => Some(n),
        Err(_) => {
            f.error(cx, "too large");
            None
        }
    }
}

// ---------------------------------------------------------------- [admin], [errors]

fn admin(cx: &mut Ctx, t: Option<TableReader>, gateway: &Gateway) -> Admin {
    let mut a = Admin::default();
    let mut listen_field = None;
    if let Some(mut t) = t {
        if let Some(f) = t.take("listen") {
            set(&mut a.listen, socket_addr(&f, cx));
            listen_field = Some(f);
        }
        a.token = t.get(cx, "token", Field::text);
        t.finish(cx);
    }
    if a.token.is_none() {
        a.token = std::env::var(super::TOKEN_ENV)
            .ok()
            .filter(|s| !s.is_empty());
    }
    if let Some(f) = listen_field {
        if gateway.listen.contains(&a.listen) && a.listen.port() != 0 {
            f.error(
                cx,
                format!(
                    "{} is also a gateway.listen address; the admin API needs its own",
                    a.listen
                ),
            );
        } else if !a.listen.ip().is_loopback() {
            f.warning(
                cx,
                format!(
                    "{} is not a loopback address: it exposes the control API (restart, scale, \
                     diagnose) to the network; use 127.0.0.1 unless a firewall guards it",
                    a.listen
                ),
            );
        }
    }
    a
}

fn error_pages(cx: &mut Ctx, t: Option<TableReader>, base: &Path) -> ErrorPages {
    let mut e = ErrorPages::default();
    let Some(mut t) = t else { return e };
    e.support_url = t.get(cx, "support_url", |f, cx| {
        let url = f.text(cx)?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            f.error(
                cx,
                format!("expected an http:// or https:// URL, found {url:?}"),
            );
            return None;
        }
        Some(url)
    });
    if let Some(f) = t.take("details") {
        e.details = f.bool(cx).unwrap_or(false);
        if e.details {
            f.warning(
                cx,
                "details = true makes the cause of each gateway error (addresses, timeouts, \
                 upstream names) visible to clients in Proxy-Status and on error pages",
            );
        }
    }
    e.pages_dir = t.get(cx, "pages_dir", |f, cx| path_field(cx, f, base));
    t.finish(cx);
    e
}

// ---------------------------------------------------------------- names and routes

/// Names and routes seen so far, checked for clashes once everything is read.
#[derive(Default)]
struct Claims {
    /// (name, "app" or "upstream", key path, place).
    names: Vec<(String, &'static str, String, Span)>,
    /// (host, prefix, owner like `app "web"`, key path, place).
    routes: Vec<(Option<String>, String, String, String, Span)>,
}

impl Claims {
    /// Reports every name or route that an earlier part of the file already claimed.
    fn check(mut self, cx: &mut Ctx) {
        let start = |span: &Span| span.as_ref().map_or(usize::MAX, |s| s.start);
        self.names.sort_by_key(|n| start(&n.3));
        let mut seen: HashMap<&str, (&str, &Span)> = HashMap::new();
        for (name, kind, path, span) in &self.names {
            match seen.get(name.as_str()) {
                Some(&(other_kind, other_span)) => {
                    let (line, _) = cx.locate(other_span);
                    cx.error(
                        path,
                        span,
                        format!("name {name:?} is already used by the {other_kind} on line {line}; names must be unique across apps and upstreams"),
                    );
                }
                None => {
                    seen.insert(name, (kind, span));
                }
            }
        }
        self.routes.sort_by_key(|r| start(&r.4));
        let mut seen: HashMap<(Option<&str>, &str), (&str, &Span)> = HashMap::new();
        for (host, prefix, owner, path, span) in &self.routes {
            let key = (host.as_deref(), prefix.as_str());
            match seen.get(&key) {
                Some(&(other, other_span)) => {
                    let (line, _) = cx.locate(other_span);
                    let route = match host {
                        Some(host) => format!("{prefix:?} on host {host:?}"),
                        None => format!("{prefix:?}"),
                    };
                    let message = if other == owner {
                        format!("route {route} is listed twice in {owner} (also on line {line})")
                    } else {
                        format!("route {route} is already claimed by {other} on line {line}")
                    };
                    cx.error(path, span, message);
                }
                None => {
                    seen.insert(key, (owner, span));
                }
            }
        }
    }
}

/// `name`: required, `[a-z0-9_-]+`.
fn name(
    cx: &mut Ctx,
    t: &mut TableReader,
    kind: &'static str,
    claims: &mut Claims,
) -> Option<String> {
    let f = t.require(cx, "name")?;
    let name = f.str(cx)?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        f.error(
            cx,
            format!("names use only a-z, 0-9, _ and - (at least one), found {name:?}"),
        );
        return None;
    }
    claims
        .names
        .push((name.to_string(), kind, f.path.clone(), f.span.clone()));
    Some(name.to_string())
}

/// `routes`, `host` and `strip_prefix` of an app or upstream.
fn routes(cx: &mut Ctx, t: &mut TableReader, owner: &str, claims: &mut Claims) -> Option<Routes> {
    let host = t.get(cx, "host", route_host);
    let strip_prefix = t.get(cx, "strip_prefix", Field::bool).unwrap_or(false);
    let f = t.require(cx, "routes")?;
    let elements = f.array(cx, r#"an array of path prefixes like ["/api/"]"#)?;
    if elements.is_empty() {
        f.error(cx, r#"must list at least one path prefix, e.g. ["/"]"#);
        return None;
    }
    let mut prefixes = Vec::new();
    for e in &elements {
        let Some(prefix) = e.str(cx) else { continue };
        if !prefix.starts_with('/') {
            e.error(
                cx,
                format!(r#"a route is a path prefix starting with "/", found {prefix:?}"#),
            );
        } else if prefix.contains(['?', '#']) || prefix.contains(char::is_whitespace) {
            e.error(cx, format!("a route is a plain path prefix without query, fragment or spaces, found {prefix:?}"));
        } else {
            claims.routes.push((
                host.clone(),
                prefix.to_string(),
                owner.to_string(),
                e.path.clone(),
                e.span.clone(),
            ));
            prefixes.push(prefix.to_string());
        }
    }
    (prefixes.len() == elements.len()).then_some(Routes {
        prefixes,
        host,
        strip_prefix,
    })
}

/// `host`: a host name without port or scheme, stored lowercase.
fn route_host(f: &Field, cx: &mut Ctx) -> Option<String> {
    let host = f.text(cx)?;
    if !is_host_name(&host) {
        f.error(
            cx,
            format!(
                r#"expected a host name without scheme or port, like "example.com", found {host:?}"#
            ),
        );
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Letters, digits, `.`, `-` and `_`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `path` of a health check or trigger: starts with `/`.
fn url_path(f: &Field, cx: &mut Ctx) -> Option<String> {
    let path = f.str(cx)?;
    if !path.starts_with('/') {
        f.error(
            cx,
            format!(r#"expected a path starting with "/", like "/healthz", found {path:?}"#),
        );
        return None;
    }
    Some(path.to_string())
}

// ---------------------------------------------------------------- shared tables

/// Which defaults a `health` table starts from.
#[derive(Clone, Copy, PartialEq)]
enum HealthOf {
    App,
    Upstream,
}

fn health(cx: &mut Ctx, f: &Field, of: HealthOf) -> Option<Health> {
    let mut t = f.table(cx)?;
    let path = t.get(cx, "path", url_path);
    let mut h = match of {
        HealthOf::App => Health::app_default(),
        HealthOf::Upstream => Health::upstream_default(String::new()),
    };
    h.path = path.clone();
    let interval = t.take("interval");
    set(
        &mut h.interval,
        interval.as_ref().and_then(|f| f.positive_duration(cx)),
    );
    let timeout = t.take("timeout");
    set(
        &mut h.timeout,
        timeout.as_ref().and_then(|f| f.positive_duration(cx)),
    );
    set(
        &mut h.unhealthy_after,
        t.get(cx, "unhealthy_after", |f, cx| f.u32(cx, 1)),
    );
    set(
        &mut h.healthy_after,
        t.get(cx, "healthy_after", |f, cx| f.u32(cx, 1)),
    );
    let path_missing =
        of == HealthOf::Upstream && path.is_none() && t.entries().iter().all(|(k, _)| *k != "path");
    if path_missing {
        cx.error(
            &t.path,
            &t.span,
            r#"missing key "path": upstream health checks GET a path, e.g. path = "/healthz""#,
        );
    }
    if h.timeout >= h.interval {
        let at = timeout.or(interval).unwrap_or_else(|| f.clone());
        at.warning(
            cx,
            format!(
                "the timeout ({:?}) is not shorter than the interval ({:?}): a slow check runs into the next one",
                h.timeout, h.interval
            ),
        );
    }
    t.finish(cx);
    Some(h)
}

fn queue(cx: &mut Ctx, f: &Field) -> Option<Queue> {
    let mut t = f.table(cx)?;
    let mut q = Queue::default();
    set(
        &mut q.size,
        t.get(cx, "size", |f, cx| f.u32(cx, 1)).map(|n| n as usize),
    );
    set(&mut q.timeout, t.get(cx, "timeout", Field::duration));
    t.finish(cx);
    Some(q)
}

fn retry(cx: &mut Ctx, f: &Field) -> Option<Retry> {
    let mut t = f.table(cx)?;
    let mut r = Retry::default();
    set(
        &mut r.attempts,
        t.get(cx, "attempts", |f, cx| f.int(cx, 1, 10))
            .map(|n| n as u32),
    );
    set(
        &mut r.budget_percent,
        t.get(cx, "budget_percent", |f, cx| f.int(cx, 0, 100))
            .map(|n| n as u32),
    );
    t.finish(cx);
    Some(r)
}

fn eject(cx: &mut Ctx, f: &Field) -> Option<Eject> {
    let mut t = f.table(cx)?;
    let mut e = Eject::default();
    set(
        &mut e.consecutive_failures,
        t.get(cx, "consecutive_failures", |f, cx| f.u32(cx, 1)),
    );
    set(
        &mut e.cooldown,
        t.get(cx, "cooldown", Field::positive_duration),
    );
    t.finish(cx);
    Some(e)
}

fn dns(cx: &mut Ctx, f: &Field) -> Option<Dns> {
    let mut t = f.table(cx)?;
    let mut d = Dns::default();
    if let Some(f) = t.take("resolvers") {
        if let Some(elements) = f.array(cx, r#"an array of "ip:port" like ["10.0.0.2:53"]"#) {
            for e in elements {
                let Some(s) = e.str(cx) else { continue };
                match s.parse() {
                    Ok(addr) => d.resolvers.push(addr),
                    Err(_) => e.error(
                        cx,
                        format!(r#"expected "ip:port" like "10.0.0.2:53", found {s:?}"#),
                    ),
                }
            }
        }
    }
    set(
        &mut d.refresh,
        t.get(cx, "refresh", Field::positive_duration),
    );
    t.finish(cx);
    Some(d)
}

// ---------------------------------------------------------------- [[upstream]]

fn upstream(
    cx: &mut Ctx,
    mut t: TableReader,
    base: &Path,
    claims: &mut Claims,
) -> Option<Upstream> {
    let name = name(cx, &mut t, "upstream", claims);
    let owner = match &name {
        Some(name) => format!("upstream {name:?}"),
        None => t.path.clone(),
    };
    let servers = t.require(cx, "servers").and_then(|f| servers(cx, &f));
    let routes = routes(cx, &mut t, &owner, claims);
    let dns = t.get(cx, "dns", |f, cx| dns(cx, f)).unwrap_or_default();
    let health = t.get(cx, "health", |f, cx| health(cx, f, HealthOf::Upstream));
    let tls_field = t.take("tls");
    let tls = tls_field
        .as_ref()
        .and_then(|f| upstream_tls(cx, f, base))
        .unwrap_or_default();
    let max_concurrency = t
        .get(cx, "max_concurrency", |f, cx| f.u32(cx, 0))
        .unwrap_or(0);
    let queue = t.get(cx, "queue", |f, cx| queue(cx, f)).unwrap_or_default();
    let retry = t.get(cx, "retry", |f, cx| retry(cx, f)).unwrap_or_default();
    let eject = t.get(cx, "eject", |f, cx| eject(cx, f)).unwrap_or_default();
    t.finish(cx);
    if let (Some(f), Some(servers)) = (&tls_field, &servers) {
        if !servers.iter().any(|s| s.tls) {
            f.warning(
                cx,
                r#"no server uses "https://", so these TLS settings have no effect"#,
            );
        }
    }
    Some(Upstream {
        name: name?,
        servers: servers?,
        routes: routes?,
        dns,
        health,
        tls,
        max_concurrency,
        queue,
        retry,
        eject,
    })
}

/// `servers`: a non-empty array of `host:port`, `[v6]:port` or `http(s)://host:port`.
fn servers(cx: &mut Ctx, f: &Field) -> Option<Vec<ServerAddr>> {
    let elements = f.array(cx, r#"an array of servers like ["10.0.0.5:8000"]"#)?;
    if elements.is_empty() {
        f.error(
            cx,
            r#"must list at least one server, e.g. ["10.0.0.5:8000"]"#,
        );
        return None;
    }
    let mut servers: Vec<ServerAddr> = Vec::new();
    let mut all_good = true;
    for e in elements {
        let Some(s) = e.str(cx) else {
            all_good = false;
            continue;
        };
        match parse_server(s) {
            Ok(server) if servers.contains(&server) => {
                e.warning(
                    cx,
                    format!("{s:?} is listed twice; it gets a double share of requests"),
                );
                servers.push(server);
            }
            Ok(server) => servers.push(server),
            Err(message) => {
                e.error(cx, message);
                all_good = false;
            }
        }
    }
    all_good.then_some(servers)
}

/// Parses one `servers` entry; the error is a complete message.
pub(crate) fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let fail = |why: &str| Err(format!(r#"expected "host:port", found {text:?} ({why})"#));
    let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some((scheme, _)) = text.split_once("://") {
        return fail(&format!(
            "unsupported scheme {scheme:?}; use http:// or https://"
        ));
    } else {
        (false, text)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return fail("a server has no path; put path prefixes in routes");
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return fail("missing \"]\" after the IPv6 address");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return fail("not an IPv6 address inside [ ]");
        }
        match after.strip_prefix(':') {
            Some(port) => (ip, port),
            None => return fail("the port is required"),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return fail(r#"an IPv6 address goes in brackets, like "[::1]:8080""#)
            }
            Some((host, port)) => (host, port),
            None => return fail("the port is required"),
        }
    };
    if !is_host_name(host) && host.parse::<Ipv6Addr>().is_err() {
        return fail("not a valid host name or IP address");
    }
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return fail("the port must be a number from 1 to 65535"),
    };
    Ok(ServerAddr {
        host: host.to_ascii_lowercase(),
        port,
        tls,
    })
}

fn upstream_tls(cx: &mut Ctx, f: &Field, base: &Path) -> Option<UpstreamTls> {
    let mut t = f.table(cx)?;
    let tls = UpstreamTls {
        ca: t.get(cx, "ca", |f, cx| path_field(cx, f, base)),
        server_name: t.get(cx, "server_name", route_host),
    };
    t.finish(cx);
    Some(tls)
}

// ---------------------------------------------------------------- [[app]]

fn app(cx: &mut Ctx, mut t: TableReader, base: &Path, claims: &mut Claims) -> Option<App> {
    let name = name(cx, &mut t, "app", claims);
    let owner = match &name {
        Some(name) => format!("app {name:?}"),
        None => t.path.clone(),
    };
    let command = t.require(cx, "command").and_then(|f| argv(cx, &f));
    let cwd = t
        .get(cx, "cwd", |f, cx| path_field(cx, f, base))
        .unwrap_or_else(|| resolve(base, "."));
    let env = t.get(cx, "env", |f, cx| env(cx, f)).unwrap_or_default();
    let instances = t.get(cx, "instances", |f, cx| f.u32(cx, 1)).unwrap_or(1);
    let routes = routes(cx, &mut t, &owner, claims);
    let max_concurrency = t
        .get(cx, "max_concurrency", |f, cx| f.u32(cx, 0))
        .unwrap_or(64);
    let queue = t.get(cx, "queue", |f, cx| queue(cx, f)).unwrap_or_default();
    let health = t
        .get(cx, "health", |f, cx| health(cx, f, HealthOf::App))
        .unwrap_or_else(Health::app_default);
    let startup_timeout = t
        .get(cx, "startup_timeout", Field::positive_duration)
        .unwrap_or(Duration::from_secs(60));
    let shutdown_grace = t
        .get(cx, "shutdown_grace", Field::duration)
        .unwrap_or(Duration::from_secs(30));
    let retry = t.get(cx, "retry", |f, cx| retry(cx, f)).unwrap_or_default();
    let autoheal = t.get(cx, "autoheal", |f, cx| autoheal(cx, f));
    let autoscale = t.get(cx, "autoscale", |f, cx| autoscale(cx, f));
    t.finish(cx);
    Some(App {
        name: name?,
        command: command?,
        cwd,
        env,
        instances,
        routes: routes?,
        max_concurrency,
        queue,
        health,
        startup_timeout,
        shutdown_grace,
        retry,
        autoheal,
        autoscale,
    })
}

/// A command line: a non-empty array of strings whose first is not empty.
fn argv(cx: &mut Ctx, f: &Field) -> Option<Vec<String>> {
    let argv = f.strings(cx)?;
    match argv.first() {
        None => {
            f.error(
                cx,
                r#"must name a program, e.g. ["python3", "app.py", "--port", "{port}"]"#,
            );
            None
        }
        Some(program) if program.is_empty() => {
            f.error(cx, "the program (first element) must not be empty");
            None
        }
        Some(_) => Some(argv),
    }
}

/// `env = { NAME = "value" }`.
fn env(cx: &mut Ctx, f: &Field) -> Option<Vec<(String, String)>> {
    let t = f.table(cx)?;
    let mut env = Vec::new();
    for (key, value) in t.take_all() {
        if key.is_empty() || key.contains(['=', '\0']) {
            value.error(
                cx,
                format!("{key:?} cannot be an environment variable name"),
            );
            continue;
        }
        let Some(v) = value.str(cx) else { continue };
        if key == "PORT" {
            value.warning(
                cx,
                "PORT is set per instance to the port it listens on; this value is ignored",
            );
            continue;
        }
        env.push((key.to_string(), v.to_string()));
    }
    Some(env)
}

fn autoscale(cx: &mut Ctx, f: &Field) -> Option<Autoscale> {
    let mut t = f.table(cx)?;
    let min_field = t.take("min");
    let min = min_field.as_ref().map_or(Some(1), |f| f.u32(cx, 1));
    let max = t.require(cx, "max").and_then(|f| f.u32(cx, 1));
    let target_inflight = t
        .get(cx, "target_inflight", |f, cx| f.u32(cx, 1))
        .unwrap_or(16);
    let target_cpu = t.get(cx, "target_cpu", |f, cx| f.number(cx, 1.0, 10_000.0));
    let cooldown = t
        .get(cx, "cooldown", Field::duration)
        .unwrap_or(Duration::from_secs(30));
    t.finish(cx);
    let (min, max) = (min?, max?);
    if min > max {
        let at = min_field.unwrap_or_else(|| f.clone());
        at.error(cx, format!("min ({min}) is greater than max ({max})"));
        return None;
    }
    Some(Autoscale {
        min,
        max,
        target_inflight,
        target_cpu,
        cooldown,
    })
}

// ---------------------------------------------------------------- [app.autoheal]

/// The trigger keys of a rule's `when`.
const TRIGGERS: [&str; 6] = [
    "memory_above",
    "cpu_above",
    "requests",
    "slow_requests",
    "status",
    "unhealthy",
];

fn autoheal(cx: &mut Ctx, f: &Field) -> Option<Autoheal> {
    let mut t = f.table(cx)?;
    let mut a = Autoheal::default();
    set(&mut a.min_uptime, t.get(cx, "min_uptime", Field::duration));
    if let Some(mut mr) = t.take("max_recycles").and_then(|f| f.table(cx)) {
        set(
            &mut a.max_recycles.0,
            mr.get(cx, "count", |f, cx| f.u32(cx, 1)),
        );
        set(
            &mut a.max_recycles.1,
            mr.get(cx, "within", Field::positive_duration),
        );
        mr.finish(cx);
    }
    let mut all_good = true;
    let rules = t
        .take("rule")
        .and_then(|f| f.tables(cx))
        .unwrap_or_default();
    for mut r in rules {
        let when = r.require(cx, "when").and_then(|f| trigger(cx, &f));
        let actions = match r.take("action") {
            Some(f) => actions(cx, &f),
            None => Some(vec![Action::Recycle]),
        };
        r.finish(cx);
        match (when, actions) {
            (Some(when), Some(actions)) => a.rules.push(AutohealRule { when, actions }),
            _ => all_good = false,
        }
    }
    t.finish(cx);
    all_good.then_some(a)
}

/// `when = { <one trigger> = ... }`.
fn trigger(cx: &mut Ctx, f: &Field) -> Option<Trigger> {
    let mut t = f.table(cx)?;
    // Take "memory_above", ... one by one (the keys are 'static for the allowed list).
    let mut found: Vec<(&str, Field)> = Vec::new();
    for key in TRIGGERS {
        if let Some(field) = t.take(key) {
            found.push((key, field));
        }
    }
    let has_unknown = t.entries().len() > found.len();
    let (table_path, table_span) = (t.path.clone(), t.span.clone());
    t.finish(cx);
    match found.as_slice() {
        [] => {
            if !has_unknown {
                cx.error(
                    &table_path,
                    &table_span,
                    format!("names no trigger; use one of: {}", TRIGGERS.join(", ")),
                );
            }
            None
        }
        [(key, field)] => trigger_of(cx, key, field),
        [(first, _), rest @ ..] => {
            for (key, field) in rest {
                field.error(
                    cx,
                    format!("a rule has one trigger, and this one already has {first:?}; put {key:?} in its own [[app.autoheal.rule]]"),
                );
            }
            None
        }
    }
}

fn trigger_of(cx: &mut Ctx, key: &str, f: &Field) -> Option<Trigger> {
    if key == "memory_above" {
        let bytes = f.size(cx)?;
        if bytes == 0 {
            f.error(cx, "must be more than 0 bytes");
            return None;
        }
        return Some(Trigger::MemoryAbove(bytes));
    }
    let mut t = f.table(cx)?;
    let trigger = match key {
        "cpu_above" => {
            let percent = t
                .require(cx, "percent")
                .and_then(|f| f.number(cx, 1.0, 10_000.0));
            let for_ = t
                .get(cx, "for", Field::positive_duration)
                .unwrap_or(Duration::from_secs(60));
            percent.map(|percent| Trigger::CpuAbove { percent, for_ })
        }
        "requests" => {
            let count = t.require(cx, "count").and_then(|f| f.u64(cx, 1));
            count.map(|count| Trigger::Requests { count })
        }
        "slow_requests" => {
            let count = t.require(cx, "count").and_then(|f| f.u32(cx, 1));
            let slower_than = t
                .require(cx, "slower_than")
                .and_then(|f| f.positive_duration(cx));
            let within = t
                .require(cx, "within")
                .and_then(|f| f.positive_duration(cx));
            let path = t.get(cx, "path", url_path);
            match (count, slower_than, within) {
                (Some(count), Some(slower_than), Some(within)) => Some(Trigger::SlowRequests {
                    count,
                    slower_than,
                    within,
                    path,
                }),
                _ => None,
            }
        }
        "status" => {
            let codes = t.require(cx, "codes").and_then(|f| status_codes(cx, &f));
            let count = t.require(cx, "count").and_then(|f| f.u32(cx, 1));
            let within = t
                .require(cx, "within")
                .and_then(|f| f.positive_duration(cx));
            let path = t.get(cx, "path", url_path);
            match (codes, count, within) {
                (Some(codes), Some(count), Some(within)) => Some(Trigger::Status {
                    codes,
                    count,
                    within,
                    path,
                }),
                _ => None,
            }
        }
        _ => {
            let for_ = t.require(cx, "for").and_then(|f| f.positive_duration(cx));
            for_.map(|for_| Trigger::Unhealthy { for_ })
        }
    };
    t.finish(cx);
    trigger
}

/// `codes = "500-599"`, `"502"` or `502`: an inclusive range within 100..=599.
fn status_codes(cx: &mut Ctx, f: &Field) -> Option<(u16, u16)> {
    let expected = r#"expected status codes like "500-599" or "502", within 100 to 599"#;
    let text = match f.node {
        Node::Value(Value::Integer(i)) => i.value().to_string(),
        Node::Value(Value::String(s)) => s.value().clone(),
        _ => {
            f.mismatch(cx, r#"status codes like "500-599" or "502""#);
            return None;
        }
    };
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match (code(lo), code(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => {
            f.error(cx, format!("{expected}, found {text:?}"));
            None
        }
    }
}

/// `action`: one action or an array of them.
fn actions(cx: &mut Ctx, f: &Field) -> Option<Vec<Action>> {
    let Node::Value(Value::Array(_)) = f.node else {
        return action(cx, f).map(|a| vec![a]);
    };
    let elements = f.array(cx, "an array of actions")?;
    if elements.is_empty() {
        f.error(
            cx,
            r#"must name at least one action: recycle, log, diagnose or { command = [...] }"#,
        );
        return None;
    }
    let actions: Vec<_> = elements.iter().map(|e| action(cx, e)).collect();
    actions.into_iter().collect()
}

/// `"recycle"`, `"log"`, `"diagnose"` or `{ command = [...] }`.
fn action(cx: &mut Ctx, f: &Field) -> Option<Action> {
    let allowed = r#"recycle, log, diagnose or { command = ["...", "{pid}"] }"#;
    match f.node {
        Node::Value(Value::String(s)) => match s.value().as_str() {
            "recycle" => Some(Action::Recycle),
            "log" => Some(Action::Log),
            "diagnose" => Some(Action::Diagnose),
            "command" => {
                f.error(cx, r#""command" needs its argv: action = { command = ["/path/to/script", "{pid}"] }"#);
                None
            }
            other => {
                f.error(cx, format!("unknown action {other:?}; allowed: {allowed}"));
                None
            }
        },
        Node::Value(Value::InlineTable(_)) | Node::Table(_) => {
            let mut t = f.table(cx)?;
            let command = t.require(cx, "command").and_then(|f| argv(cx, &f));
            t.finish(cx);
            command.map(Action::Command)
        }
        _ => {
            f.mismatch(cx, &format!("an action ({allowed})"));
            None
        }
    }
}
