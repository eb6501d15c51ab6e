//! The request path. [`handle`] runs the phases top to bottom:
//!
//! ```text
//! accept ─► route ─► pick peer ─► connect ─► send ─► receive ─► respond ─► log
//!   │         │          │           │         │        │           │
//!   │ 508,431 │ 404      │ 503       │ 502/504 │ 502    │ 502/504   └ at body end
//!   └─────────┴──────────┴───────────┴─ gateway-made response (one mapping) ─┘
//!                                     ▲ retry: another peer, when safe
//! ```
//!
//! Upstream responses pass through as they are (hop-by-hop headers aside, plus
//! `X-Request-Id`). Every response the gateway makes itself comes from
//! [`Gateway::error_response`] and so from the one mapping in [`super::error`].

use super::headers::{
    self, PROXY_STATUS, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use super::route::upstream_path;
use super::Gateway;
use crate::error::{is_idempotent, Cause, ProxyError, Sent};
use crate::observe::access::{AccessRecord, Source};
use crate::upstream::h1::{Connection, Head, Outgoing, Timeouts, UpstreamBody};
use crate::upstream::Lease;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// How long a failed attempt on a supervised instance waits to learn whether the
/// instance died (the reset is often seen just before the exit is reaped).
const EXIT_NOTICE_WAIT: Duration = Duration::from_millis(300);

/// Longest wait for the crash lane before a crash retry goes ahead anyway.
const CRASH_LANE_WAIT: Duration = Duration::from_secs(5);

/// What the request path knows about one request, for its log line and error pages.
struct Ctx {
    start: Instant,
    request_id: HeaderValue,
    method: http::Method,
    /// The Host header (or the authority of an h2 / absolute-form request), as sent.
    host: Option<HeaderValue>,
    /// The request target as received (path and query are read from it).
    uri: Uri,
    accept: Option<HeaderValue>,
    accept_language: Option<HeaderValue>,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    attempts: u32,
    /// Attempts that ended with the instance crashing by itself.
    crash_retries: u32,
    /// The peer of the last attempt, to measure a gateway-made error against.
    last_peer: Option<Arc<crate::upstream::Peer>>,
}

impl Ctx {
    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn host_str(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }
}

/// The client side of one connection, computed once per connection.
pub struct Client {
    pub addr: SocketAddr,
    /// The client's address as an `X-Forwarded-For` value.
    pub forwarded_for: HeaderValue,
    /// Requests started on this connection (the idle watchdog's clock).
    pub started: std::sync::atomic::AtomicU64,
    /// Requests whose response header is not yet sent.
    pub waiting: std::sync::atomic::AtomicU32,
    /// Writes to the client (a streaming response is not idle).
    pub writes: std::sync::atomic::AtomicU64,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        let ip = addr.ip().to_canonical().to_string();
        Client {
            addr,
            forwarded_for: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            started: Default::default(),
            waiting: Default::default(),
            writes: Default::default(),
        }
    }
}

/// Phase driver: one client request in, one response out.
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    client: &Client,
) -> Response<ProxyBody> {
    // accept: request id.
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if headers::valid_request_id(v) => v.clone(),
        _ => headers::new_request_id(),
    };
    let ctx = Ctx {
        start: Instant::now(),
        request_id,
        method: req.method().clone(),
        host: match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        },
        uri: req.uri().clone(),
        accept: None,
        accept_language: None,
        route: None,
        upstream: None,
        attempts: 0,
        crash_retries: 0,
        last_peer: None,
    };
    let mut pending = Pending {
        gw: gw.clone(),
        ctx,
        answered: false,
    };
    let res = run(&gw, req, client, &mut pending.ctx).await;
    pending.answered = true;
    res
}

