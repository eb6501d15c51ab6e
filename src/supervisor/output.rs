//! App output: every line an instance writes to stdout or stderr goes, timestamped,
//! to `logs/apps/<app>/<instance>.log` (size-rotated), written by one thread so a
//! slow disk never blocks an app; the last stderr lines stay in memory for crash
//! reports.

use crate::observe::jsonl::{reopen_generation, Rotation};
use crate::observe::time::rfc3339_millis;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// When app logs rotate (`[gateway.logs] app_max_size`, `app_keep`), set once at start.
static ROTATION: std::sync::OnceLock<Rotation> = std::sync::OnceLock::new();

/// Set how app logs rotate (before the first line; later calls change nothing).
pub fn set_rotation(r: Rotation) {
    let _ = ROTATION.set(r);
}

fn rotation() -> Rotation {
    *ROTATION.get_or_init(|| Rotation {
        max_size: 10 * 1024 * 1024,
        keep: 3,
    })
}
/// Bytes queued for the writer beyond which lines are counted and dropped rather
/// than held in memory (the disk is far behind).
const MAX_PENDING: usize = 64 * 1024 * 1024;
/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;
/// Stderr lines kept per instance for crash reports.
pub const TAIL: usize = 20;

enum Msg {
    Line(Arc<PathBuf>, String),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The writer of every instance's output.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Msg>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// The last stderr lines of one process.
pub type Tail = Arc<Mutex<VecDeque<String>>>;

impl Output {
    /// Start the writer thread.
    pub fn start() -> Output {
        let (tx, rx) = mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("app-output".into())
            .spawn(move || write_loop(rx, p))
            .expect("start the output thread");
        Output {
            tx,
            pending,
            dropped: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn line(&self, file: &Arc<PathBuf>, text: String) {
        let n = text.len();
        if self.pending.load(Ordering::Relaxed) + n > MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!(
                "{} healgate | {dropped} lines dropped: the disk could not keep up",
                rfc3339_millis(SystemTime::now())
            );
            let _ = self.tx.send(Msg::Line(file.clone(), note));
        }
        self.pending.fetch_add(n, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Line(file.clone(), text));
    }

    /// Capture `stream` (tagged `stdout`/`stderr`) into `file`; stderr lines also
    /// go to `tail`. Returns when the stream ends.
    pub async fn capture<R: AsyncRead + Unpin>(
        &self,
        stream: R,
        tag: &'static str,
        file: Arc<PathBuf>,
        tail: Option<Tail>,
    ) {
        let mut reader = BufReader::with_capacity(16 * 1024, stream);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            let n = match read_line_capped(&mut reader, &mut buf).await {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(t) = &tail {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(text.to_string());
            }
            self.line(
                &file,
                format!("{} {tag} | {text}", rfc3339_millis(SystemTime::now())),
            );
        }
    }

    /// A note from the gateway itself in an instance's log (started, exited ...).
    pub fn note(&self, file: &Arc<PathBuf>, text: &str) {
        self.line(
            file,
            format!("{} healgate | {text}", rfc3339_millis(SystemTime::now())),
        );
    }

    /// Wait until everything queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = MAX_LINE - buf.len();
        match available.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&available[..=i]);
                r.consume(i + 1);
                return Ok(buf.len());
            }
            None => {
                let n = available.len().min(room);
                buf.extend_from_slice(&available[..n]);
                r.consume(n);
                if buf.len() >= MAX_LINE {
                    return Ok(buf.len());
                }
            }
        }
    }
}

struct Open {
    out: BufWriter<File>,
    size: u64,
}

fn write_loop(rx: mpsc::Receiver<Msg>, pending: Arc<AtomicUsize>) {
    let mut files: HashMap<Arc<PathBuf>, Open> = HashMap::new();
    let mut generation = reopen_generation();
    while let Ok(msg) = rx.recv() {
        // SIGUSR1: every file is reopened by name at its next line.
        if generation != reopen_generation() {
            flush_all(&mut files);
            files.clear();
            generation = reopen_generation();
        }
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(path, text) => {
                    pending.fetch_sub(text.len(), Ordering::Relaxed);
                    write_one(&mut files, &path, &text);
                }
                Msg::Flush(done) => {
                    flush_all(&mut files);
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush_all(&mut files);
    }
    flush_all(&mut files);
}

fn flush_all(files: &mut HashMap<Arc<PathBuf>, Open>) {
    for o in files.values_mut() {
        let _ = o.out.flush();
    }
}

fn write_one(files: &mut HashMap<Arc<PathBuf>, Open>, path: &Arc<PathBuf>, text: &str) {
    if !files.contains_key(path) {
        match open(path) {
            Ok(o) => {
                files.insert(path.clone(), o);
            }
            Err(e) => {
                tracing::error!("app log {}: {e}", path.display());
                return;
            }
        }
    }
    let Some(o) = files.get_mut(path) else { return };
    if o.out
        .write_all(text.as_bytes())
        .and_then(|_| o.out.write_all(b"\n"))
        .is_err()
    {
        return;
    }
    o.size += text.len() as u64 + 1;
    if rotation().due(o.size) {
        let _ = o.out.flush();
        files.remove(path);
        rotation().rotate(path);
    }
}

fn open(path: &Path) -> std::io::Result<Open> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Open {
        out: BufWriter::with_capacity(32 * 1024, f),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_timestamped_and_tailed() {
        let dir = std::env::temp_dir().join(format!("healgate-output-{}", std::process::id()));
        let file = Arc::new(dir.join("web#1.log"));
        let out = Output::start();
        let tail: Tail = Arc::default();
        let input: &[u8] = b"first\nsecond line\r\nno newline at end";
        out.capture(input, "stderr", file.clone(), Some(tail.clone()))
            .await;
        out.flush();
        let text = std::fs::read_to_string(&*file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].ends_with("stderr | second line"), "{}", lines[1]);
        assert!(lines[0].starts_with("20"), "{}", lines[0]);
        assert_eq!(tail.lock().unwrap().back().unwrap(), "no newline at end");
        let _ = std::fs::remove_dir_all(dir);
    }
}
