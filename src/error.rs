//! The one error type of the request path ([`ProxyError`], with its closed list of
//! causes, [`Cause`]) and the one place each cause is mapped: status, `Proxy-Status`
//! type and header value, page text, metric label, side and retry rule.
//!
//! `upstream/` and `proxy/` both build these errors; every mapping is an exhaustive
//! `match` (no `_ =>`), so a new cause does not compile until each is decided.

use http::{HeaderValue, StatusCode};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Why the gateway could not relay a response: a closed list, one entry per cause
/// the gateway can name. [`Cause::ALL`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The server's name does not resolve.
    DnsError,
    /// The name lookup timed out.
    DnsTimeout,
    /// Nothing listens on the server's port (ECONNREFUSED, and only that).
    ConnectionRefused,
    /// No route to the server's address (network or host unreachable or down).
    Unroutable,
    /// The connect was refused by a local policy (EACCES/EPERM: a firewall rule).
    Prohibited,
    /// The TCP connect did not complete in time.
    ConnectTimeout,
    /// The server reset the connection while it was being set up.
    ConnectReset,
    /// The connect failed for another reason the kernel named (the error is kept).
    ConnectFailed,
    /// The connection closed or reset before the response header.
    ConnectionTerminated,
    /// The upstream's response is not valid HTTP.
    ProtocolError,
    /// The upstream's response header section is larger than allowed.
    ResponseHeaderTooLarge,
    /// No response header within `timeouts.response_header` of the request being sent.
    ResponseTimeout,
    /// The TLS handshake with the upstream failed.
    TlsProtocol,
    /// The upstream's certificate was not accepted.
    TlsCertificate,
    /// No healthy peer to send to.
    NoHealthyPeer,
    /// The queue is full or the wait in it timed out.
    QueueFull,
    /// No route matches the request.
    NoRoute,
    /// The request header section is larger than allowed.
    RequestHeaderTooLarge,
    /// The request is malformed or ambiguous.
    BadRequest,
    /// The client did not send a complete request header in time.
    ClientTimeout,
    /// The client stopped sending its request body (no progress within
    /// `timeouts.client_body`): the client's failure, never the peer's.
    ClientBodyTimeout,
    /// The request already passed through this gateway.
    Loop,
    /// The response body failed after its header was sent.
    ResponseIncomplete,
    /// The gateway itself ran out of a resource (file descriptors, local ports,
    /// memory): its own failure, not the upstream's.
    GatewayResources,
    /// A bug inside the gateway.
    Internal,
}

/// Which side a failure is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// How far a request got before its attempt failed: decides whether a retry is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Nothing was sent (connect failed, or the pooled connection refused the request
    /// before writing it): safe to retry for any method.
    Nothing,
    /// The request was (maybe partly) written and no response byte arrived: retry only
    /// when the method is idempotent and the body can be replayed.
    Request,
    /// Response bytes arrived: never retried.
    Response,
}

/// What a cause allows, before the facts of the attempt (method, body, how far it
/// got) are weighed by `proxy::retry::decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRule {
    /// Never on another peer (the client's fault, the gateway's, or an answer begun).
    Never,
    /// Only when nothing was sent (a slow upstream is not hit twice).
    WhenNothingSent,
    /// When nothing was sent, or when it was but the request is idempotent and its
    /// body can be replayed.
    WhenSafe,
}

/// Which friendly text a page shows. Several causes share one text; each text is
/// translated into every language (`proxy::pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageText {
    DnsError,
    DnsTimeout,
    Refused,
    Unreachable,
    ConnectTimeout,
    Terminated,
    BadResponse,
    ResponseHeaderTooLarge,
    ResponseTimeout,
    ResponseIncomplete,
    Tls,
    TlsCertificate,
    Unavailable,
    Busy,
    NotFound,
    BadRequest,
    RequestHeaderTooLarge,
    ClientTimeout,
    Loop,
    Internal,
}

impl Cause {
    /// Its place in [`Cause::ALL`] (for per-cause counters kept in arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Every cause, for tests and documentation.
    pub const ALL: [Cause; 25] = [
        Cause::DnsError,
        Cause::DnsTimeout,
        Cause::ConnectionRefused,
        Cause::Unroutable,
        Cause::Prohibited,
        Cause::ConnectTimeout,
        Cause::ConnectReset,
        Cause::ConnectFailed,
        Cause::ConnectionTerminated,
        Cause::ProtocolError,
        Cause::ResponseHeaderTooLarge,
        Cause::ResponseTimeout,
        Cause::TlsProtocol,
        Cause::TlsCertificate,
        Cause::NoHealthyPeer,
        Cause::QueueFull,
        Cause::NoRoute,
        Cause::RequestHeaderTooLarge,
        Cause::BadRequest,
        Cause::ClientTimeout,
        Cause::ClientBodyTimeout,
        Cause::Loop,
        Cause::ResponseIncomplete,
        Cause::GatewayResources,
        Cause::Internal,
    ];

