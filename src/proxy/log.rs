//! The log phase: one [`Record`] per request, started at accept and finished exactly
//! once whatever the exit (the upstream's answer at its body's end, a gateway-made
//! answer, a tunnel that closed, a client that left). [`Record::finish`] is the one
//! place a request ends: the access line is written there, and the request metrics
//! (`http_server_request_duration_seconds`, the app's in-flight gauge, the history's
//! second) are recorded there. A record dropped unfinished still writes its line (499 when the
//! client left before the answer, as nginx logs it).

use super::Gateway;
use crate::error::Cause;
use crate::observe::access::{AccessRecord, Source, Tried};
use crate::observe::metrics::AppMeter;
use http::{HeaderValue, Method, Uri};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What is known of one request, for its access line and its error page.
pub struct Record {
    pub gw: Arc<Gateway>,
    pub start: Instant,
    /// The client's address (the PROXY protocol's, behind a load balancer).
    pub client: IpAddr,
    pub request_id: HeaderValue,
    /// `None` for a request the gateway could not parse.
    pub method: Option<Method>,
    /// The authority the request is routed by: the target's (absolute-form, h2
    /// `:authority`) or the Host header.
    pub host: Option<HeaderValue>,
    /// The request target as received (the path and query are read from it).
    pub uri: Option<Uri>,
    pub route: Option<Arc<str>>,
    /// The peer of the last attempt, e.g. `web#2`.
    pub upstream: Option<Arc<str>>,
    pub attempts: u32,
    /// The failed attempts before the last one: the peer and why.
    pub failed: Vec<(Arc<str>, Cause)>,
    /// The content coding the gateway compressed the response with (`gzip`, `br`,
    /// `zstd`).
    pub coding: Option<&'static str>,
    /// The routed app's meter (counted in flight from routing to the end).
    meter: Option<Arc<AppMeter>>,
    /// The TLS version and ALPN of the client's connection, over HTTPS.
    pub tls: Option<super::stream::TlsInfo>,
    /// Written if the record is dropped unfinished.
    unfinished: (u16, Source, &'static str),
    done: bool,
}

/// How a request ended.
pub struct End {
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub source: Source,
    /// The failure, when there was one (gateway-made answers, a body cut short).
    pub error: Option<Cause>,
    pub details: Option<String>,
}

impl Record {
    /// The record of a request, at accept.
    pub fn start(
        gw: Arc<Gateway>,
        client: IpAddr,
        request_id: HeaderValue,
        method: Method,
        host: Option<HeaderValue>,
        uri: Uri,
    ) -> Record {
        Record {
            gw,
            start: Instant::now(),
            client,
            request_id,
            method: Some(method),
            host,
            uri: Some(uri),
            route: None,
            upstream: None,
            attempts: 0,
            failed: Vec::new(),
            coding: None,
            meter: None,
            tls: None,
            unfinished: (
                499,
                Source::Gateway,
                "the client closed the connection before the response",
            ),
            done: false,
        }
    }

    /// The record of a request the gateway never parsed (a head too slow, too large
    /// or malformed), begun at `start`.
    pub fn unparsed(gw: Arc<Gateway>, client: IpAddr, start: Instant) -> Record {
        Record {
            gw,
            start,
            client,
            request_id: super::headers::new_request_id(),
            method: None,
            host: None,
            uri: None,
            route: None,
            upstream: None,
            attempts: 0,
            failed: Vec::new(),
            coding: None,
            meter: None,
            tls: None,
            unfinished: (0, Source::Gateway, "the request was never answered"),
            done: false,
        }
    }

    /// The path and query as received.
    pub fn path(&self) -> &str {
        match &self.uri {
            Some(u) => u.path_and_query().map_or("/", |p| p.as_str()),
            None => "",
        }
    }

    /// The routing authority as text.
    pub fn host_str(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }

    /// The route phase chose app or upstream `name`, measured by `meter`.
    pub fn routed(&mut self, name: Arc<str>, meter: Arc<AppMeter>) {
        meter.started();
        self.route = Some(name);
        self.meter = Some(meter);
    }

    /// What a drop writes from now on: e.g. a tunnel's "cut when the gateway stopped".
    pub fn if_unfinished(&mut self, status: u16, source: Source, details: &'static str) {
        self.unfinished = (status, source, details);
    }

    /// The one end of a request: write its access line.
    pub fn finish(mut self, end: End) {
        self.write(end);
    }

    fn write(&mut self, end: End) {
        if self.done {
            return;
        }
        self.done = true;
        let took = self.start.elapsed();
        let method = crate::observe::metrics::method_index(self.method.as_ref());
        match &self.meter {
            Some(m) => {
                m.ended();
                m.record(method, end.status, end.error, took);
            }
            None => self.gw.unrouted.record(method, end.status, end.error, took),
        }
        let access = &self.gw.access;
        if !access.enabled() {
            return;
        }
        access.write(&AccessRecord {
            ts: crate::observe::time::rfc3339_millis(SystemTime::now()),
            request_id: self.request_id.to_str().unwrap_or("").to_owned(),
            client: self.client.to_canonical().to_string(),
            method: self.method.as_ref().map_or("", |m| m.as_str()).to_owned(),
            host: self.host_str().to_owned(),
            path: self.path().to_owned(),
            status: end.status,
            bytes: end.bytes,
            duration_ms: ms(took),
            route: self.route.clone(),
            upstream: self.upstream.clone(),
            attempts: self.attempts,
            source: end.source,
            error: end.error.map(Cause::proxy_status),
            details: end.details,
            coding: self.coding,
            tried: self.tried(end.status, end.source),
            tls: self.tls.map(|t| t.version),
            alpn: self.tls.and_then(|t| t.alpn),
        });
    }
}

impl Record {
    /// Every attempt, when there was more than one: the failed ones, then the last.
    fn tried(&self, status: u16, source: Source) -> Vec<Tried> {
        if self.failed.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Tried> = self
            .failed
            .iter()
            .map(|(peer, cause)| Tried {
                upstream: peer.clone(),
                outcome: cause.proxy_status().to_owned(),
            })
            .collect();
        // The peer that answered; a gateway-made answer's attempts all failed.
        if let (Some(peer), Source::Upstream) = (&self.upstream, source) {
            out.push(Tried {
                upstream: peer.clone(),
                outcome: status.to_string(),
            });
        }
        out
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.done {
            let (status, source, details) = self.unfinished;
            self.write(End {
                status,
                bytes: 0,
                source,
                error: None,
                details: Some(details.into()),
            });
        }
    }
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64 / 1000.0 * 1000.0).round() / 1000.0
}
