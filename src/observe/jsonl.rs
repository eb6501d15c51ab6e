//! A JSON-lines file written by its own thread, so the request path never waits on disk.
//!
//! Lines travel over an unbounded channel (nothing is dropped); the writer flushes
//! whenever the channel runs empty, and [`JsonlWriter::close`] drains and flushes
//! everything before shutdown completes. A file past its [`Rotation`] size is rotated
//! (`x.1`, `x.2` ...), and [`reopen`] (SIGUSR1) makes every log writer reopen its file
//! by name before its next line, so an external `mv x x.1` loses no line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Bumped by [`reopen`]; each writer compares it with the value it opened its files at.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Ask every log writer of this process (JSONL logs and app output) to reopen its
/// files by name before its next line (SIGUSR1, as nginx does).
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::SeqCst);
}

/// The reopen generation: a writer whose files are older than this reopens them.
pub fn reopen_generation() -> u64 {
    REOPEN.load(Ordering::SeqCst)
}

/// When a log file is rotated and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate past this many bytes; 0: never.
    pub max_size: u64,
    /// Rotated files kept: `x.1` (newest) .. `x.<keep>`.
    pub keep: u32,
}

impl Rotation {
    /// Never rotate.
    pub const NEVER: Rotation = Rotation {
        max_size: 0,
        keep: 0,
    };

    /// Whether a file of `size` bytes is due.
    pub fn due(&self, size: u64) -> bool {
        self.max_size > 0 && size >= self.max_size
    }

    /// Shift `path` to `path.1` (and older ones up), dropping the one past `keep`.
    pub fn rotate(&self, path: &Path) {
        let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
        let keep = self.keep.max(1);
        let _ = std::fs::remove_file(name(keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        let _ = std::fs::rename(path, name(1));
    }
}

/// The sending half: cheap to clone, never blocks.
#[derive(Clone)]
pub struct JsonlSender {
    tx: mpsc::Sender<String>,
}

impl JsonlSender {
    /// Queue one line (without its newline).
    pub fn send(&self, line: String) {
        // The receiver lives until close(); a send after it is a late straggler.
        let _ = self.tx.send(line);
    }
}

/// The writer thread of one file.
pub struct JsonlWriter {
    sender: Option<JsonlSender>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl JsonlWriter {
    /// Open (append, create with parents) `path` and start its writer thread.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<JsonlWriter> {
        let file = LogFile::open(path, rotation)?;
        let (tx, rx) = mpsc::channel::<String>();
        let name = format!(
            "log-{}",
            path.file_stem().and_then(|s| s.to_str()).unwrap_or("jsonl")
        );
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(file, rx))?;
        Ok(JsonlWriter {
            sender: Some(JsonlSender { tx }),
            thread: Some(thread),
            path: path.to_owned(),
        })
    }

    /// A handle for producers.
    pub fn sender(&self) -> JsonlSender {
        self.sender.clone().expect("sender taken only by close")
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting lines once every sender is gone, write what is queued, flush.
    /// Producers still holding a sender must drop it first, or this waits for them.
    pub fn close(mut self) {
        self.sender.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One open log file: its writer, its size, when it was opened.
struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    generation: u64,
    rotation: Rotation,
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            // Data dirs 0750, log files 0640: app output and requests are not for others.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                })?;
        }
        let generation = reopen_generation();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            generation,
            rotation,
        })
    }

    /// Reopen by name when asked (SIGUSR1) or rotate when due; on failure the old
    /// file keeps the lines.
    fn refresh(&mut self) {
        let asked = self.generation != reopen_generation();
        let due = self.rotation.due(self.size);
        if !asked && !due {
            return;
        }
        let _ = self.out.flush();
        if due {
            self.rotation.rotate(&self.path);
        }
        match LogFile::open(&self.path, self.rotation) {
            Ok(new) => *self = new,
            Err(e) => {
                tracing::error!("log reopen failed, writing on to the old file: {e}");
                self.generation = reopen_generation();
            }
        }
    }

    fn write_line(&mut self, line: &str) {
        self.refresh();
        match self
            .out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
        {
            Ok(()) => self.size += line.len() as u64 + 1,
            Err(e) => tracing::error!("log write failed: {e}"),
        }
    }
}

fn write_loop(mut file: LogFile, rx: mpsc::Receiver<String>) {
    while let Ok(line) = rx.recv() {
        file.write_line(&line);
        // Drain what is already queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            file.write_line(&line);
        }
        if let Err(e) = file.out.flush() {
            tracing::error!("log write failed: {e}");
        }
    }
    let _ = file.out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_max_size_keeping_keep_files() {
        let dir = std::env::temp_dir().join(format!("healgate-jsonl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("access.jsonl");
        let w = JsonlWriter::open(
            &path,
            Rotation {
                max_size: 100,
                keep: 2,
            },
        )
        .unwrap();
        let tx = w.sender();
        for i in 0..20 {
            tx.send(format!("{{\"n\":{i:03},\"pad\":\"0123456789012345678\"}}"));
        }
        drop(tx);
        w.close();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let one = dir.join("access.jsonl.1");
        let two = dir.join("access.jsonl.2");
        assert!(!dir.join("access.jsonl.3").exists());
        for p in [&path, &one, &two] {
            let t = read(p);
            assert!(!t.is_empty() && t.len() <= 100 + 40, "{}: {t}", p.display());
        }
        // The newest lines are in the live file, the older ones in .1 then .2.
        assert!(read(&path).contains("\"n\":019"));
        let last_of = |t: String| t.lines().last().unwrap().to_owned();
        assert!(last_of(read(&two)) < last_of(read(&one)));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `mv x x.1` then [`reopen`]: the next lines go to a new `x`, nothing is lost, for
    /// JSONL logs and app output alike.
    #[tokio::test]
    async fn reopen_after_a_rename_starts_a_new_file() {
        use crate::supervisor::output::Output;
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("healgate-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let access = dir.join("access.jsonl");
        let app = Arc::new(dir.join("apps/web/web#1.log"));
        let w = JsonlWriter::open(&access, Rotation::NEVER).unwrap();
        let out = Output::start();
        let tx = w.sender();
        tx.send("one".into());
        out.capture(
            &b"app one\n"[..],
            "stdout",
            app.clone(),
            None,
            (Arc::from("web"), Arc::from("web#1")),
        )
        .await;
        out.flush();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let when = std::time::Instant::now();
        while read(&access).is_empty() && when.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let renamed = |p: &Path| PathBuf::from(format!("{}.1", p.display()));
        std::fs::rename(&access, renamed(&access)).unwrap();
        std::fs::rename(&*app, renamed(&app)).unwrap();
        reopen();
        tx.send("two".into());
        out.capture(
            &b"app two\n"[..],
            "stdout",
            app.clone(),
            None,
            (Arc::from("web"), Arc::from("web#1")),
        )
        .await;
        out.flush();
        drop(tx);
        w.close();
        assert_eq!(read(&renamed(&access)), "one\n");
        assert_eq!(read(&access), "two\n");
        assert!(read(&renamed(&app)).ends_with("stdout | app one\n"));
        assert!(read(&app).ends_with("stdout | app two\n"), "{}", read(&app));
        let _ = std::fs::remove_dir_all(dir);
    }
}
