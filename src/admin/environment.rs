//! `GET /api/v1/environment` and `GET /api/v1/processes`: the gateway process as an
//! operator would look at it on the machine (version, config, data dir, limits, its
//! environment with secrets redacted) and each instance's process tree from `/proc`
//! (command lines redacted). Neither ever shows a secret's value: environment values
//! go through [`redact::env_value`], command lines through [`redact::argv`].

use super::routes::{json_response, Body};
use super::AdminState;
use crate::observe::redact;
use crate::supervisor::sampler;
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// `GET /api/v1/environment`.
pub(super) fn environment(state: &AdminState) -> Response<Body> {
    let info = &state.info;
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let limit = |v: Option<u64>| v.map_or(json!("unlimited"), |n| json!(n));
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            let v = v.to_string_lossy().into_owned();
            let shown = redact::env_value(&k, &v).into_owned();
            (k, shown)
        })
        .collect();
    env.sort();
    let env: serde_json::Map<String, Value> = env
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let data_dir = std::fs::canonicalize(&info.data_dir).unwrap_or_else(|_| info.data_dir.clone());
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_s": (state.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "config_path": info.config_path.as_ref().map(|p| p.display().to_string()),
            "data_dir": data_dir.display().to_string(),
            "cwd": cwd,
            "uid": rustix::process::getuid().as_raw(),
            "limits": {
                "open_files_soft": limit(nofile.current),
                "open_files_hard": limit(nofile.maximum),
                "max_connections": info.max_connections,
            },
            "environment": env,
        }),
    )
}

/// `GET /api/v1/processes`: the gateway's own process, then each app's instances,
/// each with its process tree.
pub(super) fn processes(state: &AdminState) -> Response<Body> {
    let apps = state
        .control
        .as_ref()
        .map(|h| h.status())
        .unwrap_or_default();
    let apps: Vec<Value> = apps
        .iter()
        .map(|app| {
            let instances: Vec<Value> = app
                .instances
                .iter()
                .map(|i| {
                    let tree = i.pid.map(sampler::tree).unwrap_or_default();
                    json!({
                        "id": i.id,
                        "state": i.state.as_str(),
                        "pid": i.pid,
                        "port": i.port,
                        "processes": tree,
                        "rss_bytes": tree.iter().map(|p| p.rss_bytes).sum::<u64>(),
                        "cpu_s": tree.iter().map(|p| p.cpu_s).sum::<f64>(),
                        "threads": tree.iter().map(|p| p.threads).sum::<u64>(),
                        "open_files": tree.iter().map(|p| p.open_files).sum::<u64>(),
                    })
                })
                .collect();
            json!({"app": app.name, "instances": instances})
        })
        .collect();
    let me = std::process::id();
    let gateway: Vec<_> = sampler::tree(me)
        .into_iter()
        .filter(|p| p.pid == me)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"gateway": gateway.first(), "apps": apps}),
    )
}
