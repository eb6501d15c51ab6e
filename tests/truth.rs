//! SPEC §4 for remote upstreams, produced for real: each failure gives its status,
//! its Proxy-Status error, and the same `error` in the access log.

mod common;

use common::upstreams;
use common::{get, Gateway};
use std::time::Duration;

/// One upstream `up` on `servers`, routed at `/`, with extra upstream keys.
fn one_upstream(servers: &str, extra: &str) -> String {
    format!(
        "[gateway.timeouts]\nconnect = \"500ms\"\nresponse_header = \"1s\"\ndns = \"700ms\"\n\n[[upstream]]\nname = \"up\"\nservers = [{servers}]\nroutes = [\"/\"]\n{extra}\n"
    )
}

fn with_gateway_table(body: &str) -> String {
    format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n{body}")
}

/// Assert status and Proxy-Status error of a GET, and that the access log agrees.
fn expect(gw: &Gateway, path: &str, status: u16, error: &str) -> common::Resp {
    let r = get(gw.addr, path, &[]);
    assert_eq!(r.status, status, "status for {path}: {}", r.text());
    assert_eq!(
        r.proxy_error().as_deref(),
        Some(error),
        "Proxy-Status: {:?}",
        r.header("proxy-status")
    );
    let id = r.header("x-request-id").expect("x-request-id").to_owned();
    let entry = gw.access_entry(&id);
    assert_eq!(entry["status"], status);
    assert_eq!(entry["error"], error);
    assert_eq!(entry["source"], "gateway");
    r
}

#[test]
fn nothing_listening_is_connection_refused() {
    let nothing = common::Refused::new();
    let port = nothing.port();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"127.0.0.1:{port}\""),
        "",
    )));
    let r = expect(&gw, "/", 502, "connection_refused");
    assert!(r.header("retry-after").is_none());
}

#[test]
fn unresolvable_name_is_dns_error() {
    let dns = upstreams::dns(true);
    let extra = format!("dns = {{ resolvers = [\"{}\"] }}", dns.addr);
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        "\"no-such-host.invalid:80\"",
        &extra,
    )));
    expect(&gw, "/", 502, "dns_error");
}

#[test]
fn silent_name_server_is_dns_timeout() {
    let dns = upstreams::dns(false);
    let extra = format!("dns = {{ resolvers = [\"{}\"] }}", dns.addr);
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        "\"slow-dns.example:80\"",
        &extra,
    )));
    expect(&gw, "/", 504, "dns_timeout");
}

#[test]
fn full_accept_queue_is_connection_timeout() {
    let hole = upstreams::blackhole();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", hole.addr),
        "",
    )));
    expect(&gw, "/", 504, "connection_timeout");
}

#[test]
fn reset_before_response_is_connection_terminated() {
    let up = upstreams::resetting();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    let r = expect(&gw, "/", 502, "connection_terminated");
    // A GET without body is idempotent: it was retried before giving up.
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    assert!(entry["attempts"].as_u64().unwrap() >= 2, "{entry}");
}

