//! The admin API: status, the event feed and control commands for a running gateway,
//! on `admin.listen` (SPEC §6).
//!
//! Every route requires `Authorization: Bearer <token>` except `GET /healthz`, the
//! dashboard page `GET /` and its `GET /assets/*` (which show no data: the page's
//! script asks for the token), and `POST /api/v1/login`. A missing or wrong token gets
//! `401` with `WWW-Authenticate: Bearer`. Every answer but the dashboard's files is
//! JSON; errors are `{"error": "..."}` (command failures `{"ok": false, "error": "..."}`).
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /` | the live dashboard ([`dashboard`]; public, shows no data until logged in) |
//! | `GET /assets/{name}` | the dashboard's script, styles and uPlot, embedded in the binary (public) |
//! | `POST /api/v1/login` | body `{"code":"..."}`, a one-time code from a `/#login=<code>` link → `{"token":..}` (public; JSON only, same origin, failures rate-limited: 429) |
//! | `POST /api/v1/login/code` | a fresh one-time code `{"code":..,"expires_in_s":600}` for a link `http://<admin>/#login=<code>` |
//! | `GET /healthz` | `{"status":"ok"}` (public) |
//! | `GET /api/v1/status` | `{"apps":[AppStatus...], "uptime_s":.., "pid":.., "version":..}` |
//! | `GET /api/v1/events?since=N` | `{"events":[{"seq":N,"event":{...}}], "last":N}`: events after `N` (default 0), oldest first; poll again with `since=last` |
//! | `POST /api/v1/apps/{app}/restart` | a rolling restart of every instance of `app` |
//! | `POST /api/v1/apps/{app}/scale` | body `{"instances":N}`: run `N` instances of `app` |
//! | `POST /api/v1/reload` | re-read the config file and apply the difference, answered once the changed apps have rolled; 422 with the `check` messages when the file is invalid; 409 naming the app, the instance and its error when a new revision did not get ready (the app stays on its old one), or while the last reload still rolls |
//! | `POST /api/v1/diagnose` | body `{"app":..,"window":"15m","dumps":false}` (all optional): start a diagnostic bundle → 202 `{"name":..,"path":..}`; 429 with `Retry-After` beyond 3 a minute ([`crate::diagnose`]) |
//! | `GET /api/v1/diagnostics` | `{"diagnostics":[{name, state, steps, headline, findings, report}...]}`, newest first (the last 10 are kept) |
//! | `GET /api/v1/diagnostics/{name}/report.html` | the bundle's self-contained report page |
//! | `GET /api/v1/requests/{id}` | the story of one request by its `X-Request-Id` ([`crate::diagnose::why::Story`], what `healgate why` prints); 404 when no access line has the id |
//! | `GET /api/v1/environment` | version, pid, config path, data dir, cwd, limits (open files soft/hard, `max_connections`) and the gateway's environment, secrets redacted |
//! | `GET /api/v1/processes` | the gateway's process and each instance's process tree (pid, ppid, command line redacted, memory, CPU, threads, open files) |
//! | `POST /api/v1/instances/{id}/recycle` | an overlapping recycle of instance `id` (`web#2`, sent as `web%232`; `web-2` works too); optional body `{"reason":"..."}` |
//!
//! Command routes (reload too) send a [`Command`](crate::supervisor::control::Command)
//! through the one control channel and answer `200 {"ok":true,"message":..}` when it
//! succeeded, else `{"ok":false,"error":..}` with the status of its
//! [`ControlError`](crate::supervisor::control::ControlError): 404 for an unknown app
//! or instance, 409 for a refusal or a failure, 422 for a rejected config, 503 while
//! the gateway stops. A malformed body is `400`, an unknown route `404`, a known route
//! with the wrong method `405` (with `Allow`).
//!
//! Files: [`token`] keeps the generated token in `data_dir/admin.token` (mode 0600);
//! [`write_admin_file`] records the bound address in `data_dir/admin.json` so that the
//! CLI verbs ([`client`]) find a gateway whose admin port was 0, and a copy naming the
//! data dir in the per-user runtime file ([`runtime_file`]) so that they find it from
//! any directory.

pub mod client;
mod dashboard;
mod diagnostics;
mod environment;
pub mod login;
mod logs;
mod requests;
mod routes;

use crate::observe::events::Events;
use crate::supervisor::control::Handle;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The file holding the generated admin token, under `data_dir`.
pub const TOKEN_FILE: &str = "admin.token";

/// The file recording where a running gateway's admin API listens, under `data_dir`.
pub const ADMIN_FILE: &str = "admin.json";

