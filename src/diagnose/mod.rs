//! Diagnostics: "diagnose now" bundles and the analyzer that explains them; the
//! story of one request ([`why`], over the access log read backwards by [`scan`]);
//! one request walked hop by hop ([`probe`]).
//!
//! A bundle (`data_dir/diagnostics/<timestamp>/`, [`bundle`]) holds, for a window:
//! the access-log and event slices, the metric history of every app and instance,
//! each instance's output tail, process snapshots ([`capture`]), the effective config
//! and the environment, every secret redacted. [`analyze`] reads only the bundle (so a
//! bundle can be analyzed again, anywhere) and ranks findings; [`report`] writes
//! `report.json` (SPEC §5) and a self-contained `report.html`.
//!
//! [`Diagnostics`] is the gateway's collector: `POST /api/v1/diagnose`, `healgate
//! diagnose` and the AutoHeal `diagnose` action start a bundle through it. Like App
//! Service's DaaS it is rate-limited ([`PER_MINUTE`] a minute, then a refusal with
//! the seconds to wait) and retained (the newest [`KEEP`] bundles; older ones are
//! removed when a new one is written).

pub mod analyze;
pub mod bundle;
pub mod capture;
pub mod probe;
pub mod report;
pub mod scan;
pub mod why;

use crate::config::Config;
use crate::observe::monitor::Monitor;
use crate::supervisor::control::AppStatus;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

/// Bundles started per minute at most.
pub const PER_MINUTE: usize = 3;
/// Bundles kept (the newest).
pub const KEEP: usize = 10;
/// The window when none is asked for.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest window (the access log is read whole for it; history keeps 24 h).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// What to collect.
#[derive(Debug, Clone)]
pub struct Request {
    /// One app (its requests, events, instances), or all.
    pub app: Option<String>,
    /// How far back from now.
    pub window: Duration,
    /// Also write a core of each instance (`gcore`, when installed).
    pub dumps: bool,
    /// Who asked (`healgate diagnose`, the dashboard, an AutoHeal rule).
    pub reason: String,
}

/// Why a bundle was not started.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Too many in the last minute: try again after this many seconds.
    RateLimited { retry_after_s: u64 },
    /// The app is not in the config.
    UnknownApp(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::RateLimited { retry_after_s } => write!(
                f,
                "at most {PER_MINUTE} diagnostic bundles a minute (collecting stacks and dumps \
                 loads the instances); try again in {retry_after_s} s, or read the last one \
                 (GET /api/v1/diagnostics)"
            ),
            Refused::UnknownApp(a) => write!(f, "no app or upstream named {a:?} in the config"),
        }
    }
}

/// A bundle being collected or done, as `GET /api/v1/diagnostics` lists it.
#[derive(Debug, Clone, Default)]
struct Job {
    steps: Vec<String>,
    done: bool,
    error: Option<String>,
}

/// Where a bundle's steps are told (the job list, and stderr's log).
#[derive(Clone)]
pub struct Progress {
    name: String,
    jobs: Arc<Mutex<BTreeMap<String, Job>>>,
}

impl Progress {
    /// A progress that only logs (re-analysis, tests).
    pub fn quiet(name: &str) -> Progress {
        Progress {
            name: name.to_owned(),
            jobs: Arc::default(),
        }
    }

    /// One step started.
    pub fn step(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::debug!("diagnose {}: {text}", self.name);
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.entry(self.name.clone()).or_default().steps.push(text);
    }

    fn finish(&self, error: Option<String>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let job = jobs.entry(self.name.clone()).or_default();
        job.done = true;
        job.error = error;
    }
}

/// Where the live instances come from (the supervisor's status).
pub type StatusFn = Arc<dyn Fn() -> Vec<AppStatus> + Send + Sync>;

/// The gateway's bundle collector (one per gateway).
pub struct Diagnostics {
    data_dir: PathBuf,
    config: RwLock<(Config, Option<PathBuf>)>,
    monitor: Arc<Monitor>,
    status: StatusFn,
    started: Mutex<VecDeque<Instant>>,
    jobs: Arc<Mutex<BTreeMap<String, Job>>>,
}

/// The collector AutoHeal's `diagnose` action uses (set once by the gateway at start;
/// the supervisor has no handle on the config or the admin state, so this is how its
/// actions reach the same collector as the admin API). Weak: the collector holds the
/// control handle, and through it the event log's writer, which must close when the
/// gateway stops (a strong reference here kept the process from exiting).
static INSTALLED: OnceLock<Weak<Diagnostics>> = OnceLock::new();

/// Make `d` the collector AutoHeal actions use (while it lives).
pub fn install(d: &Arc<Diagnostics>) {
    let _ = INSTALLED.set(Arc::downgrade(d));
}

/// The collector AutoHeal actions use, when the gateway installed one and runs.
pub fn installed() -> Option<Arc<Diagnostics>> {
    INSTALLED.get().and_then(Weak::upgrade)
}