#[test]
fn post_is_not_retried_after_it_was_sent() {
    let up = upstreams::resetting();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    let r = common::request(gw.addr, "POST", "/orders", &[], b"{\"n\":1}").unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.proxy_error().as_deref(), Some("connection_terminated"));
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    assert_eq!(
        entry["attempts"], 1,
        "a POST that reached the upstream is never resent"
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn no_response_in_time_is_http_response_timeout() {
    let up = upstreams::silent();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    let r = expect(&gw, "/", 504, "http_response_timeout");
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    assert_eq!(entry["attempts"], 1, "a slow upstream is not hit twice");
}

#[test]
fn malformed_response_is_http_protocol_error() {
    let up = upstreams::fixed(
        b"HTTP/1.1 abc nonsense\r\n\x00\x01garbage\r\n\r\n".to_vec(),
        false,
    );
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    expect(&gw, "/", 502, "http_protocol_error");
}

#[test]
fn oversized_response_header_is_header_section_size() {
    let big = "a".repeat(80 * 1024);
    let up = upstreams::fixed(
        format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok").into_bytes(),
        true,
    );
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    expect(&gw, "/", 502, "http_response_header_section_size");
}

#[test]
fn demo_app_faults_map_to_their_rows() {
    let app = upstreams::DemoApp::start();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", app.addr),
        "",
    )));
    expect(&gw, "/bad", 502, "http_protocol_error");
    expect(
        &gw,
        "/bigheader?kb=70",
        502,
        "http_response_header_section_size",
    );
    // and a healthy request passes
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn overloaded_upstream_queues_then_refuses() {
    let up = upstreams::slow(Duration::from_millis(1500));
    let body = with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "max_concurrency = 1\nqueue = { size = 1, timeout = \"5s\" }",
    ))
    .replace("response_header = \"1s\"", "response_header = \"10s\"");
    let gw = Gateway::start(&body);
    let addr = gw.addr;
    let first = std::thread::spawn(move || get(addr, "/a", &[]).status);
    common::eventually(Duration::from_secs(5), || (up.hits() == 1).then_some(()))
        .expect("the first request reaches the upstream");
    // One slot (taken) and one queue place: of two more, one waits and one is refused.
    let more: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/b", &[])))
        .collect();
    let mut results: Vec<common::Resp> = more.into_iter().map(|t| t.join().unwrap()).collect();
    results.sort_by_key(|r| r.status);
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(results[0].status, 200, "the queued request is served");
    let refused = &results[1];
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.proxy_error().as_deref(),
        Some("connection_limit_reached")
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        up.hits(),
        2,
        "the refused request never reached the upstream"
    );
}

#[test]
fn failing_health_checks_mean_destination_unavailable() {
    let app = upstreams::DemoApp::start();
    let extra = "health = { path = \"/status/500\", interval = \"100ms\", timeout = \"500ms\", unhealthy_after = 1 }";
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", app.addr),
        extra,
    )));
    let r = common::eventually(Duration::from_secs(5), || {
        let r = get(gw.addr, "/", &[]);
        (r.status == 503).then_some(r)
    })
    .expect("503 once the health check fails");
    assert_eq!(r.proxy_error().as_deref(), Some("destination_unavailable"));
    assert!(r.header("retry-after").is_some());
    let events = gw.jsonl("events.jsonl");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "instance_ejected" && e["instance"] == "up#1"),
        "{events:?}"
    );
}

