//! Diagnostics: capturing the state of an instance before it is recycled, and
//! explaining one request from the logs (`why`).
pub mod capture;
pub mod scan;
pub mod why;
