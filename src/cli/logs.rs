//! `healgate logs [APP] [-f]`: the tail of the event log and of the instances'
//! output files, followed as they grow (and across rotation).

use super::event_line;
use serde_json::Value;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How much of the end of a file `logs` reads to find its last lines.
const TAIL_WINDOW: u64 = 4 * 1024 * 1024;

/// How often `logs -f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `healgate logs [APP] [-f]` from the running gateway's live stream: app output and
/// events interleaved in time order (`-f` follows it). `None` when no gateway runs
/// (then the files are read).
pub(super) fn live(
    g: &super::Resolved,
    app: Option<&str>,
    lines: usize,
    follow: bool,
) -> Option<ExitCode> {
    use crate::admin::client;
    let app_q = app
        .map(|a| format!("&app={}", client::encode_segment(a)))
        .unwrap_or_default();
    let path = format!("/api/v1/logs?lines={lines}{app_q}");
    let answer = match client::call(
        &g.data_dir,
        g.token.as_deref(),
        g.admin_listen,
        "GET",
        &path,
        None,
    ) {
        Ok(v) => v,
        Err(e) if client::is_not_running(&e) => return None,
        Err(e) => {
            eprintln!("healgate: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let mut out = io::stdout().lock();
    for l in answer["lines"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", live_line(l));
    }
    let _ = out.flush();
    if !follow {
        return Some(ExitCode::SUCCESS);
    }
    let since = answer["cursor"].as_u64().unwrap_or(0);
    let path = format!(
        "/api/v1/logs?follow=1&lines={}&since={since}{app_q}",
        crate::observe::logstream::KEPT
    );
    let followed = client::follow(
        &g.data_dir,
        g.token.as_deref(),
        g.admin_listen,
        &path,
        |data| {
            if let Ok(l) = serde_json::from_str::<Value>(data) {
                let _ = writeln!(out, "{}", live_line(&l));
                let _ = out.flush();
            }
            true
        },
    );
    Some(match followed {
        Ok(()) => {
            eprintln!("healgate: the gateway closed the log stream (it stopped)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("healgate: {e}");
            ExitCode::FAILURE
        }
    })
}

/// `ts  web#1 stderr | text`.
fn live_line(l: &Value) -> String {
    let who = l["instance"].as_str().or(l["app"].as_str()).unwrap_or("-");
    format!(
        "{} {who} {} | {}",
        l["ts"].as_str().unwrap_or(""),
        l["stream"].as_str().unwrap_or(""),
        l["text"].as_str().unwrap_or("")
    )
}

/// `healgate logs [APP] [-f]`: the tail of `logs/events.jsonl` (this app's events
/// only, for an APP) and of each `logs/apps/<APP>/*.log`; `-f` follows them all.
pub(super) fn logs(data_dir: &Path, app: Option<&str>, lines: usize, follow: bool) -> ExitCode {
    let logs = data_dir.join("logs");
    let events_path = logs.join("events.jsonl");
    let app_dir = app.map(|a| logs.join("apps").join(a));
    let mut files = vec![Followed::events(events_path.clone(), app)];
    if let Some(dir) = &app_dir {
        files.extend(app_logs(dir).into_iter().map(Followed::output));
    }
    let found = files.iter().any(|f| f.path.exists());
    if !found && !follow {
        eprintln!(
            "healgate: no logs under {} (is the data directory right? use -c FILE)",
            logs.display()
        );
        return ExitCode::FAILURE;
    }
    let mut out = io::stdout().lock();
    let mut last_header: Option<PathBuf> = None;
    for f in &mut files {
        match f.tail(lines) {
            Ok(tail) => {
                let _ = writeln!(out, "==> {} <==", f.path.display());
                for line in tail {
                    let _ = writeln!(out, "{line}");
                }
                last_header = Some(f.path.clone());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("healgate: reading {}: {e}", f.path.display()),
        }
    }
    let _ = out.flush();
    if !follow {
        return ExitCode::SUCCESS;
    }
    drop(out);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        if let Some(dir) = &app_dir {
            for path in app_logs(dir) {
                if !files.iter().any(|f| f.path == path) {
                    files.push(Followed::output(path));
                }
            }
        }
        let mut out = io::stdout().lock();
        for f in &mut files {
            let new = match f.read_new() {
                Ok(new) => new,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    eprintln!("healgate: reading {}: {e}", f.path.display());
                    continue;
                }
            };
            if new.is_empty() {
                continue;
            }
            if last_header.as_ref() != Some(&f.path) {
                let _ = writeln!(out, "\n==> {} <==", f.path.display());
                last_header = Some(f.path.clone());
            }
            for line in new {
                let _ = writeln!(out, "{line}");
            }
        }
        if out.flush().is_err() {
            // stdout closed (e.g. piped into `head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
}

/// The `*.log` files of one app's instances, sorted.
fn app_logs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    found.sort();
    found
}

/// One file `logs` prints and follows.
struct Followed {
    path: PathBuf,
    /// Events of this app only (events file).
    app: Option<String>,
    /// Render as events (JSON lines) rather than raw output.
    events: bool,
    /// Bytes read so far (up to the end of the last whole line).
    offset: u64,
    /// The file it was read from, to notice rotation.
    inode: Option<u64>,
    /// The unfinished last line.
    pending: Vec<u8>,
}

impl Followed {
    fn events(path: PathBuf, app: Option<&str>) -> Followed {
        Followed {
            path,
            app: app.map(str::to_owned),
            events: true,
            offset: 0,
            inode: None,
            pending: Vec::new(),
        }
    }

    fn output(path: PathBuf) -> Followed {
        Followed {
            events: false,
            ..Followed::events(path, None)
        }
    }

    /// Render one whole line; `None` to skip it.
    fn render(&self, line: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if !self.events {
            return Some(text.to_owned());
        }
        if text.trim().is_empty() {
            return None;
        }
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            return Some(text.to_owned());
        };
        if let Some(app) = &self.app {
            if event.get("app").and_then(Value::as_str) != Some(app.as_str()) {
                return None;
            }
        }
        Some(event_line(&event))
    }

    /// The last `n` lines (that pass the filter), leaving `offset` after them.
    fn tail(&mut self, n: usize) -> io::Result<Vec<String>> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        let start = len.saturating_sub(TAIL_WINDOW);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.take(len - start).read_to_end(&mut buf)?;
        // Whole lines only: drop a partial first line (when not at the start of the
        // file) and the unfinished last one (read again when it is finished).
        let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let begin = if start > 0 {
            buf.iter().position(|&b| b == b'\n').map_or(end, |i| i + 1)
        } else {
            0
        };
        let whole = &buf[begin.min(end)..end];
        let mut lines: Vec<String> = whole
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| self.render(l))
            .collect();
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
        self.offset = start + end as u64;
        self.inode = Some(meta.ino());
        Ok(lines)
    }

    /// Whole lines written since the last read. A rotated or truncated file is read
    /// again from its start.
    fn read_new(&mut self) -> io::Result<Vec<String>> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            self.offset = 0;
            self.pending.clear();
            self.inode = Some(meta.ino());
        }
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.take(meta.len() - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.pending.split_off(end + 1);
        let whole = std::mem::replace(&mut self.pending, rest);
        Ok(whole
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| self.render(l))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_follow_whole_lines_only() {
        let dir = std::env::temp_dir().join(format!("healgate-cli-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut text = String::new();
        for i in 0..5 {
            let app = if i % 2 == 0 { "web" } else { "api" };
            text.push_str(&format!(
                "{{\"ts\":\"t{i}\",\"kind\":\"instance_ready\",\"app\":\"{app}\"}}\n"
            ));
        }
        text.push_str("{\"ts\":\"t5\",\"ki");
        std::fs::write(&path, &text).unwrap();
        let mut f = Followed::events(path.clone(), Some("web"));
        let tail = f.tail(2).unwrap();
        assert_eq!(tail.len(), 2);
        assert!(
            tail[0].starts_with("t2") && tail[1].starts_with("t4"),
            "{tail:?}"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"nd\":\"scaled\",\"app\":\"web\"}\n")
            .unwrap();
        let new = f.read_new().unwrap();
        assert_eq!(new.len(), 1);
        assert!(
            new[0].starts_with("t5") && new[0].contains("scaled"),
            "{new:?}"
        );
        assert!(f.read_new().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