impl Diagnostics {
    pub fn new(
        data_dir: &Path,
        config: Config,
        config_path: Option<PathBuf>,
        monitor: Arc<Monitor>,
        status: StatusFn,
    ) -> Diagnostics {
        Diagnostics {
            data_dir: data_dir.to_owned(),
            config: RwLock::new((config, config_path)),
            monitor,
            status,
            started: Mutex::default(),
            jobs: Arc::default(),
        }
    }

    /// The directory bundles go in.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.join("diagnostics")
    }

    /// The config a reload made effective.
    pub fn set_config(&self, config: Config) {
        let mut c = self.config.write().unwrap_or_else(|p| p.into_inner());
        c.0 = config;
    }

    /// Count one start against the rate limit, or say how long to wait.
    fn admit(&self, now: Instant) -> Result<(), Refused> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        while started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            started.pop_front();
        }
        if started.len() >= PER_MINUTE {
            let oldest = started.front().copied().unwrap_or(now);
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
            return Err(Refused::RateLimited {
                retry_after_s: wait.as_secs() + 1,
            });
        }
        started.push_back(now);
        Ok(())
    }

    /// Start a bundle on a thread of its own; its name (the folder under
    /// [`dir`](Self::dir)) at once. `first` is an instance to capture before anything
    /// else (AutoHeal's, about to be recycled).
    pub fn start(
        self: &Arc<Self>,
        req: Request,
        first: Option<(String, u32)>,
    ) -> Result<String, Refused> {
        if let Some(app) = &req.app {
            let c = self.config.read().unwrap_or_else(|p| p.into_inner());
            let known = c.0.apps.iter().any(|a| &a.name == app)
                || c.0.upstreams.iter().any(|u| &u.name == app);
            if !known {
                return Err(Refused::UnknownApp(app.clone()));
            }
        }
        self.admit(Instant::now())?;
        let name = self.fresh_name();
        let progress = Progress {
            name: name.clone(),
            jobs: self.jobs.clone(),
        };
        progress.step("starting");
        let me = self.clone();
        let n = name.clone();
        let spawned = std::thread::Builder::new()
            .name("diagnose".into())
            .spawn(move || {
                let out = me.collect(&n, &req, first, &progress);
                if let Err(e) = &out {
                    tracing::warn!("diagnose {n}: {e}");
                }
                progress.finish(out.err().map(|e| e.to_string()));
                me.retain();
            });
        if let Err(e) = spawned {
            tracing::warn!("diagnose: cannot start a thread: {e}");
        }
        Ok(name)
    }

    /// Collect a bundle on the calling thread (blocking) and return its folder.
    /// `first` is captured before anything else.
    pub fn collect_now(
        self: &Arc<Self>,
        req: Request,
        first: Option<(String, u32)>,
    ) -> Result<PathBuf, String> {
        self.admit(Instant::now()).map_err(|e| e.to_string())?;
        let name = self.fresh_name();
        let progress = Progress {
            name: name.clone(),
            jobs: self.jobs.clone(),
        };
        progress.step("starting");
        let out = self.collect(&name, &req, first, &progress);
        progress.finish(out.as_ref().err().map(|e| e.to_string()));
        self.retain();
        out.map_err(|e| e.to_string())
    }

    /// Collect, analyze and report, on the calling thread.
    fn collect(
        &self,
        name: &str,
        req: &Request,
        first: Option<(String, u32)>,
        progress: &Progress,
    ) -> std::io::Result<PathBuf> {
        let (config, path) = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sources = bundle::Sources {
            data_dir: &self.data_dir,
            config: &config,
            config_path: path.as_deref(),
            history: &self.monitor.history,
            apps: (self.status)(),
        };
        let dir = self.dir().join(name);
        bundle::collect(&sources, req, &dir, first, progress)?;
        progress.step("analyzing");
        let b = bundle::Bundle::load(&dir)?;
        let report = analyze::analyze(&b);
        progress.step("writing report.json and report.html");
        report::write(&dir, &b, &report)?;
        progress.step(format!("done: {}", report.headline));
        Ok(dir)
    }

    /// A folder name not taken yet: the UTC time, `-2`, `-3` ... within one second.
    fn fresh_name(&self) -> String {
        let stamp = crate::observe::time::compact(SystemTime::now());
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut name = stamp.clone();
        let mut n = 1;
        while jobs.contains_key(&name) || self.dir().join(&name).exists() {
            n += 1;
            name = format!("{stamp}-{n}");
        }
        name
    }

    /// Remove all but the newest [`KEEP`] bundles (and AutoHeal's older captures of
    /// the same age order, which sit beside them).
    fn retain(&self) {
        let dir = self.dir();
        let mut bundles: Vec<String> = list_bundles(&dir);
        bundles.sort();
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let collecting: Vec<&String> = jobs
            .iter()
            .filter(|(_, j)| !j.done)
            .map(|(n, _)| n)
            .collect();
        let old = bundles.len().saturating_sub(KEEP);
        for name in bundles.into_iter().take(old) {
            if collecting.contains(&&name) {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(dir.join(&name)) {
                tracing::warn!("diagnose: cannot remove old bundle {name}: {e}");
            }
        }
    }

    /// `GET /api/v1/diagnostics`: every bundle on disk and every one being collected,
    /// newest first: name, state, steps, and from `report.json` the headline, app,
    /// window and finding ids.
    pub fn list(&self) -> Value {
        let dir = self.dir();
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut names: Vec<String> = list_bundles(&dir);
        for n in jobs.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names.sort();
        names.reverse();
        let items: Vec<Value> = names
            .iter()
            .map(|n| {
                let job = jobs.get(n);
                let report: Option<Value> = std::fs::read_to_string(dir.join(n).join("report.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                let state = match (job, &report) {
                    (Some(j), _) if !j.done => "collecting",
                    (Some(j), _) if j.error.is_some() => "failed",
                    (_, Some(_)) => "done",
                    _ => "incomplete",
                };
                let r = report.unwrap_or(Value::Null);
                json!({
                    "name": n,
                    "state": state,
                    "path": dir.join(n).display().to_string(),
                    "steps": job.map(|j| j.steps.clone()).unwrap_or_default(),
                    "error": job.and_then(|j| j.error.clone()),
                    "created": r.get("created"),
                    "app": r.get("app"),
                    "window": r.get("window"),
                    "headline": r.get("headline"),
                    "findings": r.get("findings").and_then(Value::as_array).map(|f| {
                        f.iter().map(|x| json!({"id": x["id"], "severity": x["severity"], "title": x["title"]})).collect::<Vec<_>>()
                    }),
                    "report": format!("/api/v1/diagnostics/{n}/report.html"),
                })
            })
            .collect();
        json!({"diagnostics": items, "keep": KEEP, "per_minute": PER_MINUTE})
    }

    /// The `report.html` of bundle `name`, when there is one (`name` is checked to be
    /// a bundle folder name: no path separators or dots).
    pub fn report_html(&self, name: &str) -> Option<Vec<u8>> {
        let safe = !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
        if !safe {
            return None;
        }
        std::fs::read(self.dir().join(name).join("report.html")).ok()
    }
}

/// AutoHeal's `diagnose` action (blocking): a whole bundle of `app` with instance
/// `id` (pid `pid`) captured first, through the installed collector; without one,
/// or past its rate limit, the instance's capture alone (`diagnostics_dir/<time>-<instance>-<pid>/`).
pub fn autoheal(
    diagnostics_dir: &Path,
    app: &str,
    id: &str,
    pid: u32,
    reason: &str,
) -> std::io::Result<PathBuf> {
    if let Some(d) = installed() {
        let req = Request {
            app: Some(app.to_owned()),
            window: DEFAULT_WINDOW,
            dumps: false,
            reason: reason.to_owned(),
        };
        match d.collect_now(req, Some((id.to_owned(), pid))) {
            Ok(dir) => return Ok(dir),
            Err(e) => tracing::warn!(
                "AutoHeal diagnose of {id}: no bundle ({e}); capturing the process only"
            ),
        }
    }
    capture::capture_process(diagnostics_dir, id, pid, reason)
}

/// The bundle folders under `dir` (those with a `bundle.json`).
fn list_bundles(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("bundle.json").exists())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parse a window like `15m`, `1h`, `90s` (at most [`MAX_WINDOW`]).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let d =
        crate::config::units::parse_duration(text).map_err(|e| format!("window {text:?}: {e}"))?;
    if d.is_zero() || d > MAX_WINDOW {
        return Err(format!("window {text:?}: between 1s and 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(tag: &str) -> Arc<Diagnostics> {
        let dir = std::env::temp_dir().join(format!("healgate-diag-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(Diagnostics::new(
            &dir,
            crate::config::demo(
                dir.clone(),
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
                Path::new("/bin/true"),
            ),
            None,
            Arc::default(),
            Arc::new(Vec::new),
        ))
    }

    #[test]
    fn a_fourth_start_within_a_minute_is_refused_with_the_wait() {
        let d = collector("rate");
        let t0 = Instant::now();
        for _ in 0..PER_MINUTE {
            d.admit(t0).unwrap();
        }
        let Err(Refused::RateLimited { retry_after_s }) = d.admit(t0 + Duration::from_secs(20))
        else {
            panic!("not refused")
        };
        assert_eq!(retry_after_s, 41);
        assert!(d.admit(t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn retention_keeps_the_newest() {
        let d = collector("keep");
        for i in 0..(KEEP + 3) {
            let b = d.dir().join(format!("20260101T0000{i:02}Z"));
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("bundle.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(d.dir().join("20250101T000000Z-web-1-42")).unwrap();
        d.retain();
        let mut left = list_bundles(&d.dir());
        left.sort();
        assert_eq!(left.len(), KEEP);
        assert_eq!(left[0], "20260101T000003Z");
        assert!(
            d.dir().join("20250101T000000Z-web-1-42").exists(),
            "captures are not bundles"
        );
        assert!(d.report_html("../x").is_none() && d.report_html("a/b").is_none());
        let _ = std::fs::remove_dir_all(&d.data_dir);
    }
}
