//! What the listener refuses at once, before any app sees it: a TLS ClientHello on a
//! plain-HTTP port (closed, with a log line saying so), a bare-LF request line and
//! HTTP/0.9 (400 without waiting for the header timeout); and what it does not
//! forward: header names with `_` (CGI/WSGI read them as `-`), unless allowed.

mod common;

use common::upstreams::DemoApp;
use common::{get, Gateway};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn gateway(app: &DemoApp, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n{extra}\n[gateway.timeouts]\nclient_header = \"20s\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        app.addr
    ))
}

/// Send `bytes`, then read until the gateway closes (at most 10 s): the answer and how
/// long it took.
fn send(gw: &Gateway, bytes: &[u8]) -> (String, Duration) {
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

#[test]
fn tls_on_a_plain_port_is_closed_at_once_and_said() {
    let app = DemoApp::start();
    let gw = gateway(&app, "");
    // The start of a TLS 1.2/1.3 ClientHello record.
    let hello = [
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    let (answer, took) = send(&gw, &hello);
    assert!(answer.is_empty(), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "closed at once, not after client_header: {took:?}"
    );
    let said = common::eventually(Duration::from_secs(5), || {
        gw.stderr()
            .contains("TLS on a plain-HTTP listener")
            .then_some(())
    });
    assert!(said.is_some(), "{}", gw.stderr());
}

#[test]
fn bare_lf_and_http_09_get_400_at_once() {
    let app = DemoApp::start();
    let gw = gateway(&app, "");
    for (what, raw) in [
        ("bare LF", &b"GET / HTTP/1.1\nHost: x\n\n"[..]),
        ("HTTP/0.9", &b"GET /\r\n"[..]),
        ("no version", &b"GET / \r\n\r\n"[..]),
    ] {
        let (answer, took) = send(&gw, raw);
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("proxy-status: healgate; error=http_request_error"),
            "{what}: {answer}"
        );
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
    }
}

#[test]
fn underscore_header_names_are_dropped_unless_allowed() {
    let app = DemoApp::start();
    let gw = gateway(&app, "");
    let r = get(
        gw.addr,
        "/echo",
        &[
            ("Content_Length", "5"),
            ("X_User", "admin"),
            ("X-Kept", "yes"),
        ],
    );
    let text = r.text().to_ascii_lowercase();
    assert!(!text.contains("content_length"), "{text}");
    assert!(!text.contains("x_user"), "{text}");
    assert!(text.contains("x-kept: yes"), "{text}");
    let open = gateway(&app, "underscores_in_headers = true");
    let r = get(open.addr, "/echo", &[("X_User", "admin")]);
    assert!(r.text().to_ascii_lowercase().contains("x_user: admin"));
}

#[test]
fn a_later_request_head_that_trickles_in_gets_408() {
    let app = DemoApp::start();
    let gw = Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[gateway.timeouts]\nclient_header = \"1s\"\nclient_idle = \"30s\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        app.addr
    ));
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // The next head, a byte every 200 ms: never complete.
    let t = Instant::now();
    let mut trickle = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = t.elapsed();
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("proxy-status: healgate; error=http_request_error"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "408 after {took:?}, not held"
    );
    let logged = common::eventually(Duration::from_secs(5), || {
        gw.jsonl("access.jsonl")
            .into_iter()
            .find(|e| e["status"] == 408)
    })
    .expect("the 408 in the access log");
    assert!(
        logged["details"]
            .as_str()
            .unwrap_or("")
            .contains("keep-alive"),
        "{logged}"
    );
}

#[test]
fn a_later_request_with_150_header_fields_is_served_like_the_first() {
    let up = common::upstreams::ok("ok");
    let gw = Gateway::start(&format!(
        "[[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ));
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        head.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    let first = format!("{head}\r\n");
    let second = format!("{head}Connection: close\r\n\r\n");
    let (answer, _) = send(&gw, format!("{first}{second}").as_bytes());
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(!answer.contains("HTTP/1.1 431"), "{answer}");
}

#[test]
fn beyond_max_connections_new_ones_wait_in_the_backlog() {
    let up = common::upstreams::ok("ok");
    let gw = Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[gateway.limits]\nmax_connections = 2\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ));
    let ask = |s: &mut std::net::TcpStream, wait: Duration| -> Option<String> {
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let mut a = std::net::TcpStream::connect(gw.addr).unwrap();
    let mut b = std::net::TcpStream::connect(gw.addr).unwrap();
    assert!(ask(&mut a, Duration::from_secs(5))
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(ask(&mut b, Duration::from_secs(5))
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // The third waits: connected (the kernel's backlog) but not served.
    let mut c = std::net::TcpStream::connect(gw.addr).unwrap();
    assert_eq!(
        ask(&mut c, Duration::from_millis(700)),
        None,
        "served beyond the limit"
    );
    // One closes: the waiting one is served, its request intact.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let said = common::eventually(Duration::from_secs(5), || {
        gw.stderr().contains("limits.max_connections").then_some(())
    });
    assert!(said.is_some(), "{}", gw.stderr());
    drop(b);
}
