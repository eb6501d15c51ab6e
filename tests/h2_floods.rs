//! HTTP/2 floods against the h2c listener, written frame by frame (the `h2` crate
//! would not send them): rapid reset (HEADERS + RST_STREAM, CVE-2023-44487), an
//! endless CONTINUATION sequence (CVE-2024-27316), an HPACK bomb (one large dynamic
//! table entry referenced thousands of times). Each must be cut off early (GOAWAY or
//! a closed connection, or the bombed streams refused) within a bound of bytes and
//! time, reach the upstream at most a little, and leave the gateway serving others.

mod common;

use common::upstreams::ok;
use common::{get, Gateway};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, the first byte's high bits `first`.
fn int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A string literal (not Huffman-coded).
fn string(s: &[u8], out: &mut Vec<u8>) {
    int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// `GET /flood` for authority `x`: static-table method and scheme, :path and
/// :authority as literals without indexing (indexed names 4 and 1).
fn request_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86];
    int(0x00, 4, 4, &mut b);
    string(b"/flood", &mut b);
    int(0x00, 4, 1, &mut b);
    string(b"x", &mut b);
    b
}

/// A frame from the gateway: type, flags, stream id, its first 8 payload bytes.
type Frame = (u8, u8, u32, Vec<u8>);

/// What the gateway sent back on an h2 connection, read by a thread.
struct Peer {
    stream: TcpStream,
    /// Closed on EOF.
    frames: mpsc::Receiver<Frame>,
}

