//! Later requests on a keep-alive connection get the checks and the answers the first
//! one gets (`proxy::heads`): a later head that is too large is the gateway's 431, an
//! ambiguous one its 400, each with Proxy-Status, request id and page, and nothing
//! reaches the upstream for it; pipelined requests with bodies (length and chunked)
//! are answered in order; `Expect: 100-continue` works on a later request.

mod common;

use common::upstreams::{body_echo, ok};
use common::Gateway;
use std::io::{Read, Write};
use std::time::Duration;

fn gateway(up: std::net::SocketAddr, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n{extra}\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{up}\"]\nroutes = [\"/\"]\n"
    ))
}

/// Write `bytes` on one connection, then read until the gateway closes (10 s at most).
fn exchange(gw: &Gateway, bytes: &[u8]) -> String {
    common::exchange_raw(gw.addr, bytes)
}

/// The statuses of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok())
        .collect()
}

/// The answer after the first (a 200): the gateway's own, with Proxy-Status, request
/// id and page, and the connection closed after it.
fn assert_refused_later(text: &str, status: u16) {
    assert_eq!(statuses(text), [200, status], "{text}");
    let second = &text[text.rfind("HTTP/1.1 ").unwrap()..].to_ascii_lowercase();
    assert!(
        second.contains("proxy-status: healgate; error=http_request_error"),
        "{second}"
    );
    assert!(second.contains("x-request-id: "), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    assert!(
        second.contains("<html") || second.contains("\"title\""),
        "{second}"
    );
}

#[test]
fn a_later_head_too_large_is_the_gateways_431() {
    let up = ok("ok");
    let gw = gateway(up.addr, "[gateway.limits]\nrequest_header = \"8KiB\"");
    let big = "b".repeat(12 * 1024);
    let text = exchange(
        &gw,
        format!("GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")
            .as_bytes(),
    );
    assert_refused_later(&text, 431);
    assert_eq!(up.hits(), 1, "only the first reached the upstream");
    let logged = common::eventually(Duration::from_secs(5), || {
        gw.jsonl("access.jsonl")
            .into_iter()
            .find(|e| e["status"] == 431)
    })
    .expect("the 431 in the access log");
    assert_eq!(logged["error"], "http_request_error", "{logged}");
    assert!(
        logged["details"]
            .as_str()
            .unwrap_or("")
            .contains("request 2 on a keep-alive"),
        "{logged}"
    );
}

#[test]
fn a_later_request_with_te_and_cl_is_the_gateways_400() {
    let up = body_echo();
    let gw = gateway(up.addr, "");
    let text = exchange(
        &gw,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_refused_later(&text, 400);
    assert_eq!(
        up.hits(),
        1,
        "neither the ambiguous nor the smuggled one forwarded"
    );
}

#[test]
fn a_later_request_with_more_than_256_fields_is_the_gateways_431() {
    let up = ok("ok");
    let gw = gateway(up.addr, "");
    let mut second = String::from("GET /two HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        second.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    let text = exchange(
        &gw,
        format!("GET /one HTTP/1.1\r\nHost: x\r\n\r\n{second}\r\n").as_bytes(),
    );
    assert_refused_later(&text, 431);
    assert_eq!(up.hits(), 1);
}

#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    let up = body_echo();
    let gw = gateway(up.addr, "");
    let text = exchange(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst\
          POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          6;ext=1\r\nsecond\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfifth",
    );
    assert_eq!(statuses(&text), [200, 200, 200, 200], "{text}");
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
    assert!(
        at("first") < at("second") && at("second") < at("fifth"),
        "{text}"
    );
    assert_eq!(up.hits(), 4);
}

#[test]
fn expect_100_continue_works_on_a_later_request() {
    let up = body_echo();
    let gw = gateway(up.addr, "");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_until = |s: &mut std::net::TcpStream, want: &str| -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut s, "\r\n\r\n");
    s.write_all(
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_until(&mut s, "\r\n\r\n");
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"body").unwrap();
    let answer = read_until(&mut s, "body");
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");
}

/// A connection quiet between requests is parked (hyper and its buffers let go of,
/// after a second): the next requests on it are served and checked the same way.
#[test]
fn a_parked_connection_serves_and_checks_the_next_requests() {
    let up = body_echo();
    let gw = gateway(up.addr, "");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = |s: &mut std::net::TcpStream, body: &str| -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with(body) {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    for round in ["one", "two"] {
        s.write_all(
            format!("POST /{round} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{round}")
                .as_bytes(),
        )
        .unwrap();
        let text = answer(&mut s, round);
        assert!(text.starts_with("HTTP/1.1 200"), "{round}: {text}");
        // Quiet for longer than the park delay (the behaviour under test, not a wait
        // for something to happen).
        std::thread::sleep(Duration::from_millis(2500));
    }
    s.write_all(
        b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 400"), "{text}");
    assert!(
        text.contains("proxy-status: healgate; error=http_request_error"),
        "{text}"
    );
    assert_eq!(up.hits(), 2);
}