/// A request being handled. If the client goes away before it is answered, hyper
/// drops the handler; this still writes its access-log line (status 499, as nginx
/// logs it), so no request goes unlogged.
struct Pending {
    gw: Arc<Gateway>,
    ctx: Ctx,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered || !self.gw.access.enabled() {
            return;
        }
        let ctx = &self.ctx;
        self.gw.access.write(&AccessRecord {
            ts: crate::observe::time::rfc3339_millis(SystemTime::now()),
            request_id: ctx.request_id.to_str().unwrap_or("").to_owned(),
            method: ctx.method.as_str().to_owned(),
            host: ctx.host_str().to_owned(),
            path: ctx.path().to_owned(),
            status: 499,
            bytes: 0,
            duration_ms: ms(ctx.start.elapsed()),
            route: ctx.route.clone(),
            upstream: ctx.upstream.clone(),
            attempts: ctx.attempts,
            source: Source::Gateway,
            error: None,
            details: Some("the client closed the connection before the response".into()),
        });
    }
}

/// The phases, for one request whose context the caller keeps.
async fn run(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    client: &Client,
    ctx: &mut Ctx,
) -> Response<ProxyBody> {
    // accept: loop check, header limits.
    if let Err(e) = accept(gw, &req) {
        ctx.accept = req.headers().get(header::ACCEPT).cloned();
        ctx.accept_language = req.headers().get(header::ACCEPT_LANGUAGE).cloned();
        return gw.error_response(&ctx_view(ctx), e);
    }

    // route
    let absolute_form = req.version() < Version::HTTP_2 && req.uri().authority().is_some();
    let router = gw.router();
    let host_key = ctx.host.as_ref().and_then(headers::routing_host);
    let explicit_only = absolute_form && !gw.is_own_host(host_key.as_deref());
    let Some(route) = router.find(host_key.as_deref(), req.uri().path(), explicit_only) else {
        ctx.accept = req.headers().get(header::ACCEPT).cloned();
        ctx.accept_language = req.headers().get(header::ACCEPT_LANGUAGE).cloned();
        let why = if explicit_only {
            format!(
                "absolute-form request for {} is not proxied (no open proxy)",
                host_key.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "no route for {}{}",
                host_key.as_deref().unwrap_or(""),
                req.uri().path()
            )
        };
        return gw.error_response(&ctx_view(ctx), ProxyError::new(Cause::NoRoute, why));
    };
    ctx.route = Some(route.name.clone());
    let pool = route.pool.clone();
    // A protocol switch (WebSocket): relayed; the client's side of it is taken now,
    // before the request is taken apart.
    let mut req = req;
    let upgrade = headers::upgrade_request(req.version(), req.headers())
        .map(|proto| (proto, hyper::upgrade::on(&mut req)));
    let Prepared {
        parts,
        added,
        mut body,
    } = match prepare(gw, req, ctx, client, route, upgrade.as_ref().map(|u| &u.0)) {
        Ok(r) => r,
        Err(e) => return gw.error_response(&ctx_view(ctx), e),
    };
    drop(router);

    // pick peer → connect → send → receive, retried while safe. The request head is
    // only read by an attempt, so a retry sends the same one again without a copy;
    // the body can go again only if no byte of it left.
    let idempotent = is_idempotent(&ctx.method);
    let bodiless = body.is_end_stream();
    let max_attempts = pool.settings.retry.attempts.max(1);
    pool.note_request();
    let mut tried = 0u64;
    // Held while a request retried after a crash is in flight (see `Pool::crash_lane`).
    let mut crash_lane: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        ctx.attempts += 1;
        let lease = match pool.acquire(tried).await {
            Ok(l) => l,
            Err(e) => return gw.error_response(&ctx_view_with(ctx, &parts.headers), e),
        };
        tried |= 1u64.checked_shl(lease.index).unwrap_or(0);
        ctx.upstream = Some(lease.peer.id.clone());
        ctx.last_peer = Some(lease.peer.clone());
        let request = Outgoing {
            parts: &parts,
            added: &added,
            upgrade: upgrade.is_some(),
        };
        match attempt(gw, &lease, request, &mut body, idempotent).await {
            Ok((head, conn)) => {
                return respond(gw, ctx, head, lease, conn, upgrade.map(|u| u.1));
            }
            Err(mut err) => {
                crash_lane.take();
                // A pooled connection that refused the very first write: the peer's
                // keep-alive timeout, not a failure of the peer.
                let stale = err.cause == Cause::ConnectionTerminated && err.sent == Sent::Nothing;
                if !stale {
                    lease.pool.record_failure(&lease.peer, &err);
                }
                // An instance the supervisor runs died under the request: say how, and
                // retry at most once after a crash of its own making (the request may
                // be what crashes it: it must not take every instance down in turn).
                let mut poison_guard = false;
                if err.sent != Sent::Nothing
                    && lease.peer.supervised
                    && err.cause == Cause::ConnectionTerminated
                {
                    if let Some(exit) = lease.peer.exit_notice(EXIT_NOTICE_WAIT).await {
                        err.context = format!("{} while the request was in flight", exit.reason);
                        if exit.self_inflicted {
                            // Alone on the instance when it crashed, or in flight during a
                            // second crash: this request is the likely cause.
                            poison_guard = exit.inflight <= 1 || ctx.crash_retries > 0;
                            if exit.inflight <= 1 {
                                err.context
                                    .push_str(" (the only request in flight: not retried)");
                            }
                            ctx.crash_retries += 1;
                        }
                    }
                }
                drop(lease);
                let replayable = bodiless || err.sent == Sent::Nothing;
                let retry = !poison_guard
                    && ctx.attempts < max_attempts
                    && err.retry_safe(idempotent, replayable)
                    && (pool.allow_retry() || {
                        tracing::warn!(
                            "retry budget of {} exhausted; not retrying {err}",
                            pool.name
                        );
                        false
                    });
                if retry {
                    tracing::debug!("attempt {} failed ({err}); retrying", ctx.attempts);
                    if ctx.crash_retries > 0 && crash_lane.is_none() {
                        let lane = pool.crash_lane.clone().acquire_owned();
                        crash_lane = tokio::time::timeout(CRASH_LANE_WAIT, lane)
                            .await
                            .ok()
                            .and_then(Result::ok);
                    }
                } else {
                    ctx.accept = parts.headers.get(header::ACCEPT).cloned();
                    ctx.accept_language = parts.headers.get(header::ACCEPT_LANGUAGE).cloned();
                    if let Some(p) = &ctx.last_peer {
                        p.stats.record(
                            err.cause.status().as_u16(),
                            ctx.start.elapsed(),
                            ctx.path(),
                            Some(err.cause.proxy_status()),
                        );
                    }
                    return gw.error_response(&ctx_view(ctx), err);
                }
            }
        }
    }
}