/// How long open admin connections may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The answer of `GET /api/v1/status` (what `healgate status` reads).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatusAnswer {
    pub apps: Vec<crate::supervisor::control::AppStatus>,
    /// Seconds since the gateway started.
    pub uptime_s: f64,
    /// The gateway's process id.
    pub pid: u32,
    pub version: String,
    /// Open incidents, then the last closed ones (at most 5 in all), newest first.
    #[serde(default)]
    pub incidents: Vec<crate::observe::incidents::Incident>,
    /// How many incidents are open now.
    #[serde(default)]
    pub incidents_open: usize,
}

/// What the admin API reads and drives.
pub struct AdminState {
    /// The bearer token every protected route requires.
    pub token: String,
    /// The control channel (commands for the supervisor, and reload); `None` for a
    /// gateway that runs no apps and offers no reload.
    pub control: Option<Handle>,
    /// The event feed served at `/api/v1/events`.
    pub events: Events,
    /// When the gateway started (for `uptime_s`).
    pub started: Instant,
    /// `admin.metrics_public`: `/metrics` without the token.
    pub metrics_public: bool,
    /// What the gauges of `/metrics` and the history read (instances and peers now).
    pub snapshot: Snapshotter,
    /// The one-time login codes (`POST /api/v1/login`).
    pub logins: login::Logins,
    /// The diagnostic bundle collector (`POST /api/v1/diagnose`); `None`: not offered.
    pub diagnostics: Option<Arc<crate::diagnose::Diagnostics>>,
    /// Where the gateway's files and config are (`why`, the environment view).
    pub info: GatewayInfo,
}

/// What the admin API says about the gateway process itself.
#[derive(Debug, Clone, Default)]
pub struct GatewayInfo {
    /// `gateway.data_dir` (logs, events, incidents).
    pub data_dir: PathBuf,
    /// The config file it was started with; `None` for the demo's embedded config.
    pub config_path: Option<PathBuf>,
    /// The config it started with (the file, re-read, wins when it is valid: a
    /// reload may have changed it).
    pub config: Option<Arc<crate::config::Config>>,
    /// The client connections it serves at once (`limits.max_connections`, or the
    /// default from the file descriptor limit).
    pub max_connections: u32,
}

/// Takes a [`Snapshot`](crate::observe::metrics::Snapshot) of the instances and peers.
pub type Snapshotter = Arc<dyn Fn() -> crate::observe::metrics::Snapshot + Send + Sync>;

/// The admin token: `configured` (from the config file or env `HEALGATE_ADMIN_TOKEN`,
/// already resolved by config) when given, else the one in `data_dir/admin.token`, else
/// a new one (32 random bytes, hex) written there with mode 0600. `data_dir` is created
/// when needed; an existing token file readable by others is tightened to 0600.
pub fn token(data_dir: &Path, configured: Option<&str>) -> io::Result<String> {
    if let Some(t) = configured.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Some(t) = read_token(&path)? {
        return Ok(t);
    }
    create_data_dir(data_dir)?;
    let fresh = random_hex(32)?;
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    let mut file = match created {
        Ok(f) => f,
        // Another process wrote one first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if let Some(t) = read_token(&path)? {
                return Ok(t);
            }
            // An empty file (a crash mid-write): replace its content.
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| with_context(e, format!("writing {}", path.display())))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f
        }
        Err(e) => return Err(with_context(e, format!("creating {}", path.display()))),
    };
    file.write_all(format!("{fresh}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| with_context(e, format!("writing {}", path.display())))?;
    Ok(fresh)
}

/// The token in `path`, trimmed; `None` when the file is missing or empty.
fn read_token(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let t = text.trim();
            if t.is_empty() {
                return Ok(None);
            }
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "{} was readable by others; setting its mode to 0600",
                        path.display()
                    );
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(Some(t.to_owned()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_context(e, format!("reading {}", path.display()))),
    }
}

/// `n` bytes from `/dev/urandom`, as lowercase hex.
fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| with_context(e, "reading /dev/urandom".to_owned()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn with_context(e: io::Error, doing: String) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

/// Create `data_dir` (0750, with parents) when it is missing.
fn create_data_dir(data_dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(data_dir)
        .map_err(|e| with_context(e, format!("creating {}", data_dir.display())))
}

/// The per-user runtime file naming the last gateway started by this user:
/// `$XDG_RUNTIME_DIR/healgate/admin.json` when `XDG_RUNTIME_DIR` is set, else
/// `/tmp/healgate-<uid>/admin.json`. Same content as `data_dir/admin.json` plus
/// `data_dir` (absolute).
pub fn runtime_file() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("healgate"),
        None => {
            std::env::temp_dir().join(format!("healgate-{}", rustix::process::getuid().as_raw()))
        }
    };
    dir.join(ADMIN_FILE)
}

