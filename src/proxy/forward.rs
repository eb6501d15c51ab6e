//! The request path: [`handle`] is the one driver, running the phases top to bottom.
//!
//! ```text
//!  accept ──► route ──► prepare ──► pick peer ──► connect ──► send ──► receive ──► respond ──► log
//!  accept.rs  route.rs  prepare.rs  upstream::   upstream::  upstream::h1          respond.rs  log.rs
//!    │          │          │        Pool::acquire conn.rs      │          │           │ (tunnel.rs)
//!    │ 400,408, │ 404      │ 400       │ 503         │ 502/504 │ 408 body │ 502/504   └ at body end
//!    │ 431,508  │          │           │             │         │          │
//!    └──────────┴──────────┴───────────┴─ answer.rs: the gateway's own answer ─┴──► log.rs
//!                                      ▲ retry.rs: another peer, when safe
//! ```
//!
//! Between accept and route the gateway answers two kinds of request itself: ACME
//! HTTP-01 validation (`answer::acme_http01`, when that challenge is on) and, on plain
//! listeners with `redirect_http`, the 308 to https (`answer::redirect`).
//!
//! Upstream responses pass through as they are (hop-by-hop headers aside, plus
//! `X-Request-Id`). Every response the gateway makes itself comes from
//! [`super::answer::error`], so from the one mapping in [`crate::error`]. Every exit
//! ends the request's [`Record`] exactly once.

use super::answer;
use super::client::Client;
use super::log::Record;
use super::prepare::{prepare, Prepared};
use super::respond::{respond, ProxyBody, Reply};
use super::retry::{self, Attempt, Retry};
use super::route::Route;
use super::{accept, headers, Gateway};
use crate::config::Protocol;
use crate::error::{is_idempotent, Cause, ProxyError, Sent, Side};
use crate::upstream::h1::{Connection, Outgoing, Timeouts};
use crate::upstream::h2::{self, ClientBody, H2Request, H2Stream};
use crate::upstream::{Lease, Pool};
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for the crash lane before a crash retry goes ahead anyway.
const CRASH_LANE_WAIT: Duration = Duration::from_secs(5);

/// The phase driver: one client request in, one response out. If the client goes
/// away first, hyper drops this future and the record is logged as 499.
pub async fn handle(
    gw: Arc<Gateway>,
    mut req: Request<Incoming>,
    client: &Client,
) -> Response<ProxyBody> {
    // accept
    let authority = accept::authority(&req);
    let request_id = accept::request_id(&req);
    let mut rec = Record::start(
        gw.clone(),
        client.addr.ip(),
        request_id,
        req.method().clone(),
        authority,
        req.uri().clone(),
    );
    rec.tls = client.tls;
    if let Err(e) = accept::check(&gw, &req) {
        return answer::error(rec, Some(req.headers()), e);
    }
    // ACME HTTP-01 validation, when it is on: answered by the gateway, not routed.
    if let (true, Some(edge)) = (gw.acme_http01.load(Ordering::Relaxed), &gw.edge) {
        if let Some(token) = accept::acme_token(&req) {
            let authorization = edge.certs.http01(token);
            return answer::acme_http01(rec, req.headers(), token, authorization);
        }
    }
    if gw.redirect_http && client.tls.is_none() {
        if let Some(location) = https_location(&gw, &req, &rec) {
            return answer::redirect(rec, location);
        }
    }
    // route
    let router = gw.router();
    let route = match route(&gw, &router, &req, &rec) {
        Ok(r) => r,
        Err(e) => return answer::error(rec, Some(req.headers()), e),
    };
    rec.routed(route.name.clone(), route.pool.meter.clone());
    let pool = route.pool.clone();
    let client_h1 = req.version() < Version::HTTP_2;
    // prepare. A protocol switch (WebSocket) is relayed: the client's side of it is
    // taken now, before the request is taken apart.
    let upgrade = headers::upgrade_request(req.version(), req.headers())
        .map(|proto| (proto, hyper::upgrade::on(&mut req)));
    let protocol = upgrade.as_ref().map(|u| &u.0);
    // What the client's Accept-Encoding allows the response (the respond phase's
    // compress step), read before the request is taken apart.
    let asked = gw
        .compression
        .as_ref()
        .map(|p| p.asked(req.method(), req.headers()))
        .unwrap_or_default();
    let prepared = prepare(
        &gw,
        req,
        &rec.request_id,
        rec.host.as_ref(),
        client,
        route,
        protocol,
    );
    drop(router);
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => return answer::error(rec, None, e),
    };
    // pick peer → connect → send → receive, retried while safe
    match exchange(&gw, &mut rec, &pool, &mut prepared, upgrade.is_some()).await {
        // respond; the log phase runs when the body ends
        Ok((reply, lease)) => respond(rec, reply, lease, upgrade.map(|u| u.1), client_h1, asked),
        Err(e) => answer::error(rec, Some(&prepared.parts.headers), e),
    }
}

