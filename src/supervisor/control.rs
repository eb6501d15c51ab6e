//! The one control channel of a running gateway (an enum of commands with typed
//! replies), instance ids, and the status snapshot. Admin and CLI use only this.

pub use super::instance::InstanceState;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A command for the running gateway. Each gets one reply: [`Reply`].
#[derive(Debug)]
pub enum Command {
    /// Rolling, overlapping restart of every instance of an app.
    Restart { app: String },
    /// Overlapping recycle of one instance.
    Recycle {
        instance: InstanceId,
        reason: String,
    },
    /// Run `instances` copies of an app.
    Scale { app: String, instances: u32 },
    /// Re-read the config file and apply what changed (handled by the gateway
    /// process, which owns the config; the rest goes to the supervisor).
    Reload,
    /// Stop every instance (gateway shutdown).
    Shutdown,
    /// Start an app, or apply a reloaded config to a running one (with the pool its
    /// routes point at now). The reply comes once the config is applied; when it
    /// names a new revision, the outcome of the roll to it goes to `rolled` once the
    /// roll is done (an `Err` when a new instance did not get ready: the app stays on
    /// its old revision).
    Configure {
        app: Box<crate::config::App>,
        pool: Arc<crate::upstream::Pool>,
        rolled: Option<oneshot::Sender<Reply>>,
    },
    /// Drain and stop every instance of an app that left the config.
    Remove { app: String },
}

/// What a command did, when it did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One line (or a few) for people: `web#2 recycled: pid 41 → pid 57`.
    pub message: String,
}

impl From<String> for Outcome {
    fn from(message: String) -> Outcome {
        Outcome { message }
    }
}

/// Why a command was refused or failed. Each kind has one HTTP status in the admin
/// API ([`ControlError::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No app of that name runs here: `unknown app "x"`.
    UnknownApp(String),
    /// No instance of that id (or not an id at all): `unknown instance "web#9"`.
    UnknownInstance(String),
    /// This gateway runs no apps; names what the command asked for (`app "x"`).
    NoApps(String),
    /// The same kind of command is still under way (a rolling restart).
    Busy(String),
    /// Cannot apply to the app or instance as it is now (scale to 0, nothing ready
    /// to recycle, no running instance); the text says why.
    Refused(String),
    /// Accepted, then failed (a replacement that did not get ready, a restart
    /// stopped half way); the text says what happened.
    Failed(String),
    /// The config file is invalid: the same messages as `healgate check`.
    ConfigRejected(String),
    /// Reload cannot run here or could not apply a valid file (no config file,
    /// a pool that cannot be built).
    ReloadFailed(String),
    /// The supervisor or the gateway is stopping.
    Stopped(String),
}

impl ControlError {
    /// The admin API's status for this refusal.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ControlError::UnknownApp(_)
            | ControlError::UnknownInstance(_)
            | ControlError::NoApps(_) => StatusCode::NOT_FOUND,
            ControlError::Busy(_) | ControlError::Refused(_) | ControlError::Failed(_) => {
                StatusCode::CONFLICT
            }
            ControlError::ConfigRejected(_) | ControlError::ReloadFailed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ControlError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::UnknownApp(app) => write!(f, "unknown app {app:?}"),
            ControlError::UnknownInstance(id) => write!(f, "unknown instance {id:?}"),
            ControlError::NoApps(what) => write!(f, "unknown {what}: this gateway runs no apps"),
            ControlError::Busy(m)
            | ControlError::Refused(m)
            | ControlError::Failed(m)
            | ControlError::ConfigRejected(m)
            | ControlError::ReloadFailed(m)
            | ControlError::Stopped(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ControlError {}

/// The reply to one command.
pub type Reply = Result<Outcome, ControlError>;

/// A command with its reply channel.
pub struct Envelope {
    pub command: Command,
    pub reply: oneshot::Sender<Reply>,
}

/// A stable instance id: the app and the slot number, written `web#2`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InstanceId {
    pub app: String,
    pub slot: u32,
}

impl InstanceId {
    /// `web#2`, or `web-2` (a form that needs no escaping in URLs and shells); `None`
    /// when `raw` names no instance. The number is what follows the last `#` (else the
    /// last `-`), so app names may contain both.
    pub fn parse(raw: &str) -> Option<InstanceId> {
        let (app, n) = raw.rsplit_once('#').or_else(|| raw.rsplit_once('-'))?;
        if app.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(InstanceId {
            app: app.to_owned(),
            slot: n.parse().ok()?,
        })
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.app, self.slot)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// What `healgate status` shows of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// `web#2`.
    pub id: String,
    pub pid: Option<u32>,
    pub port: u16,
    /// starting | ready | unhealthy | draining | stopped | crashed | backoff | crash_loop
    pub state: InstanceState,
    pub uptime_s: f64,
    /// Resident memory of the process, bytes.
    pub memory_bytes: u64,
    /// CPU time used, seconds.
    pub cpu_s: f64,
    pub inflight: u32,
    /// Restarts of this slot so far.
    pub restarts: u32,
    /// How the previous process of this slot ended, if it did.
    pub last_exit: Option<String>,
    /// CPU use over the last sampling tick, percent of one core (process tree).
    pub cpu_pct: f64,
    /// Threads and open files of the process tree.
    pub threads: u64,
    pub open_files: u64,
    /// Requests the current process answered (or failed), by status class and by
    /// gateway-made Proxy-Status error, with response-time percentiles (bucket bounds).
    pub requests: RequestStats,
    /// Its last health checks (newest last) with why each failed.
    #[serde(default)]
    pub health: Vec<crate::upstream::Note>,
    /// When it left and re-entered rotation, and why (newest last).
    #[serde(default)]
    pub rotation: Vec<crate::upstream::Note>,
    /// The app revision the current process was started with (`None` without one).
    #[serde(default)]
    pub revision: Option<String>,
}

/// Request measurements of one instance's current process.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RequestStats {
    pub total: u64,
    /// `"2xx": n` and so on.
    pub by_class: std::collections::BTreeMap<String, u64>,
    /// `"connection_terminated": n` and so on.
    pub errors: std::collections::BTreeMap<String, u64>,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// Where an app is: `starting` until an instance is ready, `running`, `crash_loop`
/// when none is ready and a slot keeps crashing, `stopping` at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    Starting,
    Running,
    CrashLoop,
    Stopping,
}

