//! The monitor: what the gateway keeps of what it observes, fed in one call per event
//! ([`Monitor::on_event`], from `Events::emit`) and once a second per snapshot
//! ([`Monitor::tick`], from the gateway's ticker): metrics, their history, incidents.

use super::alerts::{Alerts, Notice};
use super::events::Event;
use super::history::History;
use super::incidents::{AppCondition, Change, Incidents};
use super::metrics::{Metrics, Snapshot};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Metrics, history and incidents of one gateway.
#[derive(Default)]
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub history: History,
    pub incidents: Incidents,
    pub alerts: Alerts,
    /// App output and events, live.
    pub logs: Arc<super::logstream::LogStream>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Monitor {
    /// Count and remember one event.
    pub fn on_event(&self, event: &Event, value: &serde_json::Value) {
        self.metrics.on_event(event);
        self.history.on_event(event, unix_now());
        self.incidents.on_event(value);
    }

    /// The event's line in the live log stream: its plain one-line text, under its
    /// app and (when it names one) instance, read from its JSON form.
    pub fn event_line(&self, value: &serde_json::Value, text: &str) {
        let field = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
        self.logs
            .push(field("app").unwrap_or(""), field("instance"), "event", text);
    }

    /// One second passed: every meter's second and the snapshot into the history,
    /// then incidents opened or closed by what the apps look like now (`apps`, from
    /// the supervisor; the error rates from the history). Returns the changes, for
    /// the caller to emit as events.
    pub fn tick(
        &self,
        now: u64,
        snap: &Snapshot,
        apps: impl Fn(&History) -> Vec<AppCondition>,
    ) -> (Vec<Change>, Vec<Notice>) {
        self.history.tick(now, &self.metrics.apps(), snap);
        let apps = apps(&self.history);
        let changes = self.incidents.tick(now, &apps);
        let open = self.incidents.open_count();
        if !changes.is_empty() {
            for (app, n) in &open {
                self.metrics.set_incidents_open(app, *n);
            }
        }
        let notices = self.alerts.tick(now, &apps, &open);
        for n in &notices {
            self.metrics.set_alert(&n.alert, &n.app, n.firing);
        }
        (changes, notices)
    }
}
