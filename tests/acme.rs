//! ACME for real: the gateway obtains and renews its certificate from Debian's
//! `pebble` (an RFC 8555 test CA) that validates each challenge against the gateway's
//! own listeners. Everything runs in a network namespace the test creates (loopback
//! only), so pebble's validation ports can be the gateway's fixed ports; a small DNS
//! responder in the test answers 127.0.0.1 for every name pebble looks up.

mod common;

use common::{eventually, upstreams, Gateway, TempDir};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

const DOMAIN: &str = "acme.test";
/// Inside the namespace: the gateway's plain and HTTPS ports are pebble's
/// validation ports (`httpPort`, `tlsPort`).
const HTTP_PORT: u16 = 5002;
const TLS_PORT: u16 = 5001;
const PEBBLE_PORT: u16 = 14000;
const PEBBLE_MANAGEMENT: u16 = 15000;

/// A network namespace with only loopback up, removed when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hgacme{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        run(&[
            "ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up",
        ])?;
        Ok(ns)
    }

    /// The prefix that runs a command inside.
    fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Run `f` on a thread that has joined the namespace (its sockets are inside).
    fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("the namespace's file");
            rustix::thread::move_into_link_name_space(
                fd.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the test's namespace");
            f()
        })
    }

    /// `f` run inside the namespace, waited for.
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.thread(f).join().expect("the namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) -> Result<(), String> {
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
}

/// A DNS responder on UDP loopback inside the namespace: A 127.0.0.1 for every
/// name, an empty answer for other types.
struct Dns {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn dns(ns: &Netns) -> Dns {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stopped = stop.clone();
    ns.thread(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(sock.local_addr().unwrap().port()).unwrap();
        let mut buf = [0u8; 1500];
        while !stopped.load(Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if let Some(answer) = answer_a(&buf[..n]) {
                let _ = sock.send_to(&answer, from);
            }
        }
    });
    Dns {
        port: rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        stop,
    }
}

/// The response to one DNS query: the question, and A 127.0.0.1 when it asks for A.
fn answer_a(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += q[i] as usize + 1;
    }
    let qend = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let mut r = q.get(..qend)?.to_vec();
    // QR, AA, RD as asked; RA; NOERROR.
    r[2] = 0x84 | (q[2] & 0x01);
    r[3] = 0x80;
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    r[6..8].copy_from_slice(&answers.to_be_bytes());
    r[8..12].copy_from_slice(&[0; 4]);
    if qtype == 1 {
        // The name by pointer to the question, A, IN, TTL 0, 4 bytes.
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// A CA and the certificate pebble serves its directory with (for 127.0.0.1).
fn pebble_pki(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "healgate test ACME server CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("pebble-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    dir.join("pebble-ca.pem")
}

/// Debian's pebble, inside the namespace; killed when dropped.
struct Pebble {
    child: Child,
    log: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pebble {
    /// Start it validating on the gateway's ports, resolving through `dns`, issuing
    /// certificates valid for `validity_s` seconds.
    fn start(ns: &Netns, dir: &Path, dns: &Dns, validity_s: u64) -> Pebble {
        Pebble::start_validating_on(ns, dir, dns, validity_s, HTTP_PORT)
    }

    /// [`start`](Self::start), HTTP-01 validated on `http_port`.
    fn start_validating_on(
        ns: &Netns,
        dir: &Path,
        dns: &Dns,
        validity_s: u64,
        http_port: u16,
    ) -> Pebble {
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{PEBBLE_PORT}"),
            "managementListenAddress": format!("127.0.0.1:{PEBBLE_MANAGEMENT}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": TLS_PORT,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }});
        let cfg = dir.join("pebble.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let log = dir.join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(&ns.exec()[1..])
            .arg(pebble_bin())
            .arg("-config")
            .arg(&cfg)
            .args(["-dnsserver", &format!("127.0.0.1:{}", dns.port)])
            .arg("-strict=false")
            // Validate at once (not after a random sleep), accept every good nonce,
            // validate every order afresh (no reused authorizations): the renewal
            // proves control again. Never PEBBLE_VA_ALWAYS_VALID.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start pebble");
        let p = Pebble { child, log };
        eventually(Duration::from_secs(20), || {
            p.log_text().contains("Listening on").then_some(())
        })
        .unwrap_or_else(|| panic!("pebble did not start:\n{}", p.log_text()));
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The root that issues its certificates (new every start), from the management
    /// interface.
    fn root(&self, ns: &Netns, ca: &Path) -> CertificateDer<'static> {
        let ca = ca.to_owned();
        let text = ns.within(move || {
            https_get(
                ("127.0.0.1", PEBBLE_MANAGEMENT),
                "127.0.0.1",
                "/roots/0",
                &[CertificateDer::from_pem_file(&ca).unwrap()],
            )
        });
        CertificateDer::from_pem_slice(text.as_bytes())
            .unwrap_or_else(|e| panic!("pebble's root: {e:?}\n{text}"))
    }
}

fn pebble_bin() -> &'static str {
    if Path::new("/usr/bin/pebble").exists() {
        "/usr/bin/pebble"
    } else {
        panic!("pebble is not installed: scripts/test installs it (apt-get install pebble)")
    }
}