    /// The status a client sees.
    pub fn status(self) -> StatusCode {
        use Cause::*;
        match self {
            DnsError
            | ConnectionRefused
            | Unroutable
            | Prohibited
            | ConnectReset
            | ConnectFailed
            | ConnectionTerminated
            | ProtocolError
            | ResponseHeaderTooLarge
            | TlsProtocol
            | TlsCertificate
            | ResponseIncomplete => StatusCode::BAD_GATEWAY,
            DnsTimeout | ConnectTimeout | ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            NoHealthyPeer | QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            NoRoute => StatusCode::NOT_FOUND,
            RequestHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BadRequest => StatusCode::BAD_REQUEST,
            ClientTimeout | ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Loop => StatusCode::LOOP_DETECTED,
            GatewayResources | Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 9209 `Proxy-Status` error type. Also the access log's `error` field.
    pub fn proxy_status(self) -> &'static str {
        use Cause::*;
        match self {
            DnsError => "dns_error",
            DnsTimeout => "dns_timeout",
            ConnectionRefused => "connection_refused",
            Unroutable => "destination_ip_unroutable",
            Prohibited => "destination_ip_prohibited",
            ConnectTimeout => "connection_timeout",
            ConnectReset | ConnectionTerminated => "connection_terminated",
            ConnectFailed => "destination_unavailable",
            ProtocolError => "http_protocol_error",
            ResponseHeaderTooLarge => "http_response_header_section_size",
            ResponseTimeout => "http_response_timeout",
            TlsProtocol => "tls_protocol_error",
            TlsCertificate => "tls_certificate_error",
            NoHealthyPeer => "destination_unavailable",
            QueueFull => "connection_limit_reached",
            NoRoute => "destination_not_found",
            RequestHeaderTooLarge | BadRequest | ClientTimeout | ClientBodyTimeout => {
                "http_request_error"
            }
            Loop => "proxy_loop_detected",
            ResponseIncomplete => "http_response_incomplete",
            GatewayResources | Internal => "proxy_internal_error",
        }
    }

    /// The `error_type` label of request metrics: the Proxy-Status type, so the log,
    /// the header and the metrics always agree. A closed set of values.
    pub fn metric_label(self) -> &'static str {
        self.proxy_status()
    }

    /// The friendly text of the page.
    pub fn page_text(self) -> PageText {
        use Cause::*;
        match self {
            DnsError => PageText::DnsError,
            DnsTimeout => PageText::DnsTimeout,
            ConnectionRefused | ConnectReset => PageText::Refused,
            Unroutable | Prohibited | ConnectFailed => PageText::Unreachable,
            ConnectTimeout => PageText::ConnectTimeout,
            ConnectionTerminated => PageText::Terminated,
            ProtocolError => PageText::BadResponse,
            ResponseHeaderTooLarge => PageText::ResponseHeaderTooLarge,
            ResponseTimeout => PageText::ResponseTimeout,
            TlsProtocol => PageText::Tls,
            TlsCertificate => PageText::TlsCertificate,
            NoHealthyPeer => PageText::Unavailable,
            QueueFull => PageText::Busy,
            NoRoute => PageText::NotFound,
            RequestHeaderTooLarge => PageText::RequestHeaderTooLarge,
            BadRequest => PageText::BadRequest,
            ClientTimeout | ClientBodyTimeout => PageText::ClientTimeout,
            Loop => PageText::Loop,
            ResponseIncomplete => PageText::ResponseIncomplete,
            GatewayResources | Internal => PageText::Internal,
        }
    }

    /// Which side the failure is on.
    pub fn side(self) -> Side {
        use Cause::*;
        match self {
            NoRoute
            | RequestHeaderTooLarge
            | BadRequest
            | ClientTimeout
            | ClientBodyTimeout
            | Loop => Side::Client,
            GatewayResources | Internal => Side::Internal,
            DnsError
            | DnsTimeout
            | ConnectionRefused
            | Unroutable
            | Prohibited
            | ConnectTimeout
            | ConnectReset
            | ConnectFailed
            | ConnectionTerminated
            | ProtocolError
            | ResponseHeaderTooLarge
            | ResponseTimeout
            | TlsProtocol
            | TlsCertificate
            | NoHealthyPeer
            | QueueFull
            | ResponseIncomplete => Side::Upstream,
        }
    }

