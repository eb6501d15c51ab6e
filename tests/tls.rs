//! HTTPS listeners, tried with a real TLS client (rustls) and a real HTTP/2 client
//! (hyper) against certificates from a CA the test makes (rcgen): SNI picks the
//! certificate by name (a wildcard too), ALPN h2 is negotiated and HTTP/2 requests
//! work, a certificate file replaced on disk is served to new connections without a
//! restart while an open connection carries on; HSTS, `redirect_http`, the access
//! log's TLS fields, and failed handshakes (logged, counted).

mod common;

use common::upstreams::head_echo;
use common::{eventually, get, Gateway, TempDir};
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA and certificates it signs, as PEM files in a directory.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        Ca::named("healgate test CA")
    }

    fn named(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, written to `dir/<file>.pem` and `.key`; its DER.
    fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written aside and renamed, as deploy tools do, key first.
        let write = |name: String, body: String| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        };
        write(format!("{file}.key"), key.serialize_pem());
        write(format!("{file}.pem"), cert.pem());
        cert.der().clone()
    }

    /// A leaf for `name` valid until `days` days from now (negative: expired).
    fn leaf_until(&self, dir: &Path, file: &str, name: &str, days: i64) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            / 86_400;
        let (y, m, d) = civil(now + days);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil(now + days.min(0) - 30);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

