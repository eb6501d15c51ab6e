//! An instance's exit: a process stopped on purpose, or a crash with its event,
//! the restart backoff and crash-loop detection.

use super::app::{Actor, Msg, StartFailure};
use super::control::ControlError;
use super::instance::{
    InstanceState, Proc, BACKOFF_MAX, BACKOFF_MIN, CRASH_LOOP_AFTER, FAST_EXIT, RECOVERED,
};
use super::output::explain;
use super::process::{self, Ports};
use crate::observe::events::Event;
use crate::upstream::ExitNotice;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Stderr lines in an `instance_exited` event (the last ones).
const STDERR_IN_EVENT: usize = 10;

/// How a process ended.
#[derive(Debug)]
pub(super) enum Ended {
    Status(ExitStatus),
    SpawnFailed(String),
}

impl Actor {
    pub(super) fn exited(&mut self, n: u32, gen: u64, how: Ended) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        let app = self.app.name.clone();
        // Stragglers of the process group (children of the app) go with it.
        let id = slot.id.clone();
        if let Some(i) = slot.retiring.iter().position(|p| p.gen == gen) {
            let p = slot.retiring.remove(i);
            finish_proc(&p, &self.ports);
            p.peer.mark_exited(ExitNotice {
                reason: format!("{id} (pid {}) was stopped", p.pid.unwrap_or(0)),
                self_inflicted: false,
                inflight: 0,
            });
            self.events.emit(Event::InstanceStopped {
                app,
                instance: id,
                pid: p.pid.unwrap_or(0),
                uptime_s: round1(p.started.elapsed().as_secs_f64()),
                exit: describe_end(&how),
            });
            self.drop_removed(n);
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (p, _) = slot.replacement.take().expect("checked");
            finish_proc(&p, &self.ports);
            let why = exit_reason(&id, &p, &how);
            self.failed_start = Some(StartFailure {
                instance: id.clone(),
                pid: p.pid.unwrap_or(0),
                reason: why.clone(),
                error_line: explain(&p.tail.lines()).map(|e| e.line),
            });
            self.events.emit(Event::RecycleFailed {
                app,
                instance: id.clone(),
                pid: p.pid.unwrap_or(0),
                reason: format!("the replacement exited before it was ready: {why}; the old instance keeps serving"),
            });
            self.finish_recycle(
                n,
                Err(ControlError::Failed(format!(
                    "{id}: the replacement exited before it was ready: {why}"
                ))),
            );
            return;
        }
        if slot.current.as_ref().is_none_or(|p| p.gen != gen) {
            return;
        }
        let p = slot.current.take().expect("checked");
        finish_proc(&p, &self.ports);
        let uptime = p.started.elapsed();
        let reason = exit_reason(&id, &p, &how);
        let self_inflicted = !matches!(&how, Ended::Status(s) if matches!(s.signal(), Some(libc::SIGKILL) | Some(libc::SIGTERM) | Some(libc::SIGINT)));
        p.peer.mark_exited(ExitNotice {
            reason: reason.clone(),
            self_inflicted,
            inflight: 0,
        });
        if p.state == InstanceState::Draining {
            self.events.emit(Event::InstanceStopped {
                app,
                instance: id,
                pid: p.pid.unwrap_or(0),
                uptime_s: round1(uptime.as_secs_f64()),
                exit: describe_end(&how),
            });
            self.publish();
            self.drop_removed(n);
            return;
        }
        let (code, signal, error) = match &how {
            Ended::Status(s) => (s.code(), s.signal(), None),
            Ended::SpawnFailed(e) => (None, None, Some(e.clone())),
        };
        let lines = p.tail.lines();
        let explained = explain(&lines);
        let stderr = lines[lines.len().saturating_sub(STDERR_IN_EVENT)..].to_vec();
        let error_context = explained
            .as_ref()
            .map(|e| e.context(&lines).to_vec())
            .unwrap_or_default();
        self.events.emit(Event::InstanceExited {
            app: app.clone(),
            instance: id.clone(),
            pid: p.pid.unwrap_or(0),
            uptime_s: round1(uptime.as_secs_f64()),
            reason: reason.clone(),
            code,
            signal,
            signal_name: signal.map(process::signal_name),
            error,
            stderr,
            error_line: explained.map(|e| e.line),
            error_context,
        });
        slot.last_exit = Some(reason.clone());
        slot.resting = InstanceState::Crashed;
        // A recycle in progress: its replacement takes over when ready.
        if let Some((r, why)) = slot.replacement.take() {
            slot.current = Some(r);
            self.publish();
            let _ = why;
            return;
        }
        // A replacement that had taken over from a crashed process: its recycle failed.
        let waited = self.recycle_waiters.contains_key(&n);
        if waited {
            self.failed_start = Some(StartFailure {
                instance: id.clone(),
                pid: p.pid.unwrap_or(0),
                reason: reason.clone(),
                error_line: explain(&lines).map(|e| e.line),
            });
            self.finish_recycle(n, Err(ControlError::Failed(reason.clone())));
        }
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        if self.shutdown.is_some() || slot.removing {
            self.publish();
            self.drop_removed(n);
            return;
        }
        // A process that served a while recovered the slot: the backoff starts over.
        if p.served_since.is_some_and(|t| t.elapsed() >= RECOVERED) {
            slot.attempt = 0;
        }
        slot.fast_exits = if uptime < FAST_EXIT {
            slot.fast_exits + 1
        } else {
            0
        };
        slot.attempt += 1;
        slot.restarts += 1;
        slot.back_off();
        let delay = BACKOFF_MIN
            .saturating_mul(1 << (slot.attempt - 1).min(10))
            .min(BACKOFF_MAX);
        if slot.fast_exits == CRASH_LOOP_AFTER {
            self.events.emit(Event::CrashLoop {
                app: app.clone(),
                instance: id.clone(),
                fast_exits: slot.fast_exits,
                reason: reason.clone(),
            });
        }
        self.events.emit(Event::InstanceRestarting {
            app,
            instance: id,
            attempt: slot.attempt,
            delay_ms: delay.as_millis() as u64,
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::RestartDue { slot: n });
        });
        self.publish();
    }
}

/// A process is gone: kill what is left of its group, free its port, stop its checks.
pub(super) fn finish_proc(p: &Proc, ports: &Ports) {
    if let Some(pid) = p.pid {
        process::signal_group(pid, process::Signal::KILL);
    }
    let _ = p.cancel.send(true);
    if p.port != 0 {
        ports.release(p.port);
    }
}

pub(super) fn describe_end(how: &Ended) -> String {
    match how {
        Ended::Status(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig} ({})", process::signal_name(sig)),
            _ => "ended".into(),
        },
        Ended::SpawnFailed(e) => e.clone(),
    }
}

/// `web#2 (pid 4242) exited with code 1 after 0.3s: ModuleNotFoundError: ...`: the
/// stderr line that explains the exit (`output::explain`), redacted.
pub(super) fn exit_reason(id: &str, p: &Proc, how: &Ended) -> String {
    let mut s = format!(
        "{id} (pid {}) {} after {:.1}s",
        p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
        describe_end(how),
        p.started.elapsed().as_secs_f64()
    );
    if let Some(why) = &p.failed_start {
        s.push_str(&format!(" ({why})"));
    }
    if let Some(e) = explain(&p.tail.lines()) {
        s.push_str(": ");
        s.push_str(&e.line);
    }
    s
}

pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
