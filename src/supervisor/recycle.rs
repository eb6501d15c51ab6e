//! Overlapping recycles, rolling restarts and reload rolls (with their rollback), and
//! retiring a process (drain, SIGTERM, SIGKILL).

use super::app::{Actor, Msg, ReplyTo};
use super::control::ControlError;
use super::control::{Outcome, Reply};
use super::instance::{InstanceState, Proc, TERM_WAIT};
use super::process;
use super::revision::Revision;
use crate::observe::events::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a roll is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RollKind {
    /// `healgate restart`: every serving instance gets a fresh process of the same
    /// (stable) revision.
    Restart,
    /// A reload's new revision: every instance not on it is replaced by one that is.
    Reload,
}

/// A roll under way: one instance at a time, each replacement ready before the
/// process it replaces drains. When a step fails, the roll stops and brings the
/// instances it already replaced back to the stable revision (no mixed revisions).
pub(super) struct Roll {
    pub(super) kind: RollKind,
    /// The revision it brings instances to (the stable one once rolling back).
    pub(super) to: Arc<Revision>,
    /// Slots still to look at, in order.
    pub(super) order: Vec<u32>,
    /// The slot whose recycle is under way.
    pub(super) step: Option<u32>,
    /// Instances replaced so far (by this roll, before any failure).
    pub(super) replaced: Vec<String>,
    /// A reload roll looks once more, at the end, for instances that started on the
    /// old revision while it ran.
    pub(super) swept: bool,
    pub(super) reply: ReplyTo,
    /// Set when a step failed: the message the reply will carry.
    pub(super) failed: Option<String>,
    /// Instances brought back to the stable revision after the failure, and the
    /// rollback steps that failed too.
    pub(super) rolled_back: Vec<String>,
    pub(super) rollback_failed: Vec<String>,
}

impl Roll {
    fn new(kind: RollKind, to: Arc<Revision>, order: Vec<u32>, reply: ReplyTo) -> Roll {
        Roll {
            kind,
            to,
            order,
            step: None,
            replaced: Vec::new(),
            swept: false,
            reply,
            failed: None,
            rolled_back: Vec::new(),
            rollback_failed: Vec::new(),
        }
    }

    pub(super) fn restart(stable: Arc<Revision>, order: Vec<u32>, reply: ReplyTo) -> Roll {
        Roll::new(RollKind::Restart, stable, order, reply)
    }

    pub(super) fn reload(to: Arc<Revision>, order: Vec<u32>, reply: ReplyTo) -> Roll {
        Roll::new(RollKind::Reload, to, order, reply)
    }
}