    /// Whether a failure of this kind counts against the peer for passive ejection.
    pub fn is_peer_failure(self) -> bool {
        use Cause::*;
        match self {
            ConnectionRefused | Unroutable | ConnectTimeout | ConnectReset | ConnectFailed
            | ConnectionTerminated | ProtocolError | TlsProtocol | TlsCertificate
            | ResponseTimeout => true,
            // Names and policy are not the peer's doing; neither is a full queue, the
            // client's side, or the gateway's own resources.
            DnsError
            | DnsTimeout
            | Prohibited
            | ResponseHeaderTooLarge
            | NoHealthyPeer
            | QueueFull
            | NoRoute
            | RequestHeaderTooLarge
            | BadRequest
            | ClientTimeout
            | ClientBodyTimeout
            | Loop
            | ResponseIncomplete
            | GatewayResources
            | Internal => false,
        }
    }

    /// What a retry on another peer may do for this cause.
    pub fn retry_rule(self) -> RetryRule {
        use Cause::*;
        match self {
            DnsError
            | DnsTimeout
            | ConnectionRefused
            | Unroutable
            | Prohibited
            | ConnectTimeout
            | ConnectReset
            | ConnectFailed
            | ConnectionTerminated
            | ProtocolError
            | ResponseHeaderTooLarge
            | TlsProtocol
            | TlsCertificate => RetryRule::WhenSafe,
            ResponseTimeout => RetryRule::WhenNothingSent,
            NoHealthyPeer
            | QueueFull
            | NoRoute
            | RequestHeaderTooLarge
            | BadRequest
            | ClientTimeout
            | ClientBodyTimeout
            | Loop
            | ResponseIncomplete
            | GatewayResources
            | Internal => RetryRule::Never,
        }
    }

    /// The `grpc-status` a gRPC client gets with the gateway's answer (gRPC's
    /// status codes: 14 UNAVAILABLE for what another try may cure, 4
    /// DEADLINE_EXCEEDED for timeouts, 12 UNIMPLEMENTED for no route, 8
    /// RESOURCE_EXHAUSTED for too much metadata, 13 INTERNAL otherwise).
    pub fn grpc_status(self) -> u8 {
        use Cause::*;
        match self {
            DnsError
            | ConnectionRefused
            | Unroutable
            | Prohibited
            | ConnectReset
            | ConnectFailed
            | ConnectionTerminated
            | ProtocolError
            | ResponseHeaderTooLarge
            | TlsProtocol
            | TlsCertificate
            | NoHealthyPeer
            | QueueFull
            | ResponseIncomplete
            | GatewayResources => 14,
            DnsTimeout | ConnectTimeout | ResponseTimeout | ClientTimeout | ClientBodyTimeout => 4,
            NoRoute => 12,
            RequestHeaderTooLarge => 8,
            BadRequest | Loop | Internal => 13,
        }
    }

    /// Seconds for `Retry-After`, when the answer should carry it.
    pub fn retry_after(self) -> Option<u32> {
        use Cause::*;
        match self {
            NoHealthyPeer => Some(5),
            QueueFull => Some(1),
            DnsError
            | DnsTimeout
            | ConnectionRefused
            | Unroutable
            | Prohibited
            | ConnectTimeout
            | ConnectReset
            | ConnectFailed
            | ConnectionTerminated
            | ProtocolError
            | ResponseHeaderTooLarge
            | ResponseTimeout
            | TlsProtocol
            | TlsCertificate
            | NoRoute
            | RequestHeaderTooLarge
            | BadRequest
            | ClientTimeout
            | ClientBodyTimeout
            | Loop
            | ResponseIncomplete
            | GatewayResources
            | Internal => None,
        }
    }

    /// The cause of a failed TCP connect, from the kernel's error: only ECONNREFUSED
    /// is "refused"; the gateway's own shortages are its own failure.
    pub fn of_connect(e: &io::Error) -> Cause {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Cause::ConnectionRefused,
            Some(libc::ETIMEDOUT) => Cause::ConnectTimeout,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EHOSTDOWN) => {
                Cause::Unroutable
            }
            Some(libc::EACCES | libc::EPERM) => Cause::Prohibited,
            Some(libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE) => Cause::ConnectReset,
            Some(
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL,
            ) => Cause::GatewayResources,
            _ => match e.kind() {
                io::ErrorKind::ConnectionRefused => Cause::ConnectionRefused,
                io::ErrorKind::TimedOut => Cause::ConnectTimeout,
                _ => Cause::ConnectFailed,
            },
        }
    }
}

