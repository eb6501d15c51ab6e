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

mod alert;
mod app;
mod edge;
pub(crate) mod environment;
mod shared;
pub(crate) mod upstream;

use self::app::*;
use self::shared::*;
use self::upstream::*;
use super::model::*;
use super::reader::{Ctx, Field, Node, Span, TableReader};

/// The most proxy worker threads `gateway.workers` may ask for.
pub(super) const MAX_WORKERS: i64 = 1024;

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
    let mut alerts = Vec::new();
    for t in sections(cx, &mut r, "alert") {
        alerts.extend(alert::alert(cx, t));
    }
    r.finish(cx);
    claims.check(cx);
    Config {
        gateway,
        admin,
        errors,
        upstreams,
        apps,
        alerts,
    }
}

/// A `[name]` table, when present and a table.
pub(super) fn section<'d>(
    cx: &mut Ctx,
    r: &mut TableReader<'d>,
    key: &'static str,
) -> Option<TableReader<'d>> {
    r.take(key).and_then(|f| f.table(cx))
}

/// The `[[name]]` tables; none when absent.
pub(super) fn sections<'d>(
    cx: &mut Ctx,
    r: &mut TableReader<'d>,
    key: &'static str,
) -> Vec<TableReader<'d>> {
    r.take(key).and_then(|f| f.tables(cx)).unwrap_or_default()
}

/// Overwrites `slot` when `value` is there.
pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A path from the file, relative to `base` (the config file's directory) unless absolute.
pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
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
pub(super) fn path_field(cx: &mut Ctx, f: &Field, base: &Path) -> Option<PathBuf> {
    f.text(cx).map(|s| resolve(base, &s))
}

// ---------------------------------------------------------------- [gateway]

pub(super) fn gateway(cx: &mut Ctx, t: Option<TableReader>, base: &Path) -> Gateway {
    let mut g = Gateway {
        data_dir: resolve(base, "healgate-data"),
        ..Gateway::default()
    };
    let Some(mut t) = t else { return g };
    if let Some(listeners) = t.get(cx, "listen", listen_addrs) {
        g.proxy_protocol = listeners.iter().filter(|l| l.1).map(|l| l.0).collect();
        g.listen = listeners.into_iter().map(|l| l.0).collect();
    }
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
        if let Some(n) = lt.get(cx, "max_connections", |f, cx| f.u32(cx, 1)) {
            g.limits.max_connections = Some(n);
        }
        lt.finish(cx);
    }
    if let Some(mut lt) = section(cx, &mut t, "logs") {
        let l = &mut g.logs;
        set(&mut l.max_size, lt.get(cx, "max_size", Field::size));
        set(
            &mut l.keep,
            lt.get(cx, "keep", |f, cx| f.int(cx, 1, 1000))
                .map(|n| n as u32),
        );
        set(&mut l.app_max_size, lt.get(cx, "app_max_size", Field::size));
        set(
            &mut l.app_keep,
            lt.get(cx, "app_keep", |f, cx| f.int(cx, 1, 1000))
                .map(|n| n as u32),
        );
        lt.finish(cx);
    }
    set(
        &mut g.shutdown_grace,
        t.get(cx, "shutdown_grace", Field::duration),
    );
    g.tls = section(cx, &mut t, "tls").and_then(|tt| edge::tls(cx, tt, base, &g.listen));
    g.compression = section(cx, &mut t, "compression").map(|ct| edge::compression(cx, ct));
    t.finish(cx);
    g
}

/// `listen`: an array of `ip:port` or `{ addr = "ip:port", proxy_protocol = true }`
/// (a single string is taken as a list of one); each with whether its connections
/// start with a PROXY protocol header.
pub(super) fn listen_addrs(f: &Field, cx: &mut Ctx) -> Option<Vec<(SocketAddr, bool)>> {
    if let Node::Value(Value::String(_)) = f.node {
        return socket_addr(f, cx).map(|a| vec![(a, false)]);
    }
    let elements = f.array(
        cx,
        r#"an array of addresses like ["127.0.0.1:8080"] or { addr = "127.0.0.1:8080", proxy_protocol = true }"#,
    )?;
    if elements.is_empty() {
        f.error(
            cx,
            r#"must list at least one address, e.g. ["127.0.0.1:8080"]"#,
        );
        return None;
    }
    let listeners: Vec<_> = elements
        .iter()
        .map(|e| match e.node {
            Node::Value(Value::InlineTable(_)) => {
                let mut t = e.table(cx)?;
                let addr = t.require(cx, "addr").and_then(|a| socket_addr(&a, cx));
                let pp = t.get(cx, "proxy_protocol", Field::bool).unwrap_or(false);
                t.finish(cx);
                addr.map(|a| (a, pp))
            }
            _ => socket_addr(e, cx).map(|a| (a, false)),
        })
        .collect();
    listeners.into_iter().collect()
}

/// `trusted_proxies`: an array of CIDRs (`10.0.0.0/8`) or single addresses.
pub(super) fn trusted_proxies(f: &Field, cx: &mut Ctx) -> Option<Vec<ipnet::IpNet>> {
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
pub(super) fn socket_addr(f: &Field, cx: &mut Ctx) -> Option<SocketAddr> {
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
pub(super) fn header_limit(f: &Field, cx: &mut Ctx) -> Option<usize> {
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

pub(super) fn admin(cx: &mut Ctx, t: Option<TableReader>, gateway: &Gateway) -> Admin {
    let mut a = Admin::default();
    let mut listen_field = None;
    if let Some(mut t) = t {
        if let Some(f) = t.take("listen") {
            set(&mut a.listen, socket_addr(&f, cx));
            listen_field = Some(f);
        }
        a.token = t.get(cx, "token", Field::text);
        set(
            &mut a.metrics_public,
            t.get(cx, "metrics_public", Field::bool),
        );
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

pub(super) fn error_pages(cx: &mut Ctx, t: Option<TableReader>, base: &Path) -> ErrorPages {
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
