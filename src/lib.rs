//! healgate: an application gateway that tells the truth about every failure.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo_app;
pub mod diagnose;
pub mod error;
/// For the fuzz targets in `fuzz/` only: not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
pub mod observe;
pub mod proxy;
pub mod run;
pub mod supervisor;
pub mod tls;
pub mod upstream;
