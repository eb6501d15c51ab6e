//! One instance: its slot, its process, how it is started, becomes ready and is
//! health-checked.

use super::app::StartFailure;
use super::app::{Actor, Msg};
use super::autoheal;
use super::control::{Command, ControlError, InstanceId};
use super::crash::Ended;
use super::output::{explain, Tail};
use super::process::{self, Spec};
use super::revision::Revision;
use super::sampler::Sample;
use crate::observe::events::Event;
use crate::upstream::health::Streak;
use crate::upstream::stats::PeerStats;
use crate::upstream::{Peer, Pool};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Backoff of the first restart; doubles per fast exit in a row, up to [`BACKOFF_MAX`].
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that served (was ready) this long has recovered: its next exit starts
/// the backoff over at [`BACKOFF_MIN`].
pub(super) const RECOVERED: Duration = Duration::from_secs(10);
/// An exit this soon after start is a fast exit; three in a row is a crash loop.
pub(super) const FAST_EXIT: Duration = Duration::from_secs(10);
pub(super) const CRASH_LOOP_AFTER: u32 = 3;
/// How often readiness is polled while an instance starts.
pub(super) const READY_POLL: Duration = Duration::from_millis(100);
/// After SIGTERM, how long a process may take to exit before SIGKILL (within grace).
pub(super) const TERM_WAIT: Duration = Duration::from_secs(10);

/// Where an instance is in its life (`state` in `healgate status`):
/// `starting → ready ⇄ unhealthy → draining → stopped`, and
/// `crashed → backoff → starting` (`crash_loop` after three fast exits in a row).
/// The first four are a process's (`Proc::state`); the others a slot's while it
/// has no process (`Slot::resting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Started, not yet answering its health path (or port).
    Starting,
    /// Serving.
    Ready,
    /// Serving no requests: its health checks fail.
    Unhealthy,
    /// Stopping on purpose (recycle, scale-in, shutdown): in-flight requests finish.
    Draining,
    /// No process, none wanted.
    Stopped,
    /// Its last process exited by itself and no restart is due.
    Crashed,
    /// Its last process exited by itself; a restart is due after the backoff.
    Backoff,
    /// Like backoff, after three fast exits in a row.
    CrashLoop,
}

impl InstanceState {
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Starting,
        InstanceState::Ready,
        InstanceState::Unhealthy,
        InstanceState::Draining,
        InstanceState::Stopped,
        InstanceState::Crashed,
        InstanceState::Backoff,
        InstanceState::CrashLoop,
    ];

    /// The name in status answers and messages (the serde name too).
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Draining => "draining",
            InstanceState::Stopped => "stopped",
            InstanceState::Crashed => "crashed",
            InstanceState::Backoff => "backoff",
            InstanceState::CrashLoop => "crash_loop",
        }
    }

    /// A process in this state is in the pool (the pool itself skips unhealthy ones).
    pub fn is_serving(self) -> bool {
        matches!(self, InstanceState::Ready | InstanceState::Unhealthy)
    }

    /// A slot in this state waits for its restart.
    pub fn is_backing_off(self) -> bool {
        matches!(self, InstanceState::Backoff | InstanceState::CrashLoop)
    }
}

/// One running process of a slot.
pub(super) struct Proc {
    pub(super) gen: u64,
    pub(super) pid: Option<u32>,
    pub(super) port: u16,
    pub(super) started: Instant,
    pub(super) peer: Arc<Peer>,
    /// Starting, ready, unhealthy or draining.
    pub(super) state: InstanceState,
    pub(super) exited: watch::Receiver<bool>,
    /// Stops its health checks.
    pub(super) cancel: watch::Sender<bool>,
    pub(super) tail: Tail,
    /// Why it did not become ready, when that is why it is being killed.
    pub(super) failed_start: Option<String>,
    /// The last measurement of its process tree.
    pub(super) sample: Option<Sample>,
    /// When it became ready; `None` while it never was.
    pub(super) served_since: Option<Instant>,
    /// What it was started with.
    pub(super) rev: Arc<Revision>,
}

impl Proc {
    /// A process just started (or that failed to start: no pid), not yet ready.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        gen: u64,
        pid: Option<u32>,
        port: u16,
        peer: Arc<Peer>,
        exited: watch::Receiver<bool>,
        cancel: watch::Sender<bool>,
        tail: Tail,
        rev: Arc<Revision>,
    ) -> Proc {
        Proc {
            rev,
            gen,
            pid,
            port,
            started: Instant::now(),
            peer,
            state: InstanceState::Starting,
            exited,
            cancel,
            tail,
            failed_start: None,
            sample: None,
            served_since: None,
        }
    }
}

