//! `healgate probe URL|APP|UPSTREAM`: what to walk to (a URL, an app's instances from
//! the running gateway, an upstream's servers from the config), then
//! [`crate::diagnose::probe`] walks it with the config's settings.

use super::{Target, DEFAULT_CONFIG};
use crate::admin::StatusAnswer;
use crate::config::{self, Config, UpstreamTls};
use crate::diagnose::probe::{self, Server, Settings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(super) fn probe(target: &Target, what: &str, path: Option<String>, json: bool) -> ExitCode {
    let config = match load(target.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("healgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (kind, servers) = match servers(target, &config, what, path.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("healgate: probe {what}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings::of(&config);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(probe::probe(what, kind, &servers, &settings));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", probe::render(&report));
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The config of `-c`, else `./healgate.toml`, else the defaults.
fn load(path: Option<&Path>) -> Result<Config, String> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            if !p.exists() {
                return config::parse("", Path::new("(defaults)"))
                    .map(|c| c.config)
                    .map_err(|e| e.to_string());
            }
            p
        }
    };
    config::load(&path)
        .map(|c| c.config)
        .map_err(|e| e.to_string())
}

/// What `what` names: a URL, an upstream, an app, or `host:port`.
fn servers(
    target: &Target,
    config: &Config,
    what: &str,
    path: Option<&str>,
) -> Result<(&'static str, Vec<Server>), String> {
    if what.contains("://") {
        return url(what, path).map(|s| ("url", vec![s]));
    }
    if let Some(u) = config.upstreams.iter().find(|u| u.name == what) {
        let path = path
            .map(str::to_owned)
            .or_else(|| u.health.as_ref().and_then(|h| h.path.clone()))
            .unwrap_or_else(|| "/".to_owned());
        let list = u
            .servers
            .iter()
            .map(|s| Server {
                label: format!(
                    "{}{}:{}",
                    if s.tls { "https://" } else { "" },
                    s.host,
                    s.port
                ),
                host: s.host.clone(),
                port: s.port,
                tls: s.tls,
                path: path.clone(),
                resolvers: u.dns.resolvers.clone(),
                tls_config: u.tls.clone(),
            })
            .collect();
        return Ok(("upstream", list));
    }
    if let Some(a) = config.apps.iter().find(|a| a.name == what) {
        let path = path
            .map(str::to_owned)
            .or_else(|| a.health.path.clone())
            .unwrap_or_else(|| "/".to_owned());
        return app_instances(target, what, &path).map(|s| ("app", s));
    }
    if what
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return url(&format!("http://{what}"), path).map(|s| ("url", vec![s]));
    }
    Err(format!(
        "not a URL, nor an app or upstream of the config ({}), nor host:port",
        names(config)
    ))
}

fn names(config: &Config) -> String {
    let mut n: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    n.extend(config.upstreams.iter().map(|u| u.name.as_str()));
    if n.is_empty() {
        "it names none".to_owned()
    } else {
        format!("it names {}", n.join(", "))
    }
}

fn url(text: &str, path: Option<&str>) -> Result<Server, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => {
            return Err(format!(
                "{text:?}: the scheme must be http or https, not {other:?}"
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{text:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = path
        .map(str::to_owned)
        .or_else(|| uri.path_and_query().map(|p| p.as_str().to_owned()))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok(Server {
        label: text.to_owned(),
        host,
        port,
        tls,
        path,
        resolvers: Vec::new(),
        tls_config: UpstreamTls::default(),
    })
}

/// The app's running instances, from the gateway's status.
fn app_instances(target: &Target, app: &str, path: &str) -> Result<Vec<Server>, String> {
    let g = target
        .resolve()
        .map_err(|_| "the config is invalid".to_owned())?;
    let status = g.call("GET", "/api/v1/status", None).map_err(|e| {
        format!("{e} (an app's instances are found in the running gateway's status)")
    })?;
    let status: StatusAnswer = serde_json::from_value(status)
        .map_err(|e| format!("the gateway's status is not what this version reads: {e}"))?;
    let a = status
        .apps
        .iter()
        .find(|a| a.name == app)
        .ok_or_else(|| format!("the running gateway has no app {app:?}"))?;
    let list: Vec<Server> = a
        .instances
        .iter()
        .filter(|i| i.pid.is_some() && i.port != 0)
        .map(|i| Server {
            label: format!(
                "{} (pid {}, {})",
                i.id,
                i.pid.unwrap_or(0),
                i.state.as_str()
            ),
            host: "127.0.0.1".to_owned(),
            port: i.port,
            tls: false,
            path: path.to_owned(),
            resolvers: Vec::new(),
            tls_config: UpstreamTls::default(),
        })
        .collect();
    if list.is_empty() {
        return Err(format!(
            "{app} has no running instance ({}): `healgate status` says why",
            a.reason
                .clone()
                .unwrap_or_else(|| "none started".to_owned())
        ));
    }
    Ok(list)
}
