//! Routing: which pool a request goes to, by path prefix (longest wins) and host.

use crate::upstream::Pool;
use std::sync::Arc;

/// One prefix of one app or upstream.
pub struct Route {
    /// The app or upstream name (the access log's `route`).
    pub name: Arc<str>,
    /// Lowercase host without port; `None` = any host.
    pub host: Option<String>,
    /// Starts with `/`. A prefix without a trailing `/` matches at a segment boundary:
    /// `/api` matches `/api`, `/api/x` and `/api?q`, not `/apix`.
    pub prefix: String,
    pub strip_prefix: bool,
    pub pool: Arc<Pool>,
}

/// The routing table, most specific first.
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Every pool the table routes to, once each.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut out: Vec<Arc<Pool>> = Vec::new();
        for r in &self.routes {
            if !out.iter().any(|p| Arc::ptr_eq(p, &r.pool)) {
                out.push(r.pool.clone());
            }
        }
        out
    }

    /// A table from routes in any order.
    pub fn new(mut routes: Vec<Route>) -> Router {
        // Longest prefix first; at equal length a host-specific route first.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Router { routes }
    }

    /// The route for `host` (lowercase, no port) and `path`. With `explicit_host_only`
    /// only routes naming a host match (absolute-form requests: no open proxy).
    pub fn find(&self, host: Option<&str>, path: &str, explicit_host_only: bool) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let host_ok = match (&r.host, host) {
                (None, _) => !explicit_host_only,
                (Some(want), Some(h)) => want == h,
                (Some(_), None) => false,
            };
            host_ok && prefix_matches(&r.prefix, path)
        })
    }

    /// Every route (for status pages and health tasks).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    if prefix.ends_with('/') || path.len() == prefix.len() {
        return true;
    }
    matches!(path.as_bytes()[prefix.len()], b'/' | b'?')
}

/// The path to send upstream: the prefix removed when the route says so.
pub fn upstream_path<'a>(route: &Route, path: &'a str) -> std::borrow::Cow<'a, str> {
    if !route.strip_prefix {
        return path.into();
    }
    let rest = &path[route.prefix.trim_end_matches('/').len()..];
    if rest.starts_with('/') {
        rest.into()
    } else {
        format!("/{rest}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(prefix_matches("/api", "/api?x=1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api/", "/api"));
        assert!(prefix_matches("/", "/anything"));
    }
}
