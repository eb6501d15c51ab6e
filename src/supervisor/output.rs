//! App output: every line an instance writes to stdout or stderr goes, timestamped,
//! to `logs/apps/<app>/<instance>.log` (size-rotated), written by one thread so a
//! slow disk never blocks an app; the last stderr lines stay in memory for crash
//! reports (`Tail`), read only redacted, and `explain` picks the line that says why.

use crate::observe::jsonl::{reopen_generation, Rotation};
use crate::observe::logstream::LogStream;
use crate::observe::redact::redact;
use crate::observe::time::rfc3339_millis;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
pub const TAIL: usize = 50;
/// Bytes of stderr kept per instance for crash reports (oldest lines go first).
pub const TAIL_BYTES: usize = 16 * 1024;
/// Longest line kept in the tail; longer ones are cut.
const TAIL_LINE: usize = 1024;

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
    /// The live stream every line also goes to, redacted.
    live: Option<Arc<LogStream>>,
}

/// Whose output a capture carries: the app and the instance id.
pub type Source = (Arc<str>, Arc<str>);

/// The last stderr lines of one process (at most [`TAIL`] lines, [`TAIL_BYTES`]
/// bytes), raw in memory; every reader gets them redacted.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<TailBuf>>);

#[derive(Default)]
struct TailBuf {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    /// Keep `line` as the newest, dropping the oldest beyond the bounds.
    pub fn push(&self, line: &str) {
        let mut cut = line.len().min(TAIL_LINE);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let line = &line[..cut];
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while !t.lines.is_empty() && (t.lines.len() >= TAIL || t.bytes + line.len() > TAIL_BYTES) {
            let old = t.lines.pop_front().expect("not empty");
            t.bytes -= old.len();
        }
        t.bytes += line.len();
        t.lines.push_back(line.to_owned());
    }

    /// The lines, oldest first, with secret-looking values redacted.
    pub fn lines(&self) -> Vec<String> {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.lines.iter().map(|l| redact(l).into_owned()).collect()
    }
}

/// The line of a crash's stderr that says why, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The explaining line (a panic's message joined to its `panicked at` line).
    pub line: String,
    /// Its index in the lines given.
    pub at: usize,
}

impl Explained {
    /// A few lines around the explaining one (up to 3 before, 1 after).
    pub fn context<'a>(&self, lines: &'a [String]) -> &'a [String] {
        &lines[self.at.saturating_sub(3)..(self.at + 2).min(lines.len())]
    }
}

/// Words that mark a line as naming an error (matched as written).
const ERROR_MARKS: [&str; 17] = [
    "panicked at",
    "Error:",
    "Exception",
    "Cannot find module",
    "SyntaxError",
    "FATAL",
    "Fatal",
    "fatal:",
    "error:",
    "ERROR",
    "CRITICAL",
    "Uncaught",
    "Segmentation fault",
    "Aborted",
    "Address already in use",
    "Permission denied",
    "No such file or directory",
];

/// Lines that never explain anything (Node's version banner, Rust's backtrace hint).
fn is_noise(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.strip_prefix("Node.js v")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        || t.starts_with("note: run with `RUST_BACKTRACE")
        || t.starts_with("at ")
        || t == "^"
}

/// The line of `lines` (oldest first) that explains a crash: the last line of the
/// last Python traceback (its exception), else the last line naming an error or
/// exception (`Error:`, `panicked at`, `Cannot find module`, `FATAL` ...; stack
/// frames excluded), else the last line that is not noise. `None` when every line
/// is empty.
pub fn explain(lines: &[String]) -> Option<Explained> {
    let at = traceback_end(lines)
        .or_else(|| {
            lines
                .iter()
                .rposition(|l| !is_noise(l) && ERROR_MARKS.iter().any(|m| l.contains(m)))
        })
        .or_else(|| lines.iter().rposition(|l| !is_noise(l)))?;
    let mut line = lines[at].trim().to_owned();
    // Rust ≥ 1.73: `thread 'main' panicked at src/main.rs:2:5:` then the message.
    if line.contains("panicked at") && line.ends_with(':') {
        if let Some(msg) = lines.get(at + 1).filter(|l| !is_noise(l)) {
            line.push(' ');
            line.push_str(msg.trim());
        }
    }
    Some(Explained { line, at })
}

