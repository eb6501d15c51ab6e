//! HTTP/2 over TLS to upstreams: real TLS servers made here (rustls, hyper's server,
//! a certificate from a CA the test makes with rcgen, trusted by the gateway through
//! the upstream's `tls = { ca, server_name }`), each offering ALPN `h2`, only
//! `http/1.1`, or nothing. `protocol = "h2"` reaches the server as HTTP/2 (status,
//! body, trailers pass; one connection carries every request); `protocol = "auto"`
//! picks HTTP/2 when the server offers it and HTTP/1.1 when it offers only that, and
//! keeps to it (health checks too); a certificate the gateway does not trust is 502
//! `tls_certificate_error`; an `h2` upstream that does not agree to HTTP/2 is a 502
//! saying so; a response header section over `limits.response_header` is 502
//! `http_response_header_section_size` on h2 as on HTTP/1.1.

mod common;

use bytes::Bytes;
use common::{eventually, get, Gateway, TempDir};
use http::{Request, Response, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The name in the upstream's certificate (the gateway connects to 127.0.0.1 and
/// checks this name, `tls.server_name`).
const NAME: &str = "upstream.test";

/// A CA, and a certificate for [`NAME`] it signed (PEM, and the key for rustls).
struct Pki {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "healgate upstream test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// A response body given as frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

fn data(s: &str) -> Frame<Bytes> {
    Frame::data(Bytes::from(s.to_owned()))
}

/// What the TLS upstream saw.
#[derive(Default)]
struct Seen {
    /// TLS connections accepted (handshake done).
    conns: AtomicUsize,
    /// Each request: its HTTP version and path.
    requests: Mutex<Vec<(Version, String)>>,
}

impl Seen {
    fn versions(&self, path: &str) -> Vec<Version> {
        let r = self.requests.lock().unwrap();
        r.iter()
            .filter(|(_, p)| p == path)
            .map(|(v, _)| *v)
            .collect()
    }
}

/// A TLS upstream (hyper's server, HTTP/2 or HTTP/1.1 as ALPN chose) offering `alpn`
/// (empty: no ALPN, and then either, by what the client speaks). It stops when dropped (its runtime with it).
struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
    _rt: tokio::runtime::Runtime,
}

impl TlsUpstream {
    fn start(pki: &Pki, alpn: &[&[u8]]) -> TlsUpstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = s.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    seen.conns.fetch_add(1, Ordering::SeqCst);
                    let service = hyper::service::service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&seen, req).await) }
                    });
                    // The protocol ALPN chose, and only that (as nginx does); auto
                    // (by the client's first bytes) without ALPN.
                    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    let b = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let b = match alpn.as_deref() {
                        Some(b"h2") => b.http2_only(),
                        Some(_) => b.http1_only(),
                        None => b,
                    };
                    let _ = b
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            seen,
            _rt: rt,
        }
    }
}

/// The upstream's routes: `/status/418`, `/trailers` (a body, then trailers),
/// `/bigheader?kb=N`, `.../echo` (the body back), and anything else: 200 saying the
/// HTTP version it came over.
async fn answer(seen: &Seen, req: Request<Incoming>) -> Response<Frames> {
    let version = req.version();
    let path = req.uri().path().to_owned();
    seen.requests.lock().unwrap().push((version, path.clone()));
    let plain = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Frames(VecDeque::from([Frame::data(Bytes::from(body))])))
            .unwrap()
    };
    match path.as_str() {
        "/status/418" => plain(418, "a teapot, over TLS".to_owned()),
        "/trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", "c0ffee".parse().unwrap());
            Response::builder()
                .header("trailer", "x-checksum")
                .body(Frames(VecDeque::from([
                    data("part one, "),
                    data("part two"),
                    Frame::trailers(trailers),
                ])))
                .unwrap()
        }
        "/bigheader" => {
            let kb: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("kb="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Response::builder()
                .header("x-big", "a".repeat(kb * 1024))
                .body(Frames(VecDeque::from([data("big")])))
                .unwrap()
        }
        p if p.ends_with("/echo") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            plain(200, format!("echo:{}", String::from_utf8_lossy(&body)))
        }
        _ => plain(200, format!("hello over {version:?}")),
    }
}

/// A gateway in `dir` (where `ca.pem` is written) with `upstreams` (TOML) and `extra`.
fn gateway(pki: &Pki, upstreams: &str, extra: &str) -> Gateway {
    let dir = TempDir::new("h2tls");
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    Gateway::start_in(dir, &format!("{upstreams}\n{extra}"))
}

