//! A listener behind another load balancer (`proxy_protocol = true`): the PROXY
//! header (v1 text or v2 binary) names the client, and that address is the one the
//! app sees in `X-Forwarded-For` and the access log records; a connection without
//! the header is closed.

mod common;

use common::upstreams::DemoApp;
use common::Gateway;
use std::time::Duration;

fn gateway(app: &DemoApp) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\nlisten = [{{ addr = \"127.0.0.1:0\", proxy_protocol = true }}]\ndata_dir = \"data\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        app.addr
    ))
}

fn send(gw: &Gateway, bytes: &[u8]) -> String {
    common::exchange_raw(gw.addr, bytes)
}

const REQUEST: &[u8] =
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n";

fn client_of(gw: &Gateway, answer: &str) -> String {
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .trim()
        .to_owned();
    gw.access_entry(&id)["client"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn v1_and_v2_headers_name_the_client_everywhere() {
    let app = DemoApp::start();
    let gw = gateway(&app);

    let v1 = [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 80\r\n".as_slice(),
        REQUEST,
    ]
    .concat();
    let answer = send(&gw, &v1);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-forwarded-for: 192.0.2.7\n"), "{answer}");
    assert_eq!(client_of(&gw, &answer), "192.0.2.7");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x30, 0x39, 0, 80,
    ]);
    v2.extend_from_slice(REQUEST);
    let answer = send(&gw, &v2);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-forwarded-for: 198.51.100.9\n"),
        "{answer}"
    );
    assert_eq!(client_of(&gw, &answer), "198.51.100.9");

    // LOCAL (the balancer's own health check): the connection's peer stands.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(REQUEST);
    let answer = send(&gw, &local);
    assert!(answer.contains("x-forwarded-for: 127.0.0.1\n"), "{answer}");
}

#[test]
fn a_connection_without_the_header_is_closed_and_said() {
    let app = DemoApp::start();
    let gw = gateway(&app);
    let answer = send(&gw, REQUEST);
    assert!(answer.is_empty(), "{answer}");
    let said = common::eventually(Duration::from_secs(5), || {
        gw.stderr()
            .contains("expects a PROXY protocol header")
            .then_some(())
    });
    assert!(said.is_some(), "{}", gw.stderr());
}
