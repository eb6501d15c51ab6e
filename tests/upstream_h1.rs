//! The gateway's own HTTP/1.1 client (`upstream/h1.rs`) as a user meets it, against
//! real upstreams on 127.0.0.1:0: chunked answers with a trailer, bodies until close,
//! interim 1xx, odd reason phrases, ambiguous or cut-short framing, `Connection: close`
//! on every answer, and request bodies that must arrive byte for byte.

mod common;

use common::upstreams::{self, read_request, Server};
use common::{get, Gateway, KeepAlive};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway with one upstream per `(name, server, route)`.
fn gateway(upstreams: &[(&str, SocketAddr, &str)]) -> Gateway {
    let config: String = upstreams
        .iter()
        .map(|(name, addr, route)| {
            format!("[[upstream]]\nname = \"{name}\"\nservers = [\"{addr}\"]\nroutes = [\"{route}\"]\n\n")
        })
        .collect();
    Gateway::start(&config)
}

/// `len` reproducible bytes that are not all alike (xorshift from `seed`).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a: a checksum the echoing upstream and the test agree on.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response as the client received it, decoded by its own framing.
#[derive(Debug)]
struct Message {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// The body ended as its framing says (last chunk, or all announced bytes).
    complete: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn fields(text: &str) -> Vec<(String, String)> {
    text.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Decode raw response bytes: chunked (with trailers), Content-Length, or until close.
fn decode(raw: &[u8]) -> Message {
    let end = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)))
        + 4;
    let head = String::from_utf8_lossy(&raw[..end - 4]).into_owned();
    let (status_line, rest_of_head) = head.split_once("\r\n").unwrap_or((&head, ""));
    let headers = fields(rest_of_head);
    let mut m = Message {
        status_line: status_line.to_owned(),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        complete: false,
    };
    let mut rest = &raw[end..];
    let chunked = m
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        while let Some(nl) = find(rest, b"\r\n") {
            let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk-size line {line:?}"));
            rest = &rest[nl + 2..];
            if size == 0 {
                if let Some(t) = find(rest, b"\r\n\r\n").filter(|_| !rest.starts_with(b"\r\n")) {
                    m.trailers = fields(&String::from_utf8_lossy(&rest[..t]));
                    m.complete = true;
                } else {
                    m.complete = rest.starts_with(b"\r\n");
                }
                break;
            }
            let Some(data) = rest.get(..size) else {
                m.body.extend_from_slice(rest);
                break;
            };
            m.body.extend_from_slice(data);
            assert_eq!(rest.get(size..size + 2), Some(&b"\r\n"[..]), "chunk end");
            rest = &rest[size + 2..];
        }
    } else {
        m.body = rest.to_vec();
        m.complete = match m.header("content-length") {
            Some(n) => m.body.len() == n.parse::<usize>().unwrap(),
            None => true,
        };
    }
    m
}

/// Read from `s` into `raw` until `enough(raw)`; false when the connection ended
/// (closed or reset) first. Panics when nothing happens for 5 s.
fn read_until(s: &mut TcpStream, raw: &mut Vec<u8>, enough: impl Fn(&[u8]) -> bool) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !enough(raw) {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
            Err(e) => panic!(
                "the response stalled ({e}) after {} bytes: {:?}",
                raw.len(),
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            ),
        }
    }
    true
}

/// Write `request` on a new connection and read until the gateway closes it.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    read_until(&mut s, &mut raw, |_| false);
    raw
}

