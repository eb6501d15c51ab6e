//! `healgate check`'s look at the machine: warnings for an app command not on PATH, a
//! missing `cwd`, and an upstream server name the system resolver does not know.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use toml_edit::{Item, Table, Value};

use super::super::model::Config;
use super::super::reader::{Ctx, Span};

/// How long all name lookups together may take.
pub(crate) const RESOLVE_WITHIN: Duration = Duration::from_secs(2);

/// Warn, at each key's place in `root`, about what `config` names that is not there.
pub(crate) fn check(cx: &mut Ctx, root: &Table, config: &Config, resolve_within: Duration) {
    let apps = root.get("app").and_then(Item::as_array_of_tables);
    for (i, app) in config.apps.iter().enumerate() {
        let table = apps.and_then(|a| a.get(i));
        let cwd_span = table.and_then(|t| t.get("cwd")).and_then(Item::span);
        let cwd_ok = app.cwd.is_dir();
        if !cwd_ok {
            cx.warning(
                &format!("app[{i}].cwd"),
                &cwd_span.or_else(|| table.and_then(Table::span)),
                format!(
                    "the working directory {} does not exist (the app cannot start)",
                    app.cwd.display()
                ),
            );
        }
        let Some(program) = app.command.first() else {
            continue;
        };
        let span: Span = table
            .and_then(|t| t.get("command"))
            .and_then(Item::as_array)
            .and_then(|a| a.get(0))
            .and_then(Value::span);
        let path = format!("app[{i}].command[0]");
        if program.contains('/') {
            let full = app.cwd.join(program);
            if cwd_ok && !full.exists() {
                cx.warning(
                    &path,
                    &span,
                    format!("{program:?} does not exist (looked for {})", full.display()),
                );
            }
        } else {
            let search = app
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            if !on_path(program, &search) {
                cx.warning(
                    &path,
                    &span,
                    format!("{program:?} is not found on PATH ({search})"),
                );
            }
        }
    }
    // Server names, each looked up once, all within `resolve_within`.
    let ups = root.get("upstream").and_then(Item::as_array_of_tables);
    let mut names: Vec<(String, String, Span)> = Vec::new();
    for (i, up) in config.upstreams.iter().enumerate() {
        if !up.dns.resolvers.is_empty() {
            continue; // its own name servers, not the system's
        }
        let spans = ups
            .and_then(|a| a.get(i))
            .and_then(|t| t.get("servers"))
            .and_then(Item::as_array);
        for (j, s) in up.servers.iter().enumerate() {
            if s.host.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            let span = spans.and_then(|a| a.get(j)).and_then(Value::span);
            names.push((
                format!("upstream[{i}].servers[{j}]"),
                format!("{}:{}", s.host, s.port),
                span,
            ));
        }
    }
    for (path, name, span, why) in unresolved(names, resolve_within) {
        let host = name.rsplit_once(':').map_or(name.as_str(), |(h, _)| h);
        cx.warning(
            &path,
            &span,
            format!("host not found: {host:?} does not resolve ({why})"),
        );
    }
}

fn on_path(program: &str, search: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    search.split(':').filter(|d| !d.is_empty()).any(|d| {
        std::fs::metadata(Path::new(d).join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The names among `names` that the system resolver does not resolve within `within`.
fn unresolved(
    names: Vec<(String, String, Span)>,
    within: Duration,
) -> Vec<(String, String, Span, String)> {
    let deadline = Instant::now() + within;
    let (tx, rx) = mpsc::channel();
    for (k, (_, name, _)) in names.iter().enumerate() {
        let (tx, name) = (tx.clone(), name.clone());
        // A lookup that hangs past the deadline is left behind; `check` exits soon after.
        std::thread::spawn(move || {
            let got = match name.to_socket_addrs().map(Vec::from_iter) {
                Ok(a) if !a.is_empty() => Ok(()),
                Ok(_) => Err("no addresses".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send((k, got));
        });
    }
    drop(tx);
    let mut answers: Vec<Option<Result<(), String>>> = vec![None; names.len()];
    while answers.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((k, got)) => answers[k] = Some(got),
            Err(_) => break,
        }
    }
    names
        .into_iter()
        .zip(answers)
        .filter_map(|((path, name, span), got)| match got {
            Some(Ok(())) => None,
            Some(Err(e)) => Some((path, name, span, e)),
            None => Some((path, name, span, format!("no answer within {within:?}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_on_the_given_path() {
        assert!(on_path("sh", "/nonexistent:/bin:/usr/bin"));
        assert!(!on_path("no-such-program-xyz", "/bin:/usr/bin"));
        assert!(!on_path("sh", ""));
    }

    #[test]
    fn names_that_do_not_resolve_are_reported_in_bounded_time() {
        let names = vec![
            ("a".to_owned(), "localhost:80".to_owned(), None),
            ("b".to_owned(), "nosuch-host.invalid:80".to_owned(), None),
        ];
        let started = Instant::now();
        let bad = unresolved(names, Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].0, "b");
    }
}
