//! An app's revision: what its instances are started with (command, cwd, env, health
//! check, startup timeout), named by a short hash of exactly those settings.
//!
//! A hash, not a counter: the name says what runs, so a reload that puts back the
//! running settings is recognised as the revision the instances already run (nothing
//! rolls), and the same config has the same revision after a gateway restart. Instance
//! count, routes, limits and AutoHeal rules are not part of it: they change without
//! restarting a process.

use crate::config::{App, Health};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One revision of an app: its id and the settings a process is started with.
#[derive(Debug, PartialEq)]
pub(super) struct Revision {
    /// 8 hex digits (FNV-1a over the settings below), e.g. `3f9a0c12`.
    pub(super) id: String,
    pub(super) command: Vec<String>,
    pub(super) cwd: PathBuf,
    pub(super) env: Vec<(String, String)>,
    pub(super) health: Health,
    pub(super) startup_timeout: Duration,
}

impl Revision {
    /// The revision `app`'s settings describe.
    pub(super) fn of(app: &App) -> Arc<Revision> {
        let mut h = Fnv::default();
        h.list(app.command.iter().map(String::as_str));
        h.field(app.cwd.to_string_lossy().as_ref());
        h.list(app.env.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
        let health = &app.health;
        h.field(health.path.as_deref().unwrap_or("\0none"));
        h.field(&format!(
            "{:?} {:?} {} {} {:?}",
            health.interval,
            health.timeout,
            health.unhealthy_after,
            health.healthy_after,
            app.startup_timeout
        ));
        Arc::new(Revision {
            id: format!("{:08x}", (h.0 >> 32) as u32 ^ h.0 as u32),
            command: app.command.clone(),
            cwd: app.cwd.clone(),
            env: app.env.clone(),
            health: app.health.clone(),
            startup_timeout: app.startup_timeout,
        })
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not
/// promised to be). Each field is length-prefixed, so `["ab", "c"]` ≠ `["a", "bc"]`.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }

    fn list<'a>(&mut self, items: impl Iterator<Item = &'a str>) {
        let items: Vec<&str> = items.collect();
        self.bytes(&(items.len() as u64).to_le_bytes());
        for s in items {
            self.field(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn app(text: &str) -> App {
        crate::config::parse(text, Path::new("/tmp/healgate.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
            .apps
            .remove(0)
    }

    const BASE: &str =
        "[[app]]\nname = \"web\"\ncommand = [\"app\", \"{port}\"]\nroutes = [\"/\"]\n";

    #[test]
    fn the_revision_names_what_a_process_is_started_with() {
        let base = Revision::of(&app(BASE));
        assert_eq!(base.id.len(), 8);
        assert!(
            base.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            base.id
        );
        assert_eq!(Revision::of(&app(BASE)).id, base.id, "the same settings");
        // What starts a process makes a new revision.
        for changed in [
            BASE.replace("[\"app\", \"{port}\"]", "[\"app2\", \"{port}\"]"),
            BASE.replace("[\"app\", \"{port}\"]", "[\"ap\", \"p{port}\"]"),
            format!("{BASE}env = {{ A = \"1\" }}\n"),
            format!("{BASE}cwd = \"/srv\"\n"),
            format!("{BASE}startup_timeout = \"5s\"\n"),
            format!("{BASE}health = {{ path = \"/healthz\" }}\n"),
        ] {
            assert_ne!(Revision::of(&app(&changed)).id, base.id, "{changed}");
        }
        // What does not restart a process does not.
        for same in [
            format!("{BASE}instances = 3\n"),
            format!("{BASE}max_concurrency = 7\n"),
            BASE.replace("routes = [\"/\"]", "routes = [\"/x\"]"),
        ] {
            assert_eq!(Revision::of(&app(&same)).id, base.id, "{same}");
        }
    }
}
