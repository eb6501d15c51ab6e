//! The respond phase: the client's response from the upstream's (status, headers and
//! body as they came, hop-by-hop headers aside, plus the request id), streamed; and
//! the completion when its body ends: the connection back to the pool (or not), the
//! peer's lease and measurements, then the log phase ([`super::log::Record::finish`]).
//!
//! An HTTP/1.1 peer's body comes through `h1::UpstreamBody`, an HTTP/2 peer's as
//! hyper's `Incoming`; trailers (gRPC's `grpc-status`) pass either way. An HTTP/1.1
//! client gets them after the last chunk when it sent `TE: trailers` and the response
//! names them in `Trailer` (hyper's rule); a gRPC response from an h2 peer that names
//! none is given `Trailer: grpc-status, grpc-message, grpc-status-details-bin`.

use super::compress::{Asked, Encoding};
use super::headers::{self, X_REQUEST_ID};
use super::log::{End, Record};
use super::tunnel::Tunnel;
use crate::error::{Cause, ProxyError, Sent};
use crate::observe::access::Source;
use crate::upstream::h1::{Connection, Head, UpstreamBody};
use crate::upstream::h2::StreamSlot;
use crate::upstream::Lease;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A peer's answer: the response head and what its body comes on.
pub enum Reply {
    /// An HTTP/1.1 head, and the connection the body follows on.
    H1(Head, Connection),
    /// An HTTP/2 response, and its hold on the connection's streams.
    H2(Response<Incoming>, StreamSlot),
}

/// The client's response from the upstream's; the body follows as it comes,
/// compressed when `[gateway.compression]` and the request (`asked`) allow it.
/// `client_h1`: the client speaks HTTP/1.1 (for trailers).
pub fn respond(
    rec: Record,
    reply: Reply,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    client_h1: bool,
    asked: Asked,
) -> Response<ProxyBody> {
    match reply {
        Reply::H1(head, conn) => respond_h1(rec, head, lease, conn, client_upgrade, asked),
        Reply::H2(res, slot) => respond_h2(rec, res, slot, lease, client_h1, asked),
    }
}

/// The compress step, when configured and the client asked: the encoder, and the
/// response's headers changed to say so (the record notes the coding).
fn encoding(
    rec: &mut Record,
    asked: Asked,
    parts: &mut http::response::Parts,
) -> Option<Box<Encoding>> {
    rec.gw
        .compression
        .as_ref()
        .and_then(|p| p.respond(asked, parts.status, &mut parts.headers))
        .map(|(coding, e)| {
            rec.coding = Some(coding.token());
            Box::new(e)
        })
}

/// `Trailer` for a gRPC response to an HTTP/1.1 client: the fields gRPC ends with.
const GRPC_TRAILERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// An HTTP/2 peer's response: no keep-alive to learn, no upgrade.
fn respond_h2(
    mut rec: Record,
    res: Response<Incoming>,
    slot: StreamSlot,
    lease: Lease,
    client_h1: bool,
    asked: Asked,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    parts.version = http::Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    if client_h1
        && !parts.headers.contains_key(header::TRAILER)
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        parts
            .headers
            .insert(header::TRAILER, HeaderValue::from_static(GRPC_TRAILERS));
    }
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    let encoding = encoding(&mut rec, asked, &mut parts);
    let done = Box::new(Completion {
        status: parts.status.as_u16(),
        lease,
        keep_alive: None,
        rec: Some(rec),
        bytes: 0,
    });
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner: Inner::H2(body, Some(slot)),
            done: Some(done),
            failed: None,
            encoding,
        },
    )
}

/// An HTTP/1.1 peer's response. A `101` to an upgrade request (`client_upgrade`)
/// hands both connections to a [`Tunnel`].
fn respond_h1(
    mut rec: Record,
    head: Head,
    lease: Lease,
    conn: Connection,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    asked: Asked,
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
        .insert(X_REQUEST_ID.clone(), rec.request_id.clone());
    let encoding = encoding(&mut rec, asked, &mut parts);
    let done = Box::new(Completion {
        status: parts.status.as_u16(),
        lease,
        keep_alive,
        rec: Some(rec),
        bytes: 0,
    });
    let done = match tunnel_ends {
        Some((client_side, upstream, early)) => {
            // The exchange is over for the peer's stats and lease; the record waits
            // for the end of the tunnel, with what went through it.
            let id = done.lease.peer.id.clone();
            let rec = done.hand_over();
            let tunnel = Tunnel {
                id,
                client_side,
                upstream,
                early,
            };
            tokio::spawn(tunnel.run(rec));
            None
        }
        None => Some(done),
    };
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner: Inner::H1(body),
            done,
            failed: None,
            encoding,
        },
    )
}