impl Actor {
    /// The next step of a roll: record how the last one went, recycle the next
    /// instance that needs it, or report. A failed step stops the roll and turns it
    /// into a rollback to the stable revision.
    pub(super) async fn roll_on(&mut self, outcome: Reply) {
        let Some(mut roll) = self.rolling.take() else {
            return;
        };
        if let Some(n) = roll.step.take() {
            let id = format!("{}#{n}", self.app.name);
            match (outcome, roll.failed.is_some()) {
                (Ok(_), false) => roll.replaced.push(id),
                (Ok(_), true) => roll.rolled_back.push(id),
                (Err(e), false) => self.roll_failed(&mut roll, e),
                (Err(e), true) => roll.rollback_failed.push(e.to_string()),
            }
        }
        loop {
            while !roll.order.is_empty() {
                let n = roll.order.remove(0);
                if !self.roll_due(&roll, n) {
                    continue;
                }
                roll.step = Some(n);
                let reason = match (roll.kind, roll.failed.is_some()) {
                    (_, true) => format!("rollback to revision {}", roll.to.id),
                    (RollKind::Restart, false) => "restart".to_owned(),
                    (RollKind::Reload, false) => format!("reload: revision {}", roll.to.id),
                };
                let to = roll.to.clone();
                self.failed_start = None;
                self.rolling = Some(roll);
                let (r, w) = oneshot::channel();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let outcome = w
                        .await
                        .unwrap_or_else(|_| Err(ControlError::Failed("recycle abandoned".into())));
                    let _ = tx.send(Msg::RecycleDone { outcome });
                });
                self.recycle(n, reason, to, r).await;
                return;
            }
            // Instances that started on the old revision while the roll ran.
            if roll.kind == RollKind::Reload && roll.failed.is_none() && !roll.swept {
                roll.swept = true;
                roll.order = self.slots.keys().copied().collect();
                continue;
            }
            break;
        }
        self.roll_done(roll);
    }

    /// Whether slot `n` still needs this roll: it serves, and (unless this is a
    /// restart) runs another revision than the roll's.
    fn roll_due(&self, roll: &Roll, n: u32) -> bool {
        let Some(s) = self.slots.get(&n).filter(|s| !s.removing) else {
            return false;
        };
        let Some(p) = s.current.as_ref().filter(|p| p.state.is_serving()) else {
            return false;
        };
        let fresh = roll.kind == RollKind::Restart && roll.failed.is_none();
        fresh || p.rev.id != roll.to.id
    }

    /// A step failed: say so (a reload's failure is a `reload_failed` event naming the
    /// instance and the app's error line), and roll the replaced instances back.
    fn roll_failed(&mut self, roll: &mut Roll, e: ControlError) {
        let name = self.app.name.clone();
        let failure = self.failed_start.take();
        roll.failed = Some(match roll.kind {
            RollKind::Restart => format!("restart of {name} stopped: {e}"),
            RollKind::Reload => {
                let reason = failure
                    .as_ref()
                    .map_or_else(|| e.to_string(), |f| f.reason.clone());
                self.events.emit(Event::ReloadFailed {
                    app: name.clone(),
                    instance: failure.as_ref().map(|f| f.instance.clone()),
                    pid: failure.as_ref().map_or(0, |f| f.pid),
                    reason: reason.clone(),
                    error_line: failure.and_then(|f| f.error_line),
                    revision: roll.to.id.clone(),
                    stays_on: self.stable.id.clone(),
                });
                format!(
                    "{name}: reload failed: {reason}; {name} stays on revision {} (the last that got ready), its instances keep serving",
                    self.stable.id
                )
            }
        });
        roll.to = self.stable.clone();
        roll.order = self.slots.keys().copied().collect();
    }

    /// The roll is over: a reload's revision becomes the stable one, or the failure
    /// (with what the rollback did) is the reply.
    fn roll_done(&mut self, roll: Roll) {
        let name = self.app.name.clone();
        let outcome = match (roll.failed, roll.kind) {
            (Some(mut msg), _) => {
                if !roll.rolled_back.is_empty() {
                    msg.push_str(&format!(
                        "; rolled back to revision {}: {}",
                        roll.to.id,
                        roll.rolled_back.join(", ")
                    ));
                }
                if !roll.rollback_failed.is_empty() {
                    msg.push_str(&format!(
                        "; rolling back failed too (`healgate status` shows the revisions): {}",
                        roll.rollback_failed.join("; ")
                    ));
                }
                Err(ControlError::Failed(msg))
            }
            (None, RollKind::Restart) => Ok(format!(
                "{name}: {} instances restarted",
                roll.replaced.len()
            )),
            (None, RollKind::Reload) if roll.replaced.is_empty() => {
                let e = format!(
                    "{name}: reload failed: no instance was serving when its turn came, so revision {} was never seen ready; {name} stays on revision {}",
                    roll.to.id, self.stable.id
                );
                self.events.emit(Event::ReloadFailed {
                    app: name.clone(),
                    instance: None,
                    pid: 0,
                    reason: e.clone(),
                    error_line: None,
                    revision: roll.to.id.clone(),
                    stays_on: self.stable.id.clone(),
                });
                Err(ControlError::Failed(e))
            }
            (None, RollKind::Reload) => {
                self.stable = roll.to.clone();
                Ok(format!(
                    "{name}: rolled to revision {} ({} replaced)",
                    roll.to.id,
                    roll.replaced.join(", ")
                ))
            }
        };
        let _ = roll.reply.send(outcome.map(Outcome::from));
    }

    /// Overlapping recycle: start the replacement (of revision `rev`); when it is
    /// ready, move traffic, then drain and stop the old process (see `ready`).
    pub(super) async fn recycle(
        &mut self,
        n: u32,
        reason: String,
        rev: Arc<Revision>,
        reply: ReplyTo,
    ) {
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
        let p = self.spawn_proc(n, rev).await;
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
