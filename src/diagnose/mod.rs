//! Diagnostics: capturing the state of an instance before it is recycled.
pub mod capture;