/// The civil date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS connection to `addr` asking for `name`.
async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn leaf_of(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>;

/// HTTP/2 over the TLS stream: the request sender (the connection runs in a task).
async fn h2(s: TlsStream<TcpStream>) -> H2 {
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// GET `path` on `send` for `host`: status, headers, body.
async fn h2_get(send: &mut H2, host: &str, path: &str) -> (u16, http::HeaderMap, String) {
    let req = http::Request::get(format!("https://{host}{path}"))
        .body(Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A gateway's configuration: one HTTPS listener (`listen`, its entry) with `certs`
/// and `tls_extra` keys, in front of one upstream `up` with `upstream_extra` keys.
fn tls_config(
    up: SocketAddr,
    listen: &str,
    certs: &str,
    tls_extra: &str,
    upstream_extra: &str,
) -> String {
    format!(
        r#"[gateway]
listen = ["127.0.0.1:0"]
data_dir = "data"
[gateway.tls]
listen = [{listen}]
certs = [{certs}]
{tls_extra}

[[upstream]]
name = "echo"
servers = ["{up}"]
routes = ["/"]
{upstream_extra}
"#
    )
}

/// A gateway with `a.pem` (a.test) and `b.pem` (b.test) from `dir` on one HTTPS listener.
fn tls_gateway(dir: TempDir, up: SocketAddr, tls_extra: &str) -> Gateway {
    let certs = r#"{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }"#;
    let health = r#"health = { path = "/healthz", interval = "60s" }"#;
    Gateway::start_in(
        dir,
        &tls_config(up, r#""127.0.0.1:0""#, certs, tls_extra, health),
    )
}

/// A CA, and a gateway with one certificate it signed (`a.pem`, for `a.test`) on one
/// HTTPS listener, `listen` its entry, in front of `up`; `env` for the gateway.
fn one_cert_gateway(
    name: &str,
    up: SocketAddr,
    listen: &str,
    env: &[(&str, &str)],
) -> (Ca, Gateway) {
    let ca = Ca::new();
    let dir = TempDir::new(name);
    ca.leaf(dir.path(), "a", &["a.test"]);
    let certs = r#"{ cert = "a.pem", key = "a.key" }"#;
    let gw = Gateway::start_with_env(dir, &tls_config(up, listen, certs, "", ""), env);
    (ca, gw)
}

#[test]
fn sni_picks_the_certificate_alpn_h2_works_and_a_replaced_file_serves_new_connections() {
    let ca = Ca::new();
    let dir = TempDir::new("tls");
    let a1 = ca.leaf(dir.path(), "a", &["a.test"]);
    let b = ca.leaf(dir.path(), "b", &["*.b.test"]);
    let up = head_echo();
    let gw = tls_gateway(dir, up.addr, "");
    let https = gw.https.expect("an HTTPS listener announced");
    let client = ca.client_config();
    rt().block_on(async {
        // Each name gets its own certificate (the wildcard one for a name under it),
        // verified by the client against the CA.
        let sa = connect(https, "a.test", client.clone()).await.unwrap();
        assert_eq!(leaf_of(&sa), a1, "a.test gets a.pem");
        assert_eq!(sa.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let sb = connect(https, "www.b.test", client.clone()).await.unwrap();
        assert_eq!(leaf_of(&sb), b, "www.b.test gets the *.b.test certificate");

        // HTTP/2 requests work, and the upstream is told the client used https.
        let mut open = h2(sa).await;
        let (status, headers, body) = h2_get(&mut open, "a.test", "/first").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("GET /first HTTP/1.1"), "{body}");
        assert!(
            body.to_ascii_lowercase()
                .contains("x-forwarded-proto: https"),
            "{body}"
        );
        assert!(headers.contains_key("x-request-id"));
        let mut other = h2(sb).await;
        assert_eq!(h2_get(&mut other, "www.b.test", "/").await.0, 200);

        // a.pem replaced on disk (a renewal): new connections get the new one
        // without a restart ...
        let a2 = ca.leaf(gw.dir.path(), "a", &["a.test"]);
        assert_ne!(a1, a2);
        let mut served = None;
        for _ in 0..100 {
            let s = connect(https, "a.test", client.clone()).await.unwrap();
            if leaf_of(&s) == a2 {
                served = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fresh = served.expect("the replaced certificate is served within 10 s");
        let mut fresh = h2(fresh).await;
        assert_eq!(h2_get(&mut fresh, "a.test", "/new").await.0, 200);
        // ... while the connection opened before carries on.
        let (status, _, body) = h2_get(&mut open, "a.test", "/again").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("GET /again"), "{body}");
    });
    let changed = gw.events("certificates_loaded");
    assert!(
        changed
            .iter()
            .any(|e| e["trigger"] == "changed" && e["certificates"][0]["names"][0] == "a.test"),
        "{changed:?}"
    );
    // The access log records the TLS version and ALPN.
    let again = eventually(Duration::from_secs(5), || {
        gw.jsonl("access.jsonl")
            .into_iter()
            .find(|l| l["path"] == "/again")
    })
    .expect("an access line for /again");
    assert_eq!(again["alpn"], "h2", "{again}");
    assert!(
        again["tls"] == "TLSv1.3" || again["tls"] == "TLSv1.2",
        "{again}"
    );
}

#[test]
fn hsts_on_https_redirect_on_plain_http_but_not_for_health_paths() {
    let ca = Ca::new();
    let dir = TempDir::new("tls-redirect");
    ca.leaf(dir.path(), "a", &["a.test"]);
    ca.leaf(dir.path(), "b", &["b.test"]);
    let up = head_echo();
    let gw = tls_gateway(
        dir,
        up.addr,
        "redirect_http = true\nhsts = \"max-age=31536000\"",
    );
    let https = gw.https.unwrap();
    let client = ca.client_config();
    rt().block_on(async {
        let s = connect(https, "a.test", client).await.unwrap();
        let mut send = h2(s).await;
        let (status, headers, _) = h2_get(&mut send, "a.test", "/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    });
    // Plain HTTP: 308 to the same target on the HTTPS port, no HSTS (RFC 6797 §7.2).
    let r = get(gw.addr, "/x?y=1", &[("Host", "a.test")]);
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{}/x?y=1", https.port()).as_str())
    );
    assert!(r.header("strict-transport-security").is_none());
    // A health path is served on plain HTTP (load balancers check it there).
    let r = get(gw.addr, "/healthz", &[("Host", "a.test")]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_failed_handshake_is_logged_with_its_reason_and_counted() {
    let ca = Ca::new();
    let dir = TempDir::new("tls-fail");
    ca.leaf(dir.path(), "a", &["a.test"]);
    ca.leaf(dir.path(), "b", &["b.test"]);
    let up = head_echo();
    let gw = tls_gateway(dir, up.addr, "");
    let https = gw.https.unwrap();
    // A client that trusts another CA refuses the certificate.
    let stranger = Ca::named("another CA").client_config();
    rt().block_on(async {
        assert!(connect(https, "a.test", stranger).await.is_err());
    });
    // The gateway reads the client's alert after the client has given up: wait for
    // its line before the next failure (which the 10 s limit would not log).
    let logged = eventually(Duration::from_secs(10), || {
        let err = gw.stderr();
        err.contains("TLS handshake from 127.0.0.1").then_some(err)
    })
    .expect("a log line for the failed handshake");
    assert!(
        logged.contains("for a.test failed (certificate_rejected)"),
        "{logged}"
    );
    // Plain HTTP on the HTTPS port: a 400, and the access log says why.
    let r = get(https, "/", &[("Host", "a.test")]);
    assert_eq!(r.status, 400);
    assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
    let id = r.header("x-request-id").unwrap().to_owned();
    let line = eventually(Duration::from_secs(5), || {
        let l = gw.access_entry(&id);
        (!l.is_null()).then_some(l)
    })
    .unwrap();
    assert!(
        line["details"]
            .as_str()
            .unwrap()
            .contains("plain-HTTP request on an HTTPS port"),
        "{line}"
    );
    let metrics = eventually(Duration::from_secs(10), || {
        let m = gw.admin_get("/metrics").text();
        (m.contains(r#"healgate_tls_handshake_failures_total{reason="certificate_rejected"} 1"#)
            && m.contains(r#"healgate_tls_handshake_failures_total{reason="plain_http"} 1"#))
        .then_some(m)
    });
    assert!(metrics.is_some(), "{}", gw.admin_get("/metrics").text());
}

/// `healgate check` on a `[gateway.tls]` with `certs`: exit code and output.
fn check(dir: &TempDir, certs: &str) -> (i32, String) {
    let path = dir.path().join("healgate.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[gateway.tls]\nlisten = [\"127.0.0.1:0\"]\ncerts = [{certs}]\n"
        ),
    )
    .unwrap();
    let (code, out, err) = common::healgate(&["check", "-c", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn check_refuses_missing_mismatched_and_expired_certificates_and_warns_early() {
    let ca = Ca::new();
    let dir = TempDir::new("tls-check");
    ca.leaf(dir.path(), "a", &["a.test"]);
    ca.leaf(dir.path(), "b", &["b.test"]);
    ca.leaf_until(dir.path(), "old", "old.test", -2);
    ca.leaf_until(dir.path(), "soon", "soon.test", 5);

    let (code, out) = check(&dir, r#"{ cert = "a.pem", key = "missing.key" }"#);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("gateway.tls.certs[0]") && out.contains("missing.key"),
        "{out}"
    );

    let (code, out) = check(&dir, r#"{ cert = "a.pem", key = "b.key" }"#);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not belong to the certificate"), "{out}");

    let (code, out) = check(&dir, r#"{ cert = "old.pem", key = "old.key" }"#);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("certificate for old.test expired at"), "{out}");

    let (code, out) = check(&dir, r#"{ cert = "soon.pem", key = "soon.key" }"#);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("certificate for soon.test expires at"),
        "{out}"
    );
    assert!(out.contains("renew it soon"), "{out}");

    // A private CA's certificate: valid, with a warning that browsers need the CA.
    // The same name in two certificates: a warning saying which is served.
    let (code, out) = check(
        &dir,
        r#"{ cert = "a.pem", key = "a.key" }, { cert = "a.pem", key = "a.key" }"#,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is not a public CA"), "{out}");
    assert!(
        out.contains("a.test is in more than one certificate"),
        "{out}"
    );
}

#[test]
fn curl_speaks_http2_to_the_https_listener() {
    let ca = Ca::new();
    let dir = TempDir::new("tls-curl");
    ca.leaf(dir.path(), "a", &["a.test"]);
    ca.leaf(dir.path(), "b", &["b.test"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let up = head_echo();
    let gw = tls_gateway(dir, up.addr, "");
    let port = gw.https.unwrap().port();
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}/via-curl");
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &resolve, "-o", "/dev/null"])
            .args(["-w", "%{http_version} %{http_code} %{ssl_verify_result}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl (scripts/test installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(curl(&["--http2"]), "2 200 0");
    assert_eq!(curl(&["--http1.1"]), "1.1 200 0");
    assert_eq!(
        curl(&["--http2", "--tlsv1.2", "--tls-max", "1.2"]),
        "2 200 0"
    );
    let via = eventually(Duration::from_secs(5), || {
        let via: Vec<_> = gw
            .jsonl("access.jsonl")
            .into_iter()
            .filter(|l| l["path"] == "/via-curl")
            .collect();
        (via.len() == 3).then_some(via)
    })
    .expect("three access lines for /via-curl");
    assert_eq!(via[0]["alpn"], "h2");
    assert_eq!(via[1]["alpn"], "http/1.1");
    assert_eq!(via[2]["tls"], "TLSv1.2");
}

#[test]
fn a_reload_serves_a_changed_certificate_list_without_a_restart() {
    let ca = Ca::new();
    let dir = TempDir::new("tls-reload");
    ca.leaf(dir.path(), "a", &["a.test"]);
    ca.leaf(dir.path(), "b", &["b.test"]);
    let c = ca.leaf(dir.path(), "c", &["c.test"]);
    let up = head_echo();
    let gw = tls_gateway(dir, up.addr, "");
    let https = gw.https.unwrap();
    let pid = gw.pid();
    let client = ca.client_config();
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(
        gw.config_path(),
        text.replace(
            r#"cert = "b.pem", key = "b.key""#,
            r#"cert = "c.pem", key = "c.key""#,
        ),
    )
    .unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("after a restart"), "{out}");
    rt().block_on(async {
        let s = connect(https, "c.test", client.clone()).await.unwrap();
        assert_eq!(leaf_of(&s), c, "c.test is served after the reload");
        let mut send = h2(s).await;
        assert_eq!(h2_get(&mut send, "c.test", "/").await.0, 200);
        // b.test is gone from the list: the first certificate is served for it.
        assert!(connect(https, "b.test", client).await.is_err());
    });
    assert_eq!(gw.pid(), pid, "no restart");
    let loaded = gw.events("certificates_loaded");
    assert!(
        loaded.iter().any(|e| e["trigger"] == "reload"),
        "{loaded:?}"
    );
}

/// Behind a TCP balancer (an AWS NLB, HAProxy in `mode tcp`): the PROXY header comes
/// first, then the TLS handshake on the same connection. The client it names is the
/// one the app sees and the access log records; a connection without it is closed.
#[test]
fn an_https_listener_takes_the_proxy_protocol_before_the_handshake() {
    let up = head_echo();
    let (ca, gw) = one_cert_gateway(
        "tls-proxy-protocol",
        up.addr,
        r#"{ addr = "127.0.0.1:0", proxy_protocol = true }"#,
        &[],
    );
    let https = gw.https.expect("an HTTPS listener announced");
    let client = ca.client_config();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x30, 0x39, 1, 187,
    ]);
    let headers: [(&[u8], &str); 2] = [
        (b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n", "192.0.2.7"),
        (&v2, "198.51.100.9"),
    ];
    rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        for (header, ip) in headers {
            let mut tcp = TcpStream::connect(https).await.unwrap();
            // In two pieces, as a header split across segments arrives.
            tcp.write_all(&header[..10]).await.unwrap();
            tcp.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            tcp.write_all(&header[10..]).await.unwrap();
            let name = ServerName::try_from("a.test").unwrap();
            let s = tokio_rustls::TlsConnector::from(client.clone())
                .connect(name, tcp)
                .await
                .expect("the handshake after the PROXY header");
            let mut send = h2(s).await;
            let (code, headers, body) = h2_get(&mut send, "a.test", "/echo").await;
            assert_eq!(code, 200, "{body}");
            assert!(
                body.to_ascii_lowercase()
                    .contains(&format!("x-forwarded-for: {ip}\r\n")),
                "the app sees the client the header names: {body}"
            );
            let id = headers["x-request-id"].to_str().unwrap();
            assert_eq!(gw.access_entry(id)["client"], ip);
        }
        // No header: the ClientHello is not a PROXY header; closed, and said.
        assert!(connect(https, "a.test", client).await.is_err());
    });
    let said = eventually(Duration::from_secs(5), || {
        gw.stderr()
            .contains("expects a PROXY protocol header")
            .then_some(())
    });
    assert!(said.is_some(), "{}", gw.stderr());
}

/// One HTTP/1.1 response read off `s`: its head and body (by Content-Length).
async fn read_h1(s: &mut TlsStream<TcpStream>, carry: &mut Vec<u8>) -> (String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&carry[..end + 4]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if carry.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&carry[end + 4..end + 4 + len]).into_owned();
                carry.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(carry));
        carry.extend_from_slice(&buf[..n]);
    }
}

/// An HTTPS keep-alive connection quiet between requests is parked as a plain one is
/// (hyper and its buffers let go of after a second; rustls keeps its state): the
/// requests after it, one alone and two pipelined in one TLS record, are served.
#[test]
fn a_quiet_https_connection_is_parked_and_serves_the_next_requests() {
    let up = head_echo();
    let (ca, gw) = one_cert_gateway(
        "tls-park",
        up.addr,
        r#""127.0.0.1:0""#,
        &[("HEALGATE_LOG", "info,healgate::proxy::server=trace")],
    );
    let https = gw.https.unwrap();
    let mut config = (*ca.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut s = connect(https, "a.test", config).await.unwrap();
        let local = s.get_ref().0.local_addr().unwrap();
        let mut carry = Vec::new();
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        s.write_all(get("/one").as_bytes()).await.unwrap();
        let (head, body) = read_h1(&mut s, &mut carry).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body.starts_with("GET /one "), "{body}");
        let parked = format!("{local}: parked after");
        let seen = eventually(Duration::from_secs(10), || {
            gw.stderr().contains(&parked).then_some(())
        });
        assert!(seen.is_some(), "the connection is parked: {}", gw.stderr());
        s.write_all(get("/two").as_bytes()).await.unwrap();
        let (head, body) = read_h1(&mut s, &mut carry).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body.starts_with("GET /two "), "{body}");
        let seen = eventually(Duration::from_secs(10), || {
            (gw.stderr().matches(&parked).count() >= 2).then_some(())
        });
        assert!(seen.is_some(), "parked again: {}", gw.stderr());
        s.write_all(format!("{}{}", get("/three"), get("/four")).as_bytes())
            .await
            .unwrap();
        for path in ["/three", "/four"] {
            let (head, body) = read_h1(&mut s, &mut carry).await;
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            assert!(body.starts_with(&format!("GET {path} ")), "{body}");
        }
    });
    assert_eq!(up.hits(), 4);
}

/// A client coming back resumes its TLS session (no certificate, no signature: the
/// cheap handshake), also after many other clients came in between: tickets hold
/// the session, not a cache of the last few hundred.
#[test]
fn a_returning_client_resumes_its_session_after_many_others() {
    let up = head_echo();
    let (ca, gw) = one_cert_gateway("tls-resume", up.addr, r#""127.0.0.1:0""#, &[]);
    let https = gw.https.unwrap();
    let returning = ca.client_config();
    rt().block_on(async {
        let visit = |config: Arc<rustls::ClientConfig>| async move {
            let s = connect(https, "a.test", config).await.unwrap();
            let kind = s.get_ref().1.handshake_kind();
            // A request, so that the session tickets sent after the handshake are read.
            let mut send = h2(s).await;
            assert_eq!(h2_get(&mut send, "a.test", "/").await.0, 200);
            kind
        };
        assert_eq!(
            visit(returning.clone()).await,
            Some(rustls::HandshakeKind::Full)
        );
        // 300 other clients, each with its own session.
        for _ in 0..300 {
            visit(ca.client_config()).await;
        }
        assert_eq!(
            visit(returning.clone()).await,
            Some(rustls::HandshakeKind::Resumed),
            "the returning client resumes"
        );
    });
}
