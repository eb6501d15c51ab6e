//! Observation: the access log, the event log, and timestamps they share.
pub mod access;
pub mod events;
pub mod jsonl;
pub mod time;
