//! What a user notices when things go wrong behind the gateway: keep-alive races,
//! a server going away under load, a graceful stop, upstream errors passed through.

mod common;

use common::upstreams;
use common::{get, Gateway, KeepAlive};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn upstream_config(name: &str, servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[upstream]]\nname = \"{name}\"\nservers = [{}]\nroutes = [\"/\"]\n{extra}\n",
        list.join(", ")
    )
}

#[test]
fn keep_alive_race_gives_no_gateway_errors() {
    // The upstream closes connections idle for 1 s, without saying so in advance.
    let up = upstreams::idle_closer(Duration::from_secs(1));
    let gw = Gateway::start(&upstream_config("app", &[up.addr.to_string()], ""));
    let addr = gw.addr;
    let clients = 10;
    let per_client = 20;
    let failures = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let failures = failures.clone();
            std::thread::spawn(move || {
                let mut client = KeepAlive::new(addr);
                for i in 0..per_client {
                    // Spaced around the upstream's idle timeout: 0.9 s to 1.1 s.
                    let gap = 900 + ((c * 53 + i * 37) % 200) as u64;
                    std::thread::sleep(Duration::from_millis(gap));
                    let (method, body): (&str, &[u8]) = if i % 2 == 0 {
                        ("GET", b"")
                    } else {
                        ("POST", b"{\"n\":1}")
                    };
                    match client.send(method, "/x", body) {
                        Ok((200, _, _)) => {}
                        Ok((status, h, _)) => {
                            eprintln!("{method} got {status} {h:?}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("{method} transport error {e}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "gateway-made errors in the keep-alive race"
    );
    assert_eq!(
        up.hits(),
        clients * per_client,
        "every request reached the upstream exactly once"
    );
    let access = gw.jsonl("access.jsonl");
    assert!(
        access.iter().all(|e| e["source"] == "upstream"),
        "no gateway-made response"
    );
}

#[test]
fn a_server_stopped_under_load_fails_no_get_and_comes_back() {
    let a = upstreams::DemoApp::start();
    let mut b = upstreams::DemoApp::start();
    let b_port = b.addr.port();
    let extra = "health = { path = \"/healthz\", interval = \"200ms\", timeout = \"500ms\", unhealthy_after = 2, healthy_after = 1 }";
    let gw = Gateway::start(&upstream_config(
        "api",
        &[a.addr.to_string(), b.addr.to_string()],
        extra,
    ));
    let load = common::Load::start(gw.addr, 4, "/");
    load.wait_for(200);

    b.stop();
    let ejected = common::eventually(Duration::from_secs(10), || {
        gw.jsonl("events.jsonl")
            .into_iter()
            .find(|e| e["kind"] == "instance_ejected" && e["instance"] == "api#2")
    });
    assert!(ejected.is_some(), "the stopped server is ejected");
    load.wait_for(200);

    let b2 = upstreams::DemoApp::start_on(b_port);
    let readmitted = common::eventually(Duration::from_secs(10), || {
        gw.jsonl("events.jsonl")
            .into_iter()
            .find(|e| e["kind"] == "instance_readmitted" && e["instance"] == "api#2")
    });
    assert!(
        readmitted.is_some(),
        "the server is readmitted when it comes back"
    );
    // Traffic reaches the new process again.
    let b2_pid = b2.child.id();
    let served_by_b2 = common::eventually(Duration::from_secs(10), || {
        load.wait_for(20);
        load.pids().contains(&b2_pid).then_some(())
    });
    let (done, failures, _) = load.finish();
    assert!(
        served_by_b2.is_some(),
        "requests reach the readmitted server"
    );
    assert!(done > 400, "{done} requests");
    assert!(
        failures.is_empty(),
        "no GET failed while a server went away: {failures:?}"
    );
}

#[test]
fn sigterm_lets_the_slow_request_finish_and_exits_zero() {
    let up = upstreams::slow(Duration::from_millis(1500));
    let mut gw = Gateway::start(&upstream_config("app", &[up.addr.to_string()], ""));
    let addr = gw.addr;
    let t = std::thread::spawn(move || get(addr, "/slow", &[]));
    common::eventually(Duration::from_secs(5), || (up.hits() == 1).then_some(()))
        .expect("request in flight");
    let status = gw.terminate();
    let r = t.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert_eq!(r.text(), "slow");
    assert_eq!(status.code(), Some(0), "exit 0 after a graceful stop");
    // Its access line was flushed before exit.
    let id = r.header("x-request-id").unwrap();
    assert!(gw
        .jsonl("access.jsonl")
        .iter()
        .any(|e| e["request_id"] == id));
    // New connections are refused once it stopped.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn upstream_errors_pass_through_byte_for_byte() {
    let body = "<h1>the app's own 503</h1>\n";
    let raw = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nX-App: mine\r\nRetry-After: 7\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let up = upstreams::fixed(raw.into_bytes(), true);
    let body502 = "{\"error\":\"app 502\"}";
    let up502 = upstreams::fixed(
        format!("HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body502}", body502.len()).into_bytes(),
        true,
    );
    let cfg = format!(
        "[[upstream]]\nname = \"a\"\nservers = [\"{}\"]\nroutes = [\"/a\"]\n\n[[upstream]]\nname = \"b\"\nservers = [\"{}\"]\nroutes = [\"/b\"]\n",
        up.addr, up502.addr
    );
    let gw = Gateway::start(&cfg);
    let r = get(gw.addr, "/a", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), body);
    assert_eq!(r.header("x-app"), Some("mine"));
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(
        r.header("proxy-status").is_none(),
        "the gateway does not claim the upstream's error"
    );
    let e = gw.access_entry(r.header("x-request-id").unwrap());
    assert_eq!(e["source"], "upstream");
    assert_eq!(e["status"], 503);
    assert!(e.get("error").is_none());
    assert_eq!(e["upstream"], "a#1");

    let r = get(gw.addr, "/b", &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), body502);
    assert!(r.header("proxy-status").is_none());
    assert_eq!(
        gw.access_entry(r.header("x-request-id").unwrap())["source"],
        "upstream"
    );
    // One attempt each: an upstream's own error is an answer, not a failure to retry.
    assert_eq!(up.hits(), 1);
    assert_eq!(up502.hits(), 1);
}

#[test]
fn forwarding_headers_request_id_and_streaming_bodies() {
    let app = upstreams::DemoApp::start();
    let gw = Gateway::start(&upstream_config("app", &[app.addr.to_string()], ""));
    let r = get(
        gw.addr,
        "/echo",
        &[("X-Request-Id", "client-id-42"), ("Host", "shop.example")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-request-id"),
        Some("client-id-42"),
        "a valid client id is kept"
    );
    let echoed = r.text().to_ascii_lowercase();
    assert!(echoed.contains("x-request-id: client-id-42"), "{echoed}");
    assert!(echoed.contains("x-forwarded-for: 127.0.0.1"), "{echoed}");
    assert!(echoed.contains("x-forwarded-proto: http"), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-host: shop.example"),
        "{echoed}"
    );
    assert!(echoed.contains("host: shop.example"), "{echoed}");
    assert!(echoed.contains("via: 1.1 healgate-"), "{echoed}");

    // An invalid id is replaced, upstream too (one id only).
    let r = get(gw.addr, "/", &[("X-Request-Id", "bad id with spaces")]);
    assert_ne!(r.header("x-request-id"), Some("bad id with spaces"));
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
    let r = get(gw.addr, "/echo", &[("X-Request-Id", "bad id with spaces")]);
    let echoed = r.text().to_ascii_lowercase();
    let id = r.header("x-request-id").unwrap().to_ascii_lowercase();
    assert_eq!(echoed.matches("x-request-id:").count(), 1, "{echoed}");
    assert!(echoed.contains(&format!("x-request-id: {id}")), "{echoed}");

    // What a client that is not a trusted proxy says of itself is replaced: the
    // app sees the real peer and scheme (tests/forwarded.rs has the trusted case).
    let r = get(
        gw.addr,
        "/echo",
        &[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    let echoed = r.text().to_ascii_lowercase();
    assert!(echoed.contains("x-forwarded-for: 127.0.0.1\n"), "{echoed}");
    assert_eq!(echoed.matches("x-forwarded-for:").count(), 1, "{echoed}");
    assert!(echoed.contains("x-forwarded-proto: http\n"), "{echoed}");
    assert_eq!(echoed.matches("x-forwarded-proto:").count(), 1, "{echoed}");

    // 4 MiB up and back down.
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = common::request(gw.addr, "POST", "/echo", &[], &body).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&body), "the body came back whole");
}

#[test]
fn h2c_prior_knowledge_is_served() {
    let up = upstreams::ok("over h2");
    let gw = Gateway::start(&upstream_config("app", &[up.addr.to_string()], ""));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body, version) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/h2", gw.addr))
            .body(http_body_util::Empty::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let version = res.version();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body, version)
    });
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"over h2");
}

