//! Observation: the access log, the event log, timestamps, and redaction of app output.
pub mod access;
pub mod events;
pub mod jsonl;
pub mod redact;
pub mod time;
