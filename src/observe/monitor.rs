//! The monitor: what the gateway keeps of what it observes, fed in one call per event
//! ([`Monitor::on_event`], from `Events::emit`) and once a second per snapshot
//! ([`Monitor::tick`], from the gateway's ticker): metrics, their history, incidents.

use super::events::Event;
use super::metrics::Metrics;
use std::sync::Arc;

/// Metrics, history and incidents of one gateway.
#[derive(Default)]
pub struct Monitor {
    pub metrics: Arc<Metrics>,
}

impl Monitor {
    /// Count and remember one event.
    pub fn on_event(&self, event: &Event) {
        self.metrics.on_event(event);
    }
}
