//! The supervisor: runs every `[[app]]`'s instances, restarts the ones that exit,
//! recycles with overlap, and publishes ready instances into the app's pool.
//!
//! One actor task per app owns all of that app's state; everything that takes time
//! (starting, readiness, health checks, draining) runs in small tasks that report
//! back to the actor as [`Msg`]s. The proxy only sees the pool: the supervisor
//! publishes peers into it and never the reverse.
//!
//! Instance states: `starting → ready → (unhealthy) → draining → stopped`, and
//! `crashed → backoff → starting`. Slot ids (`web#1`, `web#2` ...) are stable across
//! restarts and recycles.

mod app;
pub mod autoheal;
pub mod control;
mod crash;
mod heal;
mod instance;
pub mod output;
pub mod process;
mod recycle;
pub mod sampler;
mod scale;
mod status;

use crate::config::App;
use crate::observe::events::Events;
use crate::upstream::Pool;
use app::{Msg, Spawner};
use control::{Command, Envelope, Handle};
use output::Output;
use process::Ports;
use status::app_status;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Start supervising `apps` (each with the pool its routes point at). Returns the
/// control handle and the supervisor's task.
pub fn start(
    apps: Vec<(App, Arc<Pool>)>,
    events: Events,
    data_dir: &Path,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let ctx = Spawner {
        output: Output::start(),
        ports: Arc::new(Ports::default()),
        events,
        data_dir: data_dir.to_owned(),
        views: Arc::default(),
    };
    let mut actors: HashMap<String, mpsc::UnboundedSender<Msg>> = HashMap::new();
    let mut tasks = Vec::new();
    for (app, pool) in apps {
        let name = app.name.clone();
        let (tx, task) = ctx.spawn(app, pool);
        actors.insert(name, tx);
        tasks.push(task);
    }
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Envelope>();
    let views = ctx.views.clone();
    let router = tokio::spawn(async move {
        while let Some(Envelope { command, reply }) = ctl_rx.recv().await {
            match command {
                Command::Shutdown => {
                    let waits: Vec<_> = actors
                        .values()
                        .filter_map(|tx| {
                            let (r, w) = oneshot::channel();
                            tx.send(Msg::Command(Command::Shutdown, r))
                                .is_ok()
                                .then_some(w)
                        })
                        .collect();
                    for w in waits {
                        let _ = w.await;
                    }
                    ctx.output.flush();
                    let _ = reply.send(Ok("all instances stopped".into()));
                    break;
                }
                Command::Configure { app, pool } => match actors.get(&app.name) {
                    Some(tx) => {
                        ctx.set_pool(&app.name, &pool);
                        if let Err(mpsc::error::SendError(Msg::Update(_, _, r))) =
                            tx.send(Msg::Update(app, pool, reply))
                        {
                            let _ = r.send(Err("the app is stopped".into()));
                        }
                    }
                    None => {
                        let name = app.name.clone();
                        let (tx, task) = ctx.spawn(*app, pool);
                        actors.insert(name.clone(), tx);
                        tasks.push(task);
                        let _ = reply.send(Ok(format!("{name}: started")));
                    }
                },
                Command::Remove { app } => match actors.remove(&app) {
                    Some(tx) => {
                        let (r, w) = oneshot::channel();
                        let _ = tx.send(Msg::Command(Command::Shutdown, r));
                        let views = ctx.views.clone();
                        tokio::spawn(async move {
                            let outcome = w.await.unwrap_or_else(|_| Ok(format!("{app}: stopped")));
                            views
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .retain(|(n, _, _)| *n != app);
                            let _ = reply.send(outcome);
                        });
                    }
                    None => {
                        let _ = reply.send(Err(format!("unknown app {app:?}")));
                    }
                },
                cmd => {
                    let app = match &cmd {
                        Command::Restart { app } | Command::Scale { app, .. } => app.clone(),
                        Command::Recycle { instance, .. } => {
                            instance.split('#').next().unwrap_or("").to_owned()
                        }
                        _ => String::new(),
                    };
                    match actors.get(&app) {
                        Some(tx) => {
                            if let Err(mpsc::error::SendError(Msg::Command(_, r))) =
                                tx.send(Msg::Command(cmd, reply))
                            {
                                let _ = r.send(Err(format!("app {app} is stopped")));
                            }
                        }
                        None => {
                            let _ = reply.send(Err(format!("unknown app {app:?}")));
                        }
                    }
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let status = Arc::new(move || {
        views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, v, pool)| app_status(&v.read().unwrap_or_else(|p| p.into_inner()), pool))
            .collect()
    });
    (Handle::new(ctl_tx, status), router)
}
