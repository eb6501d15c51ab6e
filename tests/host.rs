//! Route and forward agree on the site: the authority a request is routed by is the
//! Host the app sees (RFC 9112 §3.2.2), and requests whose Host is missing, doubled
//! or contradicts h2's `:authority` are refused with 400 before reaching any app.

mod common;

use common::upstreams::DemoApp;
use common::Gateway;
use std::time::Duration;

/// A demo app (its `/echo` shows the headers it got) behind a route for `a.example`
/// only, and a catch-all upstream that must never be reached by these requests.
fn site_gateway(app: &DemoApp) -> Gateway {
    Gateway::start(&format!(
        "[[upstream]]\nname = \"a\"\nservers = [\"{}\"]\nroutes = [\"/\"]\nhost = \"a.example\"\n",
        app.addr
    ))
}

/// One raw request on a fresh connection; the whole answer as text.
fn raw(gw: &Gateway, request: &str) -> String {
    common::exchange_raw(gw.addr, request.as_bytes())
}

/// The header lines the app echoed, lowercased names.
fn echoed(answer: &str, name: &str) -> Vec<String> {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
        .collect()
}

fn assert_refused(answer: &str, what: &str) {
    assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("proxy-status: healgate; error=http_request_error"),
        "{what}: {answer}"
    );
}

#[test]
fn an_absolute_target_replaces_host_towards_the_app() {
    let app = DemoApp::start();
    let gw = site_gateway(&app);
    let answer = raw(
        &gw,
        "GET http://a.example/echo HTTP/1.1\r\nHost: b.internal\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(echoed(&answer, "host"), ["a.example"], "{answer}");
    assert_eq!(
        echoed(&answer, "x-forwarded-host"),
        ["a.example"],
        "{answer}"
    );
}

#[test]
fn host_missing_or_doubled_is_400_and_reaches_no_app() {
    let app = DemoApp::start();
    let gw = site_gateway(&app);
    let two = raw(
        &gw,
        "GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.internal\r\nConnection: close\r\n\r\n",
    );
    assert_refused(&two, "two Host headers");
    let none = raw(&gw, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_refused(&none, "no Host");
    // HTTP/1.0 may omit it; routed without a host, so no route here.
    let old = raw(&gw, "GET /echo HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.0 404"), "{old}");
    // A later request on a keep-alive connection gets the same checks.
    let later = raw(
        &gw,
        "GET /echo HTTP/1.1\r\nHost: a.example\r\n\r\nGET /echo HTTP/1.1\r\nHost: a.example\r\nHost: c\r\nConnection: close\r\n\r\n",
    );
    assert!(later.starts_with("HTTP/1.1 200"), "{later}");
    let second = &later[later[1..].find("HTTP/1.1 ").expect("a second answer") + 1..];
    assert_refused(second, "two Host headers on a later request");
    // The log is written off the request path: wait for the three lines.
    let refused = common::eventually(Duration::from_secs(5), || {
        let log = gw.jsonl("access.jsonl");
        let refused: Vec<_> = log
            .into_iter()
            .filter(|e| e["status"] == 400 && e["error"] == "http_request_error")
            .collect();
        (refused.len() == 3).then_some(refused)
    })
    .expect("three refusals in the access log");
    assert!(refused.iter().all(|e| e["source"] == "gateway"));
}

#[test]
fn h2_host_that_contradicts_authority_is_400() {
    let app = DemoApp::start();
    let gw = site_gateway(&app);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |host: Option<&'static str>| {
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tcp),
                )
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = http::Request::get("http://a.example/echo");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let res = send
                .send_request(req.body(http_body_util::Empty::new()).unwrap())
                .await
                .unwrap();
            let status = res.status().as_u16();
            let ps = res
                .headers()
                .get("proxy-status")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, ps, String::from_utf8_lossy(&body).into_owned())
        })
    };
    let (status, ps, body) = send(Some("b.internal"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(ps.as_deref(), Some("healgate; error=http_request_error"));
    let (status, _, body) = send(None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("host: a.example"), "{body}");
    let (status, _, body) = send(Some("A.example"));
    assert_eq!(status, 200, "the same authority in another case: {body}");
}
