//! `[gateway.compression]` end to end: a real upstream's 64 KiB text answer reaches the
//! client gzip-, brotli- or zstd-encoded as its `Accept-Encoding` (q-values included)
//! asks, and decodes to the original bytes with independent decoders (Python's zlib
//! and the PyPI `brotli` and `zstandard` packages, installed by scripts/test); an
//! image, an answer the upstream encoded itself and a range pass unchanged; `Vary`
//! says the answer depends on `Accept-Encoding`; trailers follow the encoded body; a streaming upstream's first bytes
//! reach the client, decodable, before it has finished.

mod common;

use common::upstreams::{read_request, tcp_server, Server};
use common::{get, Gateway, Resp};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// 64 KiB of text that compresses but is not one repeated line.
fn text() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 64 * 1024 {
        out.extend_from_slice(
            format!(
                "{i:05} the gateway compresses what the upstream sends, {} times over\n",
                i.wrapping_mul(2654435761) % 997
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(64 * 1024);
    out
}

/// The first part a streaming upstream sends before it waits.
const FIRST: usize = 6000;

/// The upstream: `/text` (64 KiB text/plain with a strong ETag), `/png`, `/trailers`
/// (chunked, with a trailer), `/pre` (its
/// own `Content-Encoding: gzip`), `/range` (206 to a Range request), `/stream`
/// (chunked: [`FIRST`] bytes, then the rest once `go` is notified).
fn upstream(go: Arc<Notify>) -> Server {
    tcp_server(move |mut s, hits| {
        let go = go.clone();
        async move {
            let mut buf = Vec::new();
            while let Some((head, _)) = read_request(&mut s, &mut buf).await {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let body = text();
                let fixed = |ct: &str, extra: &str, body: &[u8]| {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                };
                let raw = match path.as_str() {
                    "/text" => fixed(
                        "text/plain; charset=utf-8",
                        "ETag: \"v1\"\r\nAccept-Ranges: bytes\r\n",
                        &body,
                    ),
                    "/png" => fixed("image/png", "", &body),
                    "/trailers" => {
                        let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                                      Transfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
                            .to_vec();
                        for part in body.chunks(20_000) {
                            r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                            r.extend_from_slice(part);
                            r.extend_from_slice(b"\r\n");
                        }
                        r.extend_from_slice(b"0\r\nx-sum: 42\r\n\r\n");
                        r
                    }
                    "/pre" => fixed("text/plain", "Content-Encoding: gzip\r\n", &body),
                    "/range" => {
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\n\
                             Content-Range: bytes 0-1999/{}\r\nContent-Length: 2000\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body[..2000]);
                        r
                    }
                    "/stream" => {
                        let mut first = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                                          Transfer-Encoding: chunked\r\n\r\n"
                            .to_vec();
                        first.extend_from_slice(format!("{FIRST:x}\r\n").as_bytes());
                        first.extend_from_slice(&body[..FIRST]);
                        first.extend_from_slice(b"\r\n");
                        if s.write_all(&first).await.is_err() {
                            return;
                        }
                        go.notified().await;
                        let rest = &body[FIRST..];
                        let mut r = format!("{:x}\r\n", rest.len()).into_bytes();
                        r.extend_from_slice(rest);
                        r.extend_from_slice(b"\r\n0\r\n\r\n");
                        r
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                if s.write_all(&raw).await.is_err() {
                    return;
                }
            }
        }
    })
}

fn gateway(up: &Server) -> Gateway {
    Gateway::start(&format!(
        "[gateway.compression]\ntypes = [\"text/*\", \"application/json\"]\nmin_size = \"1KiB\"\n\n\
         [[upstream]]\nname = \"origin\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ))
}

/// Decode `data` (in `coding`) with Python's decoders; `partial`: a prefix of a stream
/// (what it decodes to so far). Err: the decoder refused it.
fn decode(coding: &str, data: &[u8], partial: bool) -> Result<Vec<u8>, String> {
    const PY: &str = r#"
import sys, zlib
coding, partial = sys.argv[1], sys.argv[2] == "1"
data = sys.stdin.buffer.read()
if coding == "gzip":
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data)
    done = d.eof
elif coding == "br":
    import brotli
    d = brotli.Decompressor()
    out = d.process(data)
    done = d.is_finished()
elif coding == "zstd":
    import zstandard
    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(data)
    done = d.eof
else:
    sys.exit("unknown coding " + coding)
if not partial and not done:
    sys.exit(coding + " stream not finished")
sys.stdout.buffer.write(out)
"#;
    let mut child = Command::new("python3")
        .args(["-c", PY, coding, if partial { "1" } else { "0" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn get_with(gw: &Gateway, path: &str, ae: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let mut headers = extra.to_vec();
    if let Some(ae) = ae {
        headers.push(("Accept-Encoding", ae));
    }
    get(gw.addr, path, &headers)
}

#[test]
fn text_is_compressed_as_the_client_asks_and_decodes_to_the_original() {
    let up = upstream(Arc::new(Notify::new()));
    let gw = gateway(&up);
    let original = text();
    for (ae, coding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        // q-values pick; on a tie the configured order (zstd, br, gzip) does.
        ("gzip;q=0.5, br;q=0.9, zstd;q=0.1", "br"),
        ("br;q=0, zstd;q=0, gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("*", "zstd"),
        ("GZip;Q=0.8, *;q=0.2", "gzip"),
    ] {
        let r = get_with(&gw, "/text", Some(ae), &[]);
        assert_eq!(r.status, 200, "{ae}");
        assert_eq!(r.header("content-encoding"), Some(coding), "{ae}");
        assert_eq!(r.header("content-length"), None, "{ae}");
        assert_eq!(r.header("accept-ranges"), None, "{ae}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
        assert_eq!(r.header("etag"), Some("W/\"v1\""), "{ae}");
        assert!(
            r.body.len() < original.len() / 3,
            "{ae}: {} bytes encoded",
            r.body.len()
        );
        let decoded = decode(coding, &r.body, false).unwrap_or_else(|e| panic!("{ae}: {e}"));
        assert!(decoded == original, "{ae}: decodes to other bytes");
        // The access line names the coding and counts the bytes the client got.
        let id = r.header("x-request-id").unwrap();
        let line = gw.access_entry(id);
        assert_eq!(line["coding"], coding, "{line}");
        assert_eq!(line["bytes"], r.body.len() as u64, "{line}");
    }

    // Not asked (no header, identity, every coding refused): the upstream's bytes, and
    // still Vary for caches.
    for ae in [
        None,
        Some("identity"),
        Some("gzip;q=0, *;q=0"),
        Some("deflate"),
    ] {
        let r = get_with(&gw, "/text", ae, &[]);
        assert_eq!(r.header("content-encoding"), None, "{ae:?}");
        assert_eq!(r.header("content-length"), Some("65536"), "{ae:?}");
        assert_eq!(r.header("etag"), Some("\"v1\""), "{ae:?}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae:?}");
        assert!(r.body == original, "{ae:?}");
    }

    // Trailers come after the encoder's last bytes.
    let r = get_with(&gw, "/trailers", Some("br"), &[("TE", "trailers")]);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert!(
        r.raw.ends_with(b"\r\n0\r\nx-sum: 42\r\n\r\n"),
        "no trailer at the end: {:?}",
        String::from_utf8_lossy(&r.raw[r.raw.len().saturating_sub(40)..])
    );
    assert!(decode("br", &r.body, false).unwrap() == original);

    // HEAD: nothing to encode.
    let r = common::request(
        gw.addr,
        "HEAD",
        "/text",
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .unwrap();
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("65536"));
}

#[test]
fn images_encoded_answers_and_ranges_pass_unchanged() {
    let up = upstream(Arc::new(Notify::new()));
    let gw = gateway(&up);
    let original = text();
    let all = "gzip, br, zstd";

    let png = get_with(&gw, "/png", Some(all), &[]);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(png.header("content-encoding"), None);
    assert_eq!(png.header("vary"), None);
    assert!(png.body == original);

    // The upstream's own encoding is never encoded again.
    let pre = get_with(&gw, "/pre", Some(all), &[]);
    assert_eq!(pre.header("content-encoding"), Some("gzip"));
    assert_eq!(pre.header("content-length"), Some("65536"));
    assert!(pre.body == original);

    // A Range request: the upstream's 206 as it is.
    let range = get_with(&gw, "/range", Some(all), &[("Range", "bytes=0-1999")]);
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(range.header("content-range"), Some("bytes 0-1999/65536"));
    assert!(range.body[..] == original[..2000]);

    // A Range request for a text the upstream answers whole is not compressed either.
    let whole = get_with(&gw, "/text", Some(all), &[("Range", "bytes=0-1999")]);
    assert_eq!(whole.header("content-encoding"), None);
    assert!(whole.body == original);
}

/// What the body of a chunked response read so far holds: its complete chunks.
fn chunks_so_far(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let Ok(size) = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap_or("x"), 16)
        else {
            return out;
        };
        if size == 0 || b.len() < nl + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
}

#[test]
fn a_streaming_upstreams_first_bytes_arrive_compressed_before_it_finishes() {
    let go = Arc::new(Notify::new());
    let up = upstream(go.clone());
    let gw = gateway(&up);
    let original = text();
    for coding in ["gzip", "br", "zstd"] {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            s,
            "GET /stream HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {coding}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // Until the upstream's first part decodes from what arrived, while the upstream
        // still waits for `go`.
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut first = None;
        while Instant::now() < deadline {
            let mut buf = [0u8; 16384];
            match s.read(&mut buf) {
                Ok(0) => panic!("{coding}: closed before the upstream finished"),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{coding}: {e}"),
            }
            let got = &raw;
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{coding}: {head}"
            );
            let body = chunks_so_far(&got[end + 4..]);
            if body.is_empty() {
                continue;
            }
            if let Ok(d) = decode(coding, &body, true) {
                if d.len() >= FIRST {
                    first = Some(d);
                    break;
                }
            }
        }
        let first = first.unwrap_or_else(|| {
            panic!(
                "{coding}: the first {FIRST} bytes did not arrive decodable while the upstream waited"
            )
        });
        assert!(
            first[..] == original[..FIRST],
            "{coding}: first part differs"
        );
        // The upstream goes on; the whole body decodes to the original.
        go.notify_one();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        raw.extend_from_slice(&rest);
        let r = common::parse_response(&raw, false).expect("a whole response");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let all = decode(coding, &r.body, false).unwrap_or_else(|e| panic!("{coding}: {e}"));
        assert!(all == original, "{coding}: whole body differs");
    }
}

#[test]
fn an_http2_client_gets_it_compressed_too() {
    let up = upstream(Arc::new(Notify::new()));
    let gw = gateway(&up);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (version, headers, body) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/text", gw.addr))
            .header("accept-encoding", "gzip;q=0.5, zstd")
            .body(http_body_util::Empty::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        (parts.version, parts.headers, body)
    });
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(headers["content-encoding"], "zstd");
    assert!(!headers.contains_key("content-length"));
    assert_eq!(headers["vary"], "Accept-Encoding");
    assert!(decode("zstd", &body, false).unwrap() == text());
}
