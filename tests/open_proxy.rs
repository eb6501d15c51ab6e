//! No open proxy: an absolute-form request naming another host and a CONNECT to
//! another host never reach it, first or later on a keep-alive connection, even with a
//! catch-all route: a name the gateway does not serve is 404, CONNECT is 400, and a
//! loopback address (the gateway's own) is routed like any request to the gateway,
//! never to the server at that address.

mod common;

use common::upstreams::ok;
use common::Gateway;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn absolute_form_and_connect_never_reach_another_host() {
    let app = ok("app");
    // "Another host": a server the gateway was never configured with.
    let other = ok("other");
    let gw = Gateway::start(&format!(
        "[[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        app.addr
    ));
    let o = other.addr;
    // (what, request, whether the gateway itself refuses it)
    for (what, request, refused) in [
        (
            "absolute-form, another name",
            "GET http://other.example/secret HTTP/1.1\r\nHost: other.example\r\n\r\n".to_owned(),
            true,
        ),
        (
            "absolute-form, another port on loopback",
            format!("GET http://{o}/secret HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            false,
        ),
        (
            "CONNECT",
            format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            true,
        ),
    ] {
        for later in [false, true] {
            let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut bytes = String::new();
            if later {
                bytes.push_str("GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n");
            }
            bytes.push_str(&request);
            s.write_all(bytes.as_bytes()).unwrap();
            // The gateway answers the refusal and may keep the connection: read what
            // comes until the refusal's page is in.
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            let want = if later { 2 } else { 1 };
            let done = |got: &[u8]| {
                let t = String::from_utf8_lossy(got).to_ascii_lowercase();
                t.matches("http/1.1 ").count() >= want
                    && (t.ends_with("app") || t.ends_with("other") || t.contains("</html>"))
            };
            while !done(&got) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            let last = &text[text.rfind("http/1.1 ").unwrap_or(0)..];
            assert!(!last.ends_with("other"), "{what} (later: {later}): {text}");
            if refused {
                assert!(
                    last.starts_with("http/1.1 404") || last.starts_with("http/1.1 400"),
                    "{what} (later: {later}): {text}"
                );
                assert!(
                    last.contains("proxy-status: healgate; error="),
                    "{what} (later: {later}): {last}"
                );
            } else {
                assert!(last.ends_with("app"), "{what} (later: {later}): {text}");
            }
        }
    }
    assert_eq!(other.hits(), 0, "another host was reached");
    // The three first requests and the loopback one twice.
    assert_eq!(app.hits(), 5);
}
