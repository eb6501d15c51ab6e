//! The live log stream: app output (redacted) and events, interleaved in the order
//! they happened, for `GET /api/v1/logs` (`follow=1`: server-sent events), the
//! dashboard's tail and `healgate logs -f`. The last [`KEPT`] lines stay in memory;
//! followers get every line after that from a broadcast channel.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Lines kept in memory, all apps together.
pub const KEPT: usize = 5000;
/// Longest line kept; longer ones are cut (the app's log file has them whole).
const LINE: usize = 2048;
/// Lines a slow follower may fall behind before it is told it missed some.
const FOLLOW_BUFFER: usize = 1024;

/// One line of the stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub ts: String,
    pub app: String,
    pub instance: Option<String>,
    /// `stdout`, `stderr` or `event`.
    pub stream: &'static str,
    pub text: String,
}

/// What followers receive: a line, or the end of the stream (the gateway stops).
#[derive(Debug, Clone)]
pub enum Item {
    Line(Arc<LogLine>),
    End,
}

/// The stream.
pub struct LogStream {
    ring: Mutex<(u64, VecDeque<Arc<LogLine>>)>,
    tx: broadcast::Sender<Item>,
}

impl Default for LogStream {
    fn default() -> LogStream {
        LogStream {
            ring: Mutex::default(),
            tx: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }
}

impl LogStream {
    /// Add a line (`text` must already be redacted).
    pub fn push(&self, app: &str, instance: Option<&str>, stream: &'static str, text: &str) {
        let text = if text.len() > LINE {
            let mut end = LINE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &text[..end])
        } else {
            text.to_owned()
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.0 += 1;
        let line = Arc::new(LogLine {
            seq: ring.0,
            ts: super::time::rfc3339_millis(std::time::SystemTime::now()),
            app: app.to_owned(),
            instance: instance.map(str::to_owned),
            stream,
            text,
        });
        if ring.1.len() == KEPT {
            ring.1.pop_front();
        }
        ring.1.push_back(line.clone());
        // Sent under the lock, so followers see lines in sequence order.
        let _ = self.tx.send(Item::Line(line));
    }

    /// The last `n` lines of `app` (all apps when `None`) after `since`, oldest first,
    /// and a receiver for what follows them (nothing is lost in between).
    pub fn recent(
        &self,
        app: Option<&str>,
        n: usize,
        since: u64,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Item>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let mut out: Vec<Arc<LogLine>> = ring
            .1
            .iter()
            .rev()
            .filter(|l| l.seq > since && app.is_none_or(|a| l.app == a))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        (out, rx)
    }

    /// The seq of the newest line (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The gateway stops: followers end their streams.
    pub fn close(&self) {
        let _ = self.tx.send(Item::End);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lines_by_app_then_what_follows() {
        let s = LogStream::default();
        s.push("web", Some("web#1"), "stdout", "one");
        s.push("api", None, "event", "two");
        s.push("web", Some("web#2"), "stderr", "three");
        let (lines, mut rx) = s.recent(Some("web"), 10, 0);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "three"]);
        s.push("web", None, "event", "four");
        match rx.try_recv() {
            Ok(Item::Line(l)) => assert_eq!((l.text.as_str(), l.seq), ("four", 4)),
            other => panic!("{other:?}"),
        }
        let (after, _) = s.recent(None, 10, 2);
        assert_eq!(after.len(), 2);
        for _ in 0..(KEPT + 10) {
            s.push("web", None, "stdout", &"x".repeat(LINE + 10));
        }
        let (all, _) = s.recent(None, usize::MAX, 0);
        assert_eq!(all.len(), KEPT);
        assert!(all[0].text.len() <= LINE + 3);
    }
}
