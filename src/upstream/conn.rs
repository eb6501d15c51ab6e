//! Connections to one peer: connect (DNS → TCP → TLS → HTTP/1.1 handshake) and a pool
//! of idle keep-alive connections that avoids the keep-alive race.
//!
//! The race: an upstream closes an idle connection at the moment the gateway sends a
//! request on it. Three defences, in order:
//! 1. A connection's idle life is bounded by the smallest of: the pool's
//!    `upstream_idle` (1.5 s by default, below common app defaults), the upstream's own
//!    `Keep-Alive: timeout=` minus a margin, and 3/4 of the idle time after which this
//!    peer was *seen* closing connections (learned, per peer).
//! 2. Non-idempotent requests go only on connections idle for a short time, or fresh.
//! 3. What still slips through is retried by the caller when it is known safe
//!    (see `proxy::error::ProxyError::retry_safe`).

use super::dns::{Resolver, Target};
use super::tls::Tls;
use crate::proxy::error::{Cause, ProxyError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Most idle connections kept per peer.
const MAX_IDLE: usize = 512;
/// A non-idempotent request is sent only on a connection idle for less than this.
const UNSAFE_IDLE_MAX: Duration = Duration::from_millis(500);

/// How to reach peers: name resolution, TLS, timeouts, limits.
pub struct Connector {
    pub resolver: Resolver,
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
    pub dns_timeout: Duration,
    pub dns_refresh: Duration,
    /// Response header section limit (bytes).
    pub response_header_limit: usize,
    /// The pool's idle limit for a connection.
    pub idle_limit: Duration,
}

/// What the connection task and the pool share about one connection.
struct ConnMeta {
    in_use: AtomicBool,
    /// We dropped it on purpose (expired, pool full): not a sign of the peer's timeout.
    retired: AtomicBool,
    idle_since: Mutex<Instant>,
}

/// A connection checked out for one request.
pub struct Conn {
    pub sender: http1::SendRequest<ReqBody>,
    meta: Arc<ConnMeta>,
    /// It served requests before this one.
    pub reused: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
    limit: Duration,
}

/// Idle keep-alive connections of one peer (LIFO: the most recently used first, so
/// a burst's surplus connections age out instead of all staying lukewarm).
pub struct IdlePool {
    idle: Mutex<Vec<Idle>>,
    /// Smallest idle time after which the peer closed a connection, in ms (MAX: none seen).
    learned_idle_ms: Arc<AtomicU64>,
}

impl Default for IdlePool {
    fn default() -> Self {
        IdlePool {
            idle: Mutex::new(Vec::new()),
            learned_idle_ms: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

impl IdlePool {
    /// The longest idle time a connection of this peer may have, given what was
    /// configured and what was learned.
    fn effective_limit(&self, configured: Duration) -> Duration {
        let learned = self.learned_idle_ms.load(Ordering::Relaxed);
        if learned == u64::MAX {
            configured
        } else {
            configured.min(Duration::from_millis(learned * 3 / 4))
        }
    }

    /// An idle connection fit for a request (`idempotent` or not), if there is one.
    pub fn checkout(&self, idempotent: bool, configured: Duration) -> Option<Conn> {
        let now = Instant::now();
        let limit = self.effective_limit(configured);
        let max_idle_for_request = if idempotent {
            limit
        } else {
            limit.min(UNSAFE_IDLE_MAX).min(limit / 2)
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy: Vec<Idle> = Vec::new();
        let mut found = None;
        while let Some(entry) = idle.pop() {
            let age = now.saturating_duration_since(entry.since);
            if entry.conn.sender.is_closed() || age >= entry.limit.min(limit) {
                entry.conn.retire();
                continue;
            }
            if !entry.conn.sender.is_ready() {
                // Finishing its previous response; leave it for later.
                busy.push(entry);
                continue;
            }
            if age >= max_idle_for_request {
                // The youngest usable one is too old for this request: keep it for
                // idempotent ones, connect afresh for this one.
                idle.push(entry);
                break;
            }
            found = Some(entry.conn);
            break;
        }
        idle.extend(busy);
        if let Some(c) = &found {
            c.meta.in_use.store(true, Ordering::Relaxed);
        }
        found
    }

    /// Put a connection back after its response completed. `keep_alive` is the
    /// upstream's `Keep-Alive: timeout=` when it sent one.
    pub fn put(&self, conn: Conn, keep_alive: Option<Duration>, configured: Duration) {
        if conn.sender.is_closed() {
            return;
        }
        let mut limit = self.effective_limit(configured);
        if let Some(ka) = keep_alive {
            // A margin for the round trip and the upstream's timer granularity.
            limit = limit.min(ka.saturating_sub(Duration::from_millis(500)).max(ka / 2));
        }
        let now = Instant::now();
        *conn
            .meta
            .idle_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = now;
        conn.meta.in_use.store(false, Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            let oldest = idle.remove(0);
            oldest.conn.retire();
        }
        idle.push(Idle {
            conn,
            since: now,
            limit,
        });
    }

    /// Close every idle connection (the peer left rotation).
    pub fn clear(&self) {
        let drained: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.drain(..).collect()
        };
        for e in drained {
            e.conn.retire();
        }
    }
}

impl Conn {
    /// Drop this connection on purpose.
    fn retire(self) {
        self.meta.retired.store(true, Ordering::Relaxed);
    }
}

/// A raw transport to a peer, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connector {
    /// Resolve the target and open TCP (and TLS when `tls`), naming the failing step.
    pub async fn open(&self, id: &str, target: &Target, tls: bool) -> Result<Stream, ProxyError> {
        let addrs = target
            .resolve(&self.resolver, self.dns_refresh, self.dns_timeout)
            .await
            .map_err(|mut e| {
                e.context = format!("{id}: {}", e.context);
                e
            })?;
        let tcp = self.tcp(id, &addrs).await?;
        if !tls {
            return Ok(Stream::Plain(tcp));
        }
        let Some(t) = &self.tls else {
            return Err(ProxyError::new(
                Cause::Internal,
                format!("{id}: TLS requested but not configured"),
            ));
        };
        let what = format!("{id} at {}:{}", target.host(), target.port());
        let s = tokio::time::timeout(self.connect_timeout, t.handshake(tcp, target.host(), &what))
            .await
            .map_err(|_| {
                ProxyError::new(
                    Cause::ConnectTimeout,
                    format!(
                        "{what}: TLS handshake not done within {:?}",
                        self.connect_timeout
                    ),
                )
            })??;
        Ok(Stream::Tls(Box::new(s)))
    }

    /// Connect to the first address that accepts; the error of the last one otherwise.
    async fn tcp(&self, id: &str, addrs: &[SocketAddr]) -> Result<TcpStream, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let mut last = None;
        for addr in addrs {
            let what = format!("connecting to {id} at {addr}");
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => {
                    let cause = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Cause::ConnectionRefused,
                        std::io::ErrorKind::TimedOut => Cause::ConnectTimeout,
                        _ => match e.raw_os_error() {
                            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => Cause::Unroutable,
                            _ => Cause::ConnectionRefused,
                        },
                    };
                    last = Some(ProxyError::new(cause, format!("{what}: {e}")));
                }
                Err(_) => {
                    return Err(ProxyError::new(
                        Cause::ConnectTimeout,
                        format!("{what}: no answer within {:?}", self.connect_timeout),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| ProxyError::new(Cause::DnsError, format!("{id}: no address"))))
    }

    /// A fresh HTTP/1.1 connection for proxying; its task runs until it closes.
    pub async fn connect(
        &self,
        id: &str,
        target: &Target,
        tls: bool,
        pool: &IdlePool,
    ) -> Result<Conn, ProxyError> {
        let stream = self.open(id, target, tls).await?;
        let meta = Arc::new(ConnMeta {
            in_use: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        });
        let learned = pool.learned_idle_ms.clone();
        let task_meta = meta.clone();
        let sender = match stream {
            Stream::Plain(s) => self.handshake(id, s, learned, task_meta).await?,
            Stream::Tls(s) => self.handshake(id, *s, learned, task_meta).await?,
        };
        Ok(Conn {
            sender,
            meta,
            reused: false,
        })
    }

    async fn handshake<S>(
        &self,
        id: &str,
        io: S,
        learned: Arc<AtomicU64>,
        meta: Arc<ConnMeta>,
    ) -> Result<http1::SendRequest<ReqBody>, ProxyError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.response_header_limit.max(8192))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                ProxyError::new(Cause::ConnectionTerminated, format!("{id}: handshake: {e}"))
            })?;
        tokio::spawn(async move {
            let ended_clean = conn.await.is_ok();
            // The peer closed a connection we were not using and had not retired:
            // that is its idle timeout. Learn it.
            if ended_clean
                && !meta.in_use.load(Ordering::Relaxed)
                && !meta.retired.load(Ordering::Relaxed)
            {
                let since = *meta.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                let ms = since.elapsed().as_millis() as u64;
                if ms > 0 {
                    learned.fetch_min(ms, Ordering::Relaxed);
                }
            }
        });
        Ok(sender)
    }

    /// A one-off GET for health checks; true when the answer is 2xx or 3xx.
    pub async fn probe_get(
        &self,
        id: &str,
        target: &Target,
        tls: bool,
        path: &str,
    ) -> Result<u16, ProxyError> {
        let stream = self.open(id, target, tls).await?;
        match stream {
            Stream::Plain(s) => get_once(id, s, target, path).await,
            Stream::Tls(s) => get_once(id, *s, target, path).await,
        }
    }
}

async fn get_once<S>(id: &str, io: S, target: &Target, path: &str) -> Result<u16, ProxyError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::new(Cause::ConnectionTerminated, format!("{id}: {e}")))?;
    let task = tokio::spawn(conn);
    let host = if target.port() == 80 || target.port() == 443 {
        target.host().to_owned()
    } else {
        format!("{}:{}", target.host(), target.port())
    };
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "healgate-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| ProxyError::new(Cause::Internal, format!("{id}: health request: {e}")))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| crate::proxy::forward::classify_hyper(e, id))?;
    task.abort();
    Ok(res.status().as_u16())
}

/// The body of a request to an upstream: the client's, streamed, or nothing (a
/// replayed bodiless request).
pub enum ReqBody {
    Incoming(Incoming),
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}
