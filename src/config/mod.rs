//! Configuration: raw TOML in, a checked [`Config`] out, every problem reported at once.
//!
//! [`parse`] (and [`load`], which reads the file first) walks the TOML document key by
//! key instead of deserializing it, so that one run reports every unknown key, every
//! wrong type and every invalid value, each with its key path and line:column. Warnings
//! (legal but risky settings) are kept apart from errors: a file with only warnings is
//! valid and its warnings come back in [`Checked::warnings`].
//!
//! Durations are written with units (`"500ms"`, `"2s"`, `"1h30m"`), sizes too (`"32KiB"`,
//! `"100MB"`); relative paths are taken from the config file's directory.

mod compile;
pub mod diff;
pub mod model;
mod reader;
#[cfg(test)]
mod tests;
pub mod units;

pub use model::*;

use std::fmt;
use std::net::SocketAddr;

/// The environment variable that gives the admin token when the config file does not
/// (read by the gateway and by the CLI verbs).
pub const TOKEN_ENV: &str = "HEALGATE_ADMIN_TOKEN";
use std::path::{Path, PathBuf};

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The file is invalid and will not be used.
    Error,
    /// Allowed, but probably not what was meant, or risky.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One thing wrong (or risky) in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Key path of the offending key or value, e.g. `upstream[1].health.interval`;
    /// empty when the problem is about the whole file.
    pub path: String,
    /// 1-based line of the offending key or value; 0 when there is none (unreadable file).
    pub line: usize,
    /// 1-based column, in characters; 0 with `line` 0.
    pub column: usize,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `12:3: error: upstream[0].servers[1]: expected "host:port", found "10.0.0.5" ...`;
    /// without the position when `line` is 0 and without the path when it is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        write!(f, "{}: ", self.severity)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A valid configuration and the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The checked configuration, defaults filled in.
    pub config: Config,
    /// Problems of [`Severity::Warning`] only, in file order.
    pub warnings: Vec<Problem>,
}

/// All errors (and warnings) of an invalid file. Display: one line per problem, e.g.
/// `healgate.toml:12:3: error: upstream[0].servers[1]: expected "host:port", found "10.0.0.5"`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file as named by the caller.
    pub file: String,
    /// Every problem, errors and warnings, in file order. At least one is an error.
    pub problems: Vec<Problem>,
}

impl Invalid {
    /// The problems of [`Severity::Error`].
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if problem.line > 0 {
                write!(f, "{}:{problem}", self.file)?;
            } else {
                write!(f, "{}: {problem}", self.file)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// Checks config `text` read from `file`. Relative paths in it (`data_dir`, `cwd`,
/// `pages_dir`, `tls.ca`) are taken from `file`'s directory. The admin token comes from
/// the file, else from env `HEALGATE_ADMIN_TOKEN`, else stays `None`.
pub fn parse(text: &str, file: &Path) -> Result<Checked, Invalid> {
    let name = file.display().to_string();
    let mut cx = reader::Ctx::new(text);
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = format!("invalid TOML: {}", e.message());
            cx.error("", &e.span(), message);
            return Err(Invalid {
                file: name,
                problems: cx.problems,
            });
        }
    };
    let base = file.parent().unwrap_or(Path::new(""));
    let config = compile::config(&mut cx, doc.as_table(), base);
    let has_errors = cx.has_errors();
    let mut problems = cx.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    if has_errors {
        Err(Invalid {
            file: name,
            problems,
        })
    } else {
        Ok(Checked {
            config,
            warnings: problems,
        })
    }
}

/// What `healgate check` sees on this machine for a valid config read from `path`:
/// warnings (never errors) for an app command not on PATH and not an existing path, a
/// missing `cwd`, and an upstream server name the system resolver does not resolve
/// (all lookups within 2 s), each with its key path and line. Not part of [`parse`]:
/// a gateway that starts or reloads does not wait for DNS.
pub fn check_environment(path: &Path, checked: &Checked) -> Vec<Problem> {
    check_environment_within(path, checked, compile::environment::RESOLVE_WITHIN)
}

