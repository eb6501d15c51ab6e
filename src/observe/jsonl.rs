//! A JSON-lines file written by its own thread, so the request path never waits on disk.
//!
//! Lines travel over an unbounded channel (nothing is dropped); the writer flushes
//! whenever the channel runs empty, and [`JsonlWriter::close`] drains and flushes
//! everything before shutdown completes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

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
    pub fn open(path: &Path) -> io::Result<JsonlWriter> {
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
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

fn write_loop(file: File, rx: mpsc::Receiver<String>) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    while let Ok(line) = rx.recv() {
        write_line(&mut out, &line);
        // Drain what is already queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            write_line(&mut out, &line);
        }
        if let Err(e) = out.flush() {
            tracing::error!("log write failed: {e}");
        }
    }
    let _ = out.flush();
}

fn write_line(out: &mut BufWriter<File>, line: &str) {
    if let Err(e) = out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
    {
        tracing::error!("log write failed: {e}");
    }
}
