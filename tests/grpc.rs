//! gRPC and HTTP/2 to upstreams: a real gRPC server (grpcio, `tests/data/grpc/server.py`)
//! behind an `[[upstream]]` with `protocol = "h2"` (h2c), a real gRPC client
//! (`client.py`) through the gateway's plain listener (h2c prior knowledge): unary
//! calls with trailers, streaming both ways, a timeout as DEADLINE_EXCEEDED, and a
//! killed server as UNAVAILABLE with the gateway's Proxy-Status. A misbehaving h2c
//! server (`h2_peer.py`, Python's `h2`) shows the truth table on h2: a refused stream
//! and a GOAWAY that did not cover the request are retried, a reset is 502
//! `connection_terminated`. The same gRPC calls go over TLS to the gateway's HTTPS
//! listener (ALPN h2, a certificate from a CA the test makes). A grpc-go client reads
//! the gateway's statuses as grpcio does. Needs python3 with `grpcio` and `h2`, and Go
//! with Debian's golang-google-grpc-dev (scripts/test installs them).

mod common;

use common::{eventually, get, Gateway, TempDir};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/grpc")
        .join(name)
}

/// A python3 server that prints its port on its first line; killed when dropped.
struct Py {
    child: Child,
    port: u16,
}

impl Py {
    fn start(name: &str, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg(script(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} printed {line:?}, not its port"));
        Py { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the gRPC client against the gateway's plain listener: its JSON results.
fn client(gw: &Gateway, mode: &str) -> serde_json::Value {
    client_at(&gw.addr.to_string(), mode, &[])
}

/// Run the gRPC client against `addr` (`tls`: the CA file and the server name).
fn client_at(addr: &str, mode: &str, tls: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(script("client.py"))
        .arg(addr)
        .arg(mode)
        .args(tls)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.py printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A gateway with the server on `port` behind an h2c upstream; `gateway` goes into
/// `[gateway]`'s tables (e.g. `[gateway.timeouts]`), `upstream` into the upstream's keys.
fn gateway(port: u16, gateway: &str, upstream: &str) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n{gateway}\n\
         [[upstream]]\nname = \"grpc\"\nservers = [\"127.0.0.1:{port}\"]\nroutes = [\"/\"]\nprotocol = \"h2\"\n{upstream}"
    ))
}

#[test]
fn grpc_round_trips_stream_both_ways_and_gateway_errors_carry_grpc_status() {
    let mut server = Py::start("server.py", &[]);
    let gw = gateway(
        server.port,
        "[gateway.timeouts]\nresponse_header = \"1s\"\n",
        "",
    );
    let r = client(&gw, "all");

    // Unary, with the trailers of a success (grpc-status 0 and custom metadata).
    assert_eq!(r["unary"]["ok"], "echo:ping", "{r}");
    assert_eq!(
        r["unary"]["trailers"]["custom-trailer"], "ok-trailer",
        "{r}"
    );
    // A non-OK status with its message and custom trailing metadata.
    assert_eq!(r["fail"]["code"], "FAILED_PRECONDITION", "{r}");
    assert_eq!(r["fail"]["details"], "nope: precondition failed", "{r}");
    assert_eq!(r["fail"]["md"]["custom-trailer"], "why-not", "{r}");
    // Server streaming: each part as it was sent (0.4 s apart), not all at the end.
    assert_eq!(
        r["server_stream"]["ok"],
        serde_json::json!(["part0", "part1", "part2"]),
        "{r}"
    );
    let at: Vec<f64> = r["server_stream"]["at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(at[2] - at[0] > 0.5, "the parts arrived together: {at:?}");
    // Real trailers after DATA: the status and metadata sent after a message.
    assert_eq!(
        r["fail_after_one"]["parts"],
        serde_json::json!(["part0"]),
        "{r}"
    );
    assert_eq!(r["fail_after_one"]["code"], "RESOURCE_EXHAUSTED", "{r}");
    assert_eq!(r["fail_after_one"]["details"], "out of parts", "{r}");
    assert_eq!(
        r["fail_after_one"]["md"]["custom-trailer"], "after-data",
        "{r}"
    );
    // Client streaming, and both ways in lock step (no buffering either way).
    assert_eq!(r["client_stream"]["ok"], "a,b,c", "{r}");
    assert_eq!(
        r["bidi"]["ok"],
        serde_json::json!(["re:m0", "re:m1", "re:m2"]),
        "{r}"
    );
    // No response header within response_header (1 s): 504 as DEADLINE_EXCEEDED.
    assert_eq!(r["slow"]["code"], "DEADLINE_EXCEEDED", "{r}");
    assert!(
        r["slow"]["md"]["proxy-status"]
            .as_str()
            .is_some_and(|s| s.contains("error=http_response_timeout")),
        "{r}"
    );
    assert!(
        r["slow"]["details"]
            .as_str()
            .is_some_and(|s| s.contains("http_response_timeout")),
        "{r}"
    );

    // The gRPC server dies: the client gets UNAVAILABLE and the gateway's Proxy-Status.
    server.kill();
    let r = client(&gw, "unary");
    let u = &r["unary"];
    assert_eq!(u["code"], "UNAVAILABLE", "{r}");
    let ps = u["md"]["proxy-status"].as_str().unwrap_or("");
    assert!(
        ps.starts_with("healgate; error=connection_"),
        "Proxy-Status: {ps:?} in {r}"
    );
    let id = u["md"]["x-request-id"].as_str().expect("a request id");
    let line = gw.access_entry(id);
    assert_eq!(line["source"], "gateway", "{line}");
    assert_eq!(line["status"], 502, "{line}");
}

#[test]
fn an_http1_client_gets_grpc_trailers_after_the_last_chunk() {
    let server = Py::start("server.py", &[]);
    let gw = gateway(server.port, "", "");
    // One gRPC frame: uncompressed, length 4, "ping".
    let mut req = b"POST /test.Echo/Unary HTTP/1.1\r\nHost: grpc.test\r\nTE: trailers\r\n\
content-type: application/grpc\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
        .to_vec();
    req.extend_from_slice(b"\0\0\0\0\x04ping");
    let raw = common::exchange_raw(gw.addr, &req);
    let lower = raw.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{raw:?}");
    assert!(lower.contains("transfer-encoding: chunked"), "{raw:?}");
    assert!(raw.contains("echo:ping"), "{raw:?}");
    let tail = &lower[lower.rfind("\r\n0\r\n").expect("a last chunk")..];
    assert!(tail.contains("grpc-status: 0"), "trailers: {tail:?}");
}

#[test]
fn a_refused_stream_is_retried_on_a_new_connection() {
    let peer = Py::start("h2_peer.py", &["refuse"]);
    let gw = gateway(peer.port, "", "");
    // A POST with a body: retried only because the peer said it did not process it
    // (the body taken by the first attempt is sent again).
    let res = common::request(gw.addr, "POST", "/x", &[], b"body").unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "served request 2");
    let id = res.header("x-request-id").unwrap().to_owned();
    let line = gw.access_entry(&id);
    assert_eq!(line["attempts"], 2, "{line}");
}

#[test]
fn a_goaway_that_did_not_cover_the_request_is_retried() {
    let peer = Py::start("h2_peer.py", &["goaway"]);
    let gw = gateway(peer.port, "", "");
    // A POST: retried only because the peer said it did not process it.
    let res = common::request(gw.addr, "POST", "/x", &[], b"body").unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "served request 2");
}

#[test]
fn a_reset_before_the_response_is_connection_terminated() {
    let peer = Py::start("h2_peer.py", &["reset"]);
    let gw = gateway(peer.port, "", "");
    let res = common::request(gw.addr, "POST", "/x", &[], b"body").unwrap();
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(
        res.proxy_error().as_deref(),
        Some("connection_terminated"),
        "{:?}",
        res.header("proxy-status")
    );
}

#[test]
fn health_checks_of_an_h2_upstream_go_over_h2c() {
    let peer = Py::start("h2_peer.py", &["ok"]);
    let gw = gateway(
        peer.port,
        "",
        "health = { path = \"/healthz\", interval = \"200ms\", unhealthy_after = 1 }\n",
    );
    // The peer counts every request: checks it answered show in the next body. (An
    // HTTP/1.1 check of this h2c-only peer fails, and the upstream leaves rotation.)
    let served = eventually(Duration::from_secs(10), || {
        let res = get(gw.addr, "/x", &[]);
        let n: u32 = res.text().strip_prefix("served request ")?.parse().ok()?;
        (res.status == 200 && n >= 4).then_some(n)
    });
    assert!(
        served.is_some(),
        "health checks did not reach the peer over h2c"
    );
}

#[test]
fn grpc_over_tls_to_the_gateway_with_trailers_and_streams() {
    let server = Py::start("server.py", &[]);
    let dir = TempDir::new("grpc-tls");
    // A CA and a certificate for grpc.test (rcgen); the client trusts the CA.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "healgate grpc test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["grpc.test".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("site.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("site.key"), leaf_key.serialize_pem()).unwrap();
    let ca = dir.path().join("ca.pem");
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[gateway.tls]\nlisten = [\"127.0.0.1:0\"]\n\
             certs = [{{ cert = \"site.pem\", key = \"site.key\" }}]\n\n\
             [[upstream]]\nname = \"grpc\"\nservers = [\"127.0.0.1:{}\"]\nroutes = [\"/\"]\nprotocol = \"h2\"\n",
            server.port
        ),
    );
    let https = gw.https.expect("an HTTPS listener");
    let r = client_at(
        &https.to_string(),
        "tls",
        &[ca.to_str().unwrap(), "grpc.test"],
    );
    assert_eq!(r["unary"]["ok"], "echo:ping", "{r}");
    assert_eq!(
        r["unary"]["trailers"]["custom-trailer"], "ok-trailer",
        "{r}"
    );
    assert_eq!(r["fail"]["code"], "FAILED_PRECONDITION", "{r}");
    assert_eq!(r["fail"]["md"]["custom-trailer"], "why-not", "{r}");
    assert_eq!(r["fail_after_one"]["code"], "RESOURCE_EXHAUSTED", "{r}");
    assert_eq!(
        r["fail_after_one"]["md"]["custom-trailer"], "after-data",
        "{r}"
    );
    assert_eq!(
        r["bidi"]["ok"],
        serde_json::json!(["re:m0", "re:m1", "re:m2"]),
        "{r}"
    );
    let lines = gw.jsonl("access.jsonl");
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == "/test.Echo/Unary" && l["alpn"] == "h2"),
        "{lines:?}"
    );
}

