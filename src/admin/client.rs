//! A small blocking admin API client for the CLI verbs (`status`, `restart`, ...):
//! plain HTTP/1.1 over `std::net::TcpStream`, one request per connection.

use super::{read_admin_file, token_path};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// How long to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read may wait: commands (a rolling restart) can take a while.
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
    mut stream: TcpStream,
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nUser-Agent: healgate-cli/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if body.is_some() || method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the answer to {method} {path}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("answer to {method} {path}: {e}"))
}

/// Parse a complete HTTP/1.1 response read to EOF: (status, body text).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err("connection closed before a complete response header".into())
        }
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    let body = if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        rest.get(..len)
            .ok_or("connection closed before the whole body")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decode a chunked body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunked body")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunked body")?;
    }
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

    #[test]
    fn parses_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        assert_eq!(parse_response(raw).unwrap(), (200, "{\"ok\":true}".into()));
        let raw = b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (409, "{\"a\":1}".into()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
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
        // Bind then drop: the port is (almost certainly) closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("healgate-client-unit-{}", std::process::id()));
        let err = call(&dir, Some("t"), addr, "GET", "/api/v1/status", None).unwrap_err();
        assert!(
            err.starts_with("no gateway is running: cannot connect to"),
            "{err}"
        );
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