/// An error on the proxy path: the cause, how far the request got, context
/// ("connecting to api#2 at 10.0.0.5:8000") and the underlying I/O error, kept.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub cause: Cause,
    pub sent: Sent,
    /// What was being done, for a person.
    pub context: String,
    /// The I/O error underneath, when there is one.
    pub source: Option<Arc<io::Error>>,
}

impl ProxyError {
    /// A failure with nothing sent upstream.
    pub fn new(cause: Cause, context: impl Into<String>) -> Self {
        ProxyError {
            cause,
            sent: Sent::Nothing,
            context: context.into(),
            source: None,
        }
    }

    /// A failure caused by `source` while doing `context`.
    pub fn io(cause: Cause, context: impl Into<String>, source: io::Error) -> Self {
        ProxyError {
            source: Some(Arc::new(source)),
            ..ProxyError::new(cause, context)
        }
    }

    /// The same failure with how far the request got.
    pub fn sent(mut self, sent: Sent) -> Self {
        self.sent = sent;
        self
    }

    /// What happened, for a person (the access log's `details`, the page's details):
    /// the context and the underlying error.
    pub fn details(&self) -> String {
        match &self.source {
            Some(e) => format!("{}: {e}", self.context),
            None => self.context.clone(),
        }
    }

    /// The `Proxy-Status` header value: `healgate; error=<type>`, with
    /// `; details="..."` when `with_details` (RFC 9209 §2).
    pub fn proxy_status_header(&self, with_details: bool) -> HeaderValue {
        let error = self.cause.proxy_status();
        if !with_details {
            return HeaderValue::from_static(PROXY_STATUS_VALUES[self.cause as usize]);
        }
        let mut s = format!("healgate; error={error}; details=\"");
        for c in self.details().chars() {
            match c {
                '"' | '\\' => {
                    s.push('\\');
                    s.push(c);
                }
                ' '..='~' => s.push(c),
                _ => s.push('?'),
            }
        }
        s.push('"');
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("healgate"))
    }
}