/// Write `body` to `path` atomically (a temporary file, then rename).
fn write_atomically(path: &Path, body: &serde_json::Value) -> io::Result<()> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    std::fs::write(&tmp, format!("{body}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            with_context(e, format!("writing {}", path.display()))
        })
}

/// Record that this process's admin API listens on `addr`: writes
/// `data_dir/admin.json` = `{"listen":"127.0.0.1:PORT","pid":N}` (atomically, by
/// rename), creating `data_dir` when needed; then the same with `data_dir` in the
/// per-user [`runtime_file`] (best effort: a failure there is logged, not returned).
pub fn write_admin_file(data_dir: &Path, addr: SocketAddr) -> io::Result<()> {
    create_data_dir(data_dir)?;
    let mut body = serde_json::json!({
        "listen": addr.to_string(),
        "pid": std::process::id(),
    });
    write_atomically(&data_dir.join(ADMIN_FILE), &body)?;
    let abs = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    body["data_dir"] = abs.display().to_string().into();
    let runtime = runtime_file();
    let written = runtime.parent().map_or(Ok(()), |dir| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| with_context(e, format!("creating {}", dir.display())))
    });
    if let Err(e) = written.and_then(|()| write_atomically(&runtime, &body)) {
        tracing::warn!("the CLI will not find this gateway from other directories: {e}");
    }
    Ok(())
}

/// What the per-user runtime file says: the data dir and the admin file, when the
/// file is readable and names a data dir.
pub fn read_runtime_file() -> Option<(PathBuf, AdminFile)> {
    let text = std::fs::read_to_string(runtime_file()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let data_dir = PathBuf::from(v.get("data_dir")?.as_str()?);
    Some((data_dir, parse_admin_file(&v)?))
}

/// Remove `data_dir/admin.json` when it is this process's (or unreadable). Best
/// effort: a failure is logged, never returned.
pub fn remove_admin_file(data_dir: &Path) {
    let path = data_dir.join(ADMIN_FILE);
    let ours = match read_admin_file(data_dir) {
        Some(file) => file.pid.is_none_or(|p| p == std::process::id()),
        None => true,
    };
    if !ours {
        return;
    }
    let runtime = runtime_file();
    if read_runtime_file().is_some_and(|(_, f)| f.pid == Some(std::process::id())) {
        let _ = std::fs::remove_file(&runtime);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

/// What `data_dir/admin.json` says.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminFile {
    /// Where the admin API listens.
    pub listen: SocketAddr,
    /// The gateway's process id, when recorded.
    pub pid: Option<u32>,
}

/// Read `data_dir/admin.json`; `None` when missing or unreadable.
pub fn read_admin_file(data_dir: &Path) -> Option<AdminFile> {
    let text = std::fs::read_to_string(data_dir.join(ADMIN_FILE)).ok()?;
    parse_admin_file(&serde_json::from_str(&text).ok()?)
}

fn parse_admin_file(v: &serde_json::Value) -> Option<AdminFile> {
    let listen = v.get("listen")?.as_str()?.parse().ok()?;
    let pid = v
        .get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok());
    Some(AdminFile { listen, pid })
}

/// The path of the token file under `data_dir`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Serve the admin API on `listener` until `shutdown` turns true (or its sender is
/// dropped); then stop accepting and give open connections a few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("admin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(routes::handle(&state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin: connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin: connections still open after {SHUTDOWN_GRACE:?}; closing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("healgate-admin-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn configured_token_wins_and_writes_nothing() {
        let dir = temp_dir("configured");
        assert_eq!(token(&dir, Some("s3cret")).unwrap(), "s3cret");
        assert!(!dir.join(TOKEN_FILE).exists());
    }

    #[test]
    fn empty_token_file_is_replaced() {
        let dir = temp_dir("empty");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(TOKEN_FILE), "").unwrap();
        let t = token(&dir, None).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(token(&dir, Some("  ")).unwrap(), t);
        let mode = std::fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_file_round_trip_and_removal() {
        let dir = temp_dir("adminfile");
        let addr: SocketAddr = "127.0.0.1:43210".parse().unwrap();
        write_admin_file(&dir, addr).unwrap();
        let file = read_admin_file(&dir).unwrap();
        assert_eq!(file.listen, addr);
        assert_eq!(file.pid, Some(std::process::id()));
        remove_admin_file(&dir);
        assert!(read_admin_file(&dir).is_none());
        // Another process's file stays.
        std::fs::write(dir.join(ADMIN_FILE), r#"{"listen":"127.0.0.1:1","pid":1}"#).unwrap();
        remove_admin_file(&dir);
        assert!(read_admin_file(&dir).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
