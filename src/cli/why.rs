//! `healgate why REQUEST_ID`: the story of one request, from the running gateway's
//! admin API (`GET /api/v1/requests/{id}`), else from the files under `data_dir`.

use super::Resolved;
use crate::admin::client;
use crate::diagnose::why::{self, NotFound, Sources, Story};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn why(g: &Resolved, config: Option<PathBuf>, id: &str, json: bool) -> ExitCode {
    let path = format!("/api/v1/requests/{}", client::encode_segment(id));
    let story: Result<Story, String> = match g.call("GET", &path, None) {
        Ok(v) => serde_json::from_value(v)
            .map_err(|e| format!("the gateway's answer is not what this version reads: {e}")),
        Err(e) if client::is_not_running(&e) => offline(g, config, id),
        Err(e) => Err(e),
    };
    match story {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", why::render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("healgate: why {id}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// No gateway runs: read its files (and its config file, for the numbers).
fn offline(g: &Resolved, config: Option<PathBuf>, id: &str) -> Result<Story, String> {
    let config = config
        .or_else(|| Some(PathBuf::from(super::DEFAULT_CONFIG)).filter(|p| p.exists()))
        .and_then(|p| crate::config::load(&p).ok())
        .map(|c| c.config);
    let sources = Sources {
        data_dir: &g.data_dir,
        config: config.as_ref(),
        incidents: None,
    };
    why::explain(&sources, id).map_err(|e| match e {
        NotFound::Unknown { .. } | NotFound::Invalid(_) => e.to_string(),
    })
}
