//! Names, routes and the small tables several sections share (health, queue, retry,
//! eject, dns).

use super::*;

// ---------------------------------------------------------------- names and routes

/// Names and routes seen so far, checked for clashes once everything is read.
#[derive(Default)]
pub(super) struct Claims {
    /// (name, "app" or "upstream", key path, place).
    names: Vec<(String, &'static str, String, Span)>,
    /// (host, prefix, owner like `app "web"`, key path, place).
    routes: Vec<(Option<String>, String, String, String, Span)>,
}

impl Claims {
    /// Reports every name or route that an earlier part of the file already claimed.
    pub(super) fn check(mut self, cx: &mut Ctx) {
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
pub(super) fn name(
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
pub(super) fn routes(
    cx: &mut Ctx,
    t: &mut TableReader,
    owner: &str,
    claims: &mut Claims,
) -> Option<Routes> {
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
pub(super) fn route_host(f: &Field, cx: &mut Ctx) -> Option<String> {
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
pub(super) fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `path` of a health check or trigger: starts with `/`.
pub(super) fn url_path(f: &Field, cx: &mut Ctx) -> Option<String> {
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
pub(super) enum HealthOf {
    App,
    Upstream,
}

pub(super) fn health(cx: &mut Ctx, f: &Field, of: HealthOf) -> Option<Health> {
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

pub(super) fn queue(cx: &mut Ctx, f: &Field) -> Option<Queue> {
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

pub(super) fn retry(cx: &mut Ctx, f: &Field) -> Option<Retry> {
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

pub(super) fn eject(cx: &mut Ctx, f: &Field) -> Option<Eject> {
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

pub(super) fn dns(cx: &mut Ctx, f: &Field) -> Option<Dns> {
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
