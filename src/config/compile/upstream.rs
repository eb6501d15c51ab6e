//! `[[upstream]]`: remote servers, their addresses and TLS.

use super::*;

// ---------------------------------------------------------------- [[upstream]]

pub(super) fn upstream(
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
    let protocol_field = t.take("protocol");
    let protocol = protocol_field
        .as_ref()
        .and_then(|f| protocol(cx, f, true))
        .unwrap_or_default();
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
    if let (Some(f), Some(servers), Protocol::Auto) = (&protocol_field, &servers, protocol) {
        if !servers.iter().any(|s| s.tls) {
            f.warning(
                cx,
                r#""auto" chooses by TLS ALPN and no server uses "https://": these servers get HTTP/1.1"#,
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
        protocol,
        max_concurrency,
        queue,
        retry,
        eject,
    })
}

/// `servers`: a non-empty array of `host:port`, `[v6]:port` or `http(s)://host:port`.
pub(super) fn servers(cx: &mut Ctx, f: &Field) -> Option<Vec<ServerAddr>> {
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

/// `protocol`: `"h1"`, `"h2"`, or (`auto_allowed`: an upstream's) `"auto"`.
pub(super) fn protocol(cx: &mut Ctx, f: &Field, auto_allowed: bool) -> Option<Protocol> {
    let allowed = if auto_allowed {
        r#""h1", "h2" or "auto""#
    } else {
        r#""h1" or "h2""#
    };
    match f.str(cx)? {
        "h1" => Some(Protocol::H1),
        "h2" => Some(Protocol::H2),
        "auto" if auto_allowed => Some(Protocol::Auto),
        "auto" => {
            f.error(
                cx,
                r#""auto" chooses by TLS ALPN, and instances are reached without TLS; use "h1" or "h2""#,
            );
            None
        }
        other => {
            f.error(
                cx,
                format!("unknown protocol {other:?}; allowed: {allowed}"),
            );
            None
        }
    }
}

pub(super) fn upstream_tls(cx: &mut Ctx, f: &Field, base: &Path) -> Option<UpstreamTls> {
    let mut t = f.table(cx)?;
    let tls = UpstreamTls {
        ca: t.get(cx, "ca", |f, cx| path_field(cx, f, base)),
        server_name: t.get(cx, "server_name", route_host),
    };
    t.finish(cx);
    Some(tls)
}
