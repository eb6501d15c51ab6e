//! Connections to one peer: connect (DNS → TCP → TLS) and a pool of idle keep-alive
//! connections that avoids the keep-alive race.
//!
//! The race: an upstream closes an idle connection at the moment the gateway sends a
//! request on it. Four defences, in order:
//! 1. A connection's idle life is bounded by the smallest of: the pool's
//!    `upstream_idle` (1.5 s by default, below common app defaults), the upstream's own
//!    `Keep-Alive: timeout=` minus a margin, and 3/4 of the idle time after which this
//!    peer was *seen* closing connections (learned, per peer).
//! 2. Non-idempotent requests go only on connections idle for a short time, or fresh.
//! 3. A checked-out connection is tested with a non-blocking read: one the peer has
//!    closed (or that holds unasked bytes) is dropped before anything is sent.
//! 4. What still slips through is retried by the caller when it is known safe
//!    (see `proxy::retry::decide`).

use super::dns::{Resolver, Target};
use super::h1::{Connection, Stream};
use super::tls::Tls;
use crate::config::Protocol;
use crate::error::{Cause, ProxyError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Most idle connections kept per peer.
const MAX_IDLE: usize = 512;
/// A non-idempotent request is sent only on a connection idle for less than this.
const UNSAFE_IDLE_MAX: Duration = Duration::from_millis(500);
/// Shortest idle time taken for a peer's keep-alive timeout.
const MIN_LEARNED_IDLE: Duration = Duration::from_millis(250);

/// How to reach peers: name resolution, TLS, timeouts, limits.
pub struct Connector {
    pub resolver: Resolver,
    pub tls: Option<Tls>,
    /// `protocol`: HTTP/1.1, HTTP/2, or by ALPN.
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub dns_timeout: Duration,
    pub dns_refresh: Duration,
    /// Response header section limit (bytes).
    pub response_header_limit: usize,
    /// The pool's idle limit for a connection.
    pub idle_limit: Duration,
}

struct Idle {
    conn: Connection,
    /// Its idle life, fixed when it was put back.
    limit: Duration,
}

/// Idle keep-alive connections of one peer (LIFO: the most recently used first, so
/// a burst's surplus connections age out instead of all staying lukewarm). No task
/// watches an idle connection: a closed one is found (and the peer's idle timeout
/// learned) when it is checked out, and expired ones are swept as the pool is used.
pub struct IdlePool {
    idle: Mutex<VecDeque<Idle>>,
    /// Smallest idle time after which the peer was seen to have closed a connection,
    /// in ms (MAX: none seen).
    learned_idle_ms: AtomicU64,
}

impl Default for IdlePool {
    fn default() -> Self {
        IdlePool {
            idle: Mutex::new(VecDeque::new()),
            learned_idle_ms: AtomicU64::new(u64::MAX),
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

    /// The peer closed a connection that had been idle for `idle`: its timeout is at
    /// most that. Closes after a shorter idle time say more about a restart or crash
    /// than about a timeout, and are not learned.
    pub fn learn_idle_close(&self, idle: Duration) {
        if idle >= MIN_LEARNED_IDLE {
            let ms = idle.as_millis() as u64;
            self.learned_idle_ms.fetch_min(ms, Ordering::Relaxed);
        }
    }

    /// An idle connection fit for a request (`idempotent` or not), if there is one.
    pub fn checkout(&self, idempotent: bool, configured: Duration) -> Option<Connection> {
        let now = Instant::now();
        let limit = self.effective_limit(configured);
        let max_idle_for_request = if idempotent {
            limit
        } else {
            limit.min(UNSAFE_IDLE_MAX).min(limit / 2)
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut entry) = idle.pop_back() {
            let age = now.saturating_duration_since(entry.conn.idle_since);
            if age >= entry.limit.min(limit) {
                continue; // expired
            }
            if !entry.conn.is_usable() {
                self.learn_idle_close(age);
                continue;
            }
            if age >= max_idle_for_request {
                // The youngest usable one is too old for this request: keep it for
                // idempotent ones, connect afresh for this one.
                idle.push_back(entry);
                return None;
            }
            entry.conn.reused = true;
            return Some(entry.conn);
        }
        None
    }

    /// Put a connection back after its response completed. `keep_alive` is the
    /// upstream's `Keep-Alive: timeout=` when it sent one.
    pub fn put(&self, mut conn: Connection, keep_alive: Option<Duration>, configured: Duration) {
        let mut limit = self.effective_limit(configured);
        if let Some(ka) = keep_alive {
            // A margin for the round trip and the upstream's timer granularity.
            limit = limit.min(ka.saturating_sub(Duration::from_millis(500)).max(ka / 2));
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Sweep: the oldest are at the front.
        while idle
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.conn.idle_since) >= e.limit)
        {
            idle.pop_front();
        }
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, limit });
    }

    /// Close idle connections past their idle life.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|e| now.saturating_duration_since(e.conn.idle_since) < e.limit);
    }

    /// Close every idle connection (the peer left rotation).
    pub fn clear(&self) {
        let drained: VecDeque<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *idle)
        };
        drop(drained);
    }
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
                    let cause = Cause::of_connect(&e);
                    let err = ProxyError::io(cause, what, e);
                    if cause == Cause::GatewayResources {
                        // Another address will not help: the gateway itself is short.
                        return Err(err);
                    }
                    last = Some(err);
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

    /// A fresh HTTP/1.1 connection for proxying.
    pub async fn connect(
        &self,
        id: &str,
        target: &Target,
        tls: bool,
    ) -> Result<Connection, ProxyError> {
        Ok(Connection::new(self.open(id, target, tls).await?))
    }

    /// A one-off GET for health checks: the response status. Over HTTP/2 for an h2
    /// peer (h2c prior knowledge on plain connections) and for an `auto` one whose
    /// server chose h2 by ALPN.
    pub async fn probe_get(
        &self,
        id: &str,
        target: &Target,
        tls: bool,
        path: &str,
    ) -> Result<u16, ProxyError> {
        let io = match self.protocol {
            Protocol::H2 => return super::h2::get_status(self, id, target, tls, path).await,
            // As a request would: HTTP/2 when ALPN chose it, HTTP/1.1 otherwise.
            Protocol::Auto if tls => {
                let io = self.open(id, target, true).await?;
                if io.alpn() == Some(b"h2") {
                    return super::h2::get_status_over(self, id, io, target, path).await;
                }
                io
            }
            Protocol::H1 | Protocol::Auto => self.open(id, target, tls).await?,
        };
        let mut conn = Connection::new(io);
        let host = if target.port() == 80 || target.port() == 443 {
            target.host().to_owned()
        } else {
            format!("{}:{}", target.host(), target.port())
        };
        conn.get_status(id, &host, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const LONG: Duration = Duration::from_secs(30);

    /// A connection to a loopback peer, and the peer's end.
    async fn pair(l: &TcpListener) -> (Connection, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        (Connection::new(Stream::Plain(c)), peer)
    }

    async fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    async fn pause(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn len(pool: &IdlePool) -> usize {
        pool.idle.lock().unwrap().len()
    }

    #[tokio::test]
    async fn checkout_is_last_in_first_out() {
        let l = listener().await;
        let pool = IdlePool::default();
        let (a, _pa) = pair(&l).await;
        let (b, _pb) = pair(&l).await;
        pool.put(a, None, LONG);
        pause(5).await;
        pool.put(b, None, LONG);
        let first = pool.checkout(true, LONG).expect("one");
        let second = pool.checkout(true, LONG).expect("two");
        assert!(
            first.idle_since > second.idle_since,
            "the most recently used comes first"
        );
        assert!(first.reused && second.reused);
        assert!(pool.checkout(true, LONG).is_none(), "empty");
    }

    #[tokio::test]
    async fn idle_life_is_bounded() {
        let l = listener().await;
        let pool = IdlePool::default();
        // By the configured limit.
        let (c, _p) = pair(&l).await;
        pool.put(c, None, Duration::from_millis(100));
        pause(150).await;
        assert!(pool.checkout(true, Duration::from_millis(100)).is_none());
        assert_eq!(len(&pool), 0, "the expired connection is closed");
        // By the upstream's `Keep-Alive: timeout=1`, less a margin (500 ms here).
        let (c, _p) = pair(&l).await;
        pool.put(c, Some(Duration::from_secs(1)), LONG);
        assert!(pool.checkout(true, LONG).is_some(), "young enough");
        let (c, _p) = pair(&l).await;
        pool.put(c, Some(Duration::from_secs(1)), LONG);
        pause(600).await;
        assert!(
            pool.checkout(true, LONG).is_none(),
            "past timeout=1 less the margin"
        );
        // A non-idempotent request takes only a briefly idle one (here under 200 ms,
        // half the limit); an idempotent one still takes it.
        let limit = Duration::from_millis(400);
        let (c, _p) = pair(&l).await;
        pool.put(c, None, limit);
        pause(250).await;
        assert!(pool.checkout(false, limit).is_none(), "too old for a POST");
        assert_eq!(len(&pool), 1, "kept for idempotent requests");
        assert!(pool.checkout(true, limit).is_some());
        // Puts sweep the expired ones at the front.
        let (c, _p) = pair(&l).await;
        pool.put(c, None, Duration::from_millis(50));
        pause(80).await;
        let (c, _p2) = pair(&l).await;
        pool.put(c, None, LONG);
        assert_eq!(len(&pool), 1, "the expired one was swept");
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_dropped_at_checkout() {
        let l = listener().await;
        let pool = IdlePool::default();
        let (open, _keep) = pair(&l).await;
        let (closed, peer) = pair(&l).await;
        pool.put(open, None, LONG);
        pause(5).await;
        pool.put(closed, None, LONG);
        let closed_since = pool.idle.lock().unwrap().back().unwrap().conn.idle_since;
        drop(peer);
        pause(50).await;
        let got = pool.checkout(true, LONG).expect("the open one");
        assert!(got.idle_since < closed_since, "the closed one was skipped");
        assert_eq!(len(&pool), 0, "and dropped");
        // One that holds bytes nobody asked for is no better.
        let (chatty, mut peer) = pair(&l).await;
        pool.put(chatty, None, LONG);
        tokio::io::AsyncWriteExt::write_all(&mut peer, b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .unwrap();
        pause(50).await;
        assert!(pool.checkout(true, LONG).is_none());
        assert_eq!(len(&pool), 0);
    }

    #[tokio::test]
    async fn the_peers_idle_timeout_is_learned() {
        let l = listener().await;
        let pool = IdlePool::default();
        assert_eq!(pool.effective_limit(LONG), LONG, "nothing learned yet");
        // A close after a very short idle time says nothing about a timeout.
        pool.learn_idle_close(Duration::from_millis(100));
        assert_eq!(pool.effective_limit(LONG), LONG);
        // The peer closes a connection idle for ~400 ms: found at checkout, learned.
        let (c, peer) = pair(&l).await;
        pool.put(c, None, LONG);
        pause(400).await;
        drop(peer);
        pause(30).await;
        assert!(pool.checkout(true, LONG).is_none());
        let learned = pool.effective_limit(LONG);
        assert!(
            learned >= Duration::from_millis(300) && learned < Duration::from_millis(400),
            "3/4 of the idle time seen: {learned:?}"
        );
        // Later connections live no longer than that.
        let (c, _p) = pair(&l).await;
        pool.put(c, None, LONG);
        pause(learned.as_millis() as u64 + 50).await;
        assert!(
            pool.checkout(true, LONG).is_none(),
            "expired by the learned limit"
        );
        // A shorter one seen later lowers it; a longer one does not raise it.
        pool.learn_idle_close(Duration::from_millis(300));
        assert_eq!(pool.effective_limit(LONG), Duration::from_millis(225));
        pool.learn_idle_close(Duration::from_secs(5));
        assert_eq!(pool.effective_limit(LONG), Duration::from_millis(225));
        assert_eq!(
            pool.effective_limit(Duration::from_millis(100)),
            Duration::from_millis(100),
            "the configured limit still bounds it"
        );
    }
}
