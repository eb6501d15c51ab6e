//! A client connection's byte stream: plain TCP, or TLS over TCP (an HTTPS
//! listener). Everything above the handshake (the first head, [`super::heads::Heads`],
//! hyper) reads and writes through it without knowing which.

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The client's stream.
pub type Stream = crate::tls::io::MaybeTls<TlsStream<TcpStream>>;

/// What the handshake of a TLS connection agreed on (for the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The ALPN protocol: `h2`, `http/1.1`, or `None` when the client offered none.
    pub alpn: Option<&'static str>,
}

impl Stream {
    /// The TCP socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// The handshake's outcome, for a TLS stream.
    pub fn tls(&self) -> Option<TlsInfo> {
        let Stream::Tls(s) = self else {
            return None;
        };
        let conn = s.get_ref().1;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => Some("h2"),
            Some(b"http/1.1") => Some("http/1.1"),
            Some(super::super::tls::certs::ACME_TLS_ALPN) => Some("acme-tls/1"),
            Some(_) => Some("other"),
            None => None,
        };
        Some(TlsInfo { version, alpn })
    }

    /// Wait until there is something to read (a parked connection between requests).
    /// Over TLS, rustls may already hold decrypted bytes or the client's close_notify
    /// (it then wants no read from the socket): those are ready now.
    pub async fn readable(&self) -> io::Result<()> {
        if let Stream::Tls(s) = self {
            if !s.get_ref().1.wants_read() {
                return Ok(());
            }
        }
        self.tcp().readable().await
    }

    /// Read what is there into `buf`. A plain socket's buffer is allocated only once
    /// it is readable, and let go of when a read finds nothing (`idle` is then
    /// called), so an idle connection holds no buffer; a TLS stream reads through
    /// rustls, which holds its own.
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        mut idle: impl FnMut(),
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(s) => loop {
                if buf.capacity() - buf.len() < 1024 {
                    ready!(s.poll_read_ready(cx))?;
                    buf.reserve(4096);
                }
                match s.try_read_buf(buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if buf.is_empty() {
                            // Idle: wait without holding a buffer.
                            *buf = BytesMut::new();
                            idle();
                        }
                        ready!(s.poll_read_ready(cx))?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Stream::Tls(s) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                let r = tokio_util::io::poll_read_buf(Pin::new(s), cx, buf);
                if r.is_pending() && buf.is_empty() {
                    *buf = BytesMut::new();
                    idle();
                }
                r
            }
        }
    }

    /// Drop what the client already sent after a refused head (up to 64 KiB), so
    /// that closing after the answer does not reset the connection under it. Over
    /// TLS the close_notify that follows the answer makes this unneeded.
    pub fn discard(&mut self) {
        let Stream::Plain(s) = self else {
            return;
        };
        let mut scratch = [0u8; 4096];
        for _ in 0..16 {
            match s.try_read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}