/// An upstream's response body, as its protocol delivers it.
pub enum Inner {
    H1(UpstreamBody),
    /// The body, and the stream's hold on its connection (let go at the end).
    H2(Incoming, Option<StreamSlot>),
}

impl Inner {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self {
            Inner::H1(b) => Pin::new(b).poll_frame(cx),
            Inner::H2(b, slot) => {
                let polled = Pin::new(&mut *b)
                    .poll_frame(cx)
                    .map_err(std::io::Error::other);
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
                    slot.take();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inner::H1(b) => b.is_end_stream(),
            Inner::H2(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inner::H1(b) => b.size_hint(),
            Inner::H2(b, _) => b.size_hint(),
        }
    }

    /// The HTTP/1.1 connection, when the body ended cleanly and it may carry another
    /// request. (An h2 connection is shared: nothing to give back.)
    fn take_reusable(&mut self) -> Option<Connection> {
        match self {
            Inner::H1(b) => b.take_reusable(),
            Inner::H2(_, slot) => {
                slot.take();
                None
            }
        }
    }
}

/// The client response body: the upstream's, streamed, or a gateway-made page.
pub enum ProxyBody {
    Upstream {
        inner: Inner,
        done: Option<Box<Completion>>,
        /// The upstream failed mid-body; passed on at the next poll (see `poll_frame`).
        failed: Option<std::io::Error>,
        /// Compressing for the client ([`super::compress`]).
        encoding: Option<Box<Encoding>>,
    },
    Local(Full<Bytes>),
}

/// What happens when an upstream response ends.
pub struct Completion {
    status: u16,
    lease: Lease,
    keep_alive: Option<Duration>,
    /// `None` once handed to a tunnel.
    rec: Option<Record>,
    bytes: u64,
}

/// How a response body ended.
enum BodyEnd {
    Complete,
    /// The upstream failed mid-body.
    UpstreamFailed(String),
    /// The client went away before the end.
    ClientGone,
    /// Compressing failed (the gateway's own failure: the peer is not blamed and its
    /// connection is not reused, the body was not read to its end).
    EncodeFailed(String),
}

impl Completion {
    /// The peer's side of the end: its measurements, its health, the connection back
    /// to the pool when the body ended cleanly and it may be reused.
    fn end_exchange(&mut self, end: &BodyEnd, conn: Option<Connection>) {
        let pool = &self.lease.pool;
        let peer = &self.lease.peer;
        let error = matches!(end, BodyEnd::UpstreamFailed(_))
            .then(|| Cause::ResponseIncomplete.proxy_status());
        let (elapsed, path) = match &self.rec {
            Some(r) => (r.start.elapsed(), r.path()),
            None => (Duration::ZERO, ""),
        };
        peer.stats.record(self.status, elapsed, path, error);
        match end {
            BodyEnd::Complete => {
                pool.record_success(peer);
                if let Some(conn) = conn {
                    if self.keep_alive != Some(Duration::ZERO) {
                        peer.conns
                            .put(conn, self.keep_alive, pool.connector.idle_limit);
                    }
                }
            }
            BodyEnd::UpstreamFailed(why) => {
                let err =
                    ProxyError::new(Cause::ConnectionTerminated, why.clone()).sent(Sent::Response);
                pool.record_failure(peer, &err);
            }
            BodyEnd::ClientGone | BodyEnd::EncodeFailed(_) => {}
        }
    }

    /// The exchange ends with the body: the peer's side, then the log phase.
    fn finish(mut self: Box<Self>, end: BodyEnd, conn: Option<Connection>) {
        self.end_exchange(&end, conn);
        let Some(rec) = self.rec.take() else { return };
        let (error, details) = match end {
            BodyEnd::Complete => (None, None),
            BodyEnd::UpstreamFailed(why) | BodyEnd::EncodeFailed(why) => {
                (Some(Cause::ResponseIncomplete), Some(why))
            }
            BodyEnd::ClientGone => (
                None,
                Some("client closed the connection before the response ended".into()),
            ),
        };
        rec.finish(End {
            status: self.status,
            bytes: self.bytes,
            source: Source::Upstream,
            error,
            details,
        });
    }