/// The accept phase's checks. `Err` becomes a gateway-made response.
fn accept(gw: &Gateway, req: &Request<Incoming>) -> Result<(), ProxyError> {
    // One pass over the header section: its size, Via, and the framing headers.
    let mut size = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let (mut looped, mut te, mut cl) = (false, false, 0);
    for (k, v) in req.headers() {
        size += k.as_str().len() + v.len() + 4;
        if *k == header::VIA {
            looped |= headers::via_names(v, &gw.via_token);
        } else if *k == header::TRANSFER_ENCODING {
            te = true;
        } else if *k == header::CONTENT_LENGTH {
            cl += 1;
        }
    }
    if looped {
        return Err(ProxyError::new(
            Cause::Loop,
            format!(
                "the request already passed through this gateway ({})",
                gw.via_token
            ),
        ));
    }
    if size > gw.limits.request_header {
        return Err(ProxyError::new(
            Cause::RequestHeaderTooLarge,
            format!(
                "request header section of {size} bytes exceeds {}",
                gw.limits.request_header
            ),
        ));
    }
    if te && cl > 0 {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "both Transfer-Encoding and Content-Length (ambiguous framing)",
        ));
    }
    if cl > 1 {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "more than one Content-Length",
        ));
    }
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "CONNECT tunnels are not offered",
        ));
    }
    Ok(())
}

