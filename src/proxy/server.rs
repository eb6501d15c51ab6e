//! Listeners: accept, read the first request head under `client_header` and the
//! header limit (so a slow or oversized head gets a real 408/431 page), then serve
//! HTTP/1.1 and h2c with hyper until shutdown, which is graceful. Over HTTP/1.1 hyper
//! reads through [`Heads`], which reads and checks every later head the same way.

use super::answer;
use super::client::Client;
use super::forward;
use super::heads::{self, Heads, Message, Scan};
use super::log::{End, Record};
use super::stream::Stream;
use super::Gateway;
use crate::config::Timeouts;
use crate::error::{Cause, ProxyError};
use crate::observe::access::Source;
use bytes::BytesMut;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// A bound listener: plain HTTP (HTTP/1.1 and h2c) or HTTPS (TLS, then HTTP/2 or
/// HTTP/1.1 by ALPN).
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: bool,
}

/// Bind every address; the error names the one that failed.
pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listening on {a}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}

/// Serve on `listeners` until `shutdown` turns true, then stop accepting and let
/// in-flight requests finish for up to `grace`. Returns when all are done or the
/// grace period is over.
pub async fn serve(
    gw: Arc<Gateway>,
    listeners: Vec<Listener>,
    timeouts: Timeouts,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task, to wait for at shutdown.
    let tracker = TaskTracker::new();
    // The first head was read before hyper sees the connection, so the protocol is
    // known: each connection goes straight to the HTTP/1.1 or the HTTP/2 server.
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Idle connections are closed by `idle_watchdog`, not by a timer per request.
        .header_read_timeout(None::<Duration>)
        .max_buf_size((gw.limits.request_header + 8192).max(8192))
        // As many fields as the first head's check takes (hyper's default is 100).
        .max_headers(256)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(gw.limits.request_header as u32)
        .max_concurrent_streams(256);
    if let Some(port) = listeners
        .iter()
        .find(|l| l.tls)
        .and_then(|l| l.tcp.local_addr().ok())
    {
        let _ = gw.https_port.set(port.port());
    }
    let builder = Arc::new(Builders {
        h1,
        h2,
        idle: timeouts.client_idle,
        handshakes: Default::default(),
    });

    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
    let max = max_connections(gw.limits.max_connections);
    tracing::info!("serving at most {max} client connections at once (limits.max_connections)");
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    let mut accept_tasks = Vec::new();
    let (mut plain, mut secure) = (0, 0);
    for Listener { tcp: l, tls } in listeners {
        let tx = conn_tx.clone();
        // `proxy_protocol` is per listener, in `gateway.listen` and then
        // `gateway.tls.listen` order.
        let proxy_protocol = match tls {
            false => gw.proxy_protocol.get(plain),
            true => gw.tls_proxy_protocol.get(secure),
        };
        let proxy_protocol = proxy_protocol.copied().unwrap_or(false);
        plain += usize::from(!tls);
        secure += usize::from(tls);
        let slots = slots.clone();
        let mut stop = shutdown.clone();
        accept_tasks.push(tokio::spawn(async move {
            let mut failing = AcceptFailures::default();
            let mut full_since: Option<Instant> = None;
            loop {
                // A free slot first: at the limit, connections wait in the backlog.
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(s) => s,
                    Err(_) => {
                        if full_since.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(
                                "{max} client connections open (limits.max_connections): new ones wait in the listen backlog"
                            );
                            full_since = Some(Instant::now());
                        }
                        tokio::select! {
                            s = slots.clone().acquire_owned() => match s {
                                Ok(s) => s,
                                Err(_) => return,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                };
                tokio::select! {
                    r = l.accept() => match r {
                        Ok((s, addr)) => {
                            if tx.send(Accepted { stream: s, addr, proxy_protocol, tls, slot }).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            failing.note(&e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    drop(conn_tx);

    loop {
        tokio::select! {
            c = conn_rx.recv() => {
                let Some(Accepted { stream, addr, proxy_protocol, tls, slot }) = c else { break };
                let _ = stream.set_nodelay(true);
                let gw = gw.clone();
                let builder = builder.clone();
                let stop = shutdown.clone();
                let header_timeout = timeouts.client_header;
                tracker.spawn(async move {
                    connection(gw, builder, stop, stream, (addr, proxy_protocol, tls), header_timeout).await;
                    drop(slot);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    for t in accept_tasks {
        t.abort();
    }
    tracing::info!(
        "shutting down: no new connections; waiting up to {grace:?} for in-flight requests"
    );
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period of {grace:?} over; closing the remaining connections");
    }
}

/// A connection accepted, with its slot under `limits.max_connections`.
struct Accepted {
    stream: TcpStream,
    addr: SocketAddr,
    proxy_protocol: bool,
    /// Accepted on an HTTPS listener.
    tls: bool,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// `limits.max_connections`, or half the file descriptor limit less a reserve (each
/// client connection may need an upstream one, and logs, listeners and instances
/// need some).
pub fn max_connections(configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        (nofile.saturating_sub(256) / 2).clamp(16, 1 << 20) as u32
    })
}

/// Failed accepts (out of file descriptors, usually) are logged once every 10 s with
/// how many there were and what to raise, not every 50 ms.
#[derive(Default)]
struct AcceptFailures {
    since: Option<Instant>,
    held: u64,
}

impl AcceptFailures {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, e: &io::Error) {
        if self.since.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.held += 1;
            return;
        }
        let advice = match e.raw_os_error() {
            Some(libc::EMFILE) => {
                " (the gateway's file descriptor limit: raise `ulimit -n` / systemd LimitNOFILE)"
            }
            Some(libc::ENFILE) => " (the system's file table: raise fs.file-max)",
            Some(libc::ENOBUFS | libc::ENOMEM) => " (the system is short of memory for sockets)",
            _ => "",
        };
        tracing::error!(
            "accept failed: {e}{advice}; {} more in the last {:?}; new connections wait in the backlog",
            self.held,
            Self::EVERY
        );
        self.since = Some(Instant::now());
        self.held = 0;
    }
}

/// One client connection: the first head, then hyper (through [`Heads`] for HTTP/1.1).
async fn connection(
    gw: Arc<Gateway>,
    builder: Arc<Builders>,
    mut shutdown: watch::Receiver<bool>,
    mut tcp: TcpStream,
    (peer, proxy_protocol, tls): (SocketAddr, bool, bool),
    header_timeout: Duration,
) {
    let start = Instant::now();
    let mut addr = peer;
    if proxy_protocol {
        // Before the TLS handshake on an HTTPS listener, as balancers send it.
        let header = super::proxy_protocol::read(&mut tcp, header_timeout);
        let header = tokio::select! {
            h = header => h,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match header {
            Ok(client) => addr = client.unwrap_or(peer),
            Err(why) => {
                tracing::warn!(
                    "{peer}: {why}; closed (this listener expects a PROXY protocol header)"
                );
                return;
            }
        }
    }
    let mut stream = match (tls, &gw.edge) {
        (true, Some(edge)) => {
            let shake = handshake(&gw, edge, tcp, addr, start, header_timeout);
            let shaken = tokio::select! {
                s = shake => s,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match shaken {
                Ok(s) => s,
                Err(failure) => {
                    builder.handshakes.note(&gw, addr, failure);
                    return;
                }
            }
        }
        _ => Stream::Plain(tcp),
    };
    let tls = stream.tls();
    if tls.is_some_and(|t| t.alpn == Some("acme-tls/1")) {
        // A TLS-ALPN-01 validation: the handshake (with the challenge certificate)
        // was all it wanted.
        let _ = stream.shutdown().await;
        return;
    }
    let (read, first) = if tls.is_some_and(|t| t.alpn == Some("h2")) {
        // HTTP/2 by ALPN: the connection preface is hyper's to read.
        (BytesMut::new(), None)
    } else {
        let head = first_head(&mut stream, gw.limits.request_header, header_timeout);
        let head = tokio::select! {
            h = head => h,
            // Stopping: a connection that has not sent a whole request yet is closed.
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match head {
            Ok((read, first)) => (read, Some(first)),
            Err(refused) => {
                first_head_refused(&gw, &mut stream, refused, addr, start, header_timeout).await;
                return;
            }
        }
    };
    let h2 = first.is_none() || read.starts_with(b"PRI * HTTP/2.0\r\n");
    let local = stream
        .tcp()
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let client = Arc::new(Client::new(addr, local, &gw.trusted_proxies, tls));
    let limit = gw.limits.request_header;
    let c = client.clone();
    let gateway = gw.clone();
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        let client = c.clone();
        // Counted when hyper hands the request over, in order: the position
        // a refused later head's stand-in is recognized by.
        let at = client.started.fetch_add(1, Ordering::Relaxed);
        let refused = client.refusal.get().filter(|r| r.at == at).map(|r| {
            let e = ProxyError::new(
                r.cause,
                format!("request {} on a keep-alive connection: {}", at + 1, r.why),
            );
            (e, r.began)
        });
        async move {
            if let Some((e, began)) = refused {
                let rec = Record::unparsed(gw, client.addr.ip(), began);
                return Ok::<_, Infallible>(answer::error(rec, None, e));
            }
            client.waiting.fetch_add(1, Ordering::Relaxed);
            let mut res = forward::handle(gw.clone(), req, &client).await;
            if let (Some(hsts), Some(_)) = (&gw.hsts, client.tls) {
                res.headers_mut()
                    .entry(http::header::STRICT_TRANSPORT_SECURITY)
                    .or_insert_with(|| hsts.clone());
            }
            if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                client.switched.store(true, Ordering::Release);
            }
            client.answered.fetch_add(1, Ordering::Release);
            client.waiting.fetch_sub(1, Ordering::Relaxed);
            Ok(res)
        }
    });
    let idle = builder.idle;
    // HTTP/1.1 connections, plain or TLS, are parked when quiet (rustls keeps its
    // own state and a 4 KiB read buffer; hyper's two buffers go).
    let park = Some(PARK_AFTER);
    let served = if h2 {
        let io = TokioIo::new(Heads::raw(stream, read, client.clone()));
        let conn = builder.h2.serve_connection(io, svc);
        let stop = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
        // h2 frames (PING, WINDOW_UPDATE) arrive between requests: no head clock.
        match drive(conn, stop, &client, idle, None, None, shutdown).await {
            Ended::Done(r) => Some(r),
            Ended::Idle | Ended::SlowHead(..) | Ended::Parked(..) => None,
        }
    } else {
        let Some(first) = first else { return };
        let mut heads = Heads::new(stream, read, first, limit, client.clone());
        loop {
            // With upgrades: a `101` from the peer hands the connection to a tunnel.
            // Boxed: a parked connection's task does not keep room for it.
            let conn = Box::new(
                builder
                    .h1
                    .serve_connection(TokioIo::new(heads), svc.clone())
                    .with_upgrades(),
            );
            let stop = |c: Pin<&mut Box<http1::UpgradeableConnection<_, _>>>| {
                Pin::new(&mut **c.get_mut()).graceful_shutdown()
            };
            let ended = drive(
                conn,
                stop,
                &client,
                idle,
                Some(header_timeout),
                park,
                shutdown.clone(),
            )
            .await;
            match ended {
                Ended::Done(r) => break Some(r),
                Ended::Idle => break None,
                Ended::SlowHead(conn, waited) => {
                    // A later request head trickling in (a keep-alive slowloris): the
                    // same 408 page the first head gets, then close.
                    if let Some(parts) = conn.into_parts() {
                        let n = client.started.load(Ordering::Relaxed) + 1;
                        let (mut stream, got) = parts.io.into_inner().into_parts();
                        let got = got + parts.read_buf.len();
                        let e = ProxyError::new(
                            Cause::ClientTimeout,
                            format!(
                                "request {n} on a keep-alive connection: header not complete within {header_timeout:?} ({got} bytes received)"
                            ),
                        );
                        let began = Instant::now().checked_sub(waited).unwrap_or(start);
                        write_raw_error(&gateway, &mut stream, e, addr, began).await;
                    }
                    return;
                }
                Ended::Parked(conn, quiet) => {
                    tracing::trace!("{addr}: parked after {quiet:?} quiet");
                    // Quiet between requests: hyper and its buffers are let go of;
                    // the next head (or the close) brings a new one.
                    let Some(parts) = conn.into_parts() else {
                        break None;
                    };
                    heads = parts.io.into_inner();
                    if !heads.resume(&parts.read_buf) {
                        break None;
                    }
                    let wait = tokio::time::timeout(idle.saturating_sub(quiet), heads.readable());
                    let woke = tokio::select! {
                        r = wait => matches!(r, Ok(Ok(()))),
                        _ = shutdown.wait_for(|stop| *stop) => false,
                    };
                    if !woke {
                        break None;
                    }
                }
            }
        }
    };
    match served {
        Some(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
            // A later request on the connection that hyper could not parse: hyper
            // answered it (a bare 400 or 431, then close); the access log still says so.
            log_unparsed(&gateway, &client, &e);
        }
        Some(Err(e)) => tracing::debug!("connection from {addr}: {e}"),
        Some(Ok(())) => {}
        None => tracing::debug!("connection from {addr}: closed after {idle:?} idle"),
    }
}

/// An access line for a request hyper refused before healgate saw it.
fn log_unparsed(gw: &Arc<Gateway>, client: &Client, e: &hyper::Error) {
    let cause = if e.is_parse_too_large() {
        Cause::RequestHeaderTooLarge
    } else {
        Cause::BadRequest
    };
    let n = client.started.load(Ordering::Relaxed) + 1;
    tracing::warn!("{}: request {n} on the connection: {e}", client.addr);
    Record::unparsed(gw.clone(), client.addr.ip(), Instant::now()).finish(End {
        status: cause.status().as_u16(),
        bytes: 0,
        source: Source::Gateway,
        error: Some(cause),
        details: Some(format!(
            "request {n} on a keep-alive connection from {} refused by the HTTP parser: {e}",
            client.addr
        )),
    });
}

/// How a served connection ended.
enum Ended<F, E> {
    Done(Result<(), E>),
    /// Idle for a whole `client_idle`: closed.
    Idle,
    /// A request head began arriving and is not complete after this long (the
    /// connection, to write the 408 on).
    SlowHead(F, Duration),
    /// Quiet between requests for `park` (this long): hyper let go of the
    /// connection, which stays open (the connection, to take the stream back from).
    Parked(F, Duration),
}

/// Quiet this long between requests, an HTTP/1.1 connection is parked: hyper's
/// connection and its buffers (about 16 KiB) are dropped while the socket waits.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Run a client connection until it ends. When `shutdown` turns true, `stop` asks
/// it to finish gracefully (the request in flight completes, keep-alive ends). One
/// timer per connection, re-armed once a tick (hyper's per-request header timer cost
/// about 5% of the gateway's instructions per request), watches two clocks:
/// - idle: no request started, none waiting for its response, nothing read or
///   written for a whole `client_idle`: closed;
/// - head (`client_header`, HTTP/1.1 only): bytes of a next request arrived but no
///   request started for that long: a slow head, answered 408 by the caller;
/// - park (HTTP/1.1 only): quiet for that long with every request handed to hyper
///   taken and answered and nothing buffered: `stop` lets hyper finish (it closes at
///   once when idle), and the caller keeps the socket.
async fn drive<F, E>(
    mut conn: F,
    stop: impl Fn(Pin<&mut F>),
    client: &Client,
    idle: Duration,
    head: Option<Duration>,
    park: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) -> Ended<F, E>
where
    F: std::future::Future<Output = Result<(), E>> + Unpin,
{
    let tick = [head, park].into_iter().flatten().fold(idle, Duration::min);
    let mut stopping = false;
    let mut parking: Option<Duration> = None;
    let snapshot = || {
        (
            client.started.load(Ordering::Relaxed),
            client.writes.load(Ordering::Relaxed),
            client.reads.load(Ordering::Relaxed),
        )
    };
    let mut last = snapshot();
    let mut active_at = Instant::now();
    let mut head_since: Option<Instant> = None;
    loop {
        tokio::select! {
            r = &mut conn => return match (r, parking) {
                (Ok(()), Some(quiet)) if !stopping => Ended::Parked(conn, quiet),
                (r, _) => Ended::Done(r),
            },
            _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                stop(Pin::new(&mut conn));
            }
            _ = tokio::time::sleep(tick) => {
                let now = snapshot();
                let at = Instant::now();
                let waiting = client.waiting.load(Ordering::Relaxed) > 0;
                if now != last {
                    active_at = at;
                }
                if now.0 != last.0 || waiting {
                    head_since = None;
                } else if now.2 != last.2 && head_since.is_none() {
                    head_since = Some(at);
                }
                if let (Some(since), Some(limit)) = (head_since, head) {
                    if at - since + tick >= limit && !stopping {
                        return Ended::SlowHead(conn, at - since + tick);
                    }
                }
                if !waiting && at - active_at >= idle {
                    return Ended::Idle;
                }
                if let Some(p) = park {
                    let quiet = at - active_at;
                    if now == last
                        && !waiting
                        && quiet >= p
                        && parking.is_none()
                        && !stopping
                        && client.between.load(Ordering::Relaxed)
                        && client.handed.load(Ordering::Relaxed)
                            == client.started.load(Ordering::Relaxed)
                    {
                        client.parking.store(true, Ordering::Relaxed);
                        parking = Some(quiet);
                        stop(Pin::new(&mut conn));
                    }
                }
                last = now;
            }
        }
    }
}

/// The HTTP/1.1 and HTTP/2 servers, configured once.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// `timeouts.client_idle`.
    idle: Duration,
    handshakes: HandshakeLog,
}

enum FirstHead {
    Closed,
    /// A TLS ClientHello: a client speaking HTTPS to a plain-HTTP port.
    Tls,
    Refused(Cause, String),
    Timeout(usize),
}

/// Read until the first request head is complete and checked ([`heads::scan`], as
/// every later head is; the h2 preface counts as a head), within `timeout`. Returns
/// what was read (the head and whatever followed it) and the head's framing.
async fn first_head(
    s: &mut Stream,
    limit: usize,
    timeout: Duration,
) -> Result<(BytesMut, Message), FirstHead> {
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut n = 0;
    loop {
        if n > 0 {
            if buf.len() >= 3 && buf[0] == 0x16 && buf[1] == 0x03 && matches!(s, Stream::Plain(_)) {
                // A TLS handshake record (ClientHello), not a request line.
                return Err(FirstHead::Tls);
            }
            match heads::scan(&buf, n, limit) {
                Scan::More => {}
                Scan::Head(m) => return Ok((buf, m)),
                Scan::Refused(cause, why) => return Err(FirstHead::Refused(cause, why)),
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
        }
        let read = tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await;
        n = match read {
            Err(_) => return Err(FirstHead::Timeout(buf.len())),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(FirstHead::Closed),
            Ok(Ok(n)) => n,
        };
    }
}

/// A first head that was not served: closed, or answered with the gateway's 408 or
/// 400/431 page.
async fn first_head_refused(
    gw: &Arc<Gateway>,
    stream: &mut Stream,
    refused: FirstHead,
    addr: SocketAddr,
    start: Instant,
    header_timeout: Duration,
) {
    let e = match refused {
        FirstHead::Closed | FirstHead::Timeout(0) => return,
        FirstHead::Tls => {
            tracing::warn!(
                "{addr}: TLS on a plain-HTTP listener (a TLS ClientHello arrived); closed \
                 (use http:// for this port)"
            );
            return;
        }
        FirstHead::Timeout(got) => ProxyError::new(
            Cause::ClientTimeout,
            format!("request header not complete within {header_timeout:?} ({got} bytes received)"),
        ),
        FirstHead::Refused(cause, why) => ProxyError::new(cause, why),
    };
    write_raw_error(gw, stream, e, addr, start).await;
}

/// Why a TLS handshake failed: the metric's `reason` label and the log's words.
#[derive(Debug)]
pub struct Handshake {
    reason: &'static str,
    why: String,
    /// The name the client asked for (SNI), when the ClientHello got that far.
    sni: Option<String>,
}

/// The TLS handshake on an HTTPS listener, under `client_header`. Plain HTTP sent to
/// the port gets a 400 page that says to use https (as nginx does) and is counted
/// as a failed handshake.
async fn handshake(
    gw: &Arc<Gateway>,
    edge: &crate::tls::Edge,
    tcp: TcpStream,
    addr: SocketAddr,
    start: Instant,
    timeout: Duration,
) -> Result<Stream, Handshake> {
    let fail = |reason, why: String, sni: Option<String>| Handshake { reason, why, sni };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Err(_) => {
            return Err(fail(
                "timeout",
                format!("no ClientHello within {timeout:?}"),
                None,
            ))
        }
        Ok(Ok(0)) | Ok(Err(_)) => {
            return Err(fail("closed", "closed before the ClientHello".into(), None))
        }
        Ok(Ok(_)) if first[0] != 0x16 => {
            let mut stream = Stream::Plain(tcp);
            let e = ProxyError::new(
                Cause::BadRequest,
                "a plain-HTTP request on an HTTPS port (use https:// for this port)",
            );
            write_raw_error(gw, &mut stream, e, addr, start).await;
            return Err(fail(
                "plain_http",
                "plain HTTP sent to the HTTPS port; answered 400".into(),
                None,
            ));
        }
        Ok(Ok(_)) => {}
    }
    let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let hello = match tokio::time::timeout_at(deadline, lazy).await {
        Err(_) => {
            return Err(fail(
                "timeout",
                format!("ClientHello not complete within {timeout:?}"),
                None,
            ))
        }
        Ok(Err(e)) => {
            let (reason, why) = handshake_error(&e);
            return Err(fail(reason, why, None));
        }
        Ok(Ok(h)) => h,
    };
    let sni = hello.client_hello().server_name().map(str::to_owned);
    let accept = hello.into_stream(edge.acceptor.config().clone());
    match tokio::time::timeout_at(deadline, accept).await {
        Err(_) => Err(fail(
            "timeout",
            format!("handshake not complete within {timeout:?}"),
            sni,
        )),
        Ok(Err(e)) => {
            let (reason, why) = handshake_error(&e);
            Err(fail(reason, why, sni))
        }
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
    }
}

/// A failed handshake's reason label and words, from rustls's error.
fn handshake_error(e: &io::Error) -> (&'static str, String) {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::AlertReceived(alert)) => {
            use rustls::AlertDescription as A;
            match alert {
                A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::CertificateExpired => (
                    "certificate_rejected",
                    format!("the client refused the certificate (alert {alert:?}): is it for this name and from a CA the client trusts?"),
                ),
                _ => ("alert", format!("the client ended the handshake (alert {alert:?})")),
            }
        }
        Some(E::PeerIncompatible(why)) => (
            "incompatible",
            format!("nothing in common with the client ({why:?}): it may want a TLS version, cipher or ALPN protocol the gateway does not offer"),
        ),
        Some(E::General(why)) if why.contains("certificate") => (
            "no_certificate",
            format!("no certificate to present ({why})"),
        ),
        Some(other) => ("protocol", format!("{other}")),
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ) => ("closed", "the client closed the connection during the handshake".into()),
        None => ("protocol", e.to_string()),
    }
}

/// Failed handshakes are counted each and logged at most once every 10 s, with how
/// many more there were (a scanner or a misconfigured client fails thousands).
#[derive(Default)]
struct HandshakeLog(std::sync::Mutex<(Option<Instant>, u64)>);

impl HandshakeLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&self, gw: &Gateway, addr: SocketAddr, h: Handshake) {
        gw.handshake_failures.add(h.reason);
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.is_some_and(|t| t.elapsed() < Self::EVERY) {
            g.1 += 1;
            return;
        }
        let more = std::mem::take(&mut g.1);
        g.0 = Some(Instant::now());
        drop(g);
        let sni = h.sni.map(|n| format!(" for {n}")).unwrap_or_default();
        let more = if more > 0 {
            format!(
                " ({more} more failed in the last {:?}, not logged)",
                Self::EVERY
            )
        } else {
            String::new()
        };
        tracing::warn!(
            "TLS handshake from {addr}{sni} failed ({}): {}{more}",
            h.reason,
            h.why
        );
    }
}

/// A gateway-made error on a connection hyper never saw (first head too slow or too
/// large): an HTTP/1.1 response, then close.
async fn write_raw_error(
    gw: &Arc<Gateway>,
    stream: &mut Stream,
    err: ProxyError,
    client: SocketAddr,
    start: Instant,
) {
    let res = answer::error(Record::unparsed(gw.clone(), client.ip(), start), None, err);
    let (parts, body) = res.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (k, v) in &parts.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