/// The exception line ending the last `Traceback (most recent call last):`.
fn traceback_end(lines: &[String]) -> Option<usize> {
    let start = lines.iter().rposition(|l| {
        l.trim_start()
            .starts_with("Traceback (most recent call last)")
    })?;
    let indent = lines[start].len() - lines[start].trim_start().len();
    (start + 1..lines.len()).find(|&i| {
        let l = &lines[i];
        let ind = l.len() - l.trim_start().len();
        !l.trim().is_empty() && ind <= indent
    })
}

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
            live: None,
        }
    }

    /// Lines also go to `live` (redacted) from now on.
    pub fn with_stream(mut self, live: Arc<LogStream>) -> Output {
        self.live = Some(live);
        self
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
        who: Source,
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
                t.push(&text);
            }
            if let Some(live) = &self.live {
                live.push(&who.0, Some(&who.1), tag, &redact(&text));
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
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            // SIGUSR1: every file is reopened by name at its next line (checked for
            // each message: a batch drained after the signal must not go to the old file).
            if generation != reopen_generation() {
                flush_all(&mut files);
                files.clear();
                generation = reopen_generation();
            }
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
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    // 0640: app output may hold secrets (only redacted copies leave this file).
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
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
        let tail = Tail::default();
        let input: &[u8] = b"first\nsecond line\r\nno newline at end";
        out.capture(
            input,
            "stderr",
            file.clone(),
            Some(tail.clone()),
            (Arc::from("web"), Arc::from("web#1")),
        )
        .await;
        out.flush();
        let text = std::fs::read_to_string(&*file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].ends_with("stderr | second line"), "{}", lines[1]);
        assert!(lines[0].starts_with("20"), "{}", lines[0]);
        assert_eq!(tail.lines().last().unwrap(), "no newline at end");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_tail_is_bounded_in_lines_and_bytes_and_read_redacted() {
        let t = Tail::default();
        for i in 0..200 {
            t.push(&format!("line {i}"));
        }
        let got = t.lines();
        assert_eq!(got.len(), TAIL);
        assert_eq!(got.last().unwrap(), "line 199");
        let t = Tail::default();
        for _ in 0..40 {
            t.push(&"x".repeat(5000));
        }
        let got = t.lines();
        assert!(got.iter().map(|l| l.len()).sum::<usize>() <= TAIL_BYTES);
        assert!(got.iter().all(|l| l.len() == TAIL_LINE));
        t.push("password=hunter2");
        assert_eq!(t.lines().last().unwrap(), "password=[redacted]");
    }

    #[test]
    fn explain_picks_nodes_error_not_its_version_banner() {
        let out = lines(
            "node:internal/modules/cjs/loader:1228\n  throw err;\n  ^\n\nError: Cannot find module 'nosuch'\nRequire stack:\n- /x/[eval]\n    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)\n    at Function._load (node:internal/modules/cjs/loader:1051:27) {\n  code: 'MODULE_NOT_FOUND',\n  requireStack: [ '/x/[eval]' ]\n}\n\nNode.js v20.20.2",
        );
        let e = explain(&out).unwrap();
        assert_eq!(e.line, "Error: Cannot find module 'nosuch'");
        assert_eq!(e.context(&out).last().unwrap(), "Require stack:");
    }

    #[test]
    fn explain_picks_a_tracebacks_exception_over_later_log_lines() {
        let out = lines(
            "INFO: Uvicorn running on http://127.0.0.1:8000\nTraceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    raise RuntimeError(\"db gone\")\nRuntimeError: db gone\nINFO: shutting down\n127.0.0.1 - - \"GET / HTTP/1.1\" 200",
        );
        assert_eq!(explain(&out).unwrap().line, "RuntimeError: db gone");
        // A chained traceback: the last one's exception.
        let out = lines(
            "Traceback (most recent call last):\n  File \"a\", line 1\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"a\", line 3\nValueError: bad",
        );
        assert_eq!(explain(&out).unwrap().line, "ValueError: bad");
    }

    #[test]
    fn explain_joins_a_rust_panic_to_its_message() {
        let out = lines(
            "listening on 8000\nthread 'main' panicked at src/main.rs:4:5:\nthe database is down\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        );
        assert_eq!(
            explain(&out).unwrap().line,
            "thread 'main' panicked at src/main.rs:4:5: the database is down"
        );
    }

    #[test]
    fn explain_falls_back_to_the_last_meaningful_line() {
        assert_eq!(
            explain(&lines("starting\nbye\n\nNode.js v20.20.2"))
                .unwrap()
                .line,
            "bye"
        );
        assert_eq!(explain(&lines("\n  \n")), None);
        assert_eq!(explain(&[]), None);
    }
}