/// Rewrite the client's request for the upstream: origin-form URI, hop-by-hop headers
/// out, forwarding headers and the request id in.
fn prepare(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &Ctx,
    client: &Client,
    route: &super::route::Route,
    upgrade: Option<&HeaderValue>,
) -> Result<Prepared, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let original_host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    // Origin-form as received needs no rewrite; absolute-form, h2 and strip_prefix do.
    if route.strip_prefix || parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = upstream_path(route, pq);
        parts.uri = Uri::try_from(path.as_ref())
            .map_err(|e| ProxyError::new(Cause::BadRequest, format!("bad request target: {e}")))?;
    }
    let version = parts.version;
    parts.version = Version::HTTP_11;

    // The client's headers stay as they are in `parts` (hop-by-hop ones aside); what
    // the gateway adds goes in `added`, written after them (`h1::Connection::send`),
    // which spares a round of map insertions per request.
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    let (mut has_host, mut has_xfh, mut has_xfp, mut has_xff, mut has_id) =
        (false, false, false, false, false);
    for name in h.keys() {
        if *name == header::HOST {
            has_host = true;
        } else if *name == X_FORWARDED_HOST {
            has_xfh = true;
        } else if *name == X_FORWARDED_PROTO {
            has_xfp = true;
        } else if *name == X_FORWARDED_FOR {
            has_xff = true;
        } else if *name == X_REQUEST_ID {
            has_id = true;
        }
    }
    let mut added = Vec::with_capacity(8);
    if let Some(proto) = upgrade {
        added.push((header::CONNECTION, HeaderValue::from_static("upgrade")));
        added.push((header::UPGRADE, proto.clone()));
    }
    if let Some(host) = original_host {
        if !has_host {
            added.push((header::HOST, host.clone()));
        }
        if !has_xfh {
            added.push((X_FORWARDED_HOST.clone(), host));
        }
    }
    let forwarded_for = if has_xff {
        // Appended to what earlier proxies said, in one field.
        let mut list: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        list.push(client.forwarded_for.to_str().unwrap_or(""));
        let joined = HeaderValue::from_str(&list.join(", "))
            .unwrap_or_else(|_| client.forwarded_for.clone());
        h.remove(&X_FORWARDED_FOR);
        joined
    } else {
        client.forwarded_for.clone()
    };
    added.push((X_FORWARDED_FOR.clone(), forwarded_for));
    if !has_xfp {
        added.push((X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http")));
    }
    let via = if version == Version::HTTP_2 {
        &gw.via_h2
    } else {
        &gw.via_h1
    };
    added.push((header::VIA, via.clone()));
    if has_id {
        // The client's own id is `ctx.request_id` when valid; either way ours goes.
        h.remove(&X_REQUEST_ID);
    }
    added.push((X_REQUEST_ID.clone(), ctx.request_id.clone()));
    Ok(Prepared { parts, added, body })
}

/// The request as it goes to a peer: the client's head, the headers the gateway adds,
/// and the body.
struct Prepared {
    parts: http::request::Parts,
    added: Vec<(http::HeaderName, HeaderValue)>,
    body: Incoming,
}

/// connect → send → receive, on one peer: the response head and the connection its
/// body will come on. The error says how far the request got (retry rules).
async fn attempt(
    gw: &Gateway,
    lease: &Lease,
    request: Outgoing<'_>,
    body: &mut Incoming,
    idempotent: bool,
) -> Result<(Head, Connection), ProxyError> {
    let pool = &lease.pool;
    let peer = &lease.peer;
    let c = &pool.connector;
    let mut conn = match peer.conns.checkout(idempotent, c.idle_limit) {
        Some(conn) => conn,
        None => c.connect(&peer.id, &peer.target, peer.tls).await?,
    };
    let timeouts = Timeouts {
        deadlines: &gw.deadlines,
        response_header: pool.settings.response_header_timeout,
        client_body: gw.client_body_timeout,
    };
    let idle = conn.idle_since.elapsed();
    let sent = conn.send(&peer.id, request, body, c.response_header_limit, &timeouts);
    match sent.await {
        Ok(head) => Ok((head, conn)),
        Err(e) => {
            if conn.reused && e.cause == Cause::ConnectionTerminated {
                // The peer closed it while it was idle, or as the request arrived.
                peer.conns.learn_idle_close(idle);
            }
            Err(e)
        }
    }
}

/// Build the client's response from the upstream's: status, headers and body as they
/// came (hop-by-hop headers aside), plus the request id. The access log line is
/// written when the body ends.
fn respond(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    head: Head,
    lease: Lease,
    conn: Connection,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let switch = head.is_upgrade();
    let mut tunnel_ends = None;
    let body = match (switch, client_upgrade) {
        (true, Some(client_side)) => {
            let (io, early) = conn.into_tunnel();
            tunnel_ends = Some((client_side, io, early));
            UpstreamBody::empty()
        }
        _ => head.body(conn),
    };
    let mut res = Response::new(());
    *res.status_mut() = head.status;
    *res.version_mut() = head.version;
    *res.headers_mut() = head.headers;
    if let Some(reason) = head
        .reason
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
    {
        res.extensions_mut().insert(reason);
    }
    let (mut parts, ()) = res.into_parts();
    let keep_alive = headers::keep_alive(&parts.headers);
    let upgrade = switch
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    let path = lease.peer.stats.wants_path().then(|| ctx.path().to_owned());
    let record = gw.access.enabled().then(|| AccessRecord {
        ts: String::new(),
        request_id: ctx.request_id.to_str().unwrap_or("").to_owned(),
        method: ctx.method.as_str().to_owned(),
        host: ctx.host_str().to_owned(),
        path: ctx.path().to_owned(),
        status: parts.status.as_u16(),
        bytes: 0,
        duration_ms: 0.0,
        route: ctx.route.clone(),
        upstream: ctx.upstream.clone(),
        attempts: ctx.attempts,
        source: Source::Upstream,
        error: None,
        details: None,
    });
    let status = parts.status.as_u16();
    let mut done = Box::new(Completion {
        gw: gw.clone(),
        status,
        path,
        lease,
        keep_alive,
        record,
        start: ctx.start,
        bytes: 0,
    });
    let done = match tunnel_ends {
        Some((client_side, io, early)) => {
            // The exchange is over for the peer's stats and lease; its access line
            // waits for the end of the tunnel, with what went through it.
            let record = done.record.take();
            let id = done.lease.peer.id.clone();
            done.finish(End::Complete, None);
            let ends = Tunnel {
                id,
                client_side,
                upstream: io,
                early,
            };
            tokio::spawn(ends.run(gw.clone(), record, ctx.start));
            None
        }
        None => Some(done),
    };
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner: body,
            done,
            failed: None,
        },
    )
}

