//! The blocking admin API client of the CLI verbs (`status`, `restart`, ...): hyper's
//! HTTP/1.1 client on a small current-thread runtime, one request per connection to
//! a loopback address found in `admin.json` or the config.

use super::{read_admin_file, token_path};
use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// How long to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take: commands (a rolling restart) can take a while.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest answer read.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Call the running gateway's admin API: `method path` with an optional JSON `body`,
/// returning the JSON answer of a 2xx response.
///
/// The address comes from `data_dir/admin.json` (written by the gateway once bound)
/// when present, else `configured_listen`; the token is `configured_token`, else the
/// content of `data_dir/admin.token`. `path` must already be percent-encoded. Errors
/// are sentences for a person: "no gateway is running: cannot connect to ...",
/// "admin token rejected ...", or the API's own `error` with the status.
pub fn call(
    data_dir: &Path,
    configured_token: Option<&str>,
    configured_listen: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let (stream, addr, token) = reach(data_dir, configured_token, configured_listen)?;
    let (status, text) = exchange(stream, addr, &token, method, path, body)
        .map_err(|e| format!("admin API at {addr}: {e}"))?;
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if (200..300).contains(&status) {
        return json.ok_or_else(|| {
            format!("admin API at {addr}: {method} {path} answered {status} with a body that is not JSON")
        });
    }
    let said = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| text.trim().chars().take(200).collect());
    if status == 401 {
        return Err(format!(
            "admin token rejected by the gateway at {addr} ({said}); check admin.token in the config, HEALGATE_ADMIN_TOKEN, or {}",
            token_path(data_dir).display()
        ));
    }
    Err(format!("{said} ({status})"))
}

/// A connection to the running gateway's admin API, and the token to use.
fn reach(
    data_dir: &Path,
    configured_token: Option<&str>,
    configured_listen: SocketAddr,
) -> Result<(TcpStream, SocketAddr, String), String> {
    let recorded = read_admin_file(data_dir).map(|f| f.listen);
    let mut candidates = Vec::new();
    if let Some(a) = recorded {
        candidates.push(reachable(a));
    }
    if !candidates.contains(&reachable(configured_listen)) {
        candidates.push(reachable(configured_listen));
    }
    let (stream, addr) = connect(&candidates)?;
    let token = match configured_token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_owned(),
        None => {
            let p = token_path(data_dir);
            match std::fs::read_to_string(&p) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
                Ok(_) => return Err(format!("the admin token file {} is empty", p.display())),
                Err(e) => {
                    return Err(format!(
                        "cannot read the admin token from {}: {e} (set admin.token in the config or HEALGATE_ADMIN_TOKEN)",
                        p.display()
                    ))
                }
            }
        }
    };
    Ok((stream, addr, token))
}

/// Whether an error of [`call`] or [`follow`] means no gateway answered at all.
pub fn is_not_running(error: &str) -> bool {
    error.starts_with("no gateway is running")
}

/// `GET path` on a streaming route (server-sent events): `on_data` gets each
/// message's `data:` payload until it returns false, the stream ends, or the
/// connection breaks (an error).
pub fn follow(
    data_dir: &Path,
    configured_token: Option<&str>,
    configured_listen: SocketAddr,
    path: &str,
    mut on_data: impl FnMut(&str) -> bool,
) -> Result<(), String> {
    let (stream, addr, token) = reach(data_dir, configured_token, configured_listen)?;
    let request = http::Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("GET {path}: {e}"))?;
    runtime()?.block_on(async {
        let mut sender = handshake(stream).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("admin API at {addr}: GET {path}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "admin API at {addr}: GET {path} answered {}",
                response.status()
            ));
        }
        let mut body = response.into_body();
        let mut pending = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("admin API at {addr}: the stream broke: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = pending.find("\n\n") {
                let message: String = pending.drain(..end + 2).collect();
                for line in message.lines() {
                    if let Some(d) = line.strip_prefix("data: ") {
                        if !on_data(d) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// The small runtime one CLI call runs on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("starting the client: {e}"))
}

/// An HTTP/1.1 client connection over `stream` (its driver spawned on the runtime).
async fn handshake(
    stream: TcpStream,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let io = stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A wildcard listen address is reached on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// The first address that accepts a connection.
fn connect(candidates: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut failures = Vec::new();
    for &addr in candidates {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok((s, addr)),
            Err(e) => failures.push(format!("{addr} ({e})")),
        }
    }
    Err(format!(
        "no gateway is running: cannot connect to {}",
        failures.join(", nor to ")
    ))
}

/// Send one request and read the whole answer: (status, body text).
fn exchange(
    stream: TcpStream,
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("healgate-cli/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() || method != "GET" {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, payload.len());
    }
    let request = request
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    runtime()?.block_on(async {
        let mut sender = handshake(stream).await?;
        let answer = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("sending {method} {path}: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("reading the answer to {method} {path}: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(READ_TIMEOUT, answer)
            .await
            .map_err(|_| format!("no answer to {method} {path} within {READ_TIMEOUT:?}"))?
    })
}

/// What [`encode_segment`] escapes: all but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode one path segment (an app name or an instance id like `web#2`).
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server on loopback that answers `raw` to the first request; the
    /// request it read comes back through the handle.
    fn serve_once(raw: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let served = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed before the request head");
                got.extend_from_slice(&chunk[..n]);
            }
            s.write_all(raw).unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        (addr, served)
    }

    fn unit_dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("healgate-client-unit-{tag}-{}", std::process::id()))
    }

    #[test]
    fn reads_length_and_chunked_answers() {
        let (addr, served) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}");
        let v = call(
            &unit_dir("len"),
            Some("t0k"),
            addr,
            "GET",
            "/api/v1/status",
            None,
        )
        .unwrap();
        assert_eq!(v["ok"], true);
        let head = served.join().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /api/v1/status http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("authorization: bearer t0k\r\n"), "{head}");
        let (addr, served) = serve_once(
            b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n9\r\n{\"error\":\r\nb\r\n\"busy now\"}\r\n0\r\n\r\n",
        );
        let body = serde_json::json!({"instances": 2});
        let e = call(
            &unit_dir("chunked"),
            Some("t"),
            addr,
            "POST",
            "/x",
            Some(&body),
        )
        .unwrap_err();
        assert_eq!(e, "busy now (409)");
        let head = served.join().unwrap().to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("content-length: 15\r\n"), "{head}");
        let (addr, _served) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nnope!");
        let e = call(&unit_dir("notjson"), Some("t"), addr, "GET", "/y", None).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn encodes_instance_ids() {
        assert_eq!(encode_segment("web#2"), "web%232");
        assert_eq!(encode_segment("my app"), "my%20app");
        assert_eq!(encode_segment("a-b_c.d~e/f?"), "a-b_c.d~e%2Ff%3F");
        assert_eq!(encode_segment("café"), "caf%C3%A9");
    }

    #[test]
    fn refused_connection_says_no_gateway() {
        // Bound and never listening: nothing else can take the port, and connects to
        // it are refused.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = reserved.local_addr().unwrap();
        let dir = unit_dir("refused");
        let err = call(&dir, Some("t"), addr, "GET", "/api/v1/status", None).unwrap_err();
        assert!(
            err.starts_with("no gateway is running: cannot connect to"),
            "{err}"
        );
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