/// A stable instance id and what runs under it.
pub(super) struct Slot {
    pub(super) id: String,
    pub(super) current: Option<Proc>,
    pub(super) replacement: Option<(Proc, String)>,
    pub(super) retiring: Vec<Proc>,
    pub(super) restarts: u32,
    /// Restarts since the last stable run: sets the backoff.
    pub(super) attempt: u32,
    pub(super) fast_exits: u32,
    pub(super) last_exit: Option<String>,
    pub(super) removing: bool,
    /// The slot's state while it has no process: stopped, crashed, backoff or
    /// crash loop.
    pub(super) resting: InstanceState,
    /// Health checks of the current process in a row.
    pub(super) streak: Streak,
    /// Since when health checks fail (for the `unhealthy` trigger).
    pub(super) failing_since: Option<Instant>,
}

impl Slot {
    /// A new process serves the slot: the health verdicts of the old one are not its.
    pub(super) fn reset_health(&mut self) {
        self.streak = Streak::default();
        self.failing_since = None;
    }

    /// The state `healgate status` shows: the current process's, else the slot's own.
    pub(super) fn state(&self) -> InstanceState {
        match &self.current {
            Some(p) => p.state,
            None => self.resting,
        }
    }

    /// No restart is due any more (a process runs again, or the slot stops): a slot
    /// that was backing off rests as crashed.
    pub(super) fn settle(&mut self) {
        if self.resting.is_backing_off() {
            self.resting = InstanceState::Crashed;
        }
    }

    /// A restart is due after the backoff: a crash loop after enough fast exits.
    pub(super) fn back_off(&mut self) {
        self.resting = if self.fast_exits >= CRASH_LOOP_AFTER {
            InstanceState::CrashLoop
        } else {
            InstanceState::Backoff
        };
    }
}

/// One readiness or health check: GET the path (2xx/3xx), or connect when there is none.
pub(super) async fn check(
    pool: &Pool,
    peer: &Peer,
    path: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let probe = async {
        match path {
            Some(path) => match pool
                .connector
                .probe_get(&peer.id, &peer.target, false, path)
                .await
            {
                Ok(s) if (200..400).contains(&s) => Ok(()),
                Ok(s) => Err(format!("GET {path} answered {s}")),
                Err(e) => Err(format!("GET {path}: {}", e.context)),
            },
            None => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], peer.target.port()));
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("connect {addr}: {e}"))
            }
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

impl Actor {
    fn log_file(&self, id: &str) -> Arc<PathBuf> {
        Arc::new(self.logs_dir.join(format!("{id}.log")))
    }

