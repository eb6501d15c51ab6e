//! Request encoding towards a peer: the request line and header section (the
//! client's headers, then the gateway's), and the body as it goes, as is under
//! `Content-Length` or framed as chunks.

use super::{write_all, Connection, Outgoing};
use crate::error::Sent;
use http::header;
use http::Method;
use std::io;

/// Request body data up to this size is copied next to its chunk framing (one write).
const COALESCE: usize = 16 * 1024;

/// The request line and header section into `out`; true when the body goes chunked.
/// `Transfer-Encoding` is the gateway's to choose: the client's is dropped, and a body
/// without `Content-Length` goes chunked; a bodiless POST, PUT or PATCH gets
/// `content-length: 0`.
pub(super) fn head(out: &mut Vec<u8>, request: Outgoing<'_>, has_body: bool) -> bool {
    let parts = request.parts;
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_length = false;
    for (name, value) in parts
        .headers
        .iter()
        .chain(request.added.iter().map(|(n, v)| (n, v)))
    {
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        has_length |= *name == header::CONTENT_LENGTH;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let chunked = !has_length && has_body;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !has_length && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// One chunk into `out`: size line, data, CRLF.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.clear();
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

impl Connection {
    /// One piece of the request body, framed as a chunk when `chunked`.
    pub(super) async fn write_data(
        &mut self,
        data: &[u8],
        chunked: bool,
        sent: &mut Sent,
    ) -> io::Result<()> {
        if !chunked {
            write_all(&mut self.io, data, sent).await
        } else if data.len() <= COALESCE {
            chunk(&mut self.out, data);
            write_all(&mut self.io, &self.out, sent).await
        } else {
            let size = format!("{:x}\r\n", data.len());
            write_all(&mut self.io, size.as_bytes(), sent).await?;
            write_all(&mut self.io, data, sent).await?;
            write_all(&mut self.io, b"\r\n", sent).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn encoded(
        req: http::Request<()>,
        added: &[(HeaderName, HeaderValue)],
        has_body: bool,
    ) -> (String, bool) {
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        let request = Outgoing {
            parts: &parts,
            added,
            upgrade: false,
        };
        let chunked = head(&mut out, request, has_body);
        (String::from_utf8(out).unwrap(), chunked)
    }

    #[test]
    fn the_clients_headers_then_the_gateways() {
        let req = http::Request::get("/a?b=c")
            .header("host", "example.com")
            .header("x-one", "1")
            .body(())
            .unwrap();
        let added = [(
            HeaderName::from_static("via"),
            HeaderValue::from_static("1.1 gw"),
        )];
        let (text, chunked) = encoded(req, &added, false);
        assert_eq!(
            text,
            "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\nx-one: 1\r\nvia: 1.1 gw\r\n\r\n"
        );
        assert!(!chunked);
    }

    #[test]
    fn framing_is_the_gateways_choice() {
        // A body without a length goes chunked; the client's own TE is dropped.
        let req = http::Request::post("/")
            .header("transfer-encoding", "gzip, chunked")
            .body(())
            .unwrap();
        let (text, chunked) = encoded(req, &[], true);
        assert!(chunked);
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // A length is kept as it is, and the body goes unframed.
        let req = http::Request::put("/")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (text, chunked) = encoded(req, &[], true);
        assert!(!chunked);
        assert_eq!(text, "PUT / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        // A bodiless POST says so; a bodiless GET says nothing.
        let (text, _) = encoded(http::Request::post("/").body(()).unwrap(), &[], false);
        assert_eq!(text, "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let (text, _) = encoded(http::Request::get("/").body(()).unwrap(), &[], false);
        assert_eq!(text, "GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunks_are_framed() {
        let mut out = b"old".to_vec();
        chunk(&mut out, b"hello, world");
        assert_eq!(out, b"c\r\nhello, world\r\n");
    }
}
