//! `healgate probe` against real faults: a name that does not resolve (through the
//! system resolver and through a configured resolver answering NXDOMAIN), a port with
//! nothing listening, a port whose packets are dropped (an iptables rule inside a
//! network namespace this test creates), an expired and a wrong-name certificate
//! (made here with rcgen, served by rustls), a response header over the limit, and a
//! healthy app.

mod common;

use common::upstreams::{dns, tcp_server, Server};
use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `healgate probe ARGS --json [-c config]`: (exit code, the report).
fn probe(config: Option<&std::path::Path>, args: &[&str]) -> (i32, Value) {
    let mut all: Vec<&str> = vec!["probe"];
    all.extend(args);
    all.push("--json");
    let c;
    if let Some(p) = config {
        c = p.to_str().unwrap().to_owned();
        all.extend(["-c", &c]);
    }
    let (code, out, err) = healgate(&all);
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\nstderr: {err}"));
    (code, report)
}

fn failing(report: &Value) -> (&str, &str) {
    let f = &report["failing"];
    (
        f["hop"]
            .as_str()
            .unwrap_or_else(|| panic!("no failing hop: {report:#}")),
        f["error"].as_str().unwrap(),
    )
}

fn config_file(dir: &TempDir, body: &str) -> std::path::PathBuf {
    let p = dir.path().join("healgate.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn an_unresolvable_name_fails_at_dns() {
    let (code, report) = probe(None, &["http://nonexistent.invalid/"]);
    assert_eq!(code, 1, "{report:#}");
    let (hop, error) = failing(&report);
    assert_eq!(hop, "dns");
    assert!(error == "dns_error" || error == "dns_timeout", "{error}");
    assert!(report["conclusion"]
        .as_str()
        .unwrap()
        .starts_with("FAIL at DNS"));

    // Through the upstream's own resolver, which says NXDOMAIN.
    let server = dns(true);
    let dir = TempDir::new("probe-dns");
    let cfg = config_file(
        &dir,
        &format!(
            "[[upstream]]\nname = \"api\"\nservers = [\"nonexistent.invalid:80\"]\nroutes = [\"/api/\"]\ndns = {{ resolvers = [\"{}\"] }}\n",
            server.addr
        ),
    );
    let (code, report) = probe(Some(&cfg), &["api"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(failing(&report), ("dns", "dns_error"));
    let hop = &report["servers"][0]["hops"][0];
    assert_eq!(hop["via"], format!("resolver {}", server.addr));
    assert!(hop["text"].as_str().unwrap().contains("NXDOMAIN"), "{hop}");
    assert_eq!(report["failing"]["status"], 502);
}

#[test]
fn a_refused_port_fails_at_tcp_as_connection_refused() {
    let refused = Refused::new();
    let (code, report) = probe(None, &[&format!("http://{}/", refused.addr)]);
    assert_eq!(code, 1);
    assert_eq!(failing(&report), ("tcp", "connection_refused"));
    assert!(report["conclusion"]
        .as_str()
        .unwrap()
        .contains("Nothing listens on"));
}

/// A network namespace with a veth pair to it, removed when dropped.
struct Netns {
    name: String,
    inside: String,
}

impl Netns {
    /// `None` (with the reason) when namespaces or iptables are not available here.
    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 100_000;
        let name = format!("hgprobe{n}");
        let ok = |args: &[&str]| -> Result<(), String> {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .map_err(|e| format!("{}: {e}", args.join(" ")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ok(&["ip", "netns", "add", &name])?;
        let mut ns = Netns {
            name: name.clone(),
            inside: String::new(),
        };
        // A /30 of 10.0.0.0/8 picked by the pid: the test's own, on its own veth.
        let (a, b) = ((n / 250) % 250 + 1, n % 250);
        let outside = format!("10.{a}.{b}.1");
        let inside = format!("10.{a}.{b}.2");
        let (v_out, v_in) = (format!("hgo{n}"), format!("hgi{n}"));
        ok(&[
            "ip", "link", "add", &v_out, "type", "veth", "peer", "name", &v_in,
        ])?;
        ok(&["ip", "link", "set", &v_in, "netns", &name])?;
        ok(&["ip", "addr", "add", &format!("{outside}/30"), "dev", &v_out])?;
        ok(&["ip", "link", "set", &v_out, "up"])?;
        let exec = |rest: &[&str]| {
            let mut args = vec!["ip", "netns", "exec", &name];
            args.extend(rest);
            ok(&args)
        };
        exec(&["ip", "addr", "add", &format!("{inside}/30"), "dev", &v_in])?;
        exec(&["ip", "link", "set", &v_in, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        ns.inside = inside;
        Ok(ns)
    }

    fn drop_tcp(&self, port: u16) -> Result<(), String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "iptables", "-A", "INPUT", "-p", "tcp",
            ])
            .args(["--dport", &port.to_string(), "-j", "DROP"])
            .output()
            .map_err(|e| format!("iptables: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables in the namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_port_whose_packets_are_dropped_fails_at_tcp_as_connection_timeout() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces are not available here ({why})");
            return;
        }
    };
    let dir = TempDir::new("probe-drop");
    let cfg = config_file(&dir, "[gateway.timeouts]\nconnect = \"700ms\"\n");
    let url = format!("http://{}:8080/", ns.inside);
    // Before the rule: the namespace's kernel answers with a reset (refused).
    let (_, report) = probe(Some(&cfg), &[&url]);
    assert_eq!(
        failing(&report),
        ("tcp", "connection_refused"),
        "{report:#}"
    );
    if let Err(why) = ns.drop_tcp(8080) {
        eprintln!("SKIPPED: iptables is not available in the namespace ({why})");
        return;
    }
    let (code, report) = probe(Some(&cfg), &[&url]);
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        ("tcp", "connection_timeout"),
        "{report:#}"
    );
    assert_eq!(report["failing"]["status"], 504);
    let text = report["servers"][0]["hops"][1]["text"].as_str().unwrap();
    assert!(text.contains("packets are dropped"), "{text}");
    let ms = report["servers"][0]["hops"][1]["ms"].as_f64().unwrap();
    assert!(
        (600.0..3000.0).contains(&ms),
        "timed out after timeouts.connect: {ms}"
    );
}

/// A TLS server on 127.0.0.1 presenting `cert` (answers 200).
fn tls_server(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Server {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tcp_server(move |s, hits| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            hits.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    return;
                }
            }
        }
    })
}

