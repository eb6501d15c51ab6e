//! The prepare phase: the client's request rewritten for the upstream. Origin-form
//! URI (the route's prefix stripped when asked); hop-by-hop headers out; `Host` is the
//! authority the request was routed by (an absolute-form target or h2 `:authority`
//! replaces the client's Host, so the gateway and the app agree on the site); the
//! forwarding headers (`X-Forwarded-*`, `Via`, `X-Request-Id`) go in a separate
//! `added` list that the h1 encoder writes after the client's headers (no map
//! insertions per request). An HTTP/1.1 `Upgrade` (WebSocket; never `h2c`) keeps
//! `Upgrade`/`Connection: upgrade` towards the peer.

use super::forward::Client;
use super::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
use super::route::{upstream_path, Route};
use super::Gateway;
use crate::error::{Cause, ProxyError};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use hyper::body::Incoming;

/// The request as it goes to a peer: the client's head, the headers the gateway adds,
/// and the body.
pub struct Prepared {
    pub parts: http::request::Parts,
    pub added: Vec<(HeaderName, HeaderValue)>,
    pub body: Incoming,
}

/// Rewrite `req` for the peers of `route`. `authority` is what it was routed by;
/// `upgrade` the protocol of a relayed switch.
pub fn prepare(
    gw: &Gateway,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    authority: Option<&HeaderValue>,
    client: &Client,
    route: &Route,
    upgrade: Option<&HeaderValue>,
) -> Result<Prepared, ProxyError> {
    let (mut parts, body) = req.into_parts();
    // Origin-form as received needs no rewrite; absolute-form, h2 and strip_prefix do.
    let target_authority = parts.uri.authority().is_some();
    if route.strip_prefix || parts.uri.scheme().is_some() || target_authority {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = upstream_path(route, pq);
        parts.uri = Uri::try_from(path.as_ref())
            .map_err(|e| ProxyError::new(Cause::BadRequest, format!("bad request target: {e}")))?;
    }
    let version = parts.version;
    parts.version = Version::HTTP_11;

    // The client's headers stay as they are in `parts` (hop-by-hop ones aside); what
    // the gateway adds goes in `added`, written after them (`h1::Connection::send`).
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    if target_authority {
        // RFC 9112 §3.2.2: the target's authority replaces Host.
        h.remove(header::HOST);
    }
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
    if let Some(host) = authority {
        if !has_host {
            added.push((header::HOST, host.clone()));
        }
        if !has_xfh {
            added.push((X_FORWARDED_HOST.clone(), host.clone()));
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
        // The client's own id is the request id when valid; either way ours goes.
        h.remove(&X_REQUEST_ID);
    }
    added.push((X_REQUEST_ID.clone(), request_id.clone()));
    Ok(Prepared { parts, added, body })
}