impl Peer {
    /// Connect, send the preface and SETTINGS, and acknowledge the gateway's.
    fn connect(gw: &Gateway) -> Peer {
        let stream = TcpStream::connect(gw.addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = stream.try_clone().unwrap();
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            let mut head = [0u8; 9];
            while reader.read_exact(&mut head).is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).is_err() {
                    break;
                }
                payload.truncate(8);
                if tx.send((head[3], head[4], id, payload)).is_err() {
                    break;
                }
            }
        });
        let mut p = Peer { stream, frames };
        p.stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        p.stream.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.frames.recv_timeout(left) {
                Ok((SETTINGS, 0, _, _)) => break,
                Ok(_) => {}
                Err(e) => panic!("no SETTINGS from the gateway: {e:?}"),
            }
        }
        p.stream.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap();
        p
    }

    /// Frames received so far, and whether the connection was cut off (GOAWAY or
    /// closed).
    fn drain(&self) -> (Vec<Frame>, bool) {
        let mut got = Vec::new();
        loop {
            match self.frames.try_recv() {
                Ok(f) => got.push(f),
                Err(mpsc::TryRecvError::Empty) => {
                    let cut = got.iter().any(|f| f.0 == GOAWAY);
                    return (got, cut);
                }
                Err(mpsc::TryRecvError::Disconnected) => return (got, true),
            }
        }
    }

    /// Write `chunks()` until the gateway cuts the connection off (a GOAWAY, EOF or a
    /// failed write) or `max` bytes went out: the bytes written and the frames seen.
    /// After each write, wait up to `pace` for an answer (so that what is counted was
    /// read by the gateway, not left in the kernel's buffers).
    fn flood(
        &mut self,
        max: usize,
        pace: Duration,
        mut chunk: impl FnMut(usize) -> Vec<u8>,
    ) -> (usize, Vec<Frame>, bool) {
        let mut sent = 0;
        let mut seen = Vec::new();
        let mut i = 0;
        while sent < max {
            let bytes = chunk(i);
            i += 1;
            if self.stream.write_all(&bytes).is_err() {
                break;
            }
            sent += bytes.len();
            if !pace.is_zero() {
                match self.frames.recv_timeout(pace) {
                    Ok(f) => seen.push(f),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return (sent, seen, true),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            let (got, cut) = self.drain();
            let cut = cut || seen.iter().any(|f| f.0 == GOAWAY);
            seen.extend(got);
            if cut {
                return (sent, seen, true);
            }
        }
        // Give the gateway a moment to say GOAWAY or close, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.frames.recv_timeout(Duration::from_millis(100)) {
                Ok(f) => {
                    let goaway = f.0 == GOAWAY;
                    seen.push(f);
                    if goaway {
                        return (sent, seen, true);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return (sent, seen, true),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        (sent, seen, false)
    }
}

fn gateway() -> (Gateway, common::upstreams::Server) {
    let up = ok("ok");
    let gw = Gateway::start(&format!(
        "[[upstream]]\nname = \"app\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        up.addr
    ));
    (gw, up)
}

/// Another client is served at once.
fn assert_healthy(gw: &Gateway) {
    let t = Instant::now();
    let r = get(gw.addr, "/after", &[]);
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn rapid_reset_is_cut_off() {
    let (gw, up) = gateway();
    let mut peer = Peer::connect(&gw);
    let block = request_block();
    let t = Instant::now();
    // 100 streams opened and reset per write, up to 100,000 streams.
    let (sent, frames, cut) = peer.flood(100_000 * 40, Duration::from_millis(20), |i| {
        let mut out = Vec::new();
        for k in 0..100u32 {
            let id = 2 * (i as u32 * 100 + k) + 1;
            out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
            out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        out
    });
    let streams = sent / (2 * 9 + block.len() + 4);
    eprintln!(
        "rapid reset: cut={cut} after {streams} streams, {sent} bytes, {:?}, GOAWAY {:?}",
        t.elapsed(),
        frames.iter().find(|f| f.0 == GOAWAY)
    );
    assert!(
        cut,
        "not cut off after {streams} reset streams ({sent} bytes)"
    );
    // h2 allows 20 streams reset before they were accepted; writes are paced (100
    // streams per write), so a few writes in flight at most beyond that.
    assert!(streams < 2_000, "cut off only after {streams} streams");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    if let Some(g) = frames.iter().find(|f| f.0 == GOAWAY) {
        let code = u32::from_be_bytes([g.3[4], g.3[5], g.3[6], g.3[7]]);
        // ENHANCE_YOUR_CALM (0xb) or PROTOCOL_ERROR (0x1).
        assert!(matches!(code, 0x1 | 0xb), "GOAWAY {code:#x}");
    }
    assert!(up.hits() < 1000, "{} reached the upstream", up.hits());
    assert_healthy(&gw);
}

#[test]
fn an_endless_continuation_sequence_is_cut_off() {
    let (gw, up) = gateway();
    let mut peer = Peer::connect(&gw);
    let mut first = request_block();
    // Every CONTINUATION: 16 KiB of literal fields (new names, never indexed).
    let mut fields = Vec::new();
    while fields.len() < 16 * 1024 - 300 {
        fields.push(0x10);
        string(format!("x-c{}", fields.len()).as_bytes(), &mut fields);
        string(&[b'a'; 200], &mut fields);
    }
    first.extend_from_slice(&fields);
    let t = Instant::now();
    let (sent, _frames, cut) = peer.flood(64 << 20, Duration::from_millis(50), |i| {
        if i == 0 {
            frame(HEADERS, END_STREAM, 1, &first)
        } else {
            frame(CONTINUATION, 0, 1, &fields)
        }
    });
    eprintln!(
        "CONTINUATION: cut={cut} after {sent} bytes, {:?}",
        t.elapsed()
    );
    assert!(cut, "not cut off after {sent} bytes of one header block");
    // The header limit is 32 KiB: the h2 layer allows 5 CONTINUATIONs of 16 KiB,
    // then GOAWAY; writes are paced, so a few frames in flight at most beyond that.
    assert!(sent < 256 * 1024, "cut off only after {sent} bytes");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(up.hits(), 0);
    assert_healthy(&gw);
}

#[test]
fn an_hpack_bomb_is_refused_without_reaching_the_upstream() {
    let (gw, up) = gateway();
    let mut peer = Peer::connect(&gw);
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let before = rss();
    // Stream 1 puts a 4,000-byte field in the dynamic table (literal with incremental
    // indexing: index 62) and refers to it 8,000 times: 8 KiB that decode to 32 MB.
    let mut bomb = request_block();
    bomb.push(0x40);
    string(b"x-bomb", &mut bomb);
    string(&[b'a'; 4000], &mut bomb);
    let refs = vec![0x80 | 62u8; 8000];
    let block = |i: usize| {
        let mut b = if i == 0 {
            bomb.clone()
        } else {
            request_block()
        };
        b.extend_from_slice(&refs);
        b
    };
    let t = Instant::now();
    // One bomb per stream (the entry stays in the table), up to 2,000 of them: 64 GB
    // of header fields if each were decoded and kept.
    let (sent, frames, cut) = peer.flood(2000 * 8200, Duration::from_millis(20), |i| {
        let mut f = frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            2 * i as u32 + 1,
            &block(i),
        );
        if f.len() > 16 * 1024 + 9 {
            f.truncate(0);
        }
        f
    });
    let refused = frames
        .iter()
        .filter(|f| f.0 == RST_STREAM || (f.0 == HEADERS && f.2 > 0))
        .count();
    eprintln!(
        "HPACK bomb: cut={cut} refused={refused} after {sent} bytes, {:?}, frames {:?}",
        t.elapsed(),
        frames.iter().map(|f| f.0).take(12).collect::<Vec<_>>()
    );
    assert!(
        cut || refused > 0,
        "the bombs were neither refused nor cut off ({sent} bytes): {frames:?}"
    );
    assert!(
        !frames.iter().any(|f| f.0 == DATA && f.3.starts_with(b"ok")),
        "a bomb was answered by the upstream"
    );
    assert!(sent < 100 * 8200, "still reading bombs after {sent} bytes");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(up.hits(), 0, "a bomb reached the upstream");
    let grew = rss().saturating_sub(before);
    assert!(grew < 64 * 1024, "the gateway grew by {grew} KiB");
    assert_healthy(&gw);
}
