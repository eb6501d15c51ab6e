//! AutoHeal firing: the guard rails around a trigger that holds, and the actions it
//! runs (diagnose, recycle, command, log).

use super::app::{Actor, Msg};
use super::autoheal;
use super::control::{Command, InstanceId};
use crate::config::Action;
use crate::observe::events::{Event, Rule};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

impl Actor {
    /// Evaluate every rule on every ready instance old enough (`min_uptime`); fire
    /// the first that holds, within the guard rails: one recycle at a time per app,
    /// `max_recycles` per window, each rule once per process.
    pub(super) fn autoheal(&mut self) {
        let Some(ah) = self.app.autoheal.clone() else {
            return;
        };
        let now = Instant::now();
        let recycling = self.healing || self.slots.values().any(|s| s.replacement.is_some());
        let mut firing: Option<(u32, autoheal::Firing)> = None;
        'slots: for (n, slot) in &self.slots {
            let Some(p) = slot.current.as_ref().filter(|p| p.state.is_serving()) else {
                continue;
            };
            if p.started.elapsed() < ah.min_uptime || slot.replacement.is_some() {
                continue;
            }
            for idx in 0..ah.rules.len() {
                if self.fired.contains(&(p.gen, idx)) {
                    continue;
                }
                let held = self.held.entry((p.gen, idx)).or_default();
                if let Some(f) = autoheal::check(
                    &ah,
                    idx,
                    &p.peer,
                    p.sample.as_ref(),
                    slot.failing_since,
                    held,
                    now,
                ) {
                    if recycling && ah.rules[idx].actions.contains(&Action::Recycle) {
                        continue; // one recycle at a time: evaluated again next tick
                    }
                    firing = Some((*n, f));
                    break 'slots;
                }
            }
        }
        let Some((n, f)) = firing else { return };
        let slot = &self.slots[&n];
        let p = slot.current.as_ref().expect("chosen above");
        let (id, gen, pid, peer) = (slot.id.clone(), p.gen, p.pid.unwrap_or(0), p.peer.clone());
        let actions = ah.rules[f.rule].actions.clone();
        if actions.contains(&Action::Recycle) {
            let (limit, within) = ah.max_recycles;
            while self
                .recycles
                .front()
                .is_some_and(|t| now.duration_since(*t) > within)
            {
                self.recycles.pop_front();
            }
            if self.recycles.len() >= limit as usize {
                if self.suppressed.insert((gen, f.rule)) {
                    let why = format!("max_recycles reached: {limit} within {within:?}");
                    self.events.emit(Event::AutohealSuppressed {
                        app: self.app.name.clone(),
                        instance: id,
                        pid,
                        rule: rule_of(&f),
                        reason: why,
                    });
                }
                return;
            }
            self.recycles.push_back(now);
            self.healing = true;
        }
        self.fired.insert((gen, f.rule));
        autoheal::reset(&ah, f.rule, &peer);
        let names: Vec<String> = actions.iter().map(action_name).collect();
        self.events.emit(Event::AutohealFired {
            app: self.app.name.clone(),
            instance: id.clone(),
            pid,
            rule: rule_of(&f),
            actions: names,
        });
        let reason = format!(
            "autoheal rule {}: {} (measured {}, threshold {})",
            f.rule, f.trigger, f.measured, f.threshold
        );
        self.run_actions(n, id, pid, actions, reason);
    }

    /// Run a firing's actions in order, each reported by an `autoheal_action` event.
    pub(super) fn run_actions(
        &self,
        n: u32,
        id: String,
        pid: u32,
        actions: Vec<Action>,
        reason: String,
    ) {
        let (tx, events, app, dir) = (
            self.tx.clone(),
            self.events.clone(),
            self.app.name.clone(),
            self.diagnostics_dir.clone(),
        );
        tokio::spawn(async move {
            for action in actions {
                let name = action_name(&action);
                let (outcome, path) = match action {
                    Action::Log => ("logged".to_owned(), None),
                    Action::Diagnose => {
                        let (d, i, r, a) = (dir.clone(), id.clone(), reason.clone(), app.clone());
                        let captured = tokio::task::spawn_blocking(move || {
                            crate::diagnose::autoheal(&d, &a, &i, pid, &r)
                        })
                        .await;
                        match captured {
                            Ok(Ok(path)) => {
                                ("captured".to_owned(), Some(path.display().to_string()))
                            }
                            Ok(Err(e)) => (format!("capture failed: {e}"), None),
                            Err(e) => (format!("capture failed: {e}"), None),
                        }
                    }
                    Action::Recycle => {
                        let (r, w) = oneshot::channel();
                        let cmd = Command::Recycle {
                            instance: InstanceId {
                                app: app.clone(),
                                slot: n,
                            },
                            reason: reason.clone(),
                        };
                        if tx.send(Msg::Command(cmd, r)).is_err() {
                            return;
                        }
                        let outcome = match w.await {
                            Ok(Ok(m)) => m.message,
                            Ok(Err(e)) => format!("recycle failed: {e}"),
                            Err(_) => "recycle abandoned".to_owned(),
                        };
                        (outcome, None)
                    }
                    Action::Command(argv) => {
                        let argv: Vec<String> = argv
                            .iter()
                            .map(|a| {
                                a.replace("{pid}", &pid.to_string())
                                    .replace("{instance}", &id)
                            })
                            .collect();
                        (run_operator_command(&argv).await, None)
                    }
                };
                events.emit(Event::AutohealAction {
                    app: app.clone(),
                    instance: id.clone(),
                    pid,
                    action: name,
                    outcome,
                    path,
                });
            }
            let _ = tx.send(Msg::AutohealDone);
        });
    }
}

/// What an event says about a firing.
fn rule_of(f: &autoheal::Firing) -> Rule {
    Rule {
        rule: f.rule,
        trigger: f.trigger.clone(),
        measured: f.measured.clone(),
        threshold: f.threshold.clone(),
    }
}

pub(super) fn action_name(a: &Action) -> String {
    match a {
        Action::Recycle => "recycle".into(),
        Action::Log => "log".into(),
        Action::Diagnose => "diagnose".into(),
        Action::Command(argv) => format!("command {}", argv.join(" ")),
    }
}

/// Run an operator's command (an AutoHeal action) for at most a minute.
pub(super) async fn run_operator_command(argv: &[String]) -> String {
    let Some((prog, args)) = argv.split_first() else {
        return "empty command".into();
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(60), child).await {
        Ok(Ok(s)) => format!("exited with {s}"),
        Ok(Err(e)) => format!("could not run {prog:?}: {e}"),
        Err(_) => "killed after 60s".into(),
    }
}
