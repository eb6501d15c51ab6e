//! The gateway process: open the logs, build the proxy, bind, serve until a signal,
//! then shut down gracefully and flush every log line.

use crate::config::Config;
use crate::observe::access::AccessLog;
use crate::observe::events::{CertificateSummary, Event, Events, GATEWAY};
use crate::observe::jsonl::{JsonlWriter, Rotation};
use crate::proxy::route::{Route, Router};
use crate::proxy::{server, Gateway};
use crate::supervisor::control::{self, Command, ControlError, Envelope, Handle};
use crate::upstream::registry::{HealthChecks, Pools};
use crate::{admin, supervisor};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Run the gateway in the foreground until SIGTERM or SIGINT. Exit 0 after a clean
/// shutdown, 1 when it cannot start.
pub fn run(cfg: Config, path: &Path) -> ExitCode {
    run_with(cfg, Some(path.to_owned()), false)
}

/// `healgate demo`: the gateway with three instances of the built-in demo app, no
/// config file needed; prints what to try.
pub fn demo(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    data_dir: std::path::PathBuf,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("healgate: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    run_with(
        crate::config::demo(data_dir, listen, admin, &exe),
        None,
        true,
    )
}

fn run_with(cfg: Config, path: Option<PathBuf>, demo: bool) -> ExitCode {
    init_tracing();
    let workers = match cfg.gateway.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    // One worker: a current-thread runtime, no cross-thread wake-ups.
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(crate::memory::collect_when_idle)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .on_thread_park(crate::memory::collect_when_idle)
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Held (locked) for the life of the process: a second gateway on this data_dir
    // refuses to start.
    let _pid_file = match lock_data_dir(&cfg.gateway.data_dir) {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    // Before any instance: it kills their process groups if this process dies.
    if let Err(e) = supervisor::watchdog::start() {
        tracing::warn!("{e}: instances' child processes may outlive the gateway if it is killed");
    }
    let logs = cfg.gateway.data_dir.join("logs");
    let l = &cfg.gateway.logs;
    let rotation = Rotation {
        max_size: l.max_size,
        keep: l.keep,
    };
    supervisor::output::set_rotation(Rotation {
        max_size: l.app_max_size,
        keep: l.app_keep,
    });
    let access = if cfg.gateway.access_log {
        match JsonlWriter::open(&logs.join("access.jsonl"), rotation) {
            Ok(w) => Some(w),
            Err(e) => return fail(&e),
        }
    } else {
        None
    };
    let events_log = match JsonlWriter::open(&logs.join("events.jsonl"), rotation) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let result = rt.block_on(serve(&cfg, path, access.as_ref(), &events_log, demo));
    // Every task is stopped with the runtime; then every queued log line is written.
    drop(rt);
    if let Some(a) = access {
        a.close();
    }
    events_log.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn serve(
    cfg: &Config,
    path: Option<PathBuf>,
    access: Option<&JsonlWriter>,
    events_log: &JsonlWriter,
    demo: bool,
) -> std::io::Result<()> {
    let access = access
        .map(|w| AccessLog::new(w.sender()))
        .unwrap_or_default();
    let events = Events::new(Some(events_log.sender()));
    let pools = Pools::build(cfg, &events, None)?;
    let gw = Arc::new(Gateway::new(
        cfg,
        access,
        router(&pools),
        &events.monitor().metrics,
    )?);
    let data_dir = &cfg.gateway.data_dir;
    let token = admin::token(data_dir, cfg.admin.token.as_deref())?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("admin listen on {}: {e}", cfg.admin.listen),
            )
        })?;
    let mut listeners: Vec<server::Listener> = server::bind(&cfg.gateway.listen)
        .await?
        .into_iter()
        .map(|tcp| server::Listener { tcp, tls: false })
        .collect();
    if let Some(tls) = &cfg.gateway.tls {
        listeners.extend(
            server::bind(&tls.listen)
                .await?
                .into_iter()
                .map(|tcp| server::Listener { tcp, tls: true }),
        );
    }
    let admin_addr = admin_listener.local_addr()?;
    admin::write_admin_file(data_dir, admin_addr)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisor = supervisor::start(pools.apps.clone(), events.clone(), data_dir);
    // The one control channel: admin and SIGHUP send, the loop below receives.
    let (control_tx, mut inbox) = mpsc::unbounded_channel::<Envelope>();
    let control = Handle::new(control_tx, supervisor.status());
    let diagnostics = {
        let control = control.clone();
        Arc::new(crate::diagnose::Diagnostics::new(
            data_dir,
            cfg.clone(),
            path.clone(),
            events.monitor().clone(),
            Arc::new(move || control.status()),
        ))
    };
    crate::diagnose::install(&diagnostics);
    let admin_state = Arc::new(admin::AdminState {
        token,
        control: Some(control.clone()),
        events: events.clone(),
        started: std::time::Instant::now(),
        metrics_public: cfg.admin.metrics_public,
        snapshot: snapshotter(&gw, &control),
        logins: Default::default(),
        diagnostics: Some(diagnostics),
        info: admin::GatewayInfo {
            data_dir: data_dir.clone(),
            config_path: path
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            max_connections: server::max_connections(cfg.gateway.limits.max_connections),
            config: Some(Arc::new(cfg.clone())),
        },
    });
    events
        .monitor()
        .incidents
        .load(data_dir.join("incidents.json"));
    events.monitor().alerts.set_rules(cfg.alerts.clone());
    let ticker = tokio::spawn(tick(
        events.clone(),
        control.clone(),
        gw.clone(),
        stop_rx.clone(),
    ));
    // The demo prints a one-time link that logs the dashboard in.
    let login_code = if demo {
        match admin_state.logins.issue() {
            Ok(code) => Some(code),
            Err(e) => {
                tracing::warn!("no one-time dashboard link: {e}");
                None
            }
        }
    } else {
        None
    };
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx.clone()));
    // Freed memory goes back to the system within seconds of a burst.
    tokio::spawn(crate::memory::ticker());
    let mut live = Live {
        path,
        config: cfg.clone(),
        health: HealthChecks::new(stop_rx.clone()),
        pools,
        gw: gw.clone(),
        supervisor,
        events: events.clone(),
        rolling: Arc::default(),
        acme: None,
        stop: stop_rx.clone(),
    };
    live.health.sync(&live.pools);
    events.emit(Event::GatewayStarted {
        app: GATEWAY,
        pid: std::process::id(),
    });
    if let Some(edge) = gw.edge.clone() {
        events.emit(Event::CertificatesLoaded {
            app: GATEWAY,
            trigger: "start",
            certificates: CertificateSummary::of(&edge.certs.all()),
        });
        live.acme = crate::tls::acme::start(cfg, &edge.certs, &events, &stop_rx);
        tokio::spawn(watch_certificates(edge, events.clone(), stop_rx.clone()));
    }
    let serving = tokio::spawn(server::serve(
        gw,
        listeners_announced(
            listeners,
            admin_addr,
            demo.then_some(data_dir.as_path()),
            login_code.as_deref(),
        )?,
        cfg.gateway.timeouts.clone(),
        cfg.gateway.shutdown_grace,
        stop_rx,
    ));
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
        mut others,
    } = Signals::new()?;
    let signal: String = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM".into(),
            _ = int.recv() => break "SIGINT".into(),
            Some(name) = others.recv() => {
                tracing::warn!("{name}: not a signal healgate acts on (TERM/INT stop, HUP reloads, USR1 reopens the logs); stopping as for SIGTERM");
                break name;
            }
            _ = usr1.recv() => {
                crate::observe::jsonl::reopen();
                tracing::info!("SIGUSR1: reopening the log files");
            }
            _ = hup.recv() => {
                let control = control.clone();
                tokio::spawn(async move {
                    match control.send(Command::Reload).await {
                        Ok(done) => tracing::info!("SIGHUP: {}", done.message),
                        Err(e) => tracing::error!("SIGHUP: reload failed:\n{e}"),
                    }
                });
            }
            Some(envelope) = inbox.recv() => {
                if let Some(stop) = live.command(envelope).await {
                    break stop.into();
                }
            }
        }
    };
    // Commands still queued get "the gateway is shutting down".
    drop(inbox);
    tracing::info!("{signal}: shutting down");
    // Stop accepting and let in-flight requests finish, then stop the instances.
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let Live {
        supervisor,
        mut health,
        ..
    } = live;
    tracing::info!("{}", supervisor.shutdown().await.message);
    health.stop_all();
    events.monitor().logs.close();
    let _ = admin_task.await;
    let _ = ticker.await;
    admin::remove_admin_file(data_dir);
    events.emit(Event::GatewayStopped {
        app: GATEWAY,
        signal,
    });
    Ok(())
}

