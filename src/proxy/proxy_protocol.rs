//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on listeners that sit behind
//! another load balancer (`listen = [{ addr = "...", proxy_protocol = true }]`): the
//! header that starts each connection says who the client really is, and that
//! address is used everywhere after (the access log, `X-Forwarded-For`, trust).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The longest v2 header read (addresses and TLVs).
const V2_MAX: usize = 16 + 1024;

/// What a parse of the bytes so far found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A whole header of `len` bytes; the client's address (`None`: a health check
    /// of the balancer itself, `LOCAL` or `UNKNOWN`: the connection's peer stands).
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    Invalid(String),
}

/// Parse a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.starts_with(b"PROXY ") || (buf.len() < 6 && b"PROXY ".starts_with(buf)) {
        return v1(buf);
    }
    let n = buf.len().min(V2.len());
    if buf[..n] == V2[..n] {
        return v2(buf);
    }
    Parsed::Invalid("the connection does not start with a PROXY protocol header".into())
}

fn v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 line longer than 107 bytes".into())
        } else {
            Parsed::Partial
        };
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Header { len, client: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: Option<IpAddr> = src.parse().ok();
            let port: Option<u16> = sport.parse().ok();
            match (ip, port) {
                (Some(ip), Some(port)) if ip.is_ipv4() == (*family == "TCP4") => Parsed::Header {
                    len,
                    client: Some(SocketAddr::new(ip, port)),
                },
                _ => Parsed::Invalid(format!("PROXY v1 line with a bad address: {line:?}")),
            }
        }
        _ => Parsed::Invalid(format!("malformed PROXY v1 line: {line:?}")),
    }
}

fn v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Partial;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid(format!("PROXY v2 with version {}", ver_cmd >> 4));
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid(format!("PROXY v2 header of {len} bytes"));
    }
    if buf.len() < len {
        return Parsed::Partial;
    }
    let a = &buf[16..len];
    let client = match (ver_cmd & 0x0f, fam) {
        // LOCAL: the balancer's own connection (a health check).
        (0, _) => None,
        // PROXY over TCP or UDP, IPv4.
        (1, 0x11 | 0x12) if a.len() >= 12 => Some(SocketAddr::new(
            Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(),
            u16::from_be_bytes([a[8], a[9]]),
        )),
        // IPv6.
        (1, 0x21 | 0x22) if a.len() >= 36 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                Ipv6Addr::from(ip).into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // Unix sockets and unspecified families: the peer stands.
        (1, 0x00 | 0x31 | 0x32) => None,
        (cmd, fam) => {
            return Parsed::Invalid(format!(
                "PROXY v2 with command {cmd} and family {fam:#04x} ({} address bytes)",
                a.len()
            ))
        }
    };
    Parsed::Header { len, client }
}

/// Read the PROXY header that starts `s` within `timeout`, and not a byte after it:
/// on an HTTPS listener what follows is the TLS handshake's to read. The client's
/// address, when the header names one. Bytes are peeked, then consumed as far as
/// they are the header's, so a header that arrives in pieces costs a peek and a read
/// for each.
pub async fn read(s: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut header = Vec::with_capacity(64);
    let mut peeked = [0u8; V2_MAX];
    loop {
        // A header longer than this was refused by `parse` already.
        let room = V2_MAX - header.len();
        let n = match tokio::time::timeout_at(deadline, s.peek(&mut peeked[..room])).await {
            Err(_) => return Err(format!("no PROXY header within {timeout:?}")),
            Ok(Ok(0)) => return Err("closed before its PROXY header".into()),
            Ok(Err(e)) => return Err(format!("reading the PROXY header: {e}")),
            Ok(Ok(n)) => n,
        };
        let had = header.len();
        header.extend_from_slice(&peeked[..n]);
        let (take, done) = match parse(&header) {
            Parsed::Header { len, client } => (len - had, Some(client)),
            Parsed::Partial => (n, None),
            Parsed::Invalid(why) => return Err(why),
        };
        // The peeked bytes are still the first in the socket's queue.
        if let Err(e) = s.read_exact(&mut peeked[..take]).await {
            return Err(format!("reading the PROXY header: {e}"));
        }
        if let Some(client) = done {
            return Ok(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header {
                len: 41,
                client: addr("192.0.2.7:56324")
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n"),
            Parsed::Header {
                len: 44,
                client: addr("[2001:db8::1]:4000")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                client: None
            }
        );
        assert_eq!(parse(b"PROX"), Parsed::Partial);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Partial);
        assert!(matches!(
            parse(b"PROXY TCP4 ::1 ::1 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(&[b'P'; 200]), Parsed::Invalid(_)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let mut h = V2.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb,
        ]);
        h.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: 28,
                client: addr("192.0.2.7:56324")
            }
        );
        assert_eq!(parse(&h[..20]), Parsed::Partial);
        let mut local = V2.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: 16,
                client: None
            }
        );
        let mut v6 = V2.to_vec();
        v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
        v6.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x10, 0x00, 0, 80]);
        assert_eq!(
            parse(&v6),
            Parsed::Header {
                len: 52,
                client: addr("[2001:db8::9]:4096")
            }
        );
        let mut bad = V2.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(matches!(parse(&bad), Parsed::Invalid(_)), "version 3");
        let mut short = V2.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(
            matches!(parse(&short), Parsed::Invalid(_)),
            "too few address bytes"
        );
    }
}
