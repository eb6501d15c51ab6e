//! Real upstreams that misbehave on purpose, each on an ephemeral loopback port.
//! They run on one background tokio runtime and stop when their handle drops.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;
use tokio::sync::watch;

fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A running fake server; stops (and closes its connections) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Requests (or connections, for servers that never parse) seen.
    pub hits: Arc<AtomicUsize>,
}

impl Server {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Start a TCP server whose connections are handled by `handle(stream, hits)`, each in
/// its own task (for servers a test writes itself).
pub fn tcp_server<F, Fut>(handle: F) -> Server
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = rt().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    rt().spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((s, _)) = r else { continue };
                    let mut stop_conn = stopped.clone();
                    let fut = handle(s, h.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = fut => {}
                            _ = stop_conn.changed() => {}
                        }
                    });
                }
                _ = stopped.changed() => return,
            }
        }
    });
    Server { addr, stop, hits }
}

/// Read one request head and its Content-Length body. None: the connection ended.
pub async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            buf.drain(..end + 4);
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf.drain(..len).collect();
            return Some((head, body));
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answers every request with exactly `raw` (a whole response, possibly malformed),
/// keeping the connection open when `keep_alive`.
pub fn fixed(raw: Vec<u8>, keep_alive: bool) -> Server {
    let raw = Arc::new(raw);
    tcp_server(move |mut s, hits| {
        let raw = raw.clone();
        async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                hits.fetch_add(1, Ordering::SeqCst);
                if s.write_all(&raw).await.is_err() || !keep_alive {
                    return;
                }
            }
        }
    })
}

/// A plain 200 with `body`, keep-alive.
pub fn ok(body: &str) -> Server {
    fixed(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        true,
    )
}

/// A plain-HTTP server that answers anything it cannot parse (such as a TLS
/// ClientHello) with 400 and closes, like nginx on a plain port.
pub fn plain_rejecting() -> Server {
    tcp_server(|mut s, hits| async move {
        let mut chunk = [0u8; 4096];
        if let Ok(n) = s.read(&mut chunk).await {
            if n > 0 {
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        }
    })
}

/// Counts each request on arrival, then answers 200 "slow" after `delay`.
pub fn slow(delay: Duration) -> Server {
    tcp_server(move |mut s, hits| async move {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).await.is_some() {
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Reads the request, then resets the connection (RST, no response).
pub fn resetting() -> Server {
    tcp_server(|mut s, hits| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            hits.fetch_add(1, Ordering::SeqCst);
            // SO_LINGER 0: close sends RST (the deprecation is about blocking on drop,
            // which a zero linger does not do).
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    })
}

/// Accepts and reads, never answers.
pub fn silent() -> Server {
    tcp_server(|mut s, hits| async move {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// Keep-alive server that closes a connection after it was idle for `idle`
/// (without announcing it), answering 200 "ok" to every request.
pub fn idle_closer(idle: Duration) -> Server {
    tcp_server(move |mut s, hits| async move {
        let mut buf = Vec::new();
        loop {
            match tokio::time::timeout(idle, read_request(&mut s, &mut buf)).await {
                Ok(Some((_head, _body))) => {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    })
}

/// A listening socket whose accept queue is full: new connects hang (connect timeout).
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

pub fn blackhole() -> Blackhole {
    let _guard = rt().enter();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue; later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    Blackhole {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

/// A DNS server on UDP loopback: answers NXDOMAIN to everything, or never answers.
pub struct Dns {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn dns(answer_nxdomain: bool) -> Dns {
    let sock = rt().block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
    let addr = sock.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    rt().spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    if !answer_nxdomain || n < 12 { continue; }
                    let mut resp = buf[..n].to_vec();
                    // QR=1, opcode as asked, AA=1, RD copied; RA=1, RCODE=3 (NXDOMAIN).
                    resp[2] = 0x80 | (buf[2] & 0x79) | 0x04;
                    resp[3] = 0x80 | 0x03;
                    // No answers, authority or additional records.
                    resp[6..12].copy_from_slice(&[0; 6]);
                    // Drop any EDNS additional record after the question.
                    let mut i = 12;
                    while i < resp.len() && resp[i] != 0 { i += resp[i] as usize + 1; }
                    let qend = (i + 5).min(resp.len());
                    resp.truncate(qend);
                    let _ = sock.send_to(&resp, from).await;
                }
                _ = stopped.changed() => return,
            }
        }
    });
    Dns { addr, stop }
}

/// A TLS server with a self-signed certificate for `localhost`, answering 200.
/// Returns the server and the certificate PEM (to trust it).
pub fn tls_server() -> (Server, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = tcp_server(move |s, hits| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            let mut buf = Vec::new();
            loop {
                let mut chunk = [0u8; 4096];
                let Ok(n) = tls.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    buf.clear();
                    hits.fetch_add(1, Ordering::SeqCst);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ntls ok")
                        .await;
                }
            }
        }
    });
    (server, pem)
}

/// The built-in demo app as a real child process.
pub struct DemoApp {
    pub child: Child,
    pub addr: SocketAddr,
}

impl DemoApp {
    pub fn start() -> DemoApp {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> DemoApp {
        use std::io::BufRead;
        let mut child = Command::new(super::bin())
            .args(["demo-app", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let addr = loop {
            let line = lines.next().expect("demo-app exited").unwrap();
            if let Some(a) = line.strip_prefix("demo-app listening on ") {
                break a.trim().parse().unwrap();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DemoApp { child, addr }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read one request head and its body, `Content-Length` or chunked (chunk extensions
/// and trailers dropped). None: the connection ended first.
pub async fn read_request_any(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
    }
    async fn line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 2);
                return Some(l);
            }
            fill(s, buf).await?;
        }
    }
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
    buf.drain(..end + 4);
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let mut body = Vec::new();
    if field("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        loop {
            let size = line(s, buf).await?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                while !line(s, buf).await?.is_empty() {}
                break;
            }
            while buf.len() < size + 2 {
                fill(s, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else {
        let len = field("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            fill(s, buf).await?;
        }
        body = buf.drain(..len).collect();
    }
    Some((head, body))
}

/// Keep-alive server that answers each request 200 with the request's body as it
/// received it (`Content-Length` or chunked), once the whole body is in.
pub fn body_echo() -> Server {
    tcp_server(|mut s, hits| async move {
        let mut buf = Vec::new();
        while let Some((_head, body)) = read_request_any(&mut s, &mut buf).await {
            hits.fetch_add(1, Ordering::SeqCst);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
                return;
            }
        }
    })
}

/// Keep-alive server that answers each request 200 with the request head it received
/// as the body (to see what the gateway forwarded).
pub fn head_echo() -> Server {
    tcp_server(|mut s, hits| async move {
        let mut buf = Vec::new();
        while let Some((head, _body)) = read_request_any(&mut s, &mut buf).await {
            hits.fetch_add(1, Ordering::SeqCst);
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
                head.len()
            );
            if s.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}
