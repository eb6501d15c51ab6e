//! The gateway process: open the logs, build the proxy, bind, serve until a signal,
//! then shut down gracefully and flush every log line.

use crate::config::Config;
use crate::observe::access::AccessLog;
use crate::observe::events::{Event, Events};
use crate::observe::jsonl::JsonlWriter;
use crate::proxy::{server, Gateway};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

/// Run the gateway in the foreground until SIGTERM or SIGINT. Exit 0 after a clean
/// shutdown, 1 when it cannot start.
pub fn run(cfg: Config) -> ExitCode {
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
    let result = rt.block_on(serve(&cfg, access.as_ref(), &events_log));
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
) -> std::io::Result<()> {
    let access = access
        .map(|w| AccessLog::new(w.sender()))
        .unwrap_or_default();
    let events = Events::new(Some(events_log.sender()));
    let (gw, checks) = Gateway::from_config(cfg, access, &events)?;
    let gw = Arc::new(gw);
    let listeners = server::bind(&cfg.gateway.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        for l in &listeners {
            let _ = writeln!(
                out,
                "healgate: proxy listening on http://{}",
                l.local_addr()?
            );
        }
        let _ = out.flush();
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for c in checks {
        tasks.push(tokio::spawn(crate::upstream::health::run(
            c.pool,
            c.health,
            stop_rx.clone(),
        )));
    }
    events.emit(Event::new("gateway_started", "healgate").field("pid", std::process::id()));
    let serving = tokio::spawn(server::serve(
        gw,
        listeners,
        cfg.gateway.timeouts.clone(),
        cfg.gateway.shutdown_grace,
        stop_rx,
    ));
    let signal = wait_for_signal().await;
    tracing::info!("{signal}: shutting down");
    let _ = stop_tx.send(true);
    let _ = serving.await;
    for t in tasks {
        t.abort();
    }
    events.emit(Event::new("gateway_stopped", "healgate").field("signal", signal));
    Ok(())
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
