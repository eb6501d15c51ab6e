//! The prepare phase: the client's request rewritten for the upstream. Origin-form
//! URI (the route's prefix stripped when asked); hop-by-hop headers out; `Host` is the
//! authority the request was routed by (an absolute-form target or h2 `:authority`
//! replaces the client's Host, so the gateway and the app agree on the site); the
//! forwarding headers (`X-Forwarded-For/-Proto/-Host/-Port/-Prefix`, `Via`,
//! `X-Request-Id`; a client's own `X-Forwarded-*` and `Forwarded` are believed only
//! from `gateway.trusted_proxies`, and replaced otherwise) go in a separate
//! `added` list that the h1 encoder writes after the client's headers (no map
//! insertions per request). An HTTP/1.1 `Upgrade` (WebSocket; never `h2c`) keeps
//! `Upgrade`/`Connection: upgrade` towards the peer.

use super::client::Client;
use super::headers::{
    self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PREFIX,
    X_FORWARDED_PROTO, X_REQUEST_ID,
};
use super::route::{upstream_path, Route};
use super::Gateway;
use crate::error::{Cause, ProxyError};
use crate::upstream::h2::ClientBody;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use hyper::body::Incoming;

/// The request as it goes to a peer: the client's head, the headers the gateway adds,
/// and the body.
pub struct Prepared {
    pub parts: http::request::Parts,
    pub added: Vec<(HeaderName, HeaderValue)>,
    pub body: ClientBody,
    /// The client sent `TE: trailers`: forwarded to HTTP/2 peers (gRPC needs it), where
    /// it is the one `TE` allowed; hop-by-hop like every `TE` towards HTTP/1.1 peers.
    pub te_trailers: bool,
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
    let te_trailers = headers::te_trailers(h);
    headers::strip_hop_by_hop(h);
    if target_authority {
        // RFC 9112 §3.2.2: the target's authority replaces Host.
        h.remove(header::HOST);
    }
    // One pass over the names: which forwarding headers the client sent.
    let mut seen = Seen::default();
    for name in h.keys() {
        if *name == header::HOST {
            seen.host = true;
        } else if *name == X_FORWARDED_FOR {
            seen.xff = true;
        } else if *name == X_FORWARDED_PROTO {
            seen.xfp = true;
        } else if *name == X_FORWARDED_HOST {
            seen.xfh = true;
        } else if *name == X_FORWARDED_PORT {
            seen.xf_port = true;
        } else if *name == X_FORWARDED_PREFIX {
            seen.xf_prefix = true;
        } else if *name == header::FORWARDED {
            seen.forwarded = true;
        } else if *name == X_REQUEST_ID {
            seen.id = true;
        } else if !gw.underscores_in_headers && name.as_str().contains('_') {
            seen.underscored = true;
        }
    }
    if seen.underscored {
        // CGI and WSGI servers read `Content_Length` as `Content-Length`: a header the
        // gateway did not frame by. Dropped, as nginx does (`underscores_in_headers`).
        let names: Vec<HeaderName> = h
            .keys()
            .filter(|n| n.as_str().contains('_'))
            .cloned()
            .collect();
        for name in names {
            tracing::debug!(
                "dropped the header {name}: underscores in header names are not forwarded"
            );
            h.remove(&name);
        }
    }
    if !client.trusted && seen.any_forwarding() {
        // Only a trusted proxy may say who the client is and how it came in: from
        // anyone else these headers are replaced (scheme spoofing, poisoned links).
        for (present, name) in [
            (seen.xff, &X_FORWARDED_FOR),
            (seen.xfp, &X_FORWARDED_PROTO),
            (seen.xfh, &X_FORWARDED_HOST),
            (seen.xf_port, &X_FORWARDED_PORT),
            (seen.xf_prefix, &X_FORWARDED_PREFIX),
            (seen.forwarded, &header::FORWARDED),
        ] {
            if present {
                h.remove(name);
            }
        }
        seen = Seen {
            host: seen.host,
            id: seen.id,
            ..Seen::default()
        };
    }
    let mut added = Vec::with_capacity(10);
    if let Some(proto) = upgrade {
        added.push((header::CONNECTION, HeaderValue::from_static("upgrade")));
        added.push((header::UPGRADE, proto.clone()));
    }
    if let Some(host) = authority {
        if !seen.host {
            added.push((header::HOST, host.clone()));
        }
        if !seen.xfh {
            added.push((X_FORWARDED_HOST.clone(), host.clone()));
        }
    }
    let forwarded_for = if seen.xff {
        // A trusted proxy's list, with its peer (the client here) appended, in one field.
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
    if !seen.xfp {
        let proto = if client.tls.is_some() {
            "https"
        } else {
            "http"
        };
        added.push((X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto)));
    }
    if !seen.xf_port {
        added.push((X_FORWARDED_PORT.clone(), client.local_port.clone()));
    }
    if route.strip_prefix && !seen.xf_prefix {
        let prefix = route.prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            if let Ok(v) = HeaderValue::from_str(prefix) {
                added.push((X_FORWARDED_PREFIX.clone(), v));
            }
        }
    }
    let via = if version == Version::HTTP_2 {
        &gw.via_h2
    } else {
        &gw.via_h1
    };
    added.push((header::VIA, via.clone()));
    if seen.id {
        // The client's own id is the request id when valid; either way ours goes.
        h.remove(&X_REQUEST_ID);
    }
    added.push((X_REQUEST_ID.clone(), request_id.clone()));
    Ok(Prepared {
        parts,
        added,
        body: ClientBody::new(body),
        te_trailers,
    })
}

/// The forwarding headers a request came with.
#[derive(Default)]
struct Seen {
    host: bool,
    xff: bool,
    xfp: bool,
    xfh: bool,
    xf_port: bool,
    xf_prefix: bool,
    forwarded: bool,
    id: bool,
    /// A name with `_`, to drop.
    underscored: bool,
}

impl Seen {
    fn any_forwarding(&self) -> bool {
        self.xff || self.xfp || self.xfh || self.xf_port || self.xf_prefix || self.forwarded
    }
}
