//! Lifecycle events: `logs/events.jsonl`, one JSON object per state change (SPEC §5).
//!
//! [`Events::emit`] is the one call that records an event: it writes the log line,
//! logs it to stderr, and keeps it in a ring for the admin API.

use super::jsonl::JsonlSender;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// How many recent events are kept in memory.
const RING: usize = 1000;

/// An event about to be emitted: its kind and its fields.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub app: String,
    pub instance: Option<String>,
    pub pid: Option<u32>,
    pub fields: Map<String, Value>,
}

impl Event {
    /// A new event of `kind` for `app` (an app or upstream name).
    pub fn new(kind: &'static str, app: &str) -> Event {
        Event {
            kind,
            app: app.to_owned(),
            instance: None,
            pid: None,
            fields: Map::new(),
        }
    }

    /// For one instance or server, e.g. `web#2`.
    pub fn instance(mut self, id: &str) -> Event {
        self.instance = Some(id.to_owned());
        self
    }

    /// The process concerned.
    pub fn pid(mut self, pid: u32) -> Event {
        self.pid = Some(pid);
        self
    }

    /// One more field.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.to_owned(), value.into());
        self
    }
}

/// The event feed.
#[derive(Clone, Default)]
pub struct Events {
    sink: Option<JsonlSender>,
    ring: Arc<Mutex<Ring>>,
}

#[derive(Default)]
struct Ring {
    seq: u64,
    items: VecDeque<(u64, Value)>,
}

impl Events {
    /// A feed writing to `sink` (None: memory and stderr only).
    pub fn new(sink: Option<JsonlSender>) -> Events {
        Events {
            sink,
            ring: Arc::default(),
        }
    }

    /// Record one event.
    pub fn emit(&self, ev: Event) {
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            super::time::rfc3339_millis(SystemTime::now()).into(),
        );
        obj.insert("kind".into(), ev.kind.into());
        obj.insert("app".into(), ev.app.clone().into());
        if let Some(i) = &ev.instance {
            obj.insert("instance".into(), i.clone().into());
        }
        if let Some(p) = ev.pid {
            obj.insert("pid".into(), p.into());
        }
        for (k, v) in ev.fields {
            obj.insert(k, v);
        }
        let value = Value::Object(obj);
        let line = value.to_string();
        tracing::info!(target: "healgate::event", "{line}");
        if let Some(sink) = &self.sink {
            sink.send(line);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.seq += 1;
        let seq = ring.seq;
        ring.items.push_back((seq, value));
        if ring.items.len() > RING {
            ring.items.pop_front();
        }
    }

    /// Events with a sequence number above `since`, oldest first, with their numbers.
    pub fn since(&self, since: u64) -> Vec<(u64, Value)> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.items
            .iter()
            .filter(|(s, _)| *s > since)
            .cloned()
            .collect()
    }
}