/// One `[[upstream]]` for `server` on `route` with `protocol`, trusting the test CA.
fn upstream(name: &str, route: &str, server: &TlsUpstream, protocol: &str, more: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nservers = [\"https://127.0.0.1:{}\"]\nroutes = [\"{route}\"]\n\
         protocol = \"{protocol}\"\ntls = {{ ca = \"ca.pem\", server_name = \"{NAME}\" }}\n{more}\n",
        server.addr.port()
    )
}

#[test]
fn h2_over_tls_reaches_the_upstream_as_http2_and_status_body_and_trailers_pass() {
    let pki = pki();
    let server = TlsUpstream::start(&pki, &[b"h2"]);
    let gw = gateway(&pki, &upstream("api", "/", &server, "h2", ""), "");

    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello over HTTP/2.0");
    let r = get(gw.addr, "/status/418", &[]);
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "a teapot, over TLS");
    let r = common::request(gw.addr, "POST", "/echo", &[], b"sent up over h2").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "echo:sent up over h2");

    // Trailers: an HTTP/1.1 client that takes them gets them after the last chunk.
    let raw = common::exchange_raw(
        gw.addr,
        b"GET /trailers HTTP/1.1\r\nHost: api.test\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    let lower = raw.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{raw:?}");
    assert!(
        raw.contains("part one, ") && raw.contains("part two"),
        "{raw:?}"
    );
    let tail = &lower[lower.rfind("\r\n0\r\n").expect("a last chunk")..];
    assert!(tail.contains("x-checksum: c0ffee"), "trailers: {tail:?}");

    // The upstream saw HTTP/2 every time, all on one TLS connection.
    let seen = server.seen.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.iter().all(|(v, _)| *v == Version::HTTP_2), "{seen:?}");
    assert_eq!(
        server.seen.conns.load(Ordering::SeqCst),
        1,
        "one shared connection"
    );
}

#[test]
fn auto_takes_h2_when_offered_and_http1_when_only_that_is_offered_and_keeps_to_it() {
    let pki = pki();
    let both = TlsUpstream::start(&pki, &[b"h2", b"http/1.1"]);
    let h1_only = TlsUpstream::start(&pki, &[b"http/1.1"]);
    let cfg = upstream("both", "/both/", &both, "auto", "")
        + &upstream("old", "/old/", &h1_only, "auto", "");
    let gw = gateway(&pki, &cfg, "");

    for i in 0..3 {
        let r = get(gw.addr, "/both/", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "hello over HTTP/2.0"));
        let r = get(gw.addr, "/old/", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "hello over HTTP/1.1"));
        let body = format!("upload {i}");
        let r = common::request(gw.addr, "POST", "/both/echo", &[], body.as_bytes()).unwrap();
        assert_eq!(r.text(), format!("echo:{body}"));
        let r = common::request(gw.addr, "POST", "/old/echo", &[], body.as_bytes()).unwrap();
        assert_eq!(r.text(), format!("echo:{body}"));
    }
    assert_eq!(both.seen.versions("/both/"), vec![Version::HTTP_2; 3]);
    assert_eq!(h1_only.seen.versions("/old/"), vec![Version::HTTP_11; 3]);
    // Kept to: one multiplexed connection for h2, reused keep-alive connections for
    // HTTP/1.1 (not a new connection and ALPN for each of the 6 requests; a POST
    // takes only a connection idle under 0.5 s, so a slow box may open a second).
    assert_eq!(both.seen.conns.load(Ordering::SeqCst), 1);
    let conns = h1_only.seen.conns.load(Ordering::SeqCst);
    assert!(
        conns <= 2,
        "{conns} connections for 6 requests over HTTP/1.1"
    );
}

#[test]
fn auto_health_checks_speak_what_alpn_chose() {
    let pki = pki();
    let both = TlsUpstream::start(&pki, &[b"h2", b"http/1.1"]);
    let h1_only = TlsUpstream::start(&pki, &[b"http/1.1"]);
    let health = "health = { path = \"/healthz\", interval = \"200ms\", unhealthy_after = 1 }";
    let cfg = upstream("both", "/both/", &both, "auto", health)
        + &upstream("old", "/old/", &h1_only, "auto", health);
    let gw = gateway(&pki, &cfg, "");
    let checked = eventually(Duration::from_secs(10), || {
        (both.seen.versions("/healthz").len() >= 3 && h1_only.seen.versions("/healthz").len() >= 3)
            .then_some(())
    });
    assert!(checked.is_some(), "health checks did not run");
    // Both stay in rotation.
    for (path, version) in [("/both/", "HTTP/2.0"), ("/old/", "HTTP/1.1")] {
        let r = get(gw.addr, path, &[]);
        assert_eq!(r.status, 200, "{path}: {:?} {}", r.proxy_error(), r.text());
        assert_eq!(r.text(), format!("hello over {version}"));
    }
    let v = both.seen.versions("/healthz");
    assert!(v.iter().all(|v| *v == Version::HTTP_2), "{v:?}");
    let v = h1_only.seen.versions("/healthz");
    assert!(v.iter().all(|v| *v == Version::HTTP_11), "{v:?}");
}