/// What a reload changes: the running config, its pools, their health checks.
struct Live {
    path: Option<PathBuf>,
    config: Config,
    pools: Pools,
    /// The upstream pools' health checks.
    health: HealthChecks,
    gw: Arc<Gateway>,
    supervisor: supervisor::Supervisor,
    events: Events,
    /// A reload's rolls are still under way (the next reload waits for them).
    rolling: Arc<std::sync::atomic::AtomicBool>,
    /// The ACME task (`gateway.tls.acme`), started again by a reload that changes it.
    acme: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Receiver<bool>,
}

/// A reload applied: its summary, and the rolls of the apps it changed, still under
/// way. [`Reloaded::finish`] waits for them and writes the reply.
struct Reloaded {
    /// `reloaded <file>: 0 added, 1 changed, 0 removed, 1 unchanged`.
    summary: String,
    unchanged: Vec<String>,
    notes: Vec<String>,
    apps: Vec<AppRoll>,
}

/// One app's part of a reload: what applying its config did, and its roll.
struct AppRoll {
    name: String,
    applied: String,
    rolled: oneshot::Receiver<control::Reply>,
    /// Longer than any roll of this app can take: two steps (a roll and its
    /// rollback) per instance, each bounded by `startup_timeout`.
    bound: std::time::Duration,
}