/// Where a plain-HTTP request goes under `redirect_http`: the same host and target
/// on the HTTPS listener's port. `None` for the health paths, ACME HTTP-01
/// challenges and a request without a host to send it to.
fn https_location(
    gw: &Gateway,
    req: &Request<Incoming>,
    rec: &Record,
) -> Option<http::HeaderValue> {
    let path = req.uri().path();
    if path.starts_with(crate::tls::certs::HTTP01_PREFIX)
        || gw.health_paths.iter().any(|h| h == path)
    {
        return None;
    }
    let host = rec.host.as_ref().and_then(headers::routing_host)?;
    let port = match gw.https_port.get() {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    let target = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
    http::HeaderValue::try_from(format!("https://{host}{port}{target}")).ok()
}

/// The route phase: longest prefix, host-specific first. Absolute-form requests only
/// match routes naming that host (no open proxy).
fn route<'r>(
    gw: &Gateway,
    router: &'r super::route::Router,
    req: &Request<Incoming>,
    rec: &Record,
) -> Result<&'r Route, ProxyError> {
    let absolute_form = req.version() < Version::HTTP_2 && req.uri().authority().is_some();
    let host_key = rec.host.as_ref().and_then(headers::routing_host);
    let explicit_only = absolute_form && !gw.is_own_host(host_key.as_deref());
    if let Some(route) = router.find(host_key.as_deref(), req.uri().path(), explicit_only) {
        return Ok(route);
    }
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
    Err(ProxyError::new(Cause::NoRoute, why))
}

/// pick peer → connect → send → receive, on peers of `pool` until one answers or a
/// retry is not safe. The request head is only read by an attempt, so a retry sends
/// the same one again without a copy; the body can go again only if no byte of it
/// left.
async fn exchange(
    gw: &Gateway,
    rec: &mut Record,
    pool: &Arc<Pool>,
    req: &mut Prepared,
    upgrade: bool,
) -> Result<(Reply, Lease), ProxyError> {
    let idempotent = is_idempotent(&req.parts.method);
    let bodiless = req.body.is_end_stream();
    let max = pool.settings.retry.attempts.max(1);
    pool.note_request();
    let mut tried = 0u64;
    let mut crash_retries = 0;
    let mut died_before = 0;
    // Held while a request retried after a crash is in flight (see `Pool::crash_lane`).
    let mut crash_lane: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        rec.attempts += 1;
        let lease = pool.acquire(tried).await?;
        tried |= 1u64.checked_shl(lease.index).unwrap_or(0);
        rec.upstream = Some(lease.peer.id.clone());
        let request = Outgoing {
            parts: &req.parts,
            added: &req.added,
            upgrade,
        };
        let body = &mut req.body;
        let mut err = match attempt(gw, &lease, request, req.te_trailers, body, idempotent).await {
            Ok(reply) => return Ok((reply, lease)),
            Err(e) => e,
        };
        crash_lane.take();
        // A pooled connection that refused the very first write: the peer's
        // keep-alive timeout, not a failure of the peer.
        let stale = err.cause == Cause::ConnectionTerminated && err.sent == Sent::Nothing;
        if !stale {
            lease.pool.record_failure(&lease.peer, &err);
        }
        let notice = retry::exit_notice(&lease, &mut err, &mut crash_retries).await;
        let peer = lease.peer.clone();
        drop(lease);
        let died = retry::unexplained_death(&err, notice);
        let facts = Attempt {
            number: rec.attempts,
            max,
            idempotent,
            // An h2 attempt hands the body back only when none of it was taken.
            replayable: bodiless || (err.sent == Sent::Nothing && req.body.is_whole()),
            poison: notice == Some(true),
            died_before,
            died,
        };
        died_before += u32::from(died);
        rec.failed.push((peer.id.clone(), err.cause));
        let why_not = match retry::decide(&err, &facts) {
            Retry::Again if pool.allow_retry() => None,
            Retry::Again => {
                tracing::warn!(
                    "retry budget of {} exhausted; not retrying {err}",
                    pool.name
                );
                Some("the retry budget is exhausted")
            }
            Retry::No(why) => Some(why),
        };
        if let Some(why) = why_not {
            tracing::debug!(
                "attempt {} failed ({err}); not retried: {why}",
                rec.attempts
            );
            if err.cause.side() == Side::Upstream {
                // The client's own slowness (a stalled upload) is not the instance's:
                // it must not feed its error counts, latency or AutoHeal rules.
                peer.stats.record(
                    err.cause.status().as_u16(),
                    rec.start.elapsed(),
                    rec.path(),
                    Some(err.cause.proxy_status()),
                );
            }
            return Err(err);
        }
        tracing::debug!("attempt {} failed ({err}); retrying", rec.attempts);
        pool.meter.retried(err.cause);
        if crash_retries > 0 && crash_lane.is_none() {
            let lane = pool.crash_lane.clone().acquire_owned();
            crash_lane = tokio::time::timeout(CRASH_LANE_WAIT, lane)
                .await
                .ok()
                .and_then(Result::ok);
        }
    }
}

