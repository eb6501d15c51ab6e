//! Manual scaling and autoscale.

use super::app::Actor;
use super::control::{ControlError, Reply};
use super::instance::Proc;
use crate::config::App;
use crate::observe::events::Event;
use std::time::Instant;

pub(super) fn initial_target(app: &App) -> u32 {
    match &app.autoscale {
        Some(a) => app.instances.clamp(a.min, a.max),
        None => app.instances,
    }
}

impl Actor {
    pub(super) async fn scale(&mut self, instances: u32, reason: &str) -> Reply {
        if instances == 0 {
            return Err(ControlError::Refused("scale: at least 1 instance".into()));
        }
        if instances > self.app.max_instances {
            return Err(ControlError::Refused(format!(
                "scale: at most {} instances (app.max_instances)",
                self.app.max_instances
            )));
        }
        let from = self.target;
        self.target = instances;
        let active: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.removing)
            .map(|(n, _)| *n)
            .collect();
        if (active.len() as u32) < instances {
            let mut n = 1;
            let mut added = 0;
            while (active.len() as u32) + added < instances {
                if !self.slots.contains_key(&n) {
                    self.slots.insert(n, self.new_slot(n));
                    self.start_current(n).await;
                    added += 1;
                }
                n += 1;
            }
        } else {
            for n in active.iter().rev().take(active.len() - instances as usize) {
                self.slots.get_mut(n).expect("active").removing = true;
                self.stop_slot(*n);
                self.finish_recycle(
                    *n,
                    Err(ControlError::Failed("the instance was scaled away".into())),
                );
                self.drop_removed(*n);
            }
            self.publish();
        }
        self.last_scale = Instant::now();
        self.events.emit(Event::Scaled {
            app: self.app.name.clone(),
            from,
            to: instances,
            reason: reason.to_owned(),
        });
        Ok(format!(
            "{}: scaled from {from} to {instances} instances",
            self.app.name
        )
        .into())
    }

    /// Between `min` and `max`: enough instances for the in-flight requests and the
    /// queue at `target_inflight` each (and for CPU when `target_cpu` is set). Out at
    /// once; in only after `cooldown` without a need for the current count.
    pub(super) async fn autoscale(&mut self) {
        let Some(a) = self.app.autoscale.clone() else {
            return;
        };
        if self.manual_scale || self.rolling.is_some() {
            return;
        }
        let procs: Vec<&Proc> = self
            .slots
            .values()
            .filter(|s| !s.removing)
            .filter_map(|s| s.current.as_ref())
            .collect();
        let inflight: u32 = procs.iter().map(|p| p.peer.outstanding()).sum();
        let queued = self.pool.queued() as u32;
        let per = a.target_inflight.max(1);
        let mut desired = (inflight + queued).div_ceil(per);
        if let Some(cpu) = a.target_cpu {
            let total: f64 = procs
                .iter()
                .filter_map(|p| p.sample.map(|s| s.cpu_pct))
                .sum();
            desired = desired.max((total / cpu.max(1.0)).ceil() as u32);
        }
        let desired = desired.clamp(a.min, a.max);
        let now = Instant::now();
        if desired >= self.target {
            self.last_busy = now;
        }
        let why =
            format!("autoscale: {inflight} in flight + {queued} queued, target {per} per instance");
        if desired > self.target
            || (desired < self.target
                && now.duration_since(self.last_busy) >= a.cooldown
                && now.duration_since(self.last_scale) >= a.cooldown)
        {
            let _ = self.scale(desired, &why).await;
        }
    }
}