impl Reloaded {
    /// Wait for every app's roll. Ok: what each app did. Err: the apps whose new
    /// revision did not get ready first (each names the instance and the app's own
    /// error), then what the rest of the reload did.
    async fn finish(self) -> control::Reply {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for a in self.apps {
            match tokio::time::timeout(a.bound, a.rolled).await {
                Ok(Ok(Ok(outcome))) => done.push(outcome.message),
                Ok(Ok(Err(e))) => failed.push(e.to_string()),
                // No roll for this app (a new one, or its config was refused).
                Ok(Err(_)) => done.push(a.applied),
                Err(_) => failed.push(format!(
                    "{}: the roll did not finish within {:?}; `healgate status` shows where it is",
                    a.name, a.bound
                )),
            }
        }
        let mut lines = vec![self.summary];
        lines.extend(done);
        if !self.unchanged.is_empty() {
            lines.push(format!("unchanged: {}", self.unchanged.join(", ")));
        }
        lines.extend(self.notes.into_iter().map(|n| format!("note: {n}")));
        if failed.is_empty() {
            return Ok(lines.join("\n").into());
        }
        Err(ControlError::Failed(format!(
            "{}\nthe rest of the reload was applied:\n{}",
            failed.join("\n"),
            lines.join("\n")
        )))
    }
}