fn certificate(names: &[&str], expired: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// Probe upstream `api` = `https://localhost:PORT` trusting `cert` (plus `extra` TLS
/// settings).
fn probe_tls(cert: &rcgen::Certificate, server: &Server, extra: &str) -> (i32, Value) {
    let dir = TempDir::new("probe-tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let cfg = config_file(
        &dir,
        &format!(
            "[[upstream]]\nname = \"api\"\nservers = [\"https://localhost:{}\"]\nroutes = [\"/api/\"]\ntls = {{ ca = \"{}\"{extra} }}\n",
            server.addr.port(),
            ca.display()
        ),
    );
    probe(Some(&cfg), &["api"])
}

fn tls_hop(report: &Value) -> Value {
    report["servers"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "tls")
        .cloned()
        .unwrap_or_else(|| panic!("no tls hop: {report:#}"))
}

#[test]
fn certificates_expired_wrong_name_and_good() {
    // Expired.
    let (cert, key) = certificate(&["localhost"], true);
    let server = tls_server(&cert, &key);
    let (code, report) = probe_tls(&cert, &server, "");
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(failing(&report), ("tls", "tls_certificate_error"));
    let text = tls_hop(&report)["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("expired on 2021-01-01"),
        "names the expiry: {text}"
    );

    // Valid, but for another name than the one the gateway checks.
    let (cert, key) = certificate(&["localhost"], false);
    let server = tls_server(&cert, &key);
    let (code, report) = probe_tls(&cert, &server, ", server_name = \"api.example.com\"");
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(failing(&report), ("tls", "tls_certificate_error"));
    let text = tls_hop(&report)["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("for localhost, not api.example.com"),
        "{text}"
    );

    // The same certificate with the right name: every hop passes.
    let (code, report) = probe_tls(&cert, &server, "");
    assert_eq!(code, 0, "{report:#}");
    let hop = tls_hop(&report);
    assert_eq!(hop["verdict"], "pass");
    assert!(hop["text"].as_str().unwrap().contains("TLSv1_3"), "{hop}");
    assert_eq!(hop["facts"]["chain"][0]["names"][0], "localhost");
}

#[test]
fn an_app_with_an_oversized_header_fails_at_http_and_a_healthy_one_passes() {
    let gw = Gateway::start(&format!(
        "[gateway.limits]\nresponse_header = \"4KiB\"\n\n[[app]]\nname = \"web\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = 2\nroutes = [\"/\"]\n",
        bin()
    ));
    gw.wait_ready("web", 2);
    let cfg = gw.config_path();
    let (code, report) = probe(Some(&cfg), &["web"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["kind"], "app");
    assert_eq!(report["servers"].as_array().unwrap().len(), 2);
    assert!(report["conclusion"]
        .as_str()
        .unwrap()
        .starts_with("OK: every hop passed for 2 servers"));

    let (code, report) = probe(Some(&cfg), &["web", "--path", "/bigheader?kb=8"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        failing(&report),
        ("http", "http_response_header_section_size")
    );
    assert!(report["conclusion"]
        .as_str()
        .unwrap()
        .contains("response_header"));
    // What the gateway itself answers for it agrees.
    let through = get(gw.addr, "/bigheader?kb=8", &[]);
    assert_eq!(
        through.proxy_error().as_deref(),
        Some("http_response_header_section_size")
    );
}