/// What `healgate status` shows of one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub state: AppState,
    /// Instances wanted.
    pub target: u32,
    pub ready: u32,
    pub queued: usize,
    pub instances: Vec<InstanceStatus>,
    /// Why the app cannot serve, when it cannot.
    pub reason: Option<String>,
    /// The revision of the app's config (a short hash of what its processes are
    /// started with: command, cwd, env, health check, startup timeout).
    #[serde(default)]
    pub revision: String,
    /// The last revision that got ready: what instances start and restart with.
    /// Not `revision` while a roll to it runs, or after it failed.
    #[serde(default)]
    pub stable_revision: String,
    /// The app's processes run more than one revision (expected while a roll runs,
    /// never after one ended).
    #[serde(default)]
    pub mixed_revisions: bool,
}

/// The sending side of the control channel (admin and the signal handler hold
/// it), with a way to read the status snapshot.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Envelope>,
    status: Arc<dyn Fn() -> Vec<AppStatus> + Send + Sync>,
}

impl Handle {
    /// A handle sending to `tx` and reading status through `status`.
    pub fn new(
        tx: mpsc::UnboundedSender<Envelope>,
        status: Arc<dyn Fn() -> Vec<AppStatus> + Send + Sync>,
    ) -> Handle {
        Handle { tx, status }
    }

    /// Send a command and wait for its outcome.
    pub async fn send(&self, command: Command) -> Reply {
        let stopped = || ControlError::Stopped("the gateway is shutting down".to_owned());
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Envelope { command, reply })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A fresh snapshot of every app.
    pub fn status(&self) -> Vec<AppStatus> {
        (self.status)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        let id = |s: &str| InstanceId::parse(s).map(|i| (i.app, i.slot));
        assert_eq!(id("web#2"), Some(("web".into(), 2)));
        assert_eq!(id("web-2"), Some(("web".into(), 2)));
        assert_eq!(id("my-app-12"), Some(("my-app".into(), 12)));
        assert_eq!(id("my-app#3"), Some(("my-app".into(), 3)));
        assert_eq!(id("a#b#4"), Some(("a#b".into(), 4)));
        for bad in ["web", "web-", "-2", "#2", "web#x", "web#x-2", "web#", ""] {
            assert_eq!(id(bad), None, "{bad}");
        }
        assert_eq!(
            InstanceId::parse("my-app-12").unwrap().to_string(),
            "my-app#12"
        );
        assert_eq!(
            format!("{:?}", InstanceId::parse("web#2").unwrap()),
            r#""web#2""#
        );
    }

    #[test]
    fn every_refusal_has_its_status() {
        let all = [
            (ControlError::UnknownApp("x".into()), 404),
            (ControlError::UnknownInstance("web#9".into()), 404),
            (ControlError::NoApps("app \"x\"".into()), 404),
            (ControlError::Busy("rolling".into()), 409),
            (ControlError::Refused("no".into()), 409),
            (ControlError::Failed("no".into()), 409),
            (ControlError::ConfigRejected("bad".into()), 422),
            (ControlError::ReloadFailed("demo".into()), 422),
            (ControlError::Stopped("stopping".into()), 503),
        ];
        for (e, status) in all {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
        }
        assert_eq!(
            ControlError::UnknownApp("x".into()).to_string(),
            r#"unknown app "x""#
        );
    }
}
