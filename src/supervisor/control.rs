//! The supervisor's outside face: one control channel (an enum of commands) and a
//! status snapshot. Admin and CLI use only this.

pub use super::instance::InstanceState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A command for the supervisor. Each gets one reply: `Ok(message)` or `Err(why)`.
#[derive(Debug)]
pub enum Command {
    /// Rolling, overlapping restart of every instance of an app.
    Restart { app: String },
    /// Overlapping recycle of one instance, e.g. `web#2`.
    Recycle { instance: String, reason: String },
    /// Run `instances` copies of an app.
    Scale { app: String, instances: u32 },
    /// Stop every instance (gateway shutdown).
    Shutdown,
    /// Start an app, or apply a reloaded config to a running one (with the pool its
    /// routes point at now).
    Configure {
        app: Box<crate::config::App>,
        pool: Arc<crate::upstream::Pool>,
    },
    /// Drain and stop every instance of an app that left the config.
    Remove { app: String },
}

/// A command with its reply channel.
pub struct Envelope {
    pub command: Command,
    pub reply: oneshot::Sender<Result<String, String>>,
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
}

/// The handle admin and CLI hold.
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
    pub async fn send(&self, command: Command) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Envelope { command, reply })
            .map_err(|_| "the supervisor has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the supervisor has stopped".to_owned())?
    }

    /// A fresh snapshot of every app.
    pub fn status(&self) -> Vec<AppStatus> {
        (self.status)()
    }
}
