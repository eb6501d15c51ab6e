//! Overlapping recycles, rolling restarts, and retiring a process (drain, SIGTERM,
//! SIGKILL).

use super::app::{Actor, Msg, ReplyTo};
use super::control::ControlError;
use super::control::Reply;
use super::instance::{InstanceState, Proc, TERM_WAIT};
use super::process;
use crate::observe::events::Event;
use std::time::Duration;
use tokio::sync::oneshot;

impl Actor {
    /// The next step of a rolling restart: recycle the next instance, or report.
    pub(super) async fn roll_on(&mut self, outcome: Reply) {
        let Some((mut order, reply, total)) = self.rolling.take() else {
            return;
        };
        if let Err(e) = outcome {
            let _ = reply.send(Err(ControlError::Failed(format!(
                "restart of {} stopped: {e}",
                self.app.name
            ))));
            return;
        }
        if order.is_empty() {
            let _ = reply.send(Ok(format!(
                "{}: {total} instances restarted",
                self.app.name
            )
            .into()));
            return;
        }
        let n = order.remove(0);
        self.rolling = Some((order, reply, total));
        let (r, w) = oneshot::channel();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let outcome = w
                .await
                .unwrap_or_else(|_| Err(ControlError::Failed("recycle abandoned".into())));
            let _ = tx.send(Msg::RecycleDone { outcome });
        });
        self.recycle(n, "restart".into(), r).await;
    }

    /// Overlapping recycle: start the replacement; when it is ready, move traffic,
    /// then drain and stop the old process (see `ready`).
    pub(super) async fn recycle(&mut self, n: u32, reason: String, reply: ReplyTo) {
        let instance = format!("{}#{n}", self.app.name);
        if self.slots.get(&n).is_none_or(|s| s.removing) {
            let _ = reply.send(Err(ControlError::UnknownInstance(instance)));
            return;
        }
        let slot = &self.slots[&n];
        if slot.replacement.is_some() {
            self.recycle_waiters.entry(n).or_default().push(reply);
            return;
        }
        if !slot.current.as_ref().is_some_and(|p| p.state.is_serving()) {
            let state = slot.state().as_str();
            let _ = reply.send(Err(ControlError::Refused(format!(
                "{instance} is {state}, not ready: nothing to recycle"
            ))));
            return;
        }
        self.events.emit(Event::InstanceRecycling {
            app: self.app.name.clone(),
            instance,
            pid: slot.current.as_ref().and_then(|p| p.pid).unwrap_or(0),
            reason: reason.clone(),
        });
        let p = self.spawn_proc(n).await;
        let slot = self.slots.get_mut(&n).expect("checked");
        slot.replacement = Some((p, reason));
        slot.restarts += 1;
        self.recycle_waiters.entry(n).or_default().push(reply);
    }

    pub(super) fn finish_recycle(&mut self, n: u32, outcome: Reply) {
        for w in self.recycle_waiters.remove(&n).unwrap_or_default() {
            let _ = w.send(outcome.clone());
        }
    }

    /// Retire every process of slot `n` (current and replacement); no restart follows.
    pub(super) fn stop_slot(&mut self, n: u32) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        slot.settle();
        let procs: Vec<Proc> = slot
            .current
            .take()
            .into_iter()
            .chain(slot.replacement.take().map(|(p, _)| p))
            .collect();
        for p in procs {
            self.retire(n, p);
        }
    }

    /// Take `p` out of rotation, let its in-flight requests finish (up to
    /// `shutdown_grace`), then SIGTERM its group, then SIGKILL.
    pub(super) fn retire(&mut self, n: u32, mut p: Proc) {
        p.state = InstanceState::Draining;
        let _ = p.cancel.send(true);
        p.peer.set_draining(true);
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        self.events.emit(Event::InstanceDraining {
            app: self.app.name.clone(),
            instance: slot.id.clone(),
            pid: p.pid.unwrap_or(0),
            inflight: p.peer.outstanding(),
        });
        let grace = self.app.shutdown_grace;
        let (peer, pid, mut exited) = (p.peer.clone(), p.pid, p.exited.clone());
        slot.retiring.push(p);
        tokio::spawn(async move {
            let Some(pid) = pid else { return };
            let deadline = tokio::time::Instant::now() + grace;
            while peer.outstanding() > 0
                && tokio::time::Instant::now() < deadline
                && !*exited.borrow()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if *exited.borrow() {
                return;
            }
            process::signal_group(pid, process::Signal::TERM);
            let wait = TERM_WAIT.min(grace.max(Duration::from_secs(1)));
            let _ = tokio::time::timeout(wait, exited.wait_for(|e| *e)).await;
            if !*exited.borrow() {
                process::signal_group(pid, process::Signal::KILL);
            }
        });
        self.publish();
    }
}