impl Live {
    /// One command from the control channel: reload here, shutdown stops the loop
    /// (returns what to log), the rest goes to the supervisor.
    async fn command(&mut self, Envelope { command, reply }: Envelope) -> Option<&'static str> {
        match command {
            Command::Reload => {
                use std::sync::atomic::Ordering;
                match self.reload().await {
                    Ok(reloaded) if reloaded.apps.is_empty() => {
                        let _ = reply.send(reloaded.finish().await);
                    }
                    Ok(reloaded) => {
                        // The rolls take a while: the control loop goes on meanwhile.
                        self.rolling.store(true, Ordering::SeqCst);
                        let rolling = self.rolling.clone();
                        tokio::spawn(async move {
                            let outcome = reloaded.finish().await;
                            rolling.store(false, Ordering::SeqCst);
                            let _ = reply.send(outcome);
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                None
            }
            Command::Shutdown => {
                let _ = reply.send(Ok("shutting down".to_owned().into()));
                Some("shutdown command")
            }
            command => {
                self.supervisor.dispatch(Envelope { command, reply });
                None
            }
        }
    }

    /// Send `command` to the supervisor and wait for its reply.
    async fn ask(&mut self, command: Command) -> control::Reply {
        let (reply, answer) = oneshot::channel();
        self.supervisor.dispatch(Envelope { command, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(ControlError::Stopped("the supervisor has stopped".into())))
    }

    /// Re-read the config file. An invalid file is refused with the same messages as
    /// `healgate check` and nothing changes. A valid one is applied as a diff: new and
    /// changed apps are (re)configured (a new revision rolls), removed ones drain and
    /// stop, unchanged apps and upstreams keep their pools and connections, and the
    /// routing table is swapped at once. An unchanged app whose last roll failed is
    /// configured again: reloading the same file retries its roll.
    /// A reload that changes `gateway.tls.acme`: the task is stopped (an order under
    /// way is dropped, its challenges withdrawn) and started again for the new table;
    /// without one, the obtained certificate is no longer served. What the reload's
    /// reply says of it.
    fn restart_acme(&mut self, new: &Config) -> Option<String> {
        let (Some(edge), Some(old), Some(tls)) = (
            &self.gw.edge,
            self.config.gateway.tls.as_ref(),
            new.gateway.tls.as_ref(),
        ) else {
            return None;
        };
        if old.acme == tls.acme {
            return None;
        }
        if let Some(task) = self.acme.take() {
            task.abort();
        }
        self.gw.acme_http01.store(
            crate::proxy::http01(tls.acme.as_ref()),
            std::sync::atomic::Ordering::Relaxed,
        );
        match &tls.acme {
            Some(acme) => {
                self.acme = Some(crate::tls::acme::spawn(
                    acme,
                    &self.config.gateway.data_dir,
                    edge.certs.clone(),
                    self.events.clone(),
                    self.stop.clone(),
                ));
                Some(format!(
                    "gateway.tls.acme changed: ACME started again for {}",
                    acme.domains.join(", ")
                ))
            }
            None => {
                edge.certs.install("acme", Vec::new());
                Some(
                    "gateway.tls.acme removed: the obtained certificate is no longer served".into(),
                )
            }
        }
    }

    async fn reload(&mut self) -> Result<Reloaded, ControlError> {
        if self.rolling.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ControlError::Busy(
                "the last reload is still rolling apps to their new revision: reload again when it has finished (`healgate status`)".into(),
            ));
        }
        let Some(path) = self.path.clone() else {
            return Err(ControlError::ReloadFailed(
                "this gateway runs without a config file (demo): nothing to reload".into(),
            ));
        };
        let new = match crate::config::load(&path) {
            Ok(c) => c.config,
            Err(invalid) => {
                let problems: Vec<String> =
                    invalid.problems.iter().map(|p| p.to_string()).collect();
                self.events.emit(Event::ConfigRejected {
                    app: GATEWAY,
                    problems,
                });
                return Err(ControlError::ConfigRejected(invalid.to_string()));
            }
        };
        let diff = crate::config::diff::diff(&self.config, &new);
        let mut notes = Vec::new();
        // Certificate files apply at once: a reload reads them again.
        if let (Some(edge), Some(tls)) = (&self.gw.edge, &new.gateway.tls) {
            match edge.load(&tls.certs) {
                Ok(loaded) => self.events.emit(Event::CertificatesLoaded {
                    app: GATEWAY,
                    trigger: "reload",
                    certificates: CertificateSummary::of(&loaded),
                }),
                Err(error) => {
                    notes.push(format!(
                        "gateway.tls.certs: {error}; the certificates served before stay"
                    ));
                    self.events.emit(Event::CertificatesRejected {
                        app: GATEWAY,
                        trigger: "reload",
                        error,
                    });
                }
            }
        }
        if let Some(note) = self.restart_acme(&new) {
            notes.push(note);
        }
        let mut effective = new;
        if diff.gateway_changed {
            notes.push(
                "[gateway] changed: listeners, timeouts and limits apply after a restart"
                    .to_owned(),
            );
            effective.gateway = self.config.gateway.clone();
        }
        if diff.admin_changed {
            notes.push("[admin] changed: applies after a restart".to_owned());
            effective.admin = self.config.admin.clone();
        }
        if diff.errors_changed {
            notes.push("[errors] changed: applies after a restart".to_owned());
            effective.errors = self.config.errors.clone();
        }
        let pools = Pools::build(&effective, &self.events, Some(&self.pools))
            .map_err(|e| ControlError::ReloadFailed(e.to_string()))?;
        // Apps whose instances run another revision than their config's (a roll
        // that failed): configured again, so the roll is retried.
        let behind: Vec<String> = self.supervisor.status()()
            .into_iter()
            .filter(|a| a.revision != a.stable_revision)
            .map(|a| a.name)
            .collect();
        let mut rolls = Vec::new();
        let mut unchanged_apps = Vec::new();
        for (app, pool) in &pools.apps {
            if diff.apps.is_unchanged(&app.name) && !behind.contains(&app.name) {
                unchanged_apps.push(app.name.clone());
                continue;
            }
            let (rolled, wait) = oneshot::channel();
            let cmd = Command::Configure {
                app: Box::new(app.clone()),
                pool: pool.clone(),
                rolled: Some(rolled),
            };
            match self.ask(cmd).await {
                Ok(applied) => {
                    let most = app.autoscale.as_ref().map_or(app.instances, |a| a.max);
                    rolls.push(AppRoll {
                        name: app.name.clone(),
                        applied: applied.message,
                        rolled: wait,
                        bound: app.startup_timeout * 2 * (most + 1)
                            + std::time::Duration::from_secs(30),
                    });
                }
                Err(e) => notes.push(format!("{}: {e}", app.name)),
            }
        }
        for app in &diff.apps.removed {
            // Draining takes a while: no one waits for the reply.
            let (reply, _) = oneshot::channel();
            self.supervisor.dispatch(Envelope {
                command: Command::Remove { app: app.clone() },
                reply,
            });
        }
        self.gw.set_router(router(&pools));
        self.health.sync(&pools);
        self.pools = pools;
        self.events
            .monitor()
            .alerts
            .set_rules(effective.alerts.clone());
        if let Some(d) = crate::diagnose::installed() {
            d.set_config(effective.clone());
        }
        self.config = effective;
        let names = diff.names();
        self.events.emit(Event::ConfigReloaded {
            app: GATEWAY,
            added: names.added.clone(),
            changed: names.changed.clone(),
            removed: names.removed.clone(),
            unchanged: names.unchanged.clone(),
            routes_changed: diff.routes_changed,
            notes: notes.clone(),
        });
        let summary = format!(
            "reloaded {}: {} added, {} changed, {} removed, {} unchanged",
            path.display(),
            names.added.len(),
            names.changed.len(),
            names.removed.len(),
            names.unchanged.len()
        );
        let unchanged = unchanged_apps
            .into_iter()
            .chain(diff.upstreams.unchanged.iter().cloned())
            .collect();
        Ok(Reloaded {
            summary,
            unchanged,
            notes,
            apps: rolls,
        })
    }
}

/// The routing table over `pools`.
/// Every 2 s, until the stop: certificate files that changed on disk are read again
/// and served to new connections (open ones carry on with theirs).
async fn watch_certificates(
    edge: Arc<crate::tls::Edge>,
    events: Events,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let edge = edge.clone();
        let read = tokio::task::spawn_blocking(move || edge.refresh()).await;
        match read {
            Ok(Ok(Some(loaded))) => events.emit(Event::CertificatesLoaded {
                app: GATEWAY,
                trigger: "changed",
                certificates: CertificateSummary::of(&loaded),
            }),
            Ok(Err(error)) => events.emit(Event::CertificatesRejected {
                app: GATEWAY,
                trigger: "changed",
                error,
            }),
            Ok(Ok(None)) | Err(_) => {}
        }
    }
}

/// Once a second, until the stop: the monitor's tick (history, incidents, alerts).
async fn tick(events: Events, control: Handle, gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    use crate::observe::{alerts, incidents, monitor::unix_now};
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let status = control.status();
        let pools = gw.router().pools();
        let snap = supervisor::metrics_snapshot(&status, &pools);
        let (changes, notices) = events.monitor().tick(unix_now(), &snap, |history| {
            supervisor::incident_conditions(&status, &pools, history)
        });
        for change in &changes {
            events.emit(incidents::event_of(change));
        }
        for n in notices {
            let (app, alert, text) = (n.app.clone(), n.alert.clone(), n.text.clone());
            events.emit(if n.firing {
                Event::AlertFired { app, alert, text }
            } else {
                Event::AlertResolved { app, alert, text }
            });
            tokio::spawn(alerts::deliver(n));
        }
    }
}

