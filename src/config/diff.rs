//! What a reload changes: a pure comparison of the running config with the new one
//! (apps, upstreams and their pools, routes, sections that need a restart).

use super::{App, Config, Upstream};

/// Names by what a reload does to them, each in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Names {
    fn of<'a, T: PartialEq + 'a>(old: &'a [T], new: &'a [T], name: impl Fn(&T) -> &str) -> Names {
        let mut n = Names::default();
        for item in new {
            match old.iter().find(|o| name(o) == name(item)) {
                Some(o) if o == item => n.unchanged.push(name(item).to_owned()),
                Some(_) => n.changed.push(name(item).to_owned()),
                None => n.added.push(name(item).to_owned()),
            }
        }
        for item in old {
            if !new.iter().any(|x| name(x) == name(item)) {
                n.removed.push(name(item).to_owned());
            }
        }
        n
    }

    /// Whether `name` is in `unchanged`.
    pub fn is_unchanged(&self, name: &str) -> bool {
        self.unchanged.iter().any(|n| n == name)
    }
}

/// The difference between a running config and a reloaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub apps: Names,
    pub upstreams: Names,
    /// Some route (prefix, host, strip_prefix) was added, removed or changed.
    pub routes_changed: bool,
    /// `[gateway]`, `[admin]`, `[errors]` changed: they apply only after a restart.
    pub gateway_changed: bool,
    pub admin_changed: bool,
    pub errors_changed: bool,
}

impl Diff {
    /// Every app and upstream name by what happens to it: apps first, then upstreams.
    pub fn names(&self) -> Names {
        let join = |a: &[String], b: &[String]| [a, b].concat();
        Names {
            added: join(&self.apps.added, &self.upstreams.added),
            changed: join(&self.apps.changed, &self.upstreams.changed),
            removed: join(&self.apps.removed, &self.upstreams.removed),
            unchanged: join(&self.apps.unchanged, &self.upstreams.unchanged),
        }
    }
}

/// What changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> Diff {
    Diff {
        apps: Names::of(&old.apps, &new.apps, |a: &App| &a.name),
        upstreams: Names::of(&old.upstreams, &new.upstreams, |u: &Upstream| &u.name),
        routes_changed: routes(old) != routes(new),
        gateway_changed: gateway_changed(&old.gateway, &new.gateway),
        admin_changed: old.admin != new.admin,
        errors_changed: old.errors != new.errors,
    }
}

/// Whether an upstream's pool (its peers, connections, health verdicts) can be kept:
/// nothing about it changed.
pub fn same_upstream_pool(old: &Upstream, new: &Upstream) -> bool {
    old == new
}

/// Whether an app's pool (its queue and the requests waiting in it) can be kept: the
/// same app with the same concurrency, protocol, queue and retry settings. Its
/// instances are the supervisor's business.
pub fn same_app_pool(old: &App, new: &App) -> bool {
    old.name == new.name
        && old.max_concurrency == new.max_concurrency
        && old.protocol == new.protocol
        && old.queue == new.queue
        && old.retry == new.retry
}

/// Every route of a config: (pool name, host, prefix, strip_prefix), sorted.
fn routes(cfg: &Config) -> Vec<(&str, Option<&str>, &str, bool)> {
    let named = cfg
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), &u.routes))
        .chain(cfg.apps.iter().map(|a| (a.name.as_str(), &a.routes)));
    let mut all: Vec<_> = named
        .flat_map(|(name, r)| {
            r.prefixes
                .iter()
                .map(move |p| (name, r.host.as_deref(), p.as_str(), r.strip_prefix))
        })
        .collect();
    all.sort_unstable();
    all
}

/// Whether `[gateway]` changed in what needs a restart: certificate files and the
/// `acme` table apply at once (a reload reads the files again and starts ACME
/// again), the rest after a restart.
fn gateway_changed(old: &crate::config::Gateway, new: &crate::config::Gateway) -> bool {
    let mut new = new.clone();
    if let (Some(o), Some(n)) = (&old.tls, &mut new.tls) {
        n.certs = o.certs.clone();
        n.acme = o.acme.clone();
    }
    *old != new
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        super::super::parse(text, Path::new("/tmp/healgate.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    const BASE: &str = r#"
[[app]]
name = "web"
command = ["app", "{port}"]
routes = ["/"]

[[app]]
name = "jobs"
command = ["jobs", "{port}"]
routes = ["/jobs/"]

[[upstream]]
name = "api"
servers = ["127.0.0.1:9000"]
routes = ["/api/"]
"#;

    #[test]
    fn the_same_file_changes_nothing() {
        let d = diff(&config(BASE), &config(BASE));
        assert_eq!(d.apps.unchanged, ["web", "jobs"]);
        assert_eq!(d.upstreams.unchanged, ["api"]);
        assert_eq!(d.names().added.len() + d.names().changed.len(), 0);
        assert!(!d.routes_changed && !d.gateway_changed && !d.admin_changed);
    }

    #[test]
    fn added_changed_removed_and_routes() {
        let new = BASE
            .replace(
                r#"command = ["jobs", "{port}"]"#,
                r#"command = ["jobs2", "{port}"]"#,
            )
            .replace(r#"name = "web""#, r#"name = "www""#)
            .replace(r#"routes = ["/api/"]"#, r#"routes = ["/api/", "/v2/"]"#)
            + "[gateway]\nworkers = 2\n";
        let d = diff(&config(BASE), &config(&new));
        assert_eq!(
            d.apps,
            Names {
                added: vec!["www".into()],
                changed: vec!["jobs".into()],
                removed: vec!["web".into()],
                unchanged: vec![],
            }
        );
        assert_eq!(d.upstreams.changed, ["api"]);
        assert!(d.routes_changed && d.gateway_changed && !d.errors_changed);
        let all = d.names();
        assert_eq!(all.changed, ["jobs", "api"]);
        assert_eq!(all.removed, ["web"]);
    }

    #[test]
    fn the_acme_table_applies_without_a_restart_hsts_does_not() {
        let tls = |domain: &str| {
            format!(
                "{BASE}[gateway]\nlisten = [\"127.0.0.1:80\"]\n[gateway.tls]\n\
                 listen = [\"127.0.0.1:443\"]\n\
                 acme = {{ domains = [\"{domain}\"], directory = \"https://ca.test/dir\" }}\n"
            )
        };
        let old = config(&tls("a.test"));
        assert!(!diff(&old, &config(&tls("b.test"))).gateway_changed);
        let hsts = tls("a.test") + "hsts = \"max-age=60\"\n";
        assert!(diff(&old, &config(&hsts)).gateway_changed);
    }

    #[test]
    fn a_new_command_keeps_the_app_pool_a_new_queue_does_not() {
        let old = config(BASE);
        let cmd = config(&BASE.replace(r#"["app", "{port}"]"#, r#"["app2", "{port}"]"#));
        assert!(same_app_pool(&old.apps[0], &cmd.apps[0]));
        assert!(!diff(&old, &cmd).routes_changed);
        let queue = config(&BASE.replace(
            "routes = [\"/\"]",
            "routes = [\"/\"]\nqueue = { size = 7, timeout = \"1s\" }",
        ));
        assert!(!same_app_pool(&old.apps[0], &queue.apps[0]));
        assert!(same_upstream_pool(&old.upstreams[0], &queue.upstreams[0]));
    }
}