#[test]
fn a_certificate_the_gateway_does_not_trust_is_502_tls_certificate_error() {
    let pki = pki();
    let server = TlsUpstream::start(&pki, &[b"h2"]);
    // Another CA: the server's certificate chains to nothing the gateway trusts.
    let other = self::pki();
    for protocol in ["h2", "auto"] {
        let gw = gateway(&other, &upstream("api", "/", &server, protocol, ""), "");
        let r = get(gw.addr, "/", &[]);
        assert_eq!(r.status, 502, "{protocol}: {}", r.text());
        assert_eq!(
            r.proxy_error().as_deref(),
            Some("tls_certificate_error"),
            "{protocol}"
        );
        let id = r.header("x-request-id").unwrap().to_owned();
        let line = gw.access_entry(&id);
        assert_eq!(line["error"], "tls_certificate_error", "{line}");
        assert!(
            line["details"]
                .as_str()
                .is_some_and(|d| d.contains("certificate")),
            "{line}"
        );
    }
    assert!(server.seen.requests.lock().unwrap().is_empty());
}

#[test]
fn an_h2_upstream_that_does_not_agree_to_http2_is_a_502_saying_so() {
    let pki = pki();
    // One that offers only http/1.1 (it refuses the handshake: no common protocol),
    // one that offers no ALPN at all (the handshake completes without h2).
    for (alpn, what) in [
        (&[&b"http/1.1"[..]][..], "http/1.1 only"),
        (&[][..], "no ALPN"),
    ] {
        let server = TlsUpstream::start(&pki, alpn);
        let gw = gateway(&pki, &upstream("api", "/", &server, "h2", ""), "");
        let r = get(gw.addr, "/", &[]);
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        assert_eq!(
            r.proxy_error().as_deref(),
            Some("tls_protocol_error"),
            "{what}"
        );
        let id = r.header("x-request-id").unwrap().to_owned();
        let line = gw.access_entry(&id);
        let details = line["details"].as_str().unwrap_or("").to_owned();
        assert!(
            details.contains("did not agree to HTTP/2") && details.contains("protocol = \"h2\""),
            "{what}: {line}"
        );
        let logged = eventually(Duration::from_secs(5), || {
            gw.stderr()
                .lines()
                .find(|l| l.contains("did not agree to HTTP/2"))
                .map(str::to_owned)
        });
        assert!(logged.is_some(), "{what}: no log line in {}", gw.stderr());
        assert!(server.seen.requests.lock().unwrap().is_empty(), "{what}");
    }
}

#[test]
fn a_response_header_section_over_the_limit_is_502_header_section_size_on_h2() {
    let pki = pki();
    let server = TlsUpstream::start(&pki, &[b"h2"]);
    let gw = gateway(
        &pki,
        &upstream("api", "/", &server, "h2", ""),
        "[gateway.limits]\nresponse_header = \"8KiB\"\n",
    );
    // Under the limit: passes.
    let r = get(gw.addr, "/bigheader?kb=4", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-big").map(str::len), Some(4096));
    // Over it, a little and a lot: the same answer as on HTTP/1.1.
    for kb in [12, 40, 200, 3072] {
        let r = get(gw.addr, &format!("/bigheader?kb={kb}"), &[]);
        assert_eq!(r.status, 502, "{kb} KiB: {}", r.text());
        assert_eq!(
            r.proxy_error().as_deref(),
            Some("http_response_header_section_size"),
            "{kb} KiB"
        );
        let id = r.header("x-request-id").unwrap().to_owned();
        let line = gw.access_entry(&id);
        assert!(
            line["details"]
                .as_str()
                .is_some_and(|d| d.contains("limits.response_header")),
            "{kb} KiB: {line}"
        );
    }
    // The connection (or a new one) still serves.
    let r = get(gw.addr, "/", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "hello over HTTP/2.0"));
}