/// The access line of a tunnel, written once: when it ends, or when the gateway
/// stops with it still open (the runtime drops the task; the log is flushed after).
struct TunnelLog {
    gw: Arc<Gateway>,
    record: Option<AccessRecord>,
    start: Instant,
}

impl TunnelLog {
    fn write(&mut self, bytes: u64, details: String) {
        if let Some(mut rec) = self.record.take() {
            rec.ts = crate::observe::time::rfc3339_millis(SystemTime::now());
            rec.bytes = bytes;
            rec.duration_ms = ms(self.start.elapsed());
            rec.details = Some(details);
            self.gw.access.write(&rec);
        }
    }
}

impl Drop for TunnelLog {
    fn drop(&mut self) {
        self.write(0, "tunnel cut: the gateway stopped with it open".into());
    }
}

/// Both sides of a protocol switch (after a `101`).
struct Tunnel {
    id: Arc<str>,
    client_side: hyper::upgrade::OnUpgrade,
    upstream: crate::upstream::h1::Stream,
    /// What the peer sent right after its `101`.
    early: Bytes,
}

impl Tunnel {
    /// Relay bytes both ways until either side closes, then write the access line
    /// (status 101, bytes sent to the client, the whole session's duration). The
    /// tunnel holds no lease (a long-lived WebSocket is not an outstanding request)
    /// and ends when the peer's process does.
    async fn run(mut self, gw: Arc<Gateway>, record: Option<AccessRecord>, start: Instant) {
        let mut log = TunnelLog { gw, record, start };
        let (bytes, details) = match self.relay().await {
            Ok((up, down)) => (
                down,
                format!("tunnel closed: {up} bytes to the peer, {down} to the client"),
            ),
            Err(why) => (0, format!("tunnel ended: {why}")),
        };
        tracing::debug!("{}: {details}", self.id);
        log.write(bytes, details);
    }