/// The instances and peers now, for `/metrics` and the history.
fn snapshotter(gw: &Arc<Gateway>, control: &Handle) -> admin::Snapshotter {
    let (gw, control) = (gw.clone(), control.clone());
    Arc::new(move || supervisor::metrics_snapshot(&control.status(), &gw.router().pools()))
}

fn router(pools: &Pools) -> Router {
    let mut routes = Vec::new();
    for (r, pool) in pools.routes() {
        for prefix in &r.prefixes {
            routes.push(Route {
                name: pool.name.clone(),
                host: r.host.clone(),
                prefix: prefix.clone(),
                strip_prefix: r.strip_prefix,
                pool: pool.clone(),
            });
        }
    }
    Router::new(routes)
}

/// The signals the gateway acts on, registered once: TERM/INT stop, HUP reloads,
/// USR1 reopens the log files. Every other signal whose default would end the
/// process silently (or with a core) arrives on `others` by name and stops the
/// gateway in order, with a log line. SIGPIPE stays ignored (Rust's runtime does it);
/// SIGCHLD, SIGWINCH, SIGURG and the job-control signals keep their defaults.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    others: mpsc::UnboundedReceiver<String>,
}

/// The catchable signals that would otherwise end the gateway without a word.
const UNHANDLED: &[(libc::c_int, &str)] = &[
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGTRAP, "SIGTRAP"),
];

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, others) = mpsc::unbounded_channel();
        let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .map(|n| (n, format!("SIGRTMIN+{}", n - libc::SIGRTMIN())));
        let all = UNHANDLED
            .iter()
            .map(|(n, name)| (*n, (*name).to_owned()))
            .chain(realtime);
        for (n, name) in all {
            match signal(SignalKind::from_raw(n)) {
                Ok(mut s) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while s.recv().await.is_some() {
                            if tx.send(name.clone()).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(e) => tracing::debug!("{name}: cannot be handled ({e})"),
            }
        }
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            others,
        })
    }
}