/// A rustls client trusting `roots` (ring).
fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// `GET path` over HTTPS (one request, `Connection: close`): the response as text.
fn https_get(
    addr: (&str, u16),
    name: &str,
    path: &str,
    roots: &[CertificateDer<'static>],
) -> String {
    let conn = rustls::ClientConnection::new(
        client_config(roots),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// That `chain` (leaf first) is valid for `name` under `root` now.
fn verify(chain: &[CertificateDer<'static>], root: &CertificateDer<'static>, name: &str) {
    use rustls::client::danger::ServerCertVerifier;
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("the certificate does not verify for {name}: {e}"));
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    c.raw_serial().iter().map(|b| format!("{b:02x}")).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The gateway's config: ACME for `acme.test` from the namespace's pebble.
fn acme_config(ca: &Path, challenge: &str) -> String {
    format!(
        r#"[gateway]
listen = ["127.0.0.1:{HTTP_PORT}"]
data_dir = "data"

[gateway.tls]
listen = ["127.0.0.1:{TLS_PORT}"]
acme = {{ domains = ["{DOMAIN}"], email = "ops@{DOMAIN}", directory = "https://127.0.0.1:{PEBBLE_PORT}/dir", ca = "{}", challenge = "{challenge}", renew_before = "1h" }}

[admin]
listen = "127.0.0.1:9901"
"#,
        ca.display()
    )
}

/// The namespace, or the reason it cannot be made here.
fn namespace() -> Option<Netns> {
    match Netns::create() {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!("SKIPPED: network namespaces are not available here ({why})");
            None
        }
    }
}

/// The leaf certificate the gateway's HTTPS listener presents to a new connection
/// asking for `DOMAIN` (the handshake verifies it under `root`): its serial.
fn served_serial(ns: &Netns, root: &CertificateDer<'static>) -> String {
    let root = root.clone();
    ns.within(move || {
        let conn = rustls::ClientConnection::new(
            client_config(&[root]),
            ServerName::try_from(DOMAIN).unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", TLS_PORT)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .unwrap_or_else(|e| panic!("handshake for {DOMAIN}: {e}"));
        }
        let leaf = &tls.conn.peer_certificates().expect("a certificate")[0];
        serial_of(leaf)
    })
}

/// The `n`th `acme_certificate_obtained` event (from 1), waited for up to 60 s.
fn obtained(gw: &Gateway, pebble: &Pebble, n: usize) -> serde_json::Value {
    eventually(Duration::from_secs(60), || {
        let all = gw.events("acme_certificate_obtained");
        (all.len() >= n).then(|| all[n - 1].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no certificate #{n}; events:\n{:#?}\nstderr:\n{}\npebble:\n{}",
            gw.jsonl("events.jsonl"),
            gw.stderr(),
            pebble.log_text()
        )
    })
}

#[test]
fn http01_certificate_is_obtained_from_pebble_served_stored_and_renewed() {
    obtains_serves_and_renews("http-01");
}

#[test]
fn tls_alpn01_certificate_is_obtained_from_pebble_served_stored_and_renewed() {
    obtains_serves_and_renews("tls-alpn-01");
}

fn obtains_serves_and_renews(kind: &str) {
    let Some(ns) = namespace() else { return };
    let dir = TempDir::new(&format!("acme-{kind}"));
    let ca = pebble_pki(dir.path());
    let dns = dns(&ns);
    let base = dir.path().to_owned();
    let gw = Gateway::start_wrapped(
        dir,
        &acme_config(&ca, kind),
        &[("HEALGATE_ACME_FIRST_RETRY", "1s")],
        &ns.exec(),
    );
    // No ACME server yet: registering the account fails, and is tried again.
    let failed = eventually(Duration::from_secs(15), || {
        gw.events("acme_failed").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no acme_failed; stderr:\n{}", gw.stderr()));
    assert_eq!(failed["step"], "account", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("/dir") && error.contains("refused"),
        "{failed}"
    );
    assert!(failed["retry_in_s"].as_u64().unwrap() >= 1, "{failed}");

    // Certificates valid for 20 s: renewed when a third of that is left.
    let pebble = Pebble::start(&ns, &base, &dns, 20);
    let obtained = |n: usize| obtained(&gw, &pebble, n);
    let first = obtained(1);
    assert_eq!(first["names"], serde_json::json!([DOMAIN]), "{first}");
    let challenge = &gw.events("acme_challenge")[0];
    assert_eq!(challenge["challenge"], kind);
    assert_eq!(challenge["domain"], DOMAIN);
    assert_eq!(gw.events("acme_account_created").len(), 1);
    let http01_answers = || {
        gw.jsonl("access.jsonl")
            .into_iter()
            .filter(|e| {
                e["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
            })
            .collect::<Vec<_>>()
    };
    if kind == "http-01" {
        // Pebble validated through the gateway's plain listener, which answered itself.
        let validation = eventually(Duration::from_secs(5), || http01_answers().pop())
            .expect("pebble's validation request in the access log");
        assert_eq!(validation["status"], 200, "{validation}");
        assert_eq!(validation["source"], "gateway", "{validation}");
    } else {
        // Validated on the HTTPS listener (acme-tls/1), not over plain HTTP.
        assert!(http01_answers().is_empty());
    }

    // Stored privately, and issued by pebble's root for the domain.
    let data = gw.data();
    let certs_dir = data.join("acme").join(DOMAIN);
    let (cert_file, key_file) = (certs_dir.join("cert.pem"), certs_dir.join("key.pem"));
    assert_eq!(mode(&cert_file), 0o600);
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&certs_dir), 0o700);
    assert_eq!(mode(&data.join("acme")), 0o700);
    let account = std::fs::read_dir(data.join("acme"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("the account's credentials");
    assert_eq!(mode(&account), 0o600);
    let root = pebble.root(&ns, &ca);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    verify(&chain, &root, DOMAIN);
    assert_eq!(serial_of(&chain[0]), first["serial"].as_str().unwrap());
    // And served on the HTTPS listener to a client asking for the name.
    assert_eq!(served_serial(&ns, &root), first["serial"].as_str().unwrap());

    // Renewed ahead of expiry: a new certificate (another serial) replaces it.
    let scheduled = &gw.events("acme_renewal_scheduled")[0];
    assert!(scheduled["renew_at"].is_string(), "{scheduled}");
    let second = obtained(2);
    assert_ne!(second["serial"], first["serial"]);
    // Both RFC 3339 UTC: compared as text to the second.
    let secs = |v: &serde_json::Value| v.as_str().unwrap()[..19].to_owned();
    assert!(
        secs(&scheduled["renew_at"]) < secs(&first["not_after"]),
        "{scheduled}"
    );
    assert!(
        secs(&second["ts"]) < secs(&first["not_after"]),
        "renewed only after the first certificate expired: {second} {first}"
    );
    let renewal = &gw.events("acme_order_started")[1];
    assert!(
        renewal["reason"].as_str().unwrap().starts_with("renewal"),
        "{renewal}"
    );
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    verify(&chain, &root, DOMAIN);
    assert_eq!(serial_of(&chain[0]), second["serial"].as_str().unwrap());
    assert_eq!(
        served_serial(&ns, &root),
        second["serial"].as_str().unwrap()
    );

    // No private key (the certificate's or the account's) in any log.
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let account_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&account).unwrap()).unwrap();
    let account_key = account_json["key_pkcs8"].as_str().unwrap().to_owned();
    for log in [
        std::fs::read_to_string(data.join("logs/events.jsonl")).unwrap(),
        gw.stderr(),
    ] {
        for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "a private key line in a log");
        }
        assert!(!log.contains(&key_body[..40]));
        assert!(
            !log.contains(&account_key[..40]),
            "the account key in a log"
        );
    }
    drop(gw);
    drop(pebble);
}

#[test]
fn acme_http01_paths_are_answered_only_when_http01_is_on() {
    let app = upstreams::ok("from the app");
    let route = format!(
        "[[upstream]]\nname = \"site\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        app.addr
    );
    // ACME off: the path is routed like any other.
    let plain = Gateway::start(&route);
    let r = common::get(plain.addr, "/.well-known/acme-challenge/abc", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "from the app");
    drop(plain);

    // HTTP-01 on (no server reachable: nothing pending): an unknown token is the
    // gateway's 404, never the app's answer.
    let dir = TempDir::new("acme-404");
    let ca = pebble_pki(dir.path());
    let cfg = format!(
        r#"[gateway]
listen = ["127.0.0.1:0"]
data_dir = "data"

[gateway.tls]
listen = ["127.0.0.1:0"]
acme = {{ domains = ["{DOMAIN}"], directory = "https://127.0.0.1:1/dir", ca = "{}", challenge = "http-01" }}

{route}"#,
        ca.display()
    );
    let gw = Gateway::start_in(dir, &cfg);
    let r = common::get(gw.addr, "/.well-known/acme-challenge/abc", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_not_found"));
    // Other paths still reach the app.
    let r = common::get(gw.addr, "/.well-known/other", &[]);
    assert_eq!(r.text(), "from the app");
}

#[test]
fn a_stored_certificate_is_served_after_a_restart_without_the_acme_server() {
    let Some(ns) = namespace() else { return };
    let dir = TempDir::new("acme-restart");
    let ca = pebble_pki(dir.path());
    let dns = dns(&ns);
    let base = dir.path().to_owned();
    // Valid for an hour: nothing to renew during the test.
    let pebble = Pebble::start(&ns, &base, &dns, 3600);
    let config = acme_config(&ca, "http-01");
    let mut gw = Gateway::start_wrapped(dir, &config, &[], &ns.exec());
    let first = eventually(Duration::from_secs(60), || {
        gw.events("acme_certificate_obtained").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no certificate; stderr:\n{}", gw.stderr()));
    let root = pebble.root(&ns, &ca);
    drop(pebble);

    // Restarted with the ACME server gone: the stored certificate is served, no order.
    gw.terminate();
    let dir = std::mem::replace(&mut gw.dir, TempDir::new("spare"));
    drop(gw);
    let gw = Gateway::start_wrapped(dir, &config, &[], &ns.exec());
    let loaded = eventually(Duration::from_secs(10), || {
        gw.events("acme_certificate_loaded").into_iter().next()
    })
    .unwrap_or_else(|| panic!("not loaded; stderr:\n{}", gw.stderr()));
    assert_eq!(loaded["serial"], first["serial"]);
    assert_eq!(served_serial(&ns, &root), first["serial"].as_str().unwrap());
    // The renewal is scheduled for later; no order, no new account.
    eventually(Duration::from_secs(5), || {
        (gw.events("acme_renewal_scheduled").len() == 2).then_some(())
    })
    .expect("a renewal scheduled after the restart");
    assert_eq!(gw.events("acme_order_started").len(), 1);
    assert_eq!(gw.events("acme_account_created").len(), 1);
    assert!(gw.events("acme_failed").is_empty());
}

#[test]
fn a_failed_validation_says_why_and_is_retried_with_growing_waits() {
    let Some(ns) = namespace() else { return };
    let dir = TempDir::new("acme-invalid");
    let ca = pebble_pki(dir.path());
    let dns = dns(&ns);
    let base = dir.path().to_owned();
    // Pebble validates HTTP-01 on a port where nothing listens.
    let pebble = Pebble::start_validating_on(&ns, &base, &dns, 3600, HTTP_PORT + 100);
    let gw = Gateway::start_wrapped(
        dir,
        &acme_config(&ca, "http-01"),
        &[("HEALGATE_ACME_FIRST_RETRY", "1s")],
        &ns.exec(),
    );
    let failures = eventually(Duration::from_secs(30), || {
        let f = gw.events("acme_failed");
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| {
        panic!(
            "no two failures; events:\n{:#?}\npebble:\n{}",
            gw.jsonl("events.jsonl"),
            pebble.log_text()
        )
    });
    for f in &failures {
        assert_eq!(f["step"], "validation", "{f}");
        // The CA's reason, per challenge.
        let error = f["error"].as_str().unwrap();
        assert!(error.contains(DOMAIN) && error.contains("refused"), "{f}");
    }
    assert_eq!(failures[0]["retry_in_s"], 1);
    assert_eq!(failures[1]["retry_in_s"], 2);
    // Each attempt is a whole new order.
    assert_eq!(gw.events("acme_order_started").len(), failures.len());
    assert!(gw.events("acme_certificate_obtained").is_empty());
    assert!(!gw
        .data()
        .join("acme")
        .join(DOMAIN)
        .join("cert.pem")
        .exists());
}

/// A reload that changes `gateway.tls.acme` applies at once: another domain and
/// another challenge, a new order, its certificate served, no restart.
#[test]
fn a_reload_that_changes_the_acme_table_orders_again_without_a_restart() {
    let Some(ns) = namespace() else { return };
    let dir = TempDir::new("acme-reload");
    let ca = pebble_pki(dir.path());
    let dns = dns(&ns);
    let base = dir.path().to_owned();
    let pebble = Pebble::start(&ns, &base, &dns, 3600);
    let config = acme_config(&ca, "http-01");
    let gw = Gateway::start_wrapped(dir, &config, &[], &ns.exec());
    let obtained = |n: usize| obtained(&gw, &pebble, n);
    let first = obtained(1);
    assert_eq!(first["names"], serde_json::json!([DOMAIN]));
    let pid = gw.pid();

    let www = format!("www.{DOMAIN}");
    let changed = config
        .replace(
            &format!(r#"domains = ["{DOMAIN}"]"#),
            &format!(r#"domains = ["{DOMAIN}", "{www}"]"#),
        )
        .replace(r#"challenge = "http-01""#, r#"challenge = "tls-alpn-01""#);
    assert_ne!(changed, config);
    std::fs::write(gw.config_path(), changed).unwrap();
    common::signal(pid, "HUP");
    let said = eventually(Duration::from_secs(10), || {
        let err = gw.stderr();
        err.contains("SIGHUP: ").then_some(err)
    })
    .expect("the reload's outcome logged");
    assert!(said.contains("ACME started again"), "{said}");
    assert!(!said.contains("after a restart"), "{said}");

    let second = obtained(2);
    assert_eq!(
        second["names"],
        serde_json::json!([DOMAIN, www]),
        "{second}"
    );
    let challenges = gw.events("acme_challenge");
    let last = challenges.last().unwrap();
    assert_eq!(last["challenge"], "tls-alpn-01", "{challenges:?}");
    let root = pebble.root(&ns, &ca);
    assert_eq!(
        served_serial(&ns, &root),
        second["serial"].as_str().unwrap()
    );
    assert_eq!(gw.pid(), pid, "no restart");
    drop(gw);
    drop(pebble);
}
