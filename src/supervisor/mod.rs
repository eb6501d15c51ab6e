//! The supervisor: runs every `[[app]]`'s instances, restarts the ones that exit,
//! recycles with overlap, and publishes ready instances into the app's pool.
//!
//! [`Supervisor`] routes commands (from the gateway's one control channel,
//! [`control`]) to one actor task per app (`app.rs`), which owns all of that app's
//! state; everything that takes time (starting, readiness, health checks, draining)
//! runs in small tasks that report back to the actor as messages. The proxy only
//! sees the pool: the supervisor publishes peers into it and never the reverse.
//!
//! | file | concern |
//! | --- | --- |
//! | `app.rs` | the actor: its state, message loop, command routing, reloaded config |
//! | `instance.rs` | `Slot`, `Proc`, [`control::InstanceState`]; start, readiness, health |
//! | `crash.rs` | exits: stopped on purpose, or a crash with backoff and crash-loop detection |
//! | `recycle.rs` | overlapping recycles, rolling restarts, a reload's roll and its rollback, retiring (drain, TERM, KILL) |
//! | `revision.rs` | an app's revision: what its processes start with, named by a hash |
//! | `scale.rs` | manual scale and autoscale |
//! | `heal.rs` | AutoHeal firing and its actions (the triggers are in `autoheal.rs`) |
//! | `status.rs` | the status snapshot admin and CLI read |
//! | `process.rs`, `sampler.rs`, `output.rs` | child processes, `/proc` measurements, app output |
//!
//! Instance states: `starting → ready ⇄ unhealthy → draining → stopped`, and
//! `crashed → backoff → starting` (`crash_loop` after three fast exits in a row).
//! Slot ids (`web#1`, `web#2` ...) are stable across restarts and recycles.

mod app;
pub mod autoheal;
pub mod control;
mod crash;
mod heal;
mod instance;
pub mod output;
pub mod process;
mod recycle;
mod revision;
pub mod sampler;
mod scale;
mod status;
pub use status::{incident_conditions, metrics_snapshot};
pub mod watchdog;

use crate::config::App;
use crate::observe::events::Events;
use crate::upstream::Pool;
use app::{Msg, Spawner};
use control::{Command, ControlError, Envelope, Outcome};
use output::Output;
use process::Ports;
use status::app_status;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The running supervisor: one actor per app, and the routing of commands to them.
/// Owned by the gateway process, which receives the one control channel and hands
/// every command but `Reload` to [`Supervisor::dispatch`].
pub struct Supervisor {
    ctx: Spawner,
    actors: HashMap<String, mpsc::UnboundedSender<Msg>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Start supervising `apps` (each with the pool its routes point at).
pub fn start(apps: Vec<(App, Arc<Pool>)>, events: Events, data_dir: &Path) -> Supervisor {
    let mut sup = Supervisor {
        ctx: Spawner {
            output: Output::start().with_stream(events.monitor().logs.clone()),
            ports: Arc::new(Ports::default()),
            events,
            data_dir: data_dir.to_owned(),
            views: Arc::default(),
        },
        actors: HashMap::new(),
        tasks: Vec::new(),
    };
    for (app, pool) in apps {
        sup.spawn(app, pool);
    }
    sup
}

impl Supervisor {
    fn spawn(&mut self, app: App, pool: Arc<Pool>) {
        let name = app.name.clone();
        let (tx, task) = self.ctx.spawn(app, pool);
        self.actors.insert(name, tx);
        self.tasks.push(task);
    }

    /// A reader of every app's status snapshot (for [`control::Handle`]).
    pub fn status(&self) -> Arc<dyn Fn() -> Vec<control::AppStatus> + Send + Sync> {
        let views = self.ctx.views.clone();
        Arc::new(move || {
            views
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(_, v, pool)| app_status(&v.read().unwrap_or_else(|p| p.into_inner()), pool))
                .collect()
        })
    }