/// connect → send → receive, on one peer: the response head and what its body will
/// come on. The error says how far the request got (retry rules). The peer's
/// protocol decides the client: HTTP/1.1, HTTP/2, or (`auto`, over TLS) what ALPN
/// chose on the first connection.
async fn attempt(
    gw: &Gateway,
    lease: &Lease,
    request: Outgoing<'_>,
    te_trailers: bool,
    body: &mut ClientBody,
    idempotent: bool,
) -> Result<Reply, ProxyError> {
    let pool = &lease.pool;
    let peer = &lease.peer;
    let c = &pool.connector;
    let auto = c.protocol == Protocol::Auto && peer.tls;
    let fresh = match c.protocol {
        Protocol::H2 => return attempt_h2(gw, lease, request, te_trailers, body, None).await,
        _ if auto && !peer.alpn_h1.load(Ordering::Relaxed) => {
            match peer.h2.checkout_auto(c, &peer.id, &peer.target).await? {
                h2::Auto::H2(stream) => {
                    return attempt_h2(gw, lease, request, te_trailers, body, Some(stream)).await
                }
                h2::Auto::H1(io) => {
                    peer.alpn_h1.store(true, Ordering::Relaxed);
                    Some(Connection::new(io))
                }
            }
        }
        Protocol::H1 | Protocol::Auto => None,
    };
    let pooled = || peer.conns.checkout(idempotent, c.idle_limit);
    let mut conn = match fresh.or_else(pooled) {
        Some(conn) => conn,
        // Known to choose HTTP/1.1: each new connection still goes by what its ALPN
        // says (a server that took up h2 since is spoken to in h2 from then on).
        None if auto => {
            let io = c.open(&peer.id, &peer.target, true).await?;
            match peer.h2.by_alpn(c, &peer.id, io).await? {
                h2::Auto::H1(io) => Connection::new(io),
                h2::Auto::H2(stream) => {
                    peer.alpn_h1.store(false, Ordering::Relaxed);
                    return attempt_h2(gw, lease, request, te_trailers, body, Some(stream)).await;
                }
            }
        }
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
        Ok(head) => Ok(Reply::H1(head, conn)),
        Err(e) => {
            if conn.reused && e.cause == Cause::ConnectionTerminated {
                // The peer closed it while it was idle, or as the request arrived.
                peer.conns.learn_idle_close(idle);
            }
            Err(e)
        }
    }
}

/// connect → send → receive over HTTP/2: a stream on the peer's shared connection (or
/// `stream`, one just opened by ALPN). A stream the peer did not process (refused, or
/// above a GOAWAY's last stream id) leaves its connection out of later picks, so a
/// retry goes on another connection or peer.
async fn attempt_h2(
    gw: &Gateway,
    lease: &Lease,
    request: Outgoing<'_>,
    te_trailers: bool,
    body: &mut ClientBody,
    stream: Option<H2Stream>,
) -> Result<Reply, ProxyError> {
    let peer = &lease.peer;
    let c = &lease.pool.connector;
    let mut stream = match stream {
        Some(s) => s,
        None => {
            peer.h2
                .checkout(c, &peer.id, &peer.target, peer.tls)
                .await?
        }
    };
    let req = H2Request {
        parts: request.parts,
        added: request.added,
        te_trailers,
        tls: peer.tls,
        target: &peer.target,
    };
    let clocks = h2::Clocks {
        deadlines: &gw.deadlines,
        response_header: lease.pool.settings.response_header_timeout,
        client_body: gw.client_body_timeout,
        response_header_limit: c.response_header_limit,
    };
    match h2::send(&peer.id, &mut stream, &req, body, &clocks).await {
        Ok(res) => Ok(Reply::H2(res, stream.slot)),
        Err(e) => {
            if e.cause == Cause::ConnectionTerminated {
                peer.h2.forget(&stream.slot);
            }
            Err(e)
        }
    }
}
