//! The monitor: what the gateway keeps of what it observes, fed in one call per event
//! ([`Monitor::on_event`], from `Events::emit`) and once a second per snapshot
//! ([`Monitor::tick`], from the gateway's ticker): metrics, their history, incidents.

use super::events::Event;
use super::history::History;
use super::metrics::{Metrics, Snapshot};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Metrics, history and incidents of one gateway.
#[derive(Default)]
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub history: History,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Monitor {
    /// Count and remember one event.
    pub fn on_event(&self, event: &Event) {
        self.metrics.on_event(event);
        self.history.on_event(event, unix_now());
    }

    /// One second passed: every meter's second and the snapshot into the history.
    pub fn tick(&self, now: u64, snap: &Snapshot) {
        self.history.tick(now, &self.metrics.apps(), snap);
    }
}
