//! The command line: parse, then hand over to the piece that does the work.
//!
//! `run`, `check` and `demo-app` start something in this process; `status`, `restart`,
//! `recycle` and `scale` talk to a running gateway through its admin API
//! ([`crate::admin::client`]); `logs` and `why` ask it too and read the files under
//! `data_dir/logs` when none runs; `probe` walks a request from this process.

mod diagnose;
mod logs;
mod probe;
mod why;

use crate::admin::{client, StatusAnswer};
use crate::config;
use crate::supervisor::control::{AppStatus, InstanceId};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The default config file.
const DEFAULT_CONFIG: &str = "healgate.toml";

/// Exit code for a usage error (clap uses it too).
const USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "healgate",
    version,
    about = "An application gateway that tells the truth about every 502, 503 and 504"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground.
    Run {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: every problem at once, with key path and line.
    Check {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The built-in demo app (faults on demand).
    DemoApp {
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0, env = "PORT")]
        port: u16,
    },
    /// The gateway with 3 instances of the built-in demo app; no config file needed.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the admin API listens (loopback only by default).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Logs, events, the admin token.
        #[arg(long, default_value = "healgate-data")]
        data_dir: PathBuf,
    },

    // Verbs that talk to a running gateway.
    /// Show apps, instances and recent events of the running gateway.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the admin API's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config file of a running gateway and apply what changed (also SIGHUP).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Restart every instance of an app (rolling, overlapping: no dropped requests).
    Restart {
        /// The app, as named in the config.
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Replace one instance with a fresh one (the new one is ready before the old stops).
    Recycle {
        /// The instance, e.g. `web#2` (or `web-2`).
        instance: String,
        #[command(flatten)]
        target: Target,
    },
    /// Run N instances of an app.
    Scale {
        /// The app, as named in the config.
        app: String,
        /// How many instances to run.
        instances: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Collect a diagnostic bundle (logs, events, history, output, process snapshots,
    /// config and environment, secrets redacted) and write report.json + report.html;
    /// prints the steps, then the bundle's path, the headline and the findings.
    Diagnose {
        /// Only this app (its requests, events and instances).
        app: Option<String>,
        /// How far back to look.
        #[arg(long, default_value = "15m")]
        window: String,
        /// Also write a core of each instance (gcore, when installed; a core holds
        /// the process's memory, secrets included).
        #[arg(long)]
        dumps: bool,
        /// Analyze this bundle folder again (no gateway needed) instead of collecting.
        #[arg(long, value_name = "DIR")]
        analyze: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// The story of one request, by its X-Request-Id: when, route, instance, each
    /// attempt, what failed and why, what the gateway did, what to change.
    Why {
        /// The request id (X-Request-Id of the response; shown on every error page).
        request_id: String,
        /// Print the structured answer (the admin API's JSON).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Walk one request DNS → TCP → TLS → HTTP the way the gateway would, with the
    /// config's resolvers, timeouts, TLS trust and limits; name the hop that fails,
    /// the Proxy-Status error the gateway would give and what to change. Exit 0 only
    /// when every hop passes.
    Probe {
        /// A URL (http:// or https://), an app (its running instances), an upstream
        /// (its servers) of the config, or host:port.
        what: String,
        /// The path to request (default: the URL's, else the health path, else /).
        #[arg(long)]
        path: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print recent events and, for an APP, its instances' output; `-f` follows.
    Logs {
        /// Show this app's events and instance output only.
        app: Option<String>,
        /// Keep printing new lines as they are written (until Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// Lines to show from the end of each file.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        target: Target,
    },
}

/// Which gateway a verb talks to.
#[derive(Args)]
struct Target {
    /// The running gateway's config file. Without it: ./healgate.toml, else the data
    /// dir in env HEALGATE_DATA_DIR, else ./healgate-data when a gateway recorded
    /// itself there, else the last gateway this user started (the per-user runtime
    /// file), else the demo's defaults (./healgate-data, admin 127.0.0.1:9901).
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// The environment variable naming a running gateway's data dir (for CLI verbs).
const DATA_DIR_ENV: &str = "HEALGATE_DATA_DIR";

/// Where a running gateway keeps its files and its admin API, from its config.
struct Resolved {
    data_dir: PathBuf,
    admin_listen: SocketAddr,
    token: Option<String>,
}

fn env_token() -> Option<String> {
    std::env::var(config::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
}

/// A gateway found by its data dir (its `admin.json`, else the default admin address).
fn by_data_dir(data_dir: PathBuf, said: String) -> Resolved {
    eprintln!("healgate: using {said}");
    Resolved {
        data_dir,
        admin_listen: config::Admin::default().listen,
        token: env_token(),
    }
}

fn alive(pid: Option<u32>) -> bool {
    pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

impl Target {
    /// Find the gateway: `-c`, then `./healgate.toml`, then `HEALGATE_DATA_DIR`, then
    /// `./healgate-data` with an `admin.json`, then the per-user runtime file of a
    /// gateway still alive, then the demo's defaults. Says on stderr which it used
    /// (except for `-c`). An invalid config is printed; `Err` is the exit code.
    fn resolve(&self) -> Result<Resolved, ExitCode> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG);
                if !p.exists() {
                    return Ok(Target::discover());
                }
                eprintln!("healgate: using ./{DEFAULT_CONFIG}");
                p
            }
        };
        match config::load(&path) {
            Ok(checked) => Ok(Resolved {
                data_dir: checked.config.gateway.data_dir,
                admin_listen: checked.config.admin.listen,
                token: checked.config.admin.token,
            }),
            Err(invalid) if path.exists() => {
                // The running gateway still has the last valid version: reach it anyway.
                let n = invalid.errors().count();
                eprintln!(
                    "healgate: note: {} has {n} problem{} (see `healgate check`); reaching the running gateway anyway",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                );
                let (data_dir, admin_listen, token) = config::control_target(&path);
                Ok(Resolved {
                    data_dir,
                    admin_listen,
                    token,
                })
            }
            Err(invalid) => {
                eprintln!("{invalid}");
                Err(ExitCode::FAILURE)
            }
        }
    }
}

impl Target {
    /// No config file: the gateway recorded by env, local data dir or runtime file.
    fn discover() -> Resolved {
        if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
            let d = PathBuf::from(d);
            let said = format!("{DATA_DIR_ENV}={}", d.display());
            return by_data_dir(d, said);
        }
        let local = config::Gateway::default().data_dir;
        if crate::admin::read_admin_file(&local).is_some_and(|f| alive(f.pid)) {
            let said = format!("the gateway recorded in ./{}", local.display());
            return by_data_dir(local, said);
        }
        if let Some((d, f)) = crate::admin::read_runtime_file().filter(|(_, f)| alive(f.pid)) {
            let said = format!(
                "the gateway recorded in {} (pid {}, data dir {})",
                crate::admin::runtime_file().display(),
                f.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                d.display()
            );
            return by_data_dir(d, said);
        }
        Resolved {
            data_dir: local,
            admin_listen: config::Admin::default().listen,
            token: env_token(),
        }
    }
}

impl Resolved {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        client::call(
            &self.data_dir,
            self.token.as_deref(),
            self.admin_listen,
            method,
            path,
            body,
        )
    }
}

/// Parse the command line and run the command. Exit codes: 0 ok, 1 failure or
/// invalid input, 2 usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => match config::load(&config) {
            Ok(checked) => {
                print_warnings(&checked);
                crate::run::run(checked.config, &config)
            }
            Err(invalid) => {
                eprintln!("{invalid}");
                eprintln!("healgate: {} is invalid; not starting", config.display());
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match config::load(&config) {
            Ok(checked) => {
                print_warnings(&checked);
                // What the machine lacks (PATH, cwd, DNS): warnings, still valid.
                for w in config::check_environment(&config, &checked) {
                    eprintln!("{w}");
                }
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(invalid) => {
                eprintln!("{invalid}");
                let n = invalid
                    .problems
                    .iter()
                    .filter(|p| matches!(p.severity, config::Severity::Error))
                    .count();
                eprintln!(
                    "{}: invalid ({n} error{})",
                    config.display(),
                    if n == 1 { "" } else { "s" }
                );
                ExitCode::FAILURE
            }
        },
        Command::DemoApp { port } => crate::demo_app::run(port),
        Command::Demo {
            listen,
            admin,
            data_dir,
        } => crate::run::demo(listen, admin, data_dir),
        Command::Status { target, json } => with_target(&target, |g| status(g, json)),
        Command::Reload { target } => with_target(&target, |g| command(g, "/api/v1/reload", None)),
        Command::Restart { app, target } => with_target(&target, |g| {
            let path = format!("/api/v1/apps/{}/restart", client::encode_segment(&app));
            command(g, &path, None)
        }),
        Command::Recycle { instance, target } => {
            let Some(id) = InstanceId::parse(&instance) else {
                eprintln!(
                    "healgate: recycle needs one instance, like web#2 (or web-2), not {instance:?}"
                );
                return ExitCode::from(USAGE);
            };
            with_target(&target, |g| {
                let id = id.to_string();
                let path = format!("/api/v1/instances/{}/recycle", client::encode_segment(&id));
                let body = json!({"reason": "requested with healgate recycle"});
                command(g, &path, Some(&body))
            })
        }
        Command::Scale {
            app,
            instances,
            target,
        } => with_target(&target, |g| {
            let path = format!("/api/v1/apps/{}/scale", client::encode_segment(&app));
            command(g, &path, Some(&json!({ "instances": instances })))
        }),
        Command::Diagnose {
            analyze: Some(dir), ..
        } => diagnose::reanalyze(&dir),
        Command::Diagnose {
            app,
            window,
            dumps,
            target,
            analyze: None,
        } => with_target(&target, |g| {
            diagnose::collect(g, app.as_deref(), &window, dumps)
        }),
        Command::Probe {
            what,
            path,
            json,
            target,
        } => probe::probe(&target, &what, path, json),
        Command::Why {
            request_id,
            json,
            target,
        } => {
            let config = target.config.clone();
            with_target(&target, |g| why::why(g, config, &request_id, json))
        }
        Command::Logs {
            app,
            follow,
            lines,
            target,
        } => with_target(&target, |g| {
            logs::live(g, app.as_deref(), lines, follow)
                .unwrap_or_else(|| logs::logs(&g.data_dir, app.as_deref(), lines, follow))
        }),
    }
}

fn print_warnings(checked: &config::Checked) {
    for w in &checked.warnings {
        eprintln!("{w}");
    }
}

/// Resolve the target gateway, then run `verb` against it.
fn with_target(target: &Target, verb: impl FnOnce(&Resolved) -> ExitCode) -> ExitCode {
    match target.resolve() {
        Ok(g) => verb(&g),
        Err(code) => code,
    }
}

/// POST a control command and print the gateway's answer.
fn command(g: &Resolved, path: &str, body: Option<&Value>) -> ExitCode {
    match g.call("POST", path, body) {
        Ok(v) => {
            let message = v.get("message").and_then(Value::as_str).unwrap_or("done");
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("healgate: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- status

/// `healgate status`: tables of apps and instances, then the last 10 events.
fn status(g: &Resolved, raw_json: bool) -> ExitCode {
    let status = match g.call("GET", "/api/v1/status", None) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("healgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if raw_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let status: StatusAnswer = match serde_json::from_value(status) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("healgate: the gateway's status answer is not what this version reads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let events = g.call("GET", "/api/v1/events?since=0", None);
    let mut out = io::stdout().lock();
    let _ = out.write_all(render_status(&status).as_bytes());
    let _ = out.write_all(render_incidents(&status.incidents).as_bytes());
    match events {
        Ok(ev) => {
            let _ = out.write_all(render_events(&ev, 10).as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("healgate: reading events: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The status answer as text tables.
fn render_status(status: &StatusAnswer) -> String {
    let mut s = String::new();
    let uptime = duration(status.uptime_s);
    s.push_str(&format!("gateway: pid {}, up {uptime}\n\n", status.pid));
    if status.apps.is_empty() {
        s.push_str("no apps\n");
        return s;
    }
    let mut rows = vec![cells(&[
        "APP", "STATE", "READY", "QUEUED", "REVISION", "REASON",
    ])];
    let mut revision_notes = Vec::new();
    let mut inst_rows = vec![cells(&[
        "INSTANCE",
        "PID",
        "PORT",
        "STATE",
        "UPTIME",
        "MEMORY",
        "CPU",
        "IN-FLIGHT",
        "REQUESTS",
        "5XX",
        "P99",
        "RESTARTS",
        "REV",
        "LAST EXIT",
    ])];
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for app in &status.apps {
        rows.push(vec![
            app.name.clone(),
            name_of(&app.state),
            format!("{}/{}", app.ready, app.target),
            app.queued.to_string(),
            revision_cell(app),
            or_dash(app.reason.clone()),
        ]);
        revision_notes.extend(revision_note(app));
        for inst in &app.instances {
            // No process (crashed, backing off, stopped): nothing to measure.
            let running = |v: String| {
                if inst.pid.is_some() {
                    v
                } else {
                    "-".to_owned()
                }
            };
            inst_rows.push(vec![
                inst.id.clone(),
                or_dash(inst.pid.map(|p| p.to_string())),
                running(inst.port.to_string()),
                inst.state.as_str().to_owned(),
                running(duration(inst.uptime_s)),
                running(format!("{:.1} MiB", inst.memory_bytes as f64 / 1048576.0)),
                running(format!("{:.2}s", inst.cpu_s)),
                inst.inflight.to_string(),
                inst.requests.total.to_string(),
                inst.requests
                    .by_class
                    .get("5xx")
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
                inst.requests
                    .p99_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("≤{ms}ms")),
                inst.restarts.to_string(),
                or_dash(inst.revision.clone()),
                or_dash(inst.last_exit.clone()),
            ]);
        }
    }
    s.push_str(&table(&rows));
    for note in revision_notes {
        s.push_str(&note);
        s.push('\n');
    }
    if inst_rows.len() > 1 {
        s.push('\n');
        s.push_str(&table(&inst_rows));
    }
    s
}

/// An app's REVISION cell: the revision its instances run, `(wanted X)` when its
/// config's is another, `MIXED` when its instances run more than one.
fn revision_cell(app: &AppStatus) -> String {
    let mut cell = if app.stable_revision.is_empty() {
        "-".to_owned()
    } else {
        app.stable_revision.clone()
    };
    if app.revision != app.stable_revision {
        cell.push_str(&format!(" (wanted {})", app.revision));
    }
    if app.mixed_revisions {
        cell.push_str(" MIXED");
    }
    cell
}

/// A line under the apps table for an app not (only) on its config's revision.
fn revision_note(app: &AppStatus) -> Option<String> {
    let mut on: Vec<&str> = app
        .instances
        .iter()
        .filter_map(|i| i.revision.as_deref())
        .collect();
    on.sort_unstable();
    on.dedup();
    if app.mixed_revisions {
        return Some(format!(
            "! {}: instances run {} revisions ({}): a roll is under way, or its rollback failed",
            app.name,
            on.len(),
            on.join(", ")
        ));
    }
    (app.revision != app.stable_revision).then(|| {
        format!(
            "! {}: runs revision {}; its config's revision {} is not rolled out (a roll is under way, or the reload failed: see recent events)",
            app.name, app.stable_revision, app.revision
        )
    })
}

/// A serialized enum's name (`crash_loop`).
fn name_of(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .as_ref()
        .map_or_else(|| "-".to_owned(), value_text)
}

/// Open incidents and the last closed ones, one line each.
fn render_incidents(list: &[crate::observe::incidents::Incident]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nincidents:\n");
    for i in list {
        let when = match &i.ended {
            None => format!("OPEN since {}", i.started),
            Some(end) => format!("{} → {}", i.started, end),
        };
        s.push_str(&format!(
            "  {when}  {} ({}), {} requests affected\n",
            i.title, i.cause, i.requests_affected
        ));
    }
    s
}

/// The last `n` events of an `/api/v1/events` answer, one line each.
fn render_events(answer: &Value, n: usize) -> String {
    let events = answer
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut s = String::from("\nrecent events:\n");
    if events.is_empty() {
        s.push_str("  (none)\n");
    }
    for e in &events[events.len().saturating_sub(n)..] {
        if let Some(event) = e.get("event") {
            s.push_str("  ");
            s.push_str(&event_line(event));
            s.push('\n');
        }
    }
    s
}

/// One event as `ts  kind  instance-or-app  key=value ...` (fields without a value
/// left out).
fn event_line(event: &Value) -> String {
    let who = event
        .get("instance")
        .filter(|v| !v.is_null())
        .or_else(|| event.get("app"))
        .map(value_text)
        .unwrap_or_default();
    let mut line = format!(
        "{}  {:<18} {}",
        field(event, "ts"),
        field(event, "kind"),
        who
    );
    if let Some(obj) = event.as_object() {
        for (k, v) in obj {
            let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
            if !empty && !matches!(k.as_str(), "ts" | "kind" | "app" | "instance") {
                line.push_str(&format!(" {k}={}", value_text(v)));
            }
        }
    }
    line
}

/// `v[key]` as text; `-` when missing or null.
fn field(v: &Value, key: &str) -> String {
    v.get(key).map_or_else(|| "-".to_owned(), value_text)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds as `45s`, `12m03s`, `3h04m` or `2d03h`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn cells(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(5.4), "5s");
        assert_eq!(duration(63.0), "1m03s");
        assert_eq!(duration(3.0 * 3600.0 + 240.0), "3h04m");
        assert_eq!(duration(2.0 * 86400.0 + 3.0 * 3600.0), "2d03h");
    }

    #[test]
    fn status_tables_show_apps_and_instances() {
        // The admin API's JSON, read back as the status type.
        let status = json!({
            "pid": 42, "uptime_s": 75.0, "version": "0.1.0",
            "apps": [{
                "name": "web", "state": "running", "target": 2, "ready": 1, "queued": 0,
                "reason": null,
                "instances": [{
                    "id": "web#1", "pid": 1234, "port": 41000, "state": "ready",
                    "uptime_s": 61.0, "memory_bytes": 10485760u64, "cpu_s": 1.5,
                    "inflight": 3, "restarts": 1, "last_exit": "exit code 1",
                    "cpu_pct": 0.0, "threads": 1, "open_files": 3,
                    "requests": {"total": 7, "by_class": {"5xx": 2}, "errors": {},
                                 "p50_ms": 1, "p99_ms": 5}
                }]
            }]
        });
        let status: StatusAnswer = serde_json::from_value(status).unwrap();
        let text = render_status(&status);
        assert!(text.contains("gateway: pid 42, up 1m15s"), "{text}");
        let app_line = text.lines().find(|l| l.starts_with("web ")).unwrap();
        assert!(
            app_line.contains("running") && app_line.contains("1/2"),
            "{text}"
        );
        let inst = text.lines().find(|l| l.starts_with("web#1")).unwrap();
        for part in [
            "1234",
            "41000",
            "ready",
            "1m01s",
            "10.0 MiB",
            "1.50s",
            "≤5ms",
            "exit code 1",
        ] {
            assert!(inst.contains(part), "{part} missing in {inst}");
        }
    }

    #[test]
    fn status_shows_revisions_and_flags_an_app_that_runs_two() {
        let inst = |id: &str, rev: &str| {
            json!({
                "id": id, "pid": 1234, "port": 41000, "state": "ready",
                "uptime_s": 61.0, "memory_bytes": 0u64, "cpu_s": 0.0,
                "inflight": 0, "restarts": 0, "last_exit": null,
                "cpu_pct": 0.0, "threads": 1, "open_files": 3, "revision": rev,
                "requests": {"total": 0, "by_class": {}, "errors": {},
                             "p50_ms": null, "p99_ms": null}
            })
        };
        let app = |name: &str, revs: [&str; 2], wanted: &str, stable: &str, mixed: bool| {
            json!({
                "name": name, "state": "running", "target": 2, "ready": 2, "queued": 0,
                "reason": null, "revision": wanted, "stable_revision": stable,
                "mixed_revisions": mixed,
                "instances": [inst(&format!("{name}#1"), revs[0]), inst(&format!("{name}#2"), revs[1])]
            })
        };
        let status = json!({
            "pid": 42, "uptime_s": 75.0, "version": "0.1.0",
            "apps": [
                app("web", ["aaaa0001", "aaaa0001"], "aaaa0001", "aaaa0001", false),
                app("api", ["bbbb0001", "bbbb0002"], "bbbb0002", "bbbb0001", true),
                app("jobs", ["cccc0001", "cccc0001"], "cccc0002", "cccc0001", false),
            ]
        });
        let status: StatusAnswer = serde_json::from_value(status).unwrap();
        let text = render_status(&status);
        let line = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap();
        assert!(line("web ").contains("aaaa0001"), "{text}");
        assert!(
            !line("web ").contains("MIXED") && !line("web ").contains("wanted"),
            "{text}"
        );
        assert!(
            line("api ").contains("bbbb0001 (wanted bbbb0002) MIXED"),
            "{text}"
        );
        assert!(
            line("jobs ").contains("cccc0001 (wanted cccc0002)"),
            "{text}"
        );
        assert!(
            line("! api:").contains("2 revisions (bbbb0001, bbbb0002)"),
            "{text}"
        );
        assert!(line("! jobs:").contains("not rolled out"), "{text}");
        assert!(!text.contains("! web"), "{text}");
        assert!(line("api#2").contains("bbbb0002"), "{text}");
        // An older gateway's answer (no revisions) still reads.
        let old: StatusAnswer = serde_json::from_value(json!({
            "pid": 1, "uptime_s": 1.0, "version": "0.1.0",
            "apps": [{"name": "web", "state": "running", "target": 1, "ready": 1,
                      "queued": 0, "reason": null, "instances": []}]
        }))
        .unwrap();
        assert!(!render_status(&old).contains('!'));
    }

    #[test]
    fn a_non_running_instance_shows_dashes_for_port_memory_and_uptime() {
        let status = json!({
            "pid": 42, "uptime_s": 75.0, "version": "0.1.0",
            "apps": [{
                "name": "web", "state": "crash_loop", "target": 1, "ready": 0, "queued": 0,
                "reason": "web#1 exited with code 1",
                "instances": [{
                    "id": "web#1", "pid": null, "port": 0, "state": "crash_loop",
                    "uptime_s": 0.0, "memory_bytes": 0u64, "cpu_s": 0.0,
                    "inflight": 0, "restarts": 4, "last_exit": "exited with code 1",
                    "cpu_pct": 0.0, "threads": 0, "open_files": 0,
                    "requests": {"total": 0, "by_class": {}, "errors": {},
                                 "p50_ms": null, "p99_ms": null}
                }]
            }]
        });
        let status: StatusAnswer = serde_json::from_value(status).unwrap();
        let text = render_status(&status);
        let inst = text.lines().find(|l| l.starts_with("web#1")).unwrap();
        let cells: Vec<&str> = inst.split_whitespace().collect();
        // ID PID PORT STATE UPTIME MEMORY CPU ...
        assert_eq!(
            &cells[..5],
            ["web#1", "-", "-", "crash_loop", "-"],
            "{inst}"
        );
        assert_eq!(cells[5], "-", "memory: {inst}");
        assert!(!inst.contains("MiB") && !inst.contains("0s "), "{inst}");
    }
}
