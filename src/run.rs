//! The gateway process: open the logs, build the proxy, bind, serve until a signal,
//! then shut down gracefully and flush every log line.

use crate::config::Config;
use crate::observe::access::AccessLog;
use crate::observe::events::{Event, Events};
use crate::observe::jsonl::JsonlWriter;
use crate::proxy::{server, Gateway};
use crate::{admin, supervisor};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

/// Run the gateway in the foreground until SIGTERM or SIGINT. Exit 0 after a clean
/// shutdown, 1 when it cannot start.
pub fn run(cfg: Config) -> ExitCode {
    run_with(cfg, false)
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
    run_with(crate::config::demo(data_dir, listen, admin, &exe), true)
}

fn run_with(cfg: Config, demo: bool) -> ExitCode {
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
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logs = cfg.gateway.data_dir.join("logs");
    let access = if cfg.gateway.access_log {
        match JsonlWriter::open(&logs.join("access.jsonl")) {
            Ok(w) => Some(w),
            Err(e) => return fail(&e),
        }
    } else {
        None
    };
    let events_log = match JsonlWriter::open(&logs.join("events.jsonl")) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let result = rt.block_on(serve(&cfg, access.as_ref(), &events_log, demo));
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
    access: Option<&JsonlWriter>,
    events_log: &JsonlWriter,
    demo: bool,
) -> std::io::Result<()> {
    let access = access
        .map(|w| AccessLog::new(w.sender()))
        .unwrap_or_default();
    let events = Events::new(Some(events_log.sender()));
    let built = Gateway::from_config(cfg, access, &events)?;
    let gw = Arc::new(built.gateway);
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
    let listeners = server::bind(&cfg.gateway.listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    admin::write_admin_file(data_dir, admin_addr)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for c in built.checks {
        tasks.push(tokio::spawn(crate::upstream::health::run(
            c.pool,
            c.health,
            stop_rx.clone(),
        )));
    }
    let (supervisor, supervisor_task) = supervisor::start(built.apps, events.clone(), data_dir);
    let admin_state = Arc::new(admin::AdminState {
        token,
        supervisor: Some(supervisor.clone()),
        events: events.clone(),
        started: std::time::Instant::now(),
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx.clone()));
    events.emit(Event::new("gateway_started", "healgate").field("pid", std::process::id()));
    let serving = tokio::spawn(server::serve(
        gw,
        listeners_announced(listeners, admin_addr, demo.then_some(data_dir.as_path()))?,
        cfg.gateway.timeouts.clone(),
        cfg.gateway.shutdown_grace,
        stop_rx,
    ));
    let signal = wait_for_signal().await;
    tracing::info!("{signal}: shutting down");
    // Stop accepting and let in-flight requests finish, then stop the instances.
    let _ = stop_tx.send(true);
    let _ = serving.await;
    match supervisor
        .send(supervisor::control::Command::Shutdown)
        .await
    {
        Ok(m) => tracing::info!("{m}"),
        Err(e) => tracing::warn!("stopping instances: {e}"),
    }
    let _ = supervisor_task.await;
    for t in tasks {
        t.abort();
    }
    let _ = admin_task.await;
    admin::remove_admin_file(data_dir);
    events.emit(Event::new("gateway_stopped", "healgate").field("signal", signal));
    Ok(())
}

/// Print where the gateway listens (tests and scripts read these lines).
fn listeners_announced(
    listeners: Vec<tokio::net::TcpListener>,
    admin: std::net::SocketAddr,
    demo_data: Option<&std::path::Path>,
) -> std::io::Result<Vec<tokio::net::TcpListener>> {
    let mut out = std::io::stdout().lock();
    for l in &listeners {
        let _ = writeln!(
            out,
            "healgate: proxy listening on http://{}",
            l.local_addr()?
        );
    }
    let _ = writeln!(out, "healgate: admin listening on http://{admin}");
    if let (Some(data), Some(first)) = (demo_data, listeners.first()) {
        let url = format!("http://{}", first.local_addr()?);
        let _ = writeln!(
            out,
            "\nhealgate demo: 3 instances of the built-in demo app behind {url}\n\
             try:\n\
             \x20 curl {url}/                     hello from one instance (run it a few times)\n\
             \x20 curl {url}/slow?ms=2000         a slow request\n\
             \x20 curl -i {url}/crash             an instance crashes: a truthful 502, and it is restarted\n\
             \x20 curl -i {url}/status/503        the app's own 503 passes through untouched\n\
             \x20 curl -H 'Accept: application/json' -H 'Accept-Language: fr' {url}/bad\n\
             \x20 healgate status                   apps, instances, recent events\n\
             \x20 healgate restart demo             a rolling restart without a dropped request\n\
             admin API: http://{admin}/api/v1/status (token in {token})\n\
             logs: {logs}/  (access.jsonl, events.jsonl, apps/)\n\
             Ctrl-C stops the gateway and every instance.",
            token = data.join("admin.token").display(),
            logs = data.join("logs").display(),
        );
    }
    let _ = out.flush();
    Ok(listeners)
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn fail(e: &std::io::Error) -> ExitCode {
    eprintln!("healgate: {e}");
    ExitCode::FAILURE
}

/// Human-readable logs on stderr; `HEALGATE_LOG` (e.g. `debug`, `healgate=trace`) sets the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEALGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
