//! The access log: one JSON object per request in `logs/access.jsonl` (SPEC §5).

use super::jsonl::JsonlSender;
use serde::Serialize;
use std::sync::Arc;

/// Who made the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Upstream,
    Gateway,
}

/// One access-log line.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    pub ts: String,
    pub request_id: String,
    /// The client's address.
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
    pub attempts: u32,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The content coding the gateway compressed the body with (`gzip`, `br`, `zstd`);
    /// `bytes` then counts the compressed bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coding: Option<&'static str>,
    /// Every attempt of a request that took more than one, in order: the peer and
    /// how it ended (a Proxy-Status type, or the status it answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// The TLS version (`TLSv1.3`, `TLSv1.2`) of a request on an HTTPS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// The ALPN protocol the TLS handshake agreed on (`h2`, `http/1.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<&'static str>,
}

/// One attempt of a retried request.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub upstream: Arc<str>,
    /// `connection_terminated`, `connection_refused` ... or `200`.
    pub outcome: String,
}

/// Where access records go; `None` inside when the access log is off.
#[derive(Clone, Default)]
pub struct AccessLog {
    sink: Option<JsonlSender>,
}

impl AccessLog {
    /// A log writing to `sink`.
    pub fn new(sink: JsonlSender) -> Self {
        AccessLog { sink: Some(sink) }
    }

    /// Whether records are wanted at all (skip building them when not).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Queue one record.
    pub fn write(&self, rec: &AccessRecord) {
        if let Some(sink) = &self.sink {
            match serde_json::to_string(rec) {
                Ok(line) => sink.send(line),
                Err(e) => tracing::error!("access record not serializable: {e}"),
            }
        }
    }
}