#[test]
fn idle_keep_alive_connections_close_but_slow_requests_do_not() {
    let up = upstreams::slow(Duration::from_millis(2500));
    let cfg = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[gateway.timeouts]\nclient_idle = \"1s\"\n\n{}",
        upstream_config("app", &[up.addr.to_string()], "")
    );
    let gw = Gateway::start(&cfg);
    // A request slower than the idle timeout completes: the connection is busy.
    let mut c = KeepAlive::new(gw.addr);
    let (status, _, body) = c.send("GET", "/slow", b"").unwrap();
    assert_eq!((status, &body[..]), (200, &b"slow"[..]));
    // Then, idle after its response, the gateway closes it within two idle periods.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(gw.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"slow") {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
    }
    let t0 = Instant::now();
    let n = raw.read(&mut buf).unwrap_or(usize::MAX);
    let waited = t0.elapsed();
    assert_eq!(n, 0, "closed by the gateway (read returned {n})");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(4500),
        "{waited:?}"
    );
}

#[test]
fn a_client_that_leaves_early_is_still_logged() {
    let up = upstreams::slow(Duration::from_millis(3000));
    let gw = Gateway::start(&upstream_config("app", &[up.addr.to_string()], ""));
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /leaving HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaves-early\r\n\r\n")
        .unwrap();
    common::eventually(Duration::from_secs(5), || (up.hits() == 1).then_some(()))
        .expect("request in flight");
    drop(s);
    let entry = gw.access_entry("leaves-early");
    assert_eq!(entry["status"], 499, "{entry}");
    assert_eq!(entry["path"], "/leaving");
    assert_eq!(entry["upstream"], "app#1");
}