#[test]
fn chunked_answer_with_a_big_chunk_and_a_trailer_arrives_whole() {
    let chunks = [
        pattern(10, 1),
        pattern(70 * 1024, 2),
        pattern(1, 3),
        pattern(5000, 4),
    ];
    let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
        Transfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
        .to_vec();
    for (i, c) in chunks.iter().enumerate() {
        let ext = if i == 1 { ";note=big" } else { "" };
        raw.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nx-sum: 42\r\n\r\n");
    let up = upstreams::fixed(raw, true);
    let gw = gateway(&[("up", up.addr, "/")]);
    let expected = chunks.concat();

    let r = get(gw.addr, "/file", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), expected.len(), "body length");
    assert!(r.body == expected, "the body differs from the upstream's");

    // A client that takes trailers gets the upstream's.
    let r = get(gw.addr, "/file", &[("TE", "trailers")]);
    let m = decode(&r.raw);
    assert_eq!(r.status, 200);
    assert!(m.complete, "the chunked body ends with its last chunk");
    assert!(m.body == expected, "the body differs from the upstream's");
    assert_eq!(m.header("trailer"), Some("x-sum"));
    assert_eq!(
        m.trailers,
        vec![("x-sum".to_owned(), "42".to_owned())],
        "trailers as received: {:?}",
        m.trailers
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn http_1_0_answer_without_length_is_read_until_close() {
    let body = pattern(200 * 1024, 5);
    let mut raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    raw.extend_from_slice(&body);
    // Closes the connection after the answer: that ends the body.
    let up = upstreams::fixed(raw, false);
    let gw = gateway(&[("up", up.addr, "/")]);

    let r = get(gw.addr, "/old", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.proxy_error().is_none(), "{:?}", r.header("proxy-status"));
    assert_eq!(r.body.len(), body.len(), "body length");
    assert!(r.body == body, "the body differs from the upstream's");
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    assert!(entry["error"].is_null(), "{entry}");
    assert_eq!(entry["bytes"], body.len());
}

#[test]
fn length_and_chunked_together_is_http_protocol_error() {
    let length_first = upstreams::fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        true,
    );
    let chunked_first = upstreams::fixed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        true,
    );
    let gw = gateway(&[
        ("cl", length_first.addr, "/cl"),
        ("te", chunked_first.addr, "/te"),
    ]);
    for path in ["/cl", "/te"] {
        let r = get(gw.addr, path, &[]);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(
            r.proxy_error().as_deref(),
            Some("http_protocol_error"),
            "{path}: {:?}",
            r.header("proxy-status")
        );
        let entry = gw.access_entry(r.header("x-request-id").expect("x-request-id"));
        assert_eq!(entry["status"], 502, "{entry}");
        assert_eq!(entry["error"], "http_protocol_error", "{entry}");
        assert_eq!(entry["source"], "gateway", "{entry}");
        assert_eq!(entry["attempts"], 1, "an answered request is not retried");
    }
    assert_eq!((length_first.hits(), chunked_first.hits()), (1, 1));
}

#[test]
fn interim_responses_are_skipped() {
    let up = upstreams::fixed(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 11\r\n\r\nhello world"
            .to_vec(),
        true,
    );
    let gw = gateway(&[("up", up.addr, "/")]);
    for _ in 0..2 {
        let r = common::request(gw.addr, "POST", "/upload", &[], b"some payload").unwrap();
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.raw));
        assert_eq!(r.header("x-final"), Some("yes"));
        assert_eq!(r.text(), "hello world");
        assert!(r.raw.starts_with(b"HTTP/1.1 200 "), "one response only");
    }
    assert_eq!(up.hits(), 2);
}