    /// Start a process of revision `rev` for slot `n`: a free port, the command,
    /// output capture, an exit watcher and a readiness poller, all reporting back to
    /// the actor.
    pub(super) async fn spawn_proc(&mut self, n: u32, rev: Arc<Revision>) -> Proc {
        self.next_gen += 1;
        let gen = self.next_gen;
        let id = format!("{}#{n}", self.app.name);
        let file = self.log_file(&id);
        let tail = Tail::default();
        let (exited_tx, exited) = watch::channel(false);
        let (cancel, _) = watch::channel(false);
        let port = match self.ports.take() {
            Ok(p) => p,
            Err(e) => {
                let _ = exited_tx.send(true);
                let _ = self.tx.send(Msg::Exited {
                    slot: n,
                    gen,
                    how: Ended::SpawnFailed(format!("no port: {e}")),
                });
                return self.dead_proc(gen, &id, 0, exited, cancel, tail, rev);
            }
        };
        let port_s = port.to_string();
        let argv: Vec<String> = rev
            .command
            .iter()
            .map(|a| a.replace("{port}", &port_s))
            .collect();
        let mut env = rev.env.clone();
        env.push(("PORT".into(), port_s.clone()));
        env.push(("HEALGATE_INSTANCE".into(), id.clone()));
        let spec = Spec {
            argv,
            cwd: rev.cwd.clone(),
            env,
        };
        let child = process::spawn(spec).await;
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                self.output.note(&file, &format!("could not start: {e}"));
                let _ = exited_tx.send(true);
                let _ = self.tx.send(Msg::Exited {
                    slot: n,
                    gen,
                    how: Ended::SpawnFailed(e.to_string()),
                });
                return self.dead_proc(gen, &id, port, exited, cancel, tail, rev);
            }
        };
        let pid = child.id();
        self.output.note(
            &file,
            &format!("started pid {} on port {port}", pid.unwrap_or(0)),
        );
        let mut captures = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (o, f) = (self.output.clone(), file.clone());
            let who = (Arc::from(self.app.name.as_str()), Arc::from(id.as_str()));
            captures.push(tokio::spawn(async move {
                o.capture(out, "stdout", f, None, who).await
            }));
        }
        if let Some(err) = child.stderr.take() {
            let (o, f, t) = (self.output.clone(), file.clone(), tail.clone());
            let who = (Arc::from(self.app.name.as_str()), Arc::from(id.as_str()));
            captures.push(tokio::spawn(async move {
                o.capture(err, "stderr", f, Some(t), who).await
            }));
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the last lines (the traceback) arrive before the exit is reported.
            for c in captures {
                let _ = tokio::time::timeout(Duration::from_millis(500), c).await;
            }
            let _ = exited_tx.send(true);
            let how = match status {
                Ok(s) => Ended::Status(s),
                Err(e) => Ended::SpawnFailed(format!("waiting for the process: {e}")),
            };
            let _ = tx.send(Msg::Exited { slot: n, gen, how });
        });
        self.events.emit(Event::InstanceStarted {
            app: self.app.name.clone(),
            instance: id.clone(),
            pid: pid.unwrap_or(0),
            port,
        });
        let stats = PeerStats::with_windows(autoheal::windows(self.app.autoheal.as_ref()));
        let peer = Arc::new(Peer::instance(&id, port, stats));
        self.watch_ready(n, gen, &peer, exited.clone(), &rev);
        Proc::new(gen, pid, port, peer, exited, cancel, tail, rev)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn dead_proc(
        &self,
        gen: u64,
        id: &str,
        port: u16,
        exited: watch::Receiver<bool>,
        cancel: watch::Sender<bool>,
        tail: Tail,
        rev: Arc<Revision>,
    ) -> Proc {
        let peer = Arc::new(Peer::instance(id, port, PeerStats::default()));
        Proc::new(gen, None, port, peer, exited, cancel, tail, rev)
    }

    /// Poll until the instance answers its health path (2xx/3xx), or accepts on its
    /// port when there is none, within its revision's `startup_timeout`.
    pub(super) fn watch_ready(
        &self,
        n: u32,
        gen: u64,
        peer: &Arc<Peer>,
        exited: watch::Receiver<bool>,
        rev: &Revision,
    ) {
        let tx = self.tx.clone();
        let pool = self.pool.clone();
        let peer = peer.clone();
        let health = rev.health.clone();
        let limit = rev.startup_timeout;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = String::from("no check yet");
            while start.elapsed() < limit {
                if *exited.borrow() {
                    return;
                }
                match check(&pool, &peer, health.path.as_deref(), health.timeout).await {
                    Ok(()) => {
                        let _ = tx.send(Msg::Ready {
                            slot: n,
                            gen,
                            took: start.elapsed(),
                        });
                        return;
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(READY_POLL).await;
            }
            if !*exited.borrow() {
                let why = format!("not ready within {limit:?} (last check: {last})");
                let _ = tx.send(Msg::NotReady { slot: n, gen, why });
            }
        });
    }

    /// Health checks of a ready instance until it stops or exits.
    pub(super) fn watch_health(&self, n: u32, p: &Proc) {
        let tx = self.tx.clone();
        let pool = self.pool.clone();
        let peer = p.peer.clone();
        let health = p.rev.health.clone();
        let gen = p.gen;
        let mut exited = p.exited.clone();
        let mut cancel = p.cancel.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = exited.changed() => return,
                    _ = cancel.changed() => return,
                }
                let ok = check(&pool, &peer, health.path.as_deref(), health.timeout).await;
                if tx.send(Msg::Health { slot: n, gen, ok }).is_err() {
                    return;
                }
            }
        });
    }

    /// Start slot `n`'s process with the app's stable revision (the last one that got
    /// ready): at start, after a crash, on scale-out.
    pub(super) async fn start_current(&mut self, n: u32) {
        let p = self.spawn_proc(n, self.stable.clone()).await;
        if let Some(s) = self.slots.get_mut(&n) {
            s.settle();
            s.reset_health();
            s.current = Some(p);
        }
    }

    pub(super) fn ready(&mut self, n: u32, gen: u64, took: Duration) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        if slot.current.as_ref().is_some_and(|p| p.gen == gen) {
            let p = slot.current.as_mut().expect("checked");
            p.state = InstanceState::Ready;
            p.served_since = Some(Instant::now());
            let (pid, rev) = (p.pid.unwrap_or(0), p.rev.id.clone());
            let id = slot.id.clone();
            self.serve_current(n, took);
            // A replacement that took over when the process it replaced crashed: its
            // recycle is done now.
            self.finish_recycle(n, Ok(format!("{id} recycled: pid {pid}").into()));
            if self.rolling.is_none() && rev != self.stable.id {
                // Started on a revision the app no longer runs (during a roll that
                // ended since): brought onto the stable one, with overlap.
                let (r, _) = oneshot::channel();
                let _ = self.tx.send(Msg::Command(
                    Command::Recycle {
                        instance: InstanceId {
                            app: self.app.name.clone(),
                            slot: n,
                        },
                        reason: format!("it runs revision {rev}, the app runs {}", self.stable.id),
                    },
                    r,
                ));
            }
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (mut new, reason) = slot.replacement.take().expect("checked");
            new.state = InstanceState::Ready;
            new.served_since = Some(Instant::now());
            let new_pid = new.pid.unwrap_or(0);
            let old = slot.current.replace(new);
            slot.reset_health();
            let id = slot.id.clone();
            // Traffic moves to the new process before the old one drains.
            self.serve_current(n, took);
            let old_pid = old.as_ref().and_then(|o| o.pid).unwrap_or(0);
            if let Some(old) = old {
                self.retire(n, old);
            }
            self.events.emit(Event::InstanceRecycled {
                app: self.app.name.clone(),
                instance: id.clone(),
                pid: new_pid,
                old_pid,
                reason,
            });
            let msg = format!("{id} recycled: pid {old_pid} → pid {new_pid}");
            self.finish_recycle(n, Ok(msg.into()));
        }
    }

    /// Slot `n`'s current process just became ready: say so, watch its health, and
    /// put it into the pool.
    pub(super) fn serve_current(&self, n: u32, took: Duration) {
        let slot = &self.slots[&n];
        let p = slot.current.as_ref().expect("a ready process");
        self.events.emit(Event::InstanceReady {
            app: self.app.name.clone(),
            instance: slot.id.clone(),
            pid: p.pid.unwrap_or(0),
            port: p.port,
            startup_ms: took.as_millis() as u64,
        });
        self.watch_health(n, p);
        self.publish();
    }

    pub(super) fn not_ready(&mut self, n: u32, gen: u64, why: String) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        if let Some(p) = slot.current.as_mut().filter(|p| p.gen == gen) {
            // Killed now; the exit is handled (and backed off) like a crash.
            p.failed_start = Some(why);
            if let Some(pid) = p.pid {
                process::signal_group(pid, process::Signal::KILL);
            }
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (p, _) = slot.replacement.take().expect("checked");
            let id = slot.id.clone();
            let error_line = explain(&p.tail.lines()).map(|e| e.line);
            let mut reason = format!("{id} (pid {}) was {why}", p.pid.unwrap_or(0));
            if let Some(line) = &error_line {
                reason.push_str(&format!("; its last output: {line}"));
            }
            self.failed_start = Some(StartFailure {
                instance: id.clone(),
                pid: p.pid.unwrap_or(0),
                reason,
                error_line,
            });
            self.events.emit(Event::RecycleFailed {
                app: self.app.name.clone(),
                instance: id.clone(),
                pid: p.pid.unwrap_or(0),
                reason: format!("the replacement {why}; the old instance keeps serving"),
            });
            if let Some(pid) = p.pid {
                process::signal_group(pid, process::Signal::KILL);
            }
            slot.retiring.push(Proc {
                state: InstanceState::Draining,
                ..p
            });
            self.finish_recycle(
                n,
                Err(ControlError::Failed(format!(
                    "{id}: the replacement {why}; the old instance keeps serving"
                ))),
            );
        }
    }

    pub(super) async fn health(&mut self, n: u32, gen: u64, ok: Result<(), String>) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        let Some(p) = slot
            .current
            .as_mut()
            .filter(|p| p.gen == gen && p.state.is_serving())
        else {
            return;
        };
        let h = p.rev.health.clone();
        let healthy = p.state == InstanceState::Ready;
        self.pool.health_checked(&p.peer, &ok);
        let verdict = slot.streak.record(ok.is_ok(), healthy, &h);
        if let Some(now_healthy) = verdict {
            p.state = if now_healthy {
                InstanceState::Ready
            } else {
                InstanceState::Unhealthy
            };
        }
        let peer = p.peer.clone();
        match ok {
            Ok(()) => {
                slot.failing_since = None;
                if verdict == Some(true) {
                    self.pool.set_health(&peer, true, "health check passed");
                }
            }
            Err(why) => {
                slot.failing_since.get_or_insert_with(Instant::now);
                if verdict == Some(false) {
                    self.pool.set_health(&peer, false, &why);
                }
                // Still failing after three times as long: replace it.
                if slot.streak.fails == h.unhealthy_after * 3 && slot.replacement.is_none() {
                    let (r, _w) = oneshot::channel();
                    let rev = self.stable.clone();
                    self.recycle(n, format!("unhealthy: {why}"), rev, r).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_serde_names() {
        for s in InstanceState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: InstanceState = serde_json::from_value(s.as_str().into()).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(InstanceState::CrashLoop.as_str(), "crash_loop");
    }
}