fn check_environment_within(
    path: &Path,
    checked: &Checked,
    within: std::time::Duration,
) -> Vec<Problem> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(doc) = toml_edit::Document::parse(text.as_str()) else {
        return Vec::new();
    };
    let mut cx = reader::Ctx::new(&text);
    compile::environment::check(&mut cx, doc.as_table(), &checked.config, within);
    let mut problems = cx.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    problems
}

/// Reads and checks the config file at `path`. An unreadable file is [`Invalid`] with
/// one problem (line 0) naming the file and the OS error.
pub fn load(path: &Path) -> Result<Checked, Invalid> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(Invalid {
            file: path.display().to_string(),
            problems: vec![Problem {
                severity: Severity::Error,
                path: String::new(),
                line: 0,
                column: 0,
                message: format!("cannot read {}: {e}", path.display()),
            }],
        }),
    }
}

/// The built-in demo (`healgate demo`): the gateway on `listen`, the admin API on `admin`,
/// and 3 instances of app `demo` running `self_exe demo-app --port {port}` on route `/`,
/// checked at `/healthz`; `errors.details` on (Proxy-Status and pages name the cause).
/// Everything else has its default; the admin token comes from
/// env `HEALGATE_ADMIN_TOKEN` when set, else is generated into `data_dir`.
pub fn demo(data_dir: PathBuf, listen: SocketAddr, admin: SocketAddr, self_exe: &Path) -> Config {
    let command = vec![
        self_exe.display().to_string(),
        "demo-app".to_string(),
        "--port".to_string(),
        "{port}".to_string(),
    ];
    Config {
        gateway: Gateway {
            listen: vec![listen],
            data_dir,
            ..Gateway::default()
        },
        admin: Admin {
            listen: admin,
            token: std::env::var(TOKEN_ENV).ok().filter(|s| !s.is_empty()),
            metrics_public: false,
        },
        // The demo shows why: a crash's 502 names the instance and its exit.
        errors: ErrorPages {
            details: true,
            ..ErrorPages::default()
        },
        upstreams: Vec::new(),
        apps: vec![App {
            name: "demo".to_string(),
            command,
            cwd: PathBuf::from("."),
            env: Vec::new(),
            instances: 3,
            max_instances: 64,
            routes: Routes {
                prefixes: vec!["/".to_string()],
                host: None,
                strip_prefix: false,
            },
            max_concurrency: 64,
            protocol: Protocol::H1,
            queue: Queue::default(),
            health: Health {
                path: Some("/healthz".to_string()),
                ..Health::app_default()
            },
            startup_timeout: std::time::Duration::from_secs(60),
            shutdown_grace: std::time::Duration::from_secs(30),
            retry: Retry::default(),
            autoheal: None,
            autoscale: None,
        }],
        alerts: Vec::new(),
    }
}

/// Where a running gateway's control API is, read leniently from a config file that
/// may have problems elsewhere (so `healgate status` and `reload` still reach the
/// gateway that runs the previous, valid version): `(data_dir, admin.listen,
/// admin.token)`, with the defaults for anything missing or unreadable.
pub fn control_target(path: &Path) -> (PathBuf, SocketAddr, Option<String>) {
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let mut data_dir = Gateway::default().data_dir;
    let mut listen = Admin::default().listen;
    let mut token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    if let Some(doc) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml_edit::Document::parse(t).ok())
    {
        let get = |table: &str, key: &str| doc.get(table)?.get(key)?.as_str().map(str::to_owned);
        if let Some(d) = get("gateway", "data_dir") {
            data_dir = PathBuf::from(d);
        }
        if let Some(a) = get("admin", "listen").and_then(|a| a.parse().ok()) {
            listen = a;
        }
        if let Some(t) = get("admin", "token") {
            token = Some(t);
        }
    }
    if data_dir.is_relative() {
        data_dir = base.join(data_dir);
    }
    (data_dir, listen, token)
}