    async fn relay(&mut self) -> Result<(u64, u64), String> {
        use tokio::io::AsyncWriteExt;
        let client = (&mut self.client_side)
            .await
            .map_err(|e| format!("the client's side of the upgrade failed: {e}"))?;
        let mut client = hyper_util::rt::TokioIo::new(client);
        if !self.early.is_empty() {
            client
                .write_all(&self.early)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut self.upstream)
            .await
            .map_err(|e| e.to_string())?;
        Ok((up, down + self.early.len() as u64))
    }
}

/// A borrowed view of the request for gateway-made responses.
pub struct View<'a> {
    pub request_id: &'a HeaderValue,
    pub method: &'a http::Method,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub accept: Option<&'a HeaderValue>,
    pub accept_language: Option<&'a HeaderValue>,
    pub route: Option<&'a Arc<str>>,
    pub upstream: Option<&'a Arc<str>>,
    pub attempts: u32,
    pub start: Instant,
}

fn ctx_view(ctx: &Ctx) -> View<'_> {
    View {
        request_id: &ctx.request_id,
        method: &ctx.method,
        host: ctx.host.as_ref().and_then(|h| h.to_str().ok()),
        path: ctx.path(),
        accept: ctx.accept.as_ref(),
        accept_language: ctx.accept_language.as_ref(),
        route: ctx.route.as_ref(),
        upstream: ctx.upstream.as_ref(),
        attempts: ctx.attempts,
        start: ctx.start,
    }
}

fn ctx_view_with<'a>(ctx: &'a Ctx, h: &'a http::HeaderMap) -> View<'a> {
    View {
        accept: h.get(header::ACCEPT),
        accept_language: h.get(header::ACCEPT_LANGUAGE),
        ..ctx_view(ctx)
    }
}

impl Gateway {
    /// The one builder of gateway-made responses: status and Proxy-Status from the
    /// cause, the request id, `Retry-After`, a friendly page; and the access log line.
    pub fn error_response(&self, v: &View<'_>, err: ProxyError) -> Response<ProxyBody> {
        let status = err.cause.status();
        let ps_type = err.cause.proxy_status();
        let retry_after = err.cause.retry_after();
        tracing::warn!(
            request_id = v.request_id.to_str().unwrap_or(""),
            "{} {} → {} {}",
            v.method,
            v.path,
            status.as_u16(),
            err
        );
        let page = self.pages.render(&super::pages::Page {
            status,
            error: ps_type,
            request_id: v.request_id.to_str().unwrap_or(""),
            accept: v.accept,
            accept_language: v.accept_language,
            details: Some(&err.context),
            retry_after,
            now: SystemTime::now(),
        });
        let mut res = Response::new(ProxyBody::Local(Full::new(page.body.clone())));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            PROXY_STATUS.clone(),
            proxy_status_value(ps_type, self.details.then_some(err.context.as_str())),
        );
        h.insert(X_REQUEST_ID.clone(), v.request_id.clone());
        h.insert(header::CONTENT_TYPE, page.content_type);
        h.insert(header::CONTENT_LANGUAGE, page.content_language);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Accept-Language"),
        );
        if let Some(s) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.access.enabled() {
            self.access.write(&AccessRecord {
                ts: crate::observe::time::rfc3339_millis(SystemTime::now()),
                request_id: v.request_id.to_str().unwrap_or("").to_owned(),
                method: v.method.as_str().to_owned(),
                host: v.host.unwrap_or("").to_owned(),
                path: v.path.to_owned(),
                status: status.as_u16(),
                bytes: page.body.len() as u64,
                duration_ms: ms(v.start.elapsed()),
                route: v.route.cloned(),
                upstream: v.upstream.cloned(),
                attempts: v.attempts,
                source: Source::Gateway,
                error: Some(ps_type),
                details: Some(err.context),
            });
        }
        res
    }
}