    /// A `101`: the exchange is complete for the peer; the record goes to the tunnel.
    fn hand_over(mut self: Box<Self>) -> Record {
        self.end_exchange(&BodyEnd::Complete, None);
        self.rec.take().expect("a record until handed over")
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
                encoding,
            } => loop {
                if let Some(trailers) = encoding.as_mut().and_then(|e| e.held.take()) {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                let frame = match inner.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Some(frame),
                    Poll::Ready(None) => None,
                    Poll::Ready(Some(Err(e))) => {
                        if let Some(d) = done.take() {
                            let id = d.lease.peer.id.clone();
                            d.finish(
                                BodyEnd::UpstreamFailed(format!("{id}: response body failed: {e}")),
                                None,
                            );
                        }
                        // Not at once: hyper would drop the response head and the data it
                        // still buffers. A `Pending` first makes it flush them, so the
                        // client sees a response cut short, not an empty reply.
                        *failed = Some(e);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Pending => {
                        // Nothing more ready upstream: what was encoded goes out now.
                        let flushed = match encoding.as_mut().map(|e| e.flush()) {
                            Some(Ok(Some(data))) => Frame::data(data),
                            Some(Err(e)) => {
                                encode_failed(done, failed, e, cx);
                                return Poll::Pending;
                            }
                            _ => return Poll::Pending,
                        };
                        if let (Some(d), Some(data)) = (done.as_mut(), flushed.data_ref()) {
                            d.bytes += data.len() as u64;
                        }
                        return Poll::Ready(Some(Ok(flushed)));
                    }
                };
                let end = frame.is_none() || inner.is_end_stream();
                let frame = match encoding.as_mut() {
                    None => frame,
                    Some(e) => match encode(e, frame, end) {
                        Ok(Encoded::Frame(f)) => Some(f),
                        // Not enough to send yet: read on.
                        Ok(Encoded::Nothing) => continue,
                        Ok(Encoded::End) => None,
                        Err(e) => {
                            encode_failed(done, failed, e, cx);
                            return Poll::Pending;
                        }
                    },
                };
                if let (Some(d), Some(data)) =
                    (done.as_mut(), frame.as_ref().and_then(|f| f.data_ref()))
                {
                    d.bytes += data.len() as u64;
                }
                if end {
                    if let Some(d) = done.take() {
                        d.finish(BodyEnd::Complete, inner.take_reusable());
                    }
                }
                return Poll::Ready(frame.map(Ok));
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(f) => f.is_end_stream(),
            ProxyBody::Upstream {
                inner,
                encoding: None,
                ..
            } => inner.is_end_stream(),
            ProxyBody::Upstream {
                inner,
                encoding: Some(e),
                ..
            } => inner.is_end_stream() && e.finished && e.held.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(f) => f.size_hint(),
            ProxyBody::Upstream {
                inner,
                encoding: None,
                ..
            } => inner.size_hint(),
            // Not known until it is encoded.
            ProxyBody::Upstream { .. } => SizeHint::default(),
        }
    }
}

/// Compressing failed: the record ends with `http_response_incomplete`, and the error
/// is passed on at the next poll (the caller returns `Pending` first, as for an
/// upstream failure, so hyper sends what it holds).
fn encode_failed(
    done: &mut Option<Box<Completion>>,
    failed: &mut Option<std::io::Error>,
    e: std::io::Error,
    cx: &mut Context<'_>,
) {
    if let Some(d) = done.take() {
        d.finish(
            BodyEnd::EncodeFailed(format!("compressing the response failed: {e}")),
            None,
        );
    }
    *failed = Some(e);
    cx.waker().wake_by_ref();
}

/// What an upstream frame became for the client.
enum Encoded {
    Frame(Frame<Bytes>),
    /// Nothing to send yet.
    Nothing,
    /// The stream is over, every byte sent.
    End,
}

/// One upstream frame (`None`: the body ended) through the encoder; `end`: it is the
/// last. Trailers wait behind the encoder's last bytes.
fn encode(e: &mut Encoding, frame: Option<Frame<Bytes>>, end: bool) -> std::io::Result<Encoded> {
    let mut out = None;
    if let Some(frame) = frame {
        match frame.into_data() {
            Ok(data) => out = e.data(&data)?,
            Err(frame) => e.held = frame.into_trailers().ok(),
        }
    }
    if end || e.held.is_some() {
        let tail = e.finish()?;
        out = match (out, tail) {
            (Some(a), Some(b)) => {
                let mut all = bytes::BytesMut::from(&a[..]);
                all.extend_from_slice(&b);
                Some(all.freeze())
            }
            (a, b) => a.or(b),
        };
    }
    Ok(match out {
        Some(data) => Encoded::Frame(Frame::data(data)),
        None if end && e.held.is_none() => Encoded::End,
        None => match e.held.take() {
            Some(t) => Encoded::Frame(Frame::trailers(t)),
            None => Encoded::Nothing,
        },
    })
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Upstream { inner, done, .. } = self {
            if let Some(d) = done.take() {
                // HEAD and bodiless statuses are never polled: complete if nothing is left.
                let end = if inner.is_end_stream() {
                    BodyEnd::Complete
                } else {
                    BodyEnd::ClientGone
                };
                let conn = inner.take_reusable();
                d.finish(end, conn);
            }
        }
    }
}
