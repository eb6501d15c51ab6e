//! Detectors of the way to the upstream: refused connects (and whether restarts
//! explain them), keep-alive races, DNS and TLS failures, response headers over the
//! limit.

use super::{failed_with, Finding, Severity};
use crate::diagnose::bundle::Bundle;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Failed requests with `errors`, by app.
fn by_app(b: &Bundle, errors: &[&str]) -> BTreeMap<String, Vec<usize>> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in failed_with(b, errors) {
        m.entry(b.access[i].app.clone()).or_default().push(i);
    }
    m
}

fn servers(b: &Bundle, app: &str) -> Vec<String> {
    b.app_facts(app)
        .and_then(|f| f["servers"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn details(b: &Bundle, idx: &[usize]) -> Vec<String> {
    let mut d: Vec<String> = idx
        .iter()
        .filter_map(|&i| b.access[i].details.clone())
        .collect();
    d.sort();
    d.dedup();
    d.truncate(5);
    d
}

fn instances(b: &Bundle, idx: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = idx
        .iter()
        .filter_map(|&i| b.access[i].upstream.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Times (ms) of the app's restarts, starts and exits.
fn restarts(b: &Bundle, app: &str) -> Vec<u64> {
    b.events
        .iter()
        .filter(|(_, e)| e["app"] == app)
        .filter(|(_, e)| {
            matches!(
                e["kind"].as_str(),
                Some(
                    "instance_exited"
                        | "instance_started"
                        | "instance_restarting"
                        | "instance_recycled"
                        | "instance_stopped"
                )
            )
        })
        .map(|(t, _)| *t)
        .collect()
}

/// `connection_refused`: nothing listened where the gateway connected; bursts that
/// fall within 3 s of the app's restarts are the restarts' doing.
pub fn connection_refused(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    for (app, claims) in by_app(b, &["connection_refused"]) {
        let r = restarts(b, &app);
        let near = claims
            .iter()
            .filter(|&&i| {
                r.iter()
                    .any(|t| b.access[i].t + 3000 >= *t && b.access[i].t <= t + 3000)
            })
            .count();
        let during_restarts = near * 2 > claims.len();
        let targets = servers(b, &app);
        let title = if during_restarts {
            format!("{} connects to {app} were refused while its instances restarted ({near} within 3 s of a restart)", claims.len())
        } else {
            format!(
                "{} connects to {app} were refused: nothing listens at {}",
                claims.len(),
                if targets.is_empty() {
                    instances(b, &claims).join(", ")
                } else {
                    targets.join(", ")
                }
            )
        };
        let mut f = Finding::new("connection_refused", Severity::Critical, title)
            .app(&app)
            .with("near_restarts", near)
            .with("servers", targets.clone())
            .with("lines", details(b, &claims))
            .mitigation(if during_restarts {
                "The instance was not listening yet (or any more) when requests reached it: give it a health path so that \
                 it gets traffic only once it serves, and find why it restarts (the other findings)."
                    .to_owned()
            } else {
                format!(
                    "Start the server, or fix the address and port in the config ({}); `healgate probe {app}` checks each hop.",
                    if targets.is_empty() { "the app's port".to_owned() } else { targets.join(", ") }
                )
            })
            .claim(b, claims.clone());
        f.instances = instances(b, &claims);
        out.push(f);
    }
    out
}

/// `keepalive_race`: `connection_terminated` with no instance exit around it: the
/// upstream closed an idle pooled connection as the request went out on it.
pub fn keepalive_race(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, a) in b.access.iter().enumerate() {
        let terminated = a.error.as_deref() == Some("connection_terminated")
            || a.tried.iter().any(|t| t == "connection_terminated");
        if !terminated {
            continue;
        }
        let exits: Vec<u64> = b
            .events_of("instance_exited")
            .filter(|(_, e)| e["app"] == a.app.as_str())
            .map(|(t, _)| *t)
            .collect();
        if exits.iter().any(|t| a.t + 3000 >= *t && a.t <= t + 3000) {
            continue;
        }
        by.entry(a.app.clone()).or_default().push(i);
    }
    for (app, idx) in by {
        let failed: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| b.access[i].failed())
            .collect();
        let retried = idx.len() - failed.len();
        let mut f = Finding::new(
            "keepalive_race",
            if failed.is_empty() { Severity::Info } else { Severity::Warning },
            format!(
                "{} requests to {app} met a connection the upstream closed under them ({} retried and served, {} failed)",
                idx.len(),
                retried,
                failed.len()
            ),
        )
        .app(&app)
        .with("retried", retried)
        .with("lines", details(b, &idx))
        .mitigation(
            "The upstream closes idle keep-alive connections sooner than the gateway stops reusing them. Make the \
             app's keep-alive timeout longer than [gateway.timeouts] pool_idle (or lower pool_idle below the app's), \
             e.g. gunicorn --keep-alive 5, Node server.keepAliveTimeout = 65000.",
        )
        .claim(b, failed);
        f.instances = instances(b, &idx);
        out.push(f);
    }
    out
}

fn simple(
    b: &Bundle,
    id: &'static str,
    errors: &[&str],
    title: impl Fn(&str, &[usize], &[String]) -> String,
    mitigation: impl Fn(&str, &[String]) -> String,
    extra: impl Fn(&str) -> Vec<(&'static str, Value)>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (app, claims) in by_app(b, errors) {
        let targets = servers(b, &app);
        let mut f = Finding::new(id, Severity::Critical, title(&app, &claims, &targets))
            .app(&app)
            .with("servers", targets.clone())
            .with("lines", details(b, &claims))
            .mitigation(mitigation(&app, &targets));
        for (k, v) in extra(&app) {
            f = f.with(k, v);
        }
        let mut errs: BTreeMap<String, usize> = BTreeMap::new();
        for &i in &claims {
            *errs
                .entry(b.access[i].error.clone().unwrap_or_default())
                .or_default() += 1;
        }
        f = f.with("errors", json!(errs));
        f.instances = instances(b, &claims);
        out.push(f.claim(b, claims));
    }
    out
}

/// `dns_failure`: the upstream's name did not resolve (502 dns_error) or in time
/// (504 dns_timeout).
pub fn dns_failure(b: &Bundle) -> Vec<Finding> {
    simple(
        b,
        "dns_failure",
        &["dns_error", "dns_timeout"],
        |app, c, s| {
            format!(
                "{} requests to {app} failed: the name {} does not resolve",
                c.len(),
                names(s)
            )
        },
        |app, s| {
            format!(
                "Fix the name in [[upstream]] {app} servers ({}), or the resolvers (dns.resolvers, /etc/resolv.conf); \
                 `healgate probe {app}` asks each resolver.",
                names(s)
            )
        },
        |_| Vec::new(),
    )
}

fn names(servers: &[String]) -> String {
    if servers.is_empty() {
        "of the server".to_owned()
    } else {
        servers.join(", ")
    }
}

/// `tls_failure`: the TLS handshake with the upstream failed (protocol or certificate).
pub fn tls_failure(b: &Bundle) -> Vec<Finding> {
    simple(
        b,
        "tls_failure",
        &["tls_protocol_error", "tls_certificate_error"],
        |app, c, s| {
            format!(
                "{} requests to {app} failed in the TLS handshake with {}",
                c.len(),
                names(s)
            )
        },
        |app, _| {
            format!(
                "Check the server's certificate (expiry, names, chain) and the upstream's tls settings (ca, server_name); \
                 `healgate probe {app}` shows the chain and the names."
            )
        },
        |_| Vec::new(),
    )
}

/// `response_header_too_large`: the upstream's response header went over
/// `limits.response_header` (502).
pub fn response_header_too_large(b: &Bundle) -> Vec<Finding> {
    let limit = b.facts["limits"]["response_header_bytes"].as_u64();
    let mut out = simple(
        b,
        "response_header_too_large",
        &["http_response_header_section_size"],
        |app, c, _| {
            format!(
                "{} responses of {app} had a header larger than limits.response_header = {} (502)",
                c.len(),
                limit.map_or("?".to_owned(), |l| format!("{} KiB", l / 1024))
            )
        },
        |_, _| {
            "The app sends a huge header (a cookie or a debug header that grows): trim it, or raise \
             [gateway.limits] response_header if it is expected."
                .to_owned()
        },
        |_| vec![("limit_bytes", json!(limit))],
    );
    for f in &mut out {
        let mut paths: Vec<String> = f
            .claims
            .iter()
            .map(|&i| b.access[i].route_path().to_owned())
            .collect();
        paths.sort();
        paths.dedup();
        f.evidence.insert("paths".into(), json!(paths));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;

    #[test]
    fn refused_far_from_restarts_names_the_address() {
        let mut b = bundle();
        b.facts["apps"] = json!([{"name": "api", "kind": "upstream", "servers": ["127.0.0.1:9"]}]);
        let mut r = req(60_000, "/", 502, Some("connection_refused"), 1.0);
        r.app = "api".into();
        b.access.push(r.clone());
        let f = connection_refused(&b);
        assert!(
            f[0].title.contains("nothing listens at 127.0.0.1:9"),
            "{}",
            f[0].title
        );
        b.events.push(event(
            59_000,
            json!({"app": "api", "kind": "instance_started"}),
        ));
        let f = connection_refused(&b);
        assert!(f[0].title.contains("restarted"), "{}", f[0].title);
    }

    #[test]
    fn terminated_without_an_exit_is_a_keepalive_race() {
        let mut b = bundle();
        let mut retried = req(0, "/", 200, None, 1.0);
        retried.tried = vec!["connection_terminated".into(), "200".into()];
        b.access.push(retried);
        b.access
            .push(req(10, "/", 502, Some("connection_terminated"), 1.0));
        let f = keepalive_race(&b);
        assert_eq!(f[0].claims, vec![1]);
        assert_eq!(f[0].evidence["retried"], 1);
        b.events.push(event(
            5,
            json!({"kind": "instance_exited", "instance": "web#1"}),
        ));
        assert!(keepalive_race(&b).is_empty(), "a crash explains it");
    }

    #[test]
    fn dns_tls_and_big_headers() {
        let mut b = bundle();
        b.access.push(req(0, "/", 502, Some("dns_error"), 1.0));
        b.access
            .push(req(1, "/", 502, Some("tls_certificate_error"), 1.0));
        b.access.push(req(
            2,
            "/big?kb=100",
            502,
            Some("http_response_header_section_size"),
            1.0,
        ));
        assert_eq!(dns_failure(&b)[0].claims, vec![0]);
        assert_eq!(tls_failure(&b)[0].claims, vec![1]);
        let h = response_header_too_large(&b);
        assert_eq!(h[0].evidence["paths"][0], "/big");
        assert!(h[0].title.contains("64 KiB"));
    }
}