/// The grpc-go client (`tests/data/grpc/goclient`, built against Debian's
/// golang-google-grpc-dev in GOPATH mode), built once per test run.
fn go_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Under target/ (kept between runs, as Go's build cache).
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("goclient");
            std::fs::create_dir_all(&dir).unwrap();
            let bin = dir.join("client");
            let out = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(script("goclient/main.go"))
                .env("GOPATH", "/usr/share/gocode")
                .env("GO111MODULE", "off")
                .env("GOCACHE", dir.join("cache"))
                .output()
                .expect("go (scripts/test installs golang-go and golang-google-grpc-dev)");
            assert!(
                out.status.success(),
                "building the grpc-go client: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            bin
        })
        .clone()
}

/// One unary call by grpc-go through the gateway: code, message, metadata.
fn go_call(gw: &Gateway, message: &str) -> serde_json::Value {
    let out = Command::new(go_client())
        .arg(gw.addr.to_string())
        .arg(message)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the grpc-go client printed {:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// grpc-go (the other big gRPC implementation besides C-core's grpcio) reads the
/// gateway's own answers the same way: a timeout is DEADLINE_EXCEEDED (not the
/// UNAVAILABLE it would infer from a bare 504, which retry policies retry), a dead
/// server UNAVAILABLE, both with Proxy-Status and the request id; a server's own
/// status and trailers pass untouched.
#[test]
fn grpc_go_reads_the_gateways_statuses() {
    let mut server = Py::start("server.py", &[]);
    let gw = gateway(
        server.port,
        "[gateway.timeouts]\nresponse_header = \"1s\"\n",
        "",
    );
    let ok = go_call(&gw, "ping");
    assert_eq!(ok["code"], "OK", "{ok}");
    assert_eq!(ok["ok"], "echo:ping", "{ok}");
    assert_eq!(ok["md"]["custom-trailer"], "ok-trailer", "{ok}");
    let failed = go_call(&gw, "fail");
    assert_eq!(failed["code"], "FailedPrecondition", "{failed}");
    assert_eq!(failed["message"], "nope: precondition failed", "{failed}");
    assert_eq!(failed["md"]["custom-trailer"], "why-not", "{failed}");

    let slow = go_call(&gw, "slow");
    assert_eq!(slow["code"], "DeadlineExceeded", "{slow}");
    assert!(
        slow["md"]["proxy-status"]
            .as_str()
            .is_some_and(|s| s.contains("error=http_response_timeout")),
        "{slow}"
    );
    let id = slow["md"]["x-request-id"].as_str().expect("a request id");
    assert_eq!(gw.access_entry(id)["status"], 504);

    server.kill();
    let dead = go_call(&gw, "ping");
    assert_eq!(dead["code"], "Unavailable", "{dead}");
    assert!(
        dead["md"]["proxy-status"]
            .as_str()
            .is_some_and(|s| s.starts_with("healgate; error=connection_")),
        "{dead}"
    );
}
