//! Fixtures for integration tests: the real `healgate` binary on 127.0.0.1:0, real
//! misbehaving upstreams on ephemeral ports, a small HTTP client, and `eventually`.
#![allow(dead_code)]

pub mod upstreams;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "healgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HEALGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_healgate")
}

/// A running gateway; SIGTERM and wait on drop (SIGKILL if it lingers).
pub struct Gateway {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// The first HTTPS listener, when `gateway.tls` has one.
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: TempDir,
    pub stdout_lines: mpsc::Receiver<String>,
}

impl Gateway {
    /// Write `config` (a TOML body; `[gateway]` gets listen and data_dir prepended
    /// unless `config` has its own `[gateway]` table) and start `healgate run`.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_in(TempDir::new("gw"), config)
    }

    pub fn start_in(dir: TempDir, config: &str) -> Gateway {
        Gateway::start_with_env(dir, config, &[])
    }

    /// [`start_in`](Self::start_in) with extra environment variables for the gateway.
    pub fn start_with_env(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_wrapped(dir, config, env, &[])
    }

    /// [`start_with_env`](Self::start_with_env) through a command that execs the
    /// binary (e.g. `ip netns exec NAME`), so the child's pid is still the gateway's.
    pub fn start_wrapped(
        dir: TempDir,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Gateway {
        let cfg = if config.contains("[gateway]") {
            if config.contains("[admin]") {
                config.to_owned()
            } else {
                format!("{config}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
            }
        } else {
            format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{config}")
        };
        let path = dir.path().join("healgate.toml");
        std::fs::write(&path, cfg).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .args(["run", "-c"])
            .arg(&path)
            .env("HEALGATE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start healgate");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut proxy: Option<SocketAddr> = None;
        let mut https: Option<SocketAddr> = None;
        let (addr, admin) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("healgate: proxy listening on http://") {
                        proxy = Some(a.trim().parse().unwrap());
                    }
                    if let Some(a) = line.strip_prefix("healgate: proxy listening on https://") {
                        https = https.or(Some(a.trim().parse().unwrap()));
                    }
                    if let Some(a) = line.strip_prefix("healgate: admin listening on http://") {
                        if let Some(p) = proxy {
                            break (p, a.trim().parse().unwrap());
                        }
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err =
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                    panic!("healgate did not start; stderr:\n{err}");
                }
            }
        };
        Gateway {
            child: Some(child),
            addr,
            https,
            admin,
            dir,
            stdout_lines: rx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("healgate.toml")
    }

    /// Run a CLI verb against this gateway (`healgate <args> -c <its config>`).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let cfg = self.config_path();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", cfg.to_str().unwrap()]);
        healgate(&all)
    }

    /// `GET /api/v1/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.cli(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}: {out}"))
    }

    /// Pids of the ready instances of `app`, by instance id.
    /// The event log's events of one kind.
    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.jsonl("events.jsonl")
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Wait (up to 20 s) until `app` has exactly `n` ready instances: their ids and pids.
    pub fn wait_ready(&self, app: &str, n: usize) -> Vec<(String, u32)> {
        eventually(Duration::from_secs(20), || {
            let p = self.ready_pids(app);
            (p.len() == n).then_some(p)
        })
        .unwrap_or_else(|| panic!("{n} ready: {}", self.status()))
    }

    pub fn ready_pids(&self, app: &str) -> Vec<(String, u32)> {
        let st = self.status();
        let apps = st["apps"].as_array().cloned().unwrap_or_default();
        let Some(a) = apps.iter().find(|a| a["name"] == app) else {
            return Vec::new();
        };
        a["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready")
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_owned(),
                    i["pid"].as_u64().unwrap() as u32,
                )
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The generated admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .expect("data/admin.token")
            .trim()
            .to_owned()
    }

    /// `GET path` on the admin API with the token.
    pub fn admin_get(&self, path: &str) -> Resp {
        let auth = format!("Bearer {}", self.token());
        get(self.admin, path, &[("Authorization", &auth)])
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Lines of `data/logs/<name>` parsed as JSON.
    pub fn jsonl(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data().join("logs").join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access log entry with this request id, waiting for the writer to flush.
    pub fn access_entry(&self, request_id: &str) -> serde_json::Value {
        eventually(Duration::from_secs(5), || {
            self.jsonl("access.jsonl")
                .into_iter()
                .find(|e| e["request_id"] == request_id)
        })
        .unwrap_or_else(|| panic!("no access log entry for {request_id}"))
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(40))
            .expect("healgate did not exit after SIGTERM")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Wait for a child with a bound.
pub fn wait_timeout(child: &mut Child, d: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + d;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` every 20 ms until it gives `Some`, or `None` after `within`.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw bytes as received (head and body).
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The Proxy-Status error type, if any.
    pub fn proxy_error(&self) -> Option<String> {
        let ps = self.header("proxy-status")?;
        ps.split(';')
            .find_map(|p| p.trim().strip_prefix("error=").map(|s| s.to_owned()))
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unparsable response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// Write `bytes` on a fresh connection, then read until the gateway closes (10 s at
/// most): everything it answered, as text.
pub fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` with extra headers.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn parse_response(raw: &[u8], head_only: bool) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let rest = &raw[end..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Resp {
        status,
        headers,
        body,
        raw: raw.to_vec(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Status, headers and body of one exchange.
pub type Exchange = (u16, Vec<(String, String)>, Vec<u8>);

/// A keep-alive HTTP/1.1 client connection, for loads.
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive { addr, stream: None }
    }

    /// One request; reconnects when the connection is gone. Err: the transport failed.
    pub fn send(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Exchange> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(BufReader::new(s));
        }
        let r = self.exchange(method, path, body);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Exchange> {
        let s = self.stream.as_mut().unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        s.get_mut().write_all(head.as_bytes())?;
        s.get_mut().write_all(body)?;
        let mut line = String::new();
        s.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        let mut chunked = false;
        let mut close = false;
        loop {
            let mut l = String::new();
            s.read_line(&mut l)?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
                if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
                headers.push((k, v));
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut sz = String::new();
                s.read_line(&mut sz)?;
                let n = usize::from_str_radix(sz.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                s.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if method != "HEAD" {
            body.resize(len, 0);
            s.read_exact(&mut body)?;
        }
        if close {
            self.stream = None;
        }
        Ok((status, headers, body))
    }
}

/// An address on 127.0.0.1 where nothing listens, for as long as this lives: its
/// port is held by a socket that is bound and never listens, so no other test can
/// take it, and a connect to it is refused.
pub struct Refused {
    pub addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

impl Refused {
    pub fn new() -> Refused {
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Refused {
            addr: held.local_addr().unwrap(),
            _held: held,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Run `healgate` with arguments; (exit code, stdout, stderr).
pub fn healgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A steady GET load on keep-alive connections: failures and the pids (X-Pid) that
/// answered, until stopped (or two minutes).
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    pids: Arc<Mutex<HashSet<u32>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: std::net::SocketAddr, threads: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::new(Mutex::new(HashSet::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, done, failures, pids) =
                    (stop.clone(), done.clone(), failures.clone(), pids.clone());
                std::thread::spawn(move || {
                    let mut c = KeepAlive::new(addr);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match c.send("GET", path, b"") {
                            Ok((200, h, _)) => {
                                if let Some((_, p)) =
                                    h.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-pid"))
                                {
                                    pids.lock().unwrap().insert(p.parse().unwrap_or(0));
                                }
                            }
                            Ok((s, h, b)) => failures.lock().unwrap().push(format!(
                                "{s} {h:?} {}",
                                String::from_utf8_lossy(&b)
                                    .chars()
                                    .take(300)
                                    .collect::<String>()
                            )),
                            Err(e) => failures.lock().unwrap().push(format!("transport: {e}")),
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            failures,
            pids,
            threads,
        }
    }

    pub fn wait_for(&self, more: usize) {
        let target = self.done.load(Ordering::SeqCst) + more;
        eventually(Duration::from_secs(30), || {
            (self.done.load(Ordering::SeqCst) >= target).then_some(())
        })
        .expect("the load makes progress");
    }

    /// The pids that answered so far.
    pub fn pids(&self) -> HashSet<u32> {
        self.pids.lock().unwrap().clone()
    }

    /// Stop; (requests done, failures, pids that answered).
    pub fn finish(self) -> (usize, Vec<String>, HashSet<u32>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        let p = self.pids.lock().unwrap().clone();
        (self.done.load(Ordering::SeqCst), f, p)
    }
}

/// Fail with the first few failures of a load, if there were any.
pub fn assert_none_failed(done: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {done} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// `healgate demo` in `dir` on OS-chosen ports: the child and its proxy address (read
/// from the announcement line once it listens).
pub fn start_demo(dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start healgate demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("demo output").unwrap();
        if let Some(a) = line.strip_prefix("healgate: proxy listening on http://") {
            break a.trim().parse().unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
