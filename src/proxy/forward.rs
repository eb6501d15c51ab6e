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
//! Upstream responses pass through as they are (hop-by-hop headers aside, plus
//! `X-Request-Id`). Every response the gateway makes itself comes from
//! [`super::answer::error`], so from the one mapping in [`crate::error`]. Every exit
//! ends the request's [`Record`] exactly once.

use super::answer;
use super::client::Client;
use super::log::Record;
use super::prepare::{prepare, Prepared};
use super::respond::{respond, ProxyBody};
use super::retry::{self, Attempt, Retry};
use super::route::Route;
use super::{accept, headers, Gateway};
use crate::error::{is_idempotent, Cause, ProxyError, Sent, Side};
use crate::upstream::h1::{Connection, Head, Outgoing, Timeouts};
use crate::upstream::{Lease, Pool};
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
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
    if let Err(e) = accept::check(&gw, &req) {
        return answer::error(rec, Some(req.headers()), e);
    }
    // route
    let router = gw.router();
    let route = match route(&gw, &router, &req, &rec) {
        Ok(r) => r,
        Err(e) => return answer::error(rec, Some(req.headers()), e),
    };
    rec.routed(route.name.clone(), route.pool.meter.clone());
    let pool = route.pool.clone();
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
        Ok((head, lease, conn)) => respond(rec, head, lease, conn, upgrade.map(|u| u.1), asked),
        Err(e) => answer::error(rec, Some(&prepared.parts.headers), e),
    }
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
) -> Result<(Head, Lease, Connection), ProxyError> {
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
        let mut err = match attempt(gw, &lease, request, &mut req.body, idempotent).await {
            Ok((head, conn)) => return Ok((head, lease, conn)),
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
            replayable: bodiless || err.sent == Sent::Nothing,
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