    /// Route one command to its app's actor (or start, reconfigure or remove an app).
    /// Returns at once; the reply follows when the command is done.
    pub fn dispatch(&mut self, Envelope { command, reply }: Envelope) {
        let app = match command {
            Command::Configure { app, pool, rolled } => {
                match self.actors.get(&app.name) {
                    Some(tx) => {
                        self.ctx.set_pool(&app.name, &pool);
                        if let Err(mpsc::error::SendError(Msg::Update(app, _, r, _))) =
                            tx.send(Msg::Update(app, pool, reply, rolled))
                        {
                            let _ = r.send(Err(stopped(&app.name)));
                        }
                    }
                    None => {
                        let name = app.name.clone();
                        self.spawn(*app, pool);
                        let _ = reply.send(Ok(format!("{name}: started").into()));
                    }
                }
                return;
            }
            Command::Remove { app } => {
                match self.actors.remove(&app) {
                    Some(tx) => {
                        let (r, w) = oneshot::channel();
                        let _ = tx.send(Msg::Command(Command::Shutdown, r));
                        let views = self.ctx.views.clone();
                        tokio::spawn(async move {
                            let outcome = w
                                .await
                                .unwrap_or_else(|_| Ok(format!("{app}: stopped").into()));
                            views
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .retain(|(n, _, _)| *n != app);
                            let _ = reply.send(outcome);
                        });
                    }
                    None => {
                        let _ = reply.send(Err(ControlError::UnknownApp(app)));
                    }
                }
                return;
            }
            Command::Reload | Command::Shutdown => {
                let _ = reply.send(Err(ControlError::Refused(format!(
                    "{command:?} is handled by the gateway, not the supervisor"
                ))));
                return;
            }
            Command::Restart { ref app } | Command::Scale { ref app, .. } => app.clone(),
            Command::Recycle { ref instance, .. } => instance.app.clone(),
        };
        match self.actors.get(&app) {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Msg::Command(_, r))) =
                    tx.send(Msg::Command(command, reply))
                {
                    let _ = r.send(Err(stopped(&app)));
                }
            }
            None => {
                let _ = reply.send(Err(ControlError::UnknownApp(app)));
            }
        }
    }

    /// Stop every instance of every app (drained, then signalled) and wait for it.
    pub async fn shutdown(self) -> Outcome {
        let waits: Vec<_> = self
            .actors
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
        self.ctx.output.flush();
        for t in self.tasks {
            let _ = t.await;
        }
        Outcome::from("all instances stopped".to_owned())
    }
}

fn stopped(app: &str) -> ControlError {
    ControlError::Stopped(format!("app {app} is stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send `command` through `dispatch` and wait for its reply.
    async fn ask(sup: &mut Supervisor, command: Command) -> control::Reply {
        let (reply, answer) = oneshot::channel();
        sup.dispatch(Envelope { command, reply });
        answer.await.expect("a reply")
    }

    #[tokio::test]
    async fn commands_for_apps_that_do_not_run_here_are_refused_by_kind() {
        let dir = std::env::temp_dir().join(format!("healgate-sup-unit-{}", std::process::id()));
        let mut sup = start(Vec::new(), Events::new(None), &dir);
        let restart = Command::Restart { app: "web".into() };
        assert_eq!(
            ask(&mut sup, restart).await,
            Err(ControlError::UnknownApp("web".into()))
        );
        let recycle = Command::Recycle {
            instance: control::InstanceId::parse("api#2").unwrap(),
            reason: "test".into(),
        };
        assert_eq!(
            ask(&mut sup, recycle).await,
            Err(ControlError::UnknownApp("api".into()))
        );
        let remove = Command::Remove { app: "jobs".into() };
        assert_eq!(
            ask(&mut sup, remove).await,
            Err(ControlError::UnknownApp("jobs".into()))
        );
        // Reload belongs to the gateway process, not to the supervisor.
        let reload = ask(&mut sup, Command::Reload).await;
        assert!(
            matches!(reload, Err(ControlError::Refused(_))),
            "{reload:?}"
        );
        assert!((sup.status())().is_empty());
        assert_eq!(sup.shutdown().await.message, "all instances stopped");
    }
}
