//! Observation: the access log, the event log, metrics and their history, incidents,
//! timestamps, and redaction of app output.
pub mod access;
pub mod alerts;
pub mod events;
pub mod history;
pub mod incidents;
pub mod jsonl;
pub mod logstream;
pub mod metrics;
pub mod monitor;
pub mod redact;
pub mod time;
