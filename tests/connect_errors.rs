//! A connect failure is named by what the kernel said: only ECONNREFUSED is
//! `connection_refused`. The gateway running out of file descriptors is its own
//! failure (500 `proxy_internal_error`, a loud event), never counted against the peer.

mod common;

use common::{upstreams, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `healgate run` with its file descriptor limit set to `nofile` (by the shell's
/// `ulimit`, before exec), killed on drop.
struct Limited {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Limited {
    fn start(config: &str, nofile: u32) -> Limited {
        let dir = TempDir::new("nofile");
        let cfg = format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\nworkers = 1\n[gateway.limits]\nmax_connections = 10000\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{config}"
        );
        let path = dir.path().join("healgate.toml");
        std::fs::write(&path, cfg).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" run -c \"$1\""))
            .arg(common::bin())
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sh");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("healgate exited").unwrap();
            if let Some(a) = line.strip_prefix("healgate: proxy listening on http://") {
                break a.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Limited { child, addr, dir }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("data/logs/events.jsonl"))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .collect()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one keep-alive GET on `s`; the status line and the whole head, or `None`
/// when nothing comes back within `wait`.
fn ask(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(head);
            }
        }
    }
}

#[test]
fn out_of_file_descriptors_is_the_gateways_own_500_not_refused() {
    // The upstream closes after each answer: every request needs a new connect.
    let up = upstreams::fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
        false,
    );
    let gw = Limited::start(
        &format!(
            "[[upstream]]\nname = \"up\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
            up.addr
        ),
        64,
    );
    let mut first = TcpStream::connect(gw.addr).unwrap();
    let head = ask(&mut first, Duration::from_secs(10)).expect("an answer");
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Hold client connections until the gateway has no descriptor left for the
    // upstream connect: the answer is then the gateway's own failure.
    let mut held = Vec::new();
    let mut failed = None;
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(gw.addr) else {
            break;
        };
        match ask(&mut s, Duration::from_secs(2)) {
            Some(h) if h.starts_with("http/1.1 200") => held.push(s),
            Some(h) => {
                failed = Some(h);
                held.push(s);
                break;
            }
            // Not accepted: the gateway is at its limit; ask on a connection it has.
            None => {
                failed = ask(&mut first, Duration::from_secs(10));
                break;
            }
        }
    }
    let head = failed.expect("the gateway ran out of descriptors within 200 connections");
    assert!(head.starts_with("http/1.1 500"), "{head}");
    assert!(
        head.contains("proxy-status: healgate; error=proxy_internal_error"),
        "{head}"
    );
    assert!(!head.contains("connection_refused"), "{head}");
    // More of the same never ejects the healthy peer.
    for _ in 0..4 {
        let h = ask(&mut first, Duration::from_secs(10)).expect("an answer");
        assert!(h.starts_with("http/1.1 500"), "{h}");
    }
    let loud = common::eventually(Duration::from_secs(5), || {
        gw.events("gateway_resources_exhausted").pop()
    })
    .expect("a gateway_resources_exhausted event");
    assert!(
        loud["reason"]
            .as_str()
            .unwrap_or("")
            .contains("proxy_internal_error"),
        "{loud}"
    );
    assert!(
        loud["advice"].as_str().unwrap_or("").contains("ulimit"),
        "{loud}"
    );
    drop(held);
    let back = common::eventually(Duration::from_secs(10), || {
        ask(&mut first, Duration::from_secs(5)).filter(|h| h.starts_with("http/1.1 200"))
    });
    assert!(back.is_some(), "served again once descriptors are free");
    assert!(gw.events("instance_ejected").is_empty());
}

#[test]
fn failed_accepts_are_logged_once_in_a_while_with_what_to_raise() {
    let up = upstreams::ok("ok");
    let gw = Limited::start(
        &format!(
            "[[upstream]]\nname = \"up\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
            up.addr
        ),
        32,
    );
    // Fill the descriptor table with idle connections, then wait while accepts fail
    // (every 50 ms), for at most 3 s.
    let mut held = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) && held.len() < 200 {
        match TcpStream::connect(gw.addr) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        if gw.stderr().contains("accept failed") && held.len() > 40 {
            break;
        }
    }
    let failing = common::eventually(Duration::from_secs(5), || {
        gw.stderr().contains("accept failed").then_some(())
    });
    assert!(failing.is_some(), "accepts never failed: {}", gw.stderr());
    std::thread::sleep(Duration::from_secs(1)); // ~20 failed accepts at 50 ms apart
    let log = gw.stderr();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(lines <= 2, "{lines} lines:\n{log}");
    assert!(log.contains("raise `ulimit -n`"), "{log}");
}