#[test]
fn no_route_is_destination_not_found() {
    let up = upstreams::ok("hi");
    let cfg = with_gateway_table(&format!(
        "[[upstream]]\nname = \"api\"\nservers = [\"{}\"]\nroutes = [\"/api\"]\n",
        up.addr
    ));
    let gw = Gateway::start(&cfg);
    expect(&gw, "/elsewhere", 404, "destination_not_found");
    expect(&gw, "/apix", 404, "destination_not_found");
    assert_eq!(get(gw.addr, "/api/x", &[]).status, 200);
    // Absolute-form for another host is not proxied: no open proxy.
    let r = common::request(
        gw.addr,
        "GET",
        "http://example.com/api/x",
        &[("Host", "example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_not_found"));
    assert_eq!(up.hits(), 1);
}

#[test]
fn oversized_request_header_is_431() {
    let up = upstreams::ok("hi");
    let cfg = with_gateway_table(&format!(
        "[gateway.limits]\nrequest_header = \"8KiB\"\n\n[[upstream]]\nname = \"up\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ));
    let gw = Gateway::start(&cfg);
    let big = "b".repeat(12 * 1024);
    let r = get(gw.addr, "/", &[("X-Big", &big)]);
    assert_eq!(r.status, 431);
    assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(up.hits(), 0);
}

#[test]
fn ambiguous_framing_is_400() {
    let up = upstreams::ok("hi");
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(
        up.hits(),
        0,
        "an ambiguous request never reaches the upstream"
    );
}

#[test]
fn loop_through_this_gateway_is_508() {
    // The gateway's upstream is itself: the second pass sees its own Via. Its address
    // is known once it runs, so the upstream is pointed at it by a reload.
    let nothing = common::Refused::new();
    let gw = Gateway::start(&with_gateway_table(&format!(
        "[[upstream]]\nname = \"self\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        nothing.addr
    )));
    let cfg = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(
        gw.config_path(),
        cfg.replace(&nothing.addr.to_string(), &gw.addr.to_string()),
    )
    .unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = common::eventually(Duration::from_secs(10), || {
        let r = get(gw.addr, "/", &[]);
        (r.status != 502).then_some(r)
    })
    .expect("the reload points the upstream at the gateway");
    assert_eq!(r.status, 508, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("proxy_loop_detected"));
}

#[test]
fn slow_client_header_is_408() {
    let up = upstreams::ok("hi");
    let cfg = with_gateway_table(&format!(
        "[gateway.timeouts]\nclient_header = \"300ms\"\n\n[[upstream]]\nname = \"up\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ));
    let gw = Gateway::start(&cfg);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("proxy-status: healgate; error=http_request_error"),
        "{text}"
    );
}

#[test]
fn tls_rows_and_a_trusted_upstream() {
    let (tls, pem) = upstreams::tls_server();
    let dir = common::TempDir::new("tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let port = tls.addr.port();
    let plain = upstreams::plain_rejecting();
    let cfg = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n\
         [[upstream]]\nname = \"untrusted\"\nservers = [\"https://localhost:{port}\"]\nroutes = [\"/untrusted\"]\n\n\
         [[upstream]]\nname = \"trusted\"\nservers = [\"https://localhost:{port}\"]\nroutes = [\"/trusted\"]\ntls = {{ ca = \"ca.pem\" }}\n\n\
         [[upstream]]\nname = \"nottls\"\nservers = [\"https://127.0.0.1:{}\"]\nroutes = [\"/nottls\"]\ntls = {{ server_name = \"localhost\" }}\n",
        plain.addr.port()
    );
    let gw = Gateway::start_in(dir, &cfg);
    expect(&gw, "/untrusted", 502, "tls_certificate_error");
    expect(&gw, "/nottls", 502, "tls_protocol_error");
    // Several in a row: the pooled TLS connection is checked and reused.
    for _ in 0..5 {
        let r = get(gw.addr, "/trusted", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls ok");
    }
    assert_eq!(tls.hits(), 5);
}

#[test]
fn a_malformed_later_request_on_a_connection_is_refused_and_logged() {
    use std::io::{Read, Write};
    let up = upstreams::ok("fine");
    let gw = Gateway::start(&one_upstream(&format!("\"{}\"", up.addr), ""));
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A good first request, then one hyper cannot parse, on the same connection.
    s.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("fine") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after the first request");
        raw.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\nNot a header line\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let logged = common::eventually(Duration::from_secs(5), || {
        gw.jsonl("access.jsonl")
            .into_iter()
            .find(|e| e["status"] == 400)
    })
    .expect("an access line for the refused request");
    assert_eq!(logged["error"], "http_request_error", "{logged}");
    assert_eq!(logged["source"], "gateway", "{logged}");
    assert!(
        logged["details"].as_str().unwrap().contains("request 2"),
        "{logged}"
    );
}

/// A chunked POST written `pieces` chunks of `chunk` bytes, one every `pace`; with
/// `stall`, the body stops after the first chunk (the connection stays open). The
/// response as read to the end, and the body that was meant to go up.
fn paced_upload(
    addr: std::net::SocketAddr,
    pieces: usize,
    chunk: usize,
    pace: Duration,
    stall: bool,
) -> (common::Resp, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut sent = Vec::new();
    for i in 0..pieces {
        let data: Vec<u8> = (0..chunk).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        // The gateway may answer (and close) early: stop writing then.
        if s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .and_then(|()| s.write_all(&data))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent.extend_from_slice(&data);
        if stall {
            break;
        }
        std::thread::sleep(pace);
    }
    if !stall {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let resp = common::parse_response(&raw, false)
        .unwrap_or_else(|| panic!("unparsable: {:?}", String::from_utf8_lossy(&raw)));
    (resp, sent)
}

/// A slow upload is the client's time, not the upstream's: with `response_header =
/// "1s"`, uploads taking 2.5 s reach a healthy upstream whole and get its 200, and
/// three of them in a row do not eject it.
#[test]
fn a_slow_upload_is_not_a_slow_upstream() {
    let up = upstreams::body_echo();
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                paced_upload(addr, 10, 1000, Duration::from_millis(250), false)
            })
        })
        .collect();
    for u in uploads {
        let (r, sent) = u.join().unwrap();
        assert_eq!(r.status, 200, "{:?} {}", r.proxy_error(), r.text());
        assert_eq!(r.body.len(), sent.len(), "the upstream got every byte");
        assert!(r.body == sent, "the upstream got the bytes as sent");
    }
    assert_eq!(up.hits(), 3);
    // The peer is still in rotation: the next requests reach it.
    for _ in 0..3 {
        let r = common::request(gw.addr, "POST", "/after", &[], b"fine").unwrap();
        assert_eq!(r.status, 200, "{:?} {}", r.proxy_error(), r.text());
    }
    assert_eq!(up.hits(), 6);
    assert!(gw.events("instance_ejected").is_empty());
}

/// A client that stops sending its body gets 408 `http_request_error` after
/// `client_body` without progress, logged as its own failure; the upstream is not
/// ejected for it.
#[test]
fn a_stalled_upload_is_the_clients_408() {
    let up = upstreams::body_echo();
    let cfg = format!(
        "[gateway.timeouts]\nresponse_header = \"5s\"\nclient_body = \"1s\"\n\n[[upstream]]\nname = \"up\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    );
    let gw = Gateway::start(&with_gateway_table(&cfg));
    let stalls: Vec<_> = (0..3)
        .map(|_| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                let (r, _) = paced_upload(addr, 1, 100, Duration::ZERO, true);
                (r, start.elapsed())
            })
        })
        .collect();
    for s in stalls {
        let (r, took) = s.join().unwrap();
        assert_eq!(r.status, 408, "{:?} {}", r.proxy_error(), r.text());
        assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
        assert!(took < Duration::from_secs(4), "after client_body: {took:?}");
        let id = r.header("x-request-id").expect("x-request-id").to_owned();
        let entry = gw.access_entry(&id);
        assert_eq!(entry["status"], 408, "{entry}");
        assert_eq!(entry["error"], "http_request_error", "{entry}");
        let details = entry["details"].as_str().unwrap_or_default();
        assert!(
            details.contains("client") && details.contains("body"),
            "{entry}"
        );
    }
    // Not the upstream's failure: it stays in rotation.
    for _ in 0..3 {
        let r = common::request(gw.addr, "POST", "/after", &[], b"fine").unwrap();
        assert_eq!(r.status, 200, "{:?} {}", r.proxy_error(), r.text());
        assert_eq!(r.text(), "fine");
    }
    assert!(gw.events("instance_ejected").is_empty());
}

/// A gateway in front of one upstream that answers every request with `raw`.
fn fixed_answer(raw: &str) -> (upstreams::Server, Gateway) {
    let up = upstreams::fixed(raw.as_bytes().to_vec(), false);
    let gw = Gateway::start(&with_gateway_table(&one_upstream(
        &format!("\"{}\"", up.addr),
        "",
    )));
    (up, gw)
}

#[test]
fn a_repeated_content_length_is_relayed_as_one_value() {
    let (_up, gw) = fixed_answer("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello");
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.text(), "hello");
}

#[test]
fn a_transfer_coding_without_chunked_is_refused_not_dropped() {
    let (_up, gw) = fixed_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\ngzipped-bytes");
    let r = expect(&gw, "/", 502, "http_protocol_error");
    assert!(r.header("transfer-encoding").is_none());
}

#[test]
fn more_than_100_response_header_fields_pass_within_the_size_limit() {
    let mut raw = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..150 {
        raw.push_str(&format!("X-Field-{i}: {i}\r\n"));
    }
    raw.push_str("Content-Length: 2\r\n\r\nok");
    let (_up, gw) = fixed_answer(&raw);
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-field-149"), Some("149"));
}