/// Print where the gateway listens (tests and scripts read these lines).
fn listeners_announced(
    listeners: Vec<server::Listener>,
    admin: std::net::SocketAddr,
    demo_data: Option<&std::path::Path>,
    login_code: Option<&str>,
) -> std::io::Result<Vec<server::Listener>> {
    let mut out = std::io::stdout().lock();
    for l in &listeners {
        let scheme = if l.tls { "https" } else { "http" };
        let _ = writeln!(
            out,
            "healgate: proxy listening on {scheme}://{}",
            l.tcp.local_addr()?
        );
    }
    let _ = writeln!(out, "healgate: admin listening on http://{admin}");
    if let (Some(data), Some(first)) = (demo_data, listeners.first()) {
        let url = format!("http://{}", first.tcp.local_addr()?);
        let _ = writeln!(
            out,
            "\nhealgate demo: 3 instances of the built-in demo app behind {url}\n\
             try:\n\
             \x20 curl {url}/                     hello from one instance (run it a few times)\n\
             \x20 curl {url}/slow?ms=2000         a slow request\n\
             \x20 curl -i {url}/crash             an instance crashes: a 502 naming the instance and its exit (the demo turns on errors.details), and it is restarted\n\
             \x20 curl -i {url}/status/503        the app's own 503 passes through untouched\n\
             \x20 curl -H 'Accept: application/json' -H 'Accept-Language: fr' {url}/bad\n\
             \x20 healgate status                   apps, instances, recent events\n\
             \x20 healgate restart demo             a rolling restart without a dropped request\n\
             dashboard: {dashboard}\n\
             admin API: http://{admin}/api/v1/status (token in {token})\n\
             logs: {logs}/  (access.jsonl, events.jsonl, apps/)\n\
             Ctrl-C stops the gateway and every instance.",
            dashboard = match login_code {
                Some(code) => format!(
                    "http://{admin}/#login={code}  (a one-time link, good for 10 minutes; then the token below)"
                ),
                None => format!("http://{admin}/  (log in with the token below)"),
            },
            token = data.join("admin.token").display(),
            logs = data.join("logs").display(),
        );
    }
    let _ = out.flush();
    Ok(listeners)
}

/// Lock `data_dir/healgate.pid` (flock, exclusive, without waiting) and write this
/// process's pid into it. The lock lives as long as the returned file (the kernel
/// drops it when the process dies, however). Another gateway holding it is an error
/// naming its pid.
fn lock_data_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::DirBuilderExt;
    // 0750, like the log directories inside it: logs and output are not for others.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("healgate.pid");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut other = String::new();
            let _ = file.read_to_string(&mut other);
            let other = other.trim();
            let who = if other.is_empty() {
                "another gateway".to_owned()
            } else {
                format!("another gateway (pid {other})")
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by {who}: stop it, or give this one its own gateway.data_dir",
                    dir.display()
                ),
            ));
        }
        Err(e) => {
            let e = std::io::Error::from(e);
            return Err(std::io::Error::new(
                e.kind(),
                format!("locking {}: {e}", path.display()),
            ));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

fn fail(e: &std::io::Error) -> ExitCode {
    eprintln!("healgate: {e}");
    ExitCode::FAILURE
}

/// Human-readable logs on stderr, one line each: `HEALGATE_LOG` (e.g. `debug`,
/// `healgate=trace`) sets the level, else `RUST_LOG`, else `info`; colour only when
/// stderr is a terminal.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = ["HEALGATE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            let v = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            tracing_subscriber::EnvFilter::try_new(v).ok()
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