/// `healgate; error=<type>` for each cause, in [`Cause::ALL`] order (checked by a test).
const PROXY_STATUS_VALUES: [&str; 25] = [
    "healgate; error=dns_error",
    "healgate; error=dns_timeout",
    "healgate; error=connection_refused",
    "healgate; error=destination_ip_unroutable",
    "healgate; error=destination_ip_prohibited",
    "healgate; error=connection_timeout",
    "healgate; error=connection_terminated",
    "healgate; error=destination_unavailable",
    "healgate; error=connection_terminated",
    "healgate; error=http_protocol_error",
    "healgate; error=http_response_header_section_size",
    "healgate; error=http_response_timeout",
    "healgate; error=tls_protocol_error",
    "healgate; error=tls_certificate_error",
    "healgate; error=destination_unavailable",
    "healgate; error=connection_limit_reached",
    "healgate; error=destination_not_found",
    "healgate; error=http_request_error",
    "healgate; error=http_request_error",
    "healgate; error=http_request_error",
    "healgate; error=http_request_error",
    "healgate; error=proxy_loop_detected",
    "healgate; error=http_response_incomplete",
    "healgate; error=proxy_internal_error",
    "healgate; error=proxy_internal_error",
];

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause.proxy_status(), self.context)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each cause stands in SPEC §4: its row (situation, status, type), or why
    /// it has none. The match has no `_`: a new cause must be placed here.
    fn spec_row(c: Cause) -> Result<(&'static str, u16, &'static str), &'static str> {
        use Cause::*;
        match c {
            DnsError => Ok(("name does not resolve", 502, "dns_error")),
            DnsTimeout => Ok(("DNS timed out", 504, "dns_timeout")),
            ConnectionRefused => Ok(("nothing listening", 502, "connection_refused")),
            ConnectTimeout => Ok(("connect timed out", 504, "connection_timeout")),
            ConnectionTerminated => Ok((
                "connection closed or reset before the response header",
                502,
                "connection_terminated",
            )),
            ProtocolError => Ok(("malformed response", 502, "http_protocol_error")),
            ResponseHeaderTooLarge => Ok((
                "response header too large",
                502,
                "http_response_header_section_size",
            )),
            ResponseTimeout => Ok(("no response header in time", 504, "http_response_timeout")),
            TlsProtocol => Ok(("TLS to upstream failed", 502, "tls_protocol_error")),
            TlsCertificate => Ok(("TLS to upstream failed", 502, "tls_certificate_error")),
            NoHealthyPeer => Ok((
                "no healthy instance or server",
                503,
                "destination_unavailable",
            )),
            QueueFull => Ok((
                "queue full or queue wait timed out",
                503,
                "connection_limit_reached",
            )),
            NoRoute => Ok(("no route matches", 404, "destination_not_found")),
            RequestHeaderTooLarge => Ok(("request header too large", 431, "http_request_error")),
            BadRequest => Ok((
                "malformed or ambiguous request (smuggling)",
                400,
                "http_request_error",
            )),
            Loop => Ok(("a loop through this gateway", 508, "proxy_loop_detected")),
            ResponseIncomplete => Err("not an answer: logged when a body fails after its header"),
            Unroutable => Err("RFC 9209 destination_ip_unroutable; SPEC §4 has no row yet"),
            Prohibited => Err("RFC 9209 destination_ip_prohibited; SPEC §4 has no row yet"),
            ConnectReset => Err("a reset during connect: connection_terminated, before sending"),
            ConnectFailed => Err("a connect error the kernel named but no RFC 9209 type fits"),
            ClientTimeout | ClientBodyTimeout => {
                Err("the client's slowness: 408 http_request_error (SPEC §3 client_header)")
            }
            GatewayResources | Internal => Err("the gateway's own failure: proxy_internal_error"),
        }
    }

    #[test]
    fn a_cause_index_is_its_place_in_all() {
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
    }

    #[test]
    fn every_cause_has_a_status_a_type_and_a_spec_row_or_a_reason() {
        let mut seen = std::collections::HashSet::new();
        for (i, cause) in Cause::ALL.iter().copied().enumerate() {
            assert!(seen.insert(cause), "{cause:?} twice in Cause::ALL");
            assert!(cause.status().as_u16() >= 400, "{cause:?}");
            match spec_row(cause) {
                Ok((situation, status, ps)) => {
                    assert_eq!(cause.status().as_u16(), status, "{situation}");
                    assert_eq!(cause.proxy_status(), ps, "{situation}");
                }
                Err(why) => assert!(!why.is_empty()),
            }
            assert_eq!(
                ProxyError::new(cause, "x").proxy_status_header(false),
                format!("healgate; error={}", cause.proxy_status()).as_str(),
                "PROXY_STATUS_VALUES[{i}] is out of order"
            );
            assert_eq!(cause.metric_label(), cause.proxy_status());
            if cause.retry_after().is_some() {
                assert_eq!(cause.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
            if cause.side() != Side::Upstream {
                assert_eq!(cause.retry_rule(), RetryRule::Never, "{cause:?}");
                assert!(!cause.is_peer_failure(), "{cause:?}");
            }
        }
        assert_eq!(seen.len(), Cause::ALL.len());
    }

    #[test]
    fn connect_errors_are_named_by_their_errno() {
        let cause = |n| Cause::of_connect(&io::Error::from_raw_os_error(n));
        assert_eq!(cause(libc::ECONNREFUSED), Cause::ConnectionRefused);
        assert_eq!(cause(libc::ETIMEDOUT), Cause::ConnectTimeout);
        assert_eq!(cause(libc::EHOSTUNREACH), Cause::Unroutable);
        assert_eq!(cause(libc::ENETUNREACH), Cause::Unroutable);
        assert_eq!(cause(libc::EPERM), Cause::Prohibited);
        assert_eq!(cause(libc::ECONNRESET), Cause::ConnectReset);
        assert_eq!(cause(libc::EMFILE), Cause::GatewayResources);
        assert_eq!(cause(libc::ENFILE), Cause::GatewayResources);
        assert_eq!(cause(libc::EADDRNOTAVAIL), Cause::GatewayResources);
        assert_eq!(cause(libc::EINVAL), Cause::ConnectFailed);
        assert_eq!(Cause::GatewayResources.side(), Side::Internal);
        assert_eq!(Cause::GatewayResources.status().as_u16(), 500);
        assert!(!Cause::GatewayResources.is_peer_failure());
    }

    #[test]
    fn the_io_error_is_kept_as_the_source() {
        let e = ProxyError::io(
            Cause::ConnectionRefused,
            "connecting to web#1 at 127.0.0.1:1",
            io::Error::from_raw_os_error(libc::ECONNREFUSED),
        );
        let src = std::error::Error::source(&e).expect("a source");
        let io = src.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
        assert!(e
            .details()
            .starts_with("connecting to web#1 at 127.0.0.1:1: "));
        assert!(e
            .to_string()
            .starts_with("connection_refused: connecting to web#1"));
        let h = e.proxy_status_header(true);
        assert!(h
            .to_str()
            .unwrap()
            .contains("details=\"connecting to web#1"));
    }
}
