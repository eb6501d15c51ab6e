//! Diagnostics: capturing the state of an instance before it is recycled, and
//! explaining one request from the logs (`why`), and walking one request hop by hop
//! (`probe`).
pub mod capture;
pub mod probe;
pub mod scan;
pub mod why;
