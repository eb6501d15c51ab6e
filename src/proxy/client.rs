//! The client side of one connection: its address, whether it is a trusted proxy,
//! and the counters the idle watchdog reads.

use http::header::HeaderValue;
use std::net::SocketAddr;

/// The client side of one connection, computed once per connection.
pub struct Client {
    pub addr: SocketAddr,
    /// The client's address as an `X-Forwarded-For` value.
    pub forwarded_for: HeaderValue,
    /// The port of the listener it connected to, as an `X-Forwarded-Port` value.
    pub local_port: HeaderValue,
    /// Whether it is one of `gateway.trusted_proxies`, whose forwarding headers are
    /// believed.
    pub trusted: bool,
    /// Requests started on this connection (the idle watchdog's clock).
    pub started: std::sync::atomic::AtomicU64,
    /// Requests whose response header is not yet sent.
    pub waiting: std::sync::atomic::AtomicU32,
    /// Writes to the client (a streaming response is not idle).
    pub writes: std::sync::atomic::AtomicU64,
    /// Reads from the client that brought bytes (a next request head arriving).
    pub reads: std::sync::atomic::AtomicU64,
    /// Requests answered (their response header made), for [`super::heads::Heads`]
    /// waiting to know whether a protocol switch happened.
    pub answered: std::sync::atomic::AtomicU64,
    /// A request was answered `101`: the connection is a tunnel now.
    pub switched: std::sync::atomic::AtomicBool,
    /// The stream waits for a next request with nothing buffered (all answered or
    /// being answered): the connection may be parked.
    pub between: std::sync::atomic::AtomicBool,
    /// Requests handed to hyper whole (head and body) by the stream.
    pub handed: std::sync::atomic::AtomicU64,
    /// hyper is being let go of while the connection stays open (its shutdown must
    /// not close the socket).
    pub parking: std::sync::atomic::AtomicBool,
    /// A later head the gateway refused, answered at its position by the service.
    pub refusal: std::sync::OnceLock<super::heads::Refusal>,
    /// The TLS version and ALPN protocol, on an HTTPS listener.
    pub tls: Option<super::stream::TlsInfo>,
}

impl Client {
    /// The client at `addr`, connected to the listener at `local` (over TLS when
    /// `tls` says how).
    pub fn new(
        addr: SocketAddr,
        local: SocketAddr,
        trusted: &[ipnet::IpNet],
        tls: Option<super::stream::TlsInfo>,
    ) -> Client {
        let ip = addr.ip().to_canonical();
        Client {
            addr,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            local_port: HeaderValue::from(local.port()),
            trusted: trusted.iter().any(|net| net.contains(&ip)),
            started: Default::default(),
            waiting: Default::default(),
            writes: Default::default(),
            reads: Default::default(),
            answered: Default::default(),
            switched: Default::default(),
            between: Default::default(),
            parking: Default::default(),
            handed: Default::default(),
            refusal: Default::default(),
            tls,
        }
    }
}