/// `healgate; error=<type>` with `; details="..."` when wanted (RFC 9209 §2).
pub fn proxy_status_value(error: &str, details: Option<&str>) -> HeaderValue {
    let mut s = format!("healgate; error={error}");
    if let Some(d) = details {
        s.push_str("; details=\"");
        for c in d.chars() {
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
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("healgate"))
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// The client response body: the upstream's, streamed, or a gateway-made page.
pub enum ProxyBody {
    Upstream {
        inner: UpstreamBody,
        done: Option<Box<Completion>>,
        /// The upstream failed mid-body; passed on at the next poll (see `poll_frame`).
        failed: Option<std::io::Error>,
    },
    Local(Full<Bytes>),
}

/// What happens when an upstream response ends: the connection goes back to the pool
/// (or not), the peer's lease ends, the access log line is written.
pub struct Completion {
    gw: Arc<Gateway>,
    status: u16,
    /// The request path, kept only when the peer's rules filter by path.
    path: Option<String>,
    lease: Lease,
    keep_alive: Option<Duration>,
    record: Option<AccessRecord>,
    start: Instant,
    bytes: u64,
}

/// How a response body ended.
enum End {
    Complete,
    /// The upstream failed mid-body.
    UpstreamFailed(String),
    /// The client went away before the end.
    ClientGone,
}

impl Completion {
    /// `conn`: the connection, when the body ended cleanly and it may be reused.
    fn finish(mut self: Box<Self>, end: End, conn: Option<Connection>) {
        let pool = &self.lease.pool;
        let error =
            matches!(end, End::UpstreamFailed(_)).then(|| Cause::ResponseIncomplete.proxy_status());
        self.lease.peer.stats.record(
            self.status,
            self.start.elapsed(),
            self.path.as_deref().unwrap_or(""),
            error,
        );
        match &end {
            End::Complete => {
                pool.record_success(&self.lease.peer);
                if let Some(conn) = conn {
                    if self.keep_alive != Some(Duration::ZERO) {
                        self.lease
                            .peer
                            .conns
                            .put(conn, self.keep_alive, pool.connector.idle_limit);
                    }
                }
            }
            End::UpstreamFailed(why) => {
                let err =
                    ProxyError::new(Cause::ConnectionTerminated, why.clone()).sent(Sent::Response);
                pool.record_failure(&self.lease.peer, &err);
            }
            End::ClientGone => {}
        }
        if let Some(mut rec) = self.record.take() {
            rec.ts = crate::observe::time::rfc3339_millis(SystemTime::now());
            rec.bytes = self.bytes;
            rec.duration_ms = ms(self.start.elapsed());
            match end {
                End::Complete => {}
                End::UpstreamFailed(why) => {
                    rec.error = Some(Cause::ResponseIncomplete.proxy_status());
                    rec.details = Some(why);
                }
                End::ClientGone => {
                    rec.details =
                        Some("client closed the connection before the response ended".into());
                }
            }
            self.gw.access.write(&rec);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(f) => Pin::new(f).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Upstream {
                failed: failed @ Some(_),
                ..
            } => Poll::Ready(failed.take().map(|e| Err(e.into()))),
            ProxyBody::Upstream {
                inner,
                done,
                failed,
            } => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(d), Some(data)) = (done.as_mut(), frame.data_ref()) {
                        d.bytes += data.len() as u64;
                    }
                    if inner.is_end_stream() {
                        if let Some(d) = done.take() {
                            d.finish(End::Complete, inner.take_reusable());
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(None) => {
                    if let Some(d) = done.take() {
                        d.finish(End::Complete, inner.take_reusable());
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(d) = done.take() {
                        let id = d.lease.peer.id.clone();
                        d.finish(
                            End::UpstreamFailed(format!("{id}: response body failed: {e}")),
                            None,
                        );
                    }
                    // Not at once: hyper would drop the response head and the data it
                    // still buffers. A `Pending` first makes it flush them, so the
                    // client sees a response cut short, not an empty reply.
                    *failed = Some(e);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(f) => f.is_end_stream(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(f) => f.size_hint(),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Upstream { inner, done, .. } = self {
            if let Some(d) = done.take() {
                // HEAD and bodiless statuses are never polled: complete if nothing is left.
                let end = if inner.is_end_stream() {
                    End::Complete
                } else {
                    End::ClientGone
                };
                let conn = inner.take_reusable();
                d.finish(end, conn);
            }
        }
    }
}