/// Read one request and its body as its head frames it: ("chunked" or "length", the
/// body, or why its framing was broken). None: the connection ended first.
async fn read_framed(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(&'static str, Result<Vec<u8>, String>)> {
    async fn fill(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await.ok()?;
        (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
    }
    async fn line(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(p) = find(buf, b"\r\n") {
                let l = String::from_utf8_lossy(&buf[..p]).into_owned();
                buf.drain(..p + 2);
                return Some(l);
            }
            fill(s, buf).await?;
        }
    }
    let end = loop {
        if let Some(e) = find(buf, b"\r\n\r\n") {
            break e + 4;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let head = fields(&head);
    let chunked = head
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let length = head
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>());
    match (chunked, length) {
        (true, Some(_)) => Some(("both", Err("Transfer-Encoding and Content-Length".into()))),
        (true, None) => {
            let mut body = Vec::new();
            loop {
                let l = line(s, buf).await?;
                let Ok(size) = usize::from_str_radix(l.split(';').next().unwrap().trim(), 16)
                else {
                    return Some(("chunked", Err(format!("chunk-size line {l:?}"))));
                };
                if size == 0 {
                    // Trailer fields, then an empty line.
                    while !line(s, buf).await?.is_empty() {}
                    return Some(("chunked", Ok(body)));
                }
                while buf.len() < size + 2 {
                    fill(s, buf).await?;
                }
                if &buf[size..size + 2] != b"\r\n" {
                    return Some(("chunked", Err("chunk data not followed by CRLF".into())));
                }
                body.extend(buf.drain(..size));
                buf.drain(..2);
            }
        }
        (false, length) => {
            let n = match length.unwrap_or(Ok(0)) {
                Ok(n) => n,
                Err(e) => return Some(("length", Err(format!("Content-Length: {e}")))),
            };
            while buf.len() < n {
                fill(s, buf).await?;
            }
            Some(("length", Ok(buf.drain(..n).collect())))
        }
    }
}

/// Answers each request with how its body arrived: `<framing> <length> <fnv hex>`.
fn echoing_framing() -> Server {
    upstreams::tcp_server(|mut s, hits| async move {
        let mut buf = Vec::new();
        while let Some((framing, body)) = read_framed(&mut s, &mut buf).await {
            hits.fetch_add(1, Ordering::SeqCst);
            let (status, text) = match body {
                Ok(b) => ("200 OK", format!("{framing} {} {:016x}", b.len(), fnv(&b))),
                Err(why) => ("400 Bad Request", format!("{framing}: {why}")),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

#[test]
fn request_bodies_reach_the_upstream_byte_for_byte() {
    let up = echoing_framing();
    let gw = gateway(&[("up", up.addr, "/")]);
    let payload = pattern(300_000, 6);
    let expected = |framing: &str| format!("{framing} 300000 {:016x}", fnv(&payload));

    // Chunked by the client, in pieces of odd sizes (one larger than 64 KiB).
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.addr
    )
    .into_bytes();
    let mut at = 0usize;
    for size in [1, 4096, 100_000, 7, 150_000, usize::MAX]
        .into_iter()
        .cycle()
    {
        let piece = &payload[at..payload.len().min(at.saturating_add(size))];
        if piece.is_empty() {
            break;
        }
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
        at += piece.len();
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let m = decode(&exchange(gw.addr, &req));
    assert!(m.status_line.starts_with("HTTP/1.1 200 "), "{m:?}");
    assert_eq!(String::from_utf8_lossy(&m.body), expected("chunked"));

    // With a Content-Length.
    let r = common::request(gw.addr, "POST", "/upload", &[], &payload).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), expected("length"));
    assert_eq!(up.hits(), 2);
}

#[test]
fn odd_reason_phrases_reach_the_client() {
    let fine = upstreams::fixed(
        b"HTTP/1.1 299 Fine Thanks\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        true,
    );
    let nope = upstreams::fixed(
        b"HTTP/1.1 404 Nope\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
        true,
    );
    let gw = gateway(&[("fine", fine.addr, "/fine"), ("nope", nope.addr, "/nope")]);
    let r = get(gw.addr, "/fine", &[]);
    let line = String::from_utf8_lossy(&r.raw[..find(&r.raw, b"\r\n").unwrap()]).into_owned();
    assert_eq!(line, "HTTP/1.1 299 Fine Thanks");
    assert_eq!(r.text(), "ok");
    let r = get(gw.addr, "/nope", &[]);
    let line = String::from_utf8_lossy(&r.raw[..find(&r.raw, b"\r\n").unwrap()]).into_owned();
    assert_eq!(line, "HTTP/1.1 404 Nope");
    assert!(r.proxy_error().is_none(), "the upstream's own 404");
}

#[test]
fn connection_close_answers_are_not_reused() {
    // Says `Connection: close` on every answer but leaves the connection open: only
    // the gateway's reading of the header keeps it from sending another request.
    let conns = Arc::new(AtomicUsize::new(0));
    let reused = Arc::new(AtomicUsize::new(0));
    let up = {
        let (conns, reused) = (conns.clone(), reused.clone());
        upstreams::tcp_server(move |mut s, hits| {
            let (conns, reused) = (conns.clone(), reused.clone());
            async move {
                conns.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut answered = 0;
                while read_request(&mut s, &mut buf).await.is_some() {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if answered > 0 {
                        reused.fetch_add(1, Ordering::SeqCst);
                    }
                    answered += 1;
                    let answer =
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let gw = gateway(&[("up", up.addr, "/")]);
    let requests = 30;
    let mut client = KeepAlive::new(gw.addr);
    let mut ids = Vec::new();
    for i in 0..requests {
        let (method, body): (&str, &[u8]) = if i % 3 == 2 {
            ("POST", b"{\"n\":1}")
        } else {
            ("GET", b"")
        };
        let (status, headers, body) = client
            .send(method, &format!("/r{i}"), body)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            (status, header("proxy-status")),
            (200, None),
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, b"ok");
        assert_eq!(
            header("connection"),
            None,
            "the upstream's Connection: close is hop-by-hop: the client's connection stays"
        );
        ids.push(header("x-request-id").expect("x-request-id"));
    }
    assert_eq!(
        reused.load(Ordering::SeqCst),
        0,
        "requests sent on a connection after its Connection: close answer"
    );
    assert_eq!(up.hits(), requests);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        requests,
        "one upstream connection per request"
    );
    for id in &ids {
        let entry = gw.access_entry(id);
        assert_eq!(entry["status"], 200, "{entry}");
        assert!(entry["error"].is_null(), "{entry}");
        assert_eq!(entry["attempts"], 1, "{entry}");
    }
}

#[test]
fn body_cut_short_ends_the_client_response_and_is_logged() {
    let sent = pattern(1000, 7);
    let mut head_and_part = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
        Content-Length: 100000\r\n\r\n"
        .to_vec();
    head_and_part.extend_from_slice(&sent);
    // Sends 1000 of the 100000 bytes, then closes at once.
    let closing = upstreams::fixed(head_and_part.clone(), false);
    // Sends 1000 bytes, then closes when the test says so (once the client has them).
    let go = Arc::new(tokio::sync::Notify::new());
    let stalling = {
        let (go, head_and_part) = (go.clone(), Arc::new(head_and_part));
        upstreams::tcp_server(move |mut s, hits| {
            let (go, head_and_part) = (go.clone(), head_and_part.clone());
            async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_some() {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(&head_and_part).await.is_ok() {
                        go.notified().await;
                    }
                }
            }
        })
    };
    let gw = gateway(&[
        ("closing", closing.addr, "/closing"),
        ("stalling", stalling.addr, "/stalling"),
    ]);
    // Without `Connection: close`: only the gateway ending the connection ends these.
    let request = |path: &str, id: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nX-Request-Id: {id}\r\n\r\n",
            gw.addr
        )
    };

    // The client has the head and the 1000 bytes when the upstream goes away.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(request("/stalling", "h1-cut-short-stalling").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let got_part = read_until(&mut s, &mut raw, |raw| {
        find(raw, b"\r\n\r\n").is_some_and(|end| raw.len() >= end + 4 + sent.len())
    });
    assert!(got_part, "{:?}", String::from_utf8_lossy(&raw));
    go.notify_one();
    read_until(&mut s, &mut raw, |_| false);
    let m = decode(&raw);
    assert!(
        m.status_line.starts_with("HTTP/1.1 200 "),
        "{}",
        m.status_line
    );
    assert_eq!(m.header("content-length"), Some("100000"));
    assert!(!m.complete, "the response ends early");
    assert!(m.body == sent, "{} bytes, not the 1000 sent", m.body.len());

    // The upstream closes right after the 1000 bytes: the client still gets the head
    // and every byte the upstream sent, then the connection ends (not an empty reply,
    // even when the close is read before the head was flushed).
    for _ in 0..5 {
        let raw = exchange(
            gw.addr,
            request("/closing", "h1-cut-short-closing").as_bytes(),
        );
        let m = decode(&raw);
        assert!(
            m.status_line.starts_with("HTTP/1.1 200 "),
            "{:?}",
            m.status_line
        );
        assert!(!m.complete, "the response ends early");
        assert!(m.body == sent, "{} bytes, not the 1000 sent", m.body.len());
    }
    for id in ["h1-cut-short-stalling", "h1-cut-short-closing"] {
        let entry = gw.access_entry(id);
        assert_eq!(entry["status"], 200, "{entry}");
        assert_eq!(entry["error"], "http_response_incomplete", "{entry}");
        assert_eq!(entry["bytes"], sent.len(), "{entry}");
    }
    assert_eq!((stalling.hits(), closing.hits()), (1, 5));
}

/// A WebSocket-like upstream: answers an upgrade request with `101` and a first
/// frame, then echoes what it reads, uppercased. Anything else gets a plain 200 that
/// says whether the request carried `Upgrade`.
fn switching() -> Server {
    upstreams::tcp_server(|mut s, hits| async move {
        let mut buf = Vec::new();
        let Some((head, _)) = read_request(&mut s, &mut buf).await else {
            return;
        };
        hits.fetch_add(1, Ordering::SeqCst);
        let lower = head.to_ascii_lowercase();
        let asked = lower.contains("\r\nupgrade: websocket\r\n")
            && lower.contains("\r\nconnection: upgrade\r\n");
        if !head.starts_with("GET /ws ") {
            let body = format!("upgrade asked: {asked}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
            return;
        }
        if !asked {
            let _ = s
                .write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        let reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nwelcome";
        if s.write_all(reply).await.is_err() {
            return;
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 || s.write_all(&chunk[..n].to_ascii_uppercase()).await.is_err() {
                return;
            }
        }
    })
}

const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn websocket_upgrades_are_relayed_both_ways() {
    let up = switching();
    let gw = gateway(&[("up", up.addr, "/")]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(WS_HANDSHAKE).unwrap();
    let mut raw = Vec::new();
    assert!(read_until(&mut s, &mut raw, |r| find(r, b"\r\n\r\n").is_some()));
    let end = find(&raw, b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-accept: "), "{head}");
    let request_id = fields(&head)
        .into_iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v)
        .expect("x-request-id on the 101");
    // What the peer sent right after its 101 arrives first, then the echo.
    let mut rest = raw[end..].to_vec();
    assert!(read_until(&mut s, &mut rest, |r| r.len() >= 7));
    assert_eq!(&rest[..], b"welcome");
    for word in [&b"ping"[..], b"second message", &pattern(100_000, 3)] {
        s.write_all(word).unwrap();
        let mut echo = Vec::new();
        assert!(read_until(&mut s, &mut echo, |r| r.len() >= word.len()));
        assert_eq!(echo, word.to_ascii_uppercase());
    }
    // The tunnel does not hold the peer: ordinary requests keep flowing beside it.
    let r = get(gw.addr, "/plain", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upgrade asked: false");
    // The session's access line is written when the tunnel closes, with what went
    // through it.
    drop(s);
    let entry = gw.access_entry(&request_id);
    assert_eq!(entry["status"], 101, "{entry}");
    assert_eq!(entry["source"], "upstream", "{entry}");
    let down = 7 + 4 + 14 + 100_000;
    assert_eq!(entry["bytes"], down, "{entry}");
    let details = entry["details"].as_str().unwrap_or("");
    assert!(
        details.contains(&format!(
            "{} bytes to the peer, {down} to the client",
            down - 7
        )),
        "{entry}"
    );
}

#[test]
fn an_upgrade_the_peer_declines_is_an_ordinary_answer() {
    let up = switching();
    let gw = gateway(&[("up", up.addr, "/")]);
    // Upgrade asked on a path where the peer does not switch: its 200 passes as is.
    let r = common::request(
        gw.addr,
        "GET",
        "/other",
        &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upgrade asked: true");
    // h2c is the gateway's own business: never relayed.
    let r = common::request(
        gw.addr,
        "GET",
        "/other",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upgrade asked: false");
}

#[test]
fn a_101_nobody_asked_for_is_a_protocol_error() {
    let up = upstreams::fixed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec(),
        false,
    );
    let gw = gateway(&[("up", up.addr, "/")]);
    let r = get(gw.addr, "/ws", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_protocol_error"));
}

/// Answers `413` as soon as it has a request head, without reading the body, then
/// closes (the kernel resets the connection over the unread body).
fn refusing_uploads() -> Server {
    upstreams::tcp_server(|mut s, hits| async move {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while find(&head, b"\r\n\r\n").is_none() {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let _ = s
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
            .await;
    })
}

/// Send `head` and `body` while reading the answer, as a real client does: the
/// answer may come (and the connection end) before the body is all sent.
fn upload(addr: SocketAddr, head: &[u8], body: Vec<u8>) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    read_until(&mut s, &mut raw, |r| {
        find(r, b"\r\n\r\n").is_some_and(|end| r.len() >= end + 4 + 9)
    });
    drop(s);
    sending.join().unwrap();
    raw
}

#[test]
fn an_answer_before_the_whole_upload_is_the_answer() {
    let up = refusing_uploads();
    let gw = gateway(&[("up", up.addr, "/")]);
    let body = pattern(4 * 1024 * 1024, 9);
    let framings = [
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: early-length\r\nContent-Length: {}\r\n\r\n", body.len()),
        "POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: early-chunked\r\nTransfer-Encoding: chunked\r\n\r\n400000\r\n".to_owned(),
    ];
    for head in framings {
        let raw = upload(gw.addr, head.as_bytes(), body.clone());
        let m = decode(&raw);
        assert!(
            m.status_line.starts_with("HTTP/1.1 413 "),
            "{:?} {:?}",
            m.status_line,
            m.header("proxy-status")
        );
        assert_eq!(m.body, b"too large");
        assert_eq!(m.header("proxy-status"), None, "the upstream's own answer");
    }
    for id in ["early-length", "early-chunked"] {
        let entry = gw.access_entry(id);
        assert_eq!(entry["status"], 413, "{entry}");
        assert_eq!(entry["source"], "upstream", "{entry}");
    }
}

#[test]
fn a_websocket_open_at_shutdown_still_gets_its_access_line() {
    let up = switching();
    let mut gw = gateway(&[("up", up.addr, "/")]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(WS_HANDSHAKE).unwrap();
    let mut raw = Vec::new();
    assert!(read_until(&mut s, &mut raw, |r| find(r, b"welcome").is_some()));
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let request_id = fields(&head)
        .into_iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v)
        .expect("x-request-id on the 101");
    // The gateway stops while the session is open.
    assert!(gw.terminate().success());
    let entry = gw.access_entry(&request_id);
    assert_eq!(entry["status"], 101, "{entry}");
    assert!(
        entry["details"]
            .as_str()
            .unwrap_or("")
            .contains("gateway stopped"),
        "{entry}"
    );
}
