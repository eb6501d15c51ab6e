//! The one error type of the request path, and its one mapping to status,
//! `Proxy-Status` error type and metric label.

use http::StatusCode;
use std::fmt;

/// Why the gateway could not relay a response: a closed list, one entry per cause
/// the gateway can name. Each maps to exactly one status and Proxy-Status type in
/// [`Cause::status`] and [`Cause::proxy_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The server's name does not resolve.
    DnsError,
    /// The name lookup timed out.
    DnsTimeout,
    /// Nothing listens on the server's port.
    ConnectionRefused,
    /// No route to the server's address (network or host unreachable).
    Unroutable,
    /// The TCP connect did not complete in time.
    ConnectTimeout,
    /// The connection closed or reset before the response header.
    ConnectionTerminated,
    /// The upstream's response is not valid HTTP.
    ProtocolError,
    /// The upstream's response header section is larger than allowed.
    ResponseHeaderTooLarge,
    /// No response header within `timeouts.response_header`.
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
    /// A bug or resource failure inside the gateway.
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

impl Cause {
    /// The status a client sees. The one place this mapping lives.
    pub fn status(self) -> StatusCode {
        use Cause::*;
        match self {
            DnsError
            | ConnectionRefused
            | Unroutable
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
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 9209 `Proxy-Status` error type. Also the access log's `error` field
    /// and the metric label, so the three always agree.
    pub fn proxy_status(self) -> &'static str {
        use Cause::*;
        match self {
            DnsError => "dns_error",
            DnsTimeout => "dns_timeout",
            ConnectionRefused => "connection_refused",
            Unroutable => "destination_ip_unroutable",
            ConnectTimeout => "connection_timeout",
            ConnectionTerminated => "connection_terminated",
            ProtocolError => "http_protocol_error",
            ResponseHeaderTooLarge => "http_response_header_section_size",
            ResponseTimeout => "http_response_timeout",
            TlsProtocol => "tls_protocol_error",
            TlsCertificate => "tls_certificate_error",
            NoHealthyPeer => "destination_unavailable",
            QueueFull => "connection_limit_reached",
            NoRoute => "destination_not_found",
            RequestHeaderTooLarge | BadRequest => "http_request_error",
            ClientTimeout | ClientBodyTimeout => "http_request_error",
            Loop => "proxy_loop_detected",
            ResponseIncomplete => "http_response_incomplete",
            Internal => "proxy_internal_error",
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
            Internal => Side::Internal,
            _ => Side::Upstream,
        }
    }

    /// Whether a failure of this kind counts against the peer for passive ejection.
    pub fn is_peer_failure(self) -> bool {
        use Cause::*;
        matches!(
            self,
            ConnectionRefused
                | Unroutable
                | ConnectTimeout
                | ConnectionTerminated
                | ProtocolError
                | TlsProtocol
                | TlsCertificate
                | ResponseTimeout
        )
    }

    /// Whether the response should carry `Retry-After`.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Cause::NoHealthyPeer => Some(5),
            Cause::QueueFull => Some(1),
            _ => None,
        }
    }
}

/// An error on the proxy path: the cause, how far the request got, and context
/// ("connecting to api#2 at 10.0.0.5:8000: Connection refused").
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub cause: Cause,
    pub sent: Sent,
    pub context: String,
}

impl ProxyError {
    /// A failure with nothing sent upstream.
    pub fn new(cause: Cause, context: impl Into<String>) -> Self {
        ProxyError {
            cause,
            sent: Sent::Nothing,
            context: context.into(),
        }
    }

    /// The same failure with how far the request got.
    pub fn sent(mut self, sent: Sent) -> Self {
        self.sent = sent;
        self
    }

    /// Whether another attempt is safe, given the method and whether the body can be
    /// replayed. Never panics; decides from the facts at hand.
    pub fn retry_safe(&self, idempotent: bool, replayable: bool) -> bool {
        if !matches!(self.cause.side(), Side::Upstream) {
            return false;
        }
        match self.sent {
            Sent::Nothing => true,
            Sent::Request => {
                idempotent && replayable && !matches!(self.cause, Cause::ResponseTimeout)
            }
            Sent::Response => false,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause.proxy_status(), self.context)
    }
}

impl std::error::Error for ProxyError {}

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

    #[test]
    fn spec_table_rows() {
        let rows = [
            (Cause::DnsError, 502, "dns_error"),
            (Cause::DnsTimeout, 504, "dns_timeout"),
            (Cause::ConnectionRefused, 502, "connection_refused"),
            (Cause::ConnectTimeout, 504, "connection_timeout"),
            (Cause::ConnectionTerminated, 502, "connection_terminated"),
            (Cause::ProtocolError, 502, "http_protocol_error"),
            (
                Cause::ResponseHeaderTooLarge,
                502,
                "http_response_header_section_size",
            ),
            (Cause::ResponseTimeout, 504, "http_response_timeout"),
            (Cause::TlsProtocol, 502, "tls_protocol_error"),
            (Cause::TlsCertificate, 502, "tls_certificate_error"),
            (Cause::NoHealthyPeer, 503, "destination_unavailable"),
            (Cause::QueueFull, 503, "connection_limit_reached"),
            (Cause::NoRoute, 404, "destination_not_found"),
            (Cause::RequestHeaderTooLarge, 431, "http_request_error"),
            (Cause::BadRequest, 400, "http_request_error"),
            (Cause::Loop, 508, "proxy_loop_detected"),
        ];
        for (cause, status, ps) in rows {
            assert_eq!(cause.status().as_u16(), status, "{cause:?}");
            assert_eq!(cause.proxy_status(), ps, "{cause:?}");
        }
    }

    #[test]
    fn retry_rules() {
        let refused = ProxyError::new(Cause::ConnectionRefused, "x");
        assert!(refused.retry_safe(false, false), "nothing sent: any method");
        let reset = ProxyError::new(Cause::ConnectionTerminated, "x").sent(Sent::Request);
        assert!(reset.retry_safe(true, true));
        assert!(
            !reset.retry_safe(false, true),
            "POST after write is not retried"
        );
        assert!(
            !reset.retry_safe(true, false),
            "a consumed body cannot be replayed"
        );
        let late = ProxyError::new(Cause::ConnectionTerminated, "x").sent(Sent::Response);
        assert!(!late.retry_safe(true, true));
        let timeout = ProxyError::new(Cause::ResponseTimeout, "x").sent(Sent::Request);
        assert!(
            !timeout.retry_safe(true, true),
            "a slow upstream is not hit twice"
        );
        assert!(!ProxyError::new(Cause::NoRoute, "x").retry_safe(true, true));
    }
}
