//! Incidents: a period when an app could not serve as it should. One opens when an app
//! that was serving has no ready instance, when it is in a crash loop, or when its
//! gateway-made error rate stays above [`ERROR_RATE`] for a minute; it closes when that
//! clears. Each keeps its cause, start, end, the requests it affected and a timeline of
//! the app's events inside it. Kept in `data_dir/incidents.json` (the last
//! [`KEPT`], each timeline bounded), so a restart of the gateway keeps the list.

use super::events::Event;
use super::history::Recent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

/// Incidents kept (the newest).
pub const KEPT: usize = 100;
/// Timeline entries kept per incident (the first ones; the rest are counted).
const TIMELINE: usize = 100;
/// The gateway-made error share that opens an `error_rate` incident after a minute.
pub const ERROR_RATE: f64 = 0.10;
/// Fewer requests than this in the minute never make an error-rate incident.
const MIN_REQUESTS: u64 = 20;
/// Seconds with no ready instance before it is an incident (a restart in between is
/// not one).
const NO_READY_FOR: u32 = 3;

/// One incident as listed and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    /// e.g. `web-20261202T101500Z`.
    pub id: String,
    pub app: String,
    /// `no_ready_instance` | `crash_loop` | `error_rate`.
    pub cause: String,
    pub title: String,
    pub started: String,
    pub ended: Option<String>,
    /// Unix seconds (for durations).
    pub started_unix: u64,
    pub ended_unix: Option<u64>,
    /// Gateway-made error answers of the app while it was open.
    pub requests_affected: u64,
    /// The app's events while it was open (the first [`TIMELINE`]).
    pub timeline: Vec<Value>,
    /// Events past the timeline's bound.
    #[serde(default)]
    pub timeline_dropped: u64,
}

/// What the ticker knows of one app this second.
#[derive(Debug, Clone)]
pub struct AppCondition {
    pub app: String,
    /// Instances wanted (0: scaled to zero on purpose, or an upstream).
    pub target: u32,
    pub ready: u32,
    pub crash_loop: bool,
    /// Whether it has no supervised instances (an upstream: only the error rate).
    pub remote: bool,
    /// The last minute (error rate) and the last second (affected requests).
    pub minute: Recent,
    pub second_errors: u64,
}

/// A change the ticker reports as an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Opened(Incident),
    Closed(Incident),
}

#[derive(Default)]
struct Inner {
    list: VecDeque<Incident>,
    path: Option<PathBuf>,
    /// Per app: it had a ready instance once; seconds in a row with none.
    seen_ready: BTreeMap<String, bool>,
    none_ready: BTreeMap<String, u32>,
    /// Unsaved changes to the counts.
    dirty: bool,
    last_save: u64,
}

/// The incident list.
#[derive(Default)]
pub struct Incidents {
    inner: Mutex<Inner>,
}

impl Incidents {
    /// Keep the list in `path`, loading what a previous run left there. An incident
    /// that was open when the gateway stopped is closed at the file's last write.
    pub fn load(&self, path: PathBuf) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<Vec<Incident>>(&text) {
                Ok(list) => {
                    let at = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .unwrap_or_else(|_| std::time::SystemTime::now());
                    inner.list = list.into_iter().collect();
                    for i in inner.list.iter_mut().filter(|i| i.ended.is_none()) {
                        i.ended = Some(super::time::rfc3339_millis(at));
                        i.ended_unix = at
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs());
                        i.timeline.push(serde_json::json!({
                            "ts": i.ended, "kind": "incident_closed",
                            "text": "closed when the gateway stopped"
                        }));
                    }
                }
                Err(e) => tracing::warn!(
                    "{}: not an incident list ({e}); starting a new one",
                    path.display()
                ),
            }
        }
        inner.path = Some(path);
        save(&mut inner);
    }

    /// Every incident, newest first.
    pub fn list(&self) -> Vec<Incident> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.list.iter().rev().cloned().collect()
    }

    /// Open incidents per app.
    pub fn open_count(&self) -> BTreeMap<String, u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for i in &inner.list {
            *out.entry(i.app.clone()).or_default() += u64::from(i.ended.is_none());
        }
        out
    }

    /// An event of an app with an open incident goes on its timeline.
    pub fn on_event(&self, event: &Value) {
        let Some(app) = event.get("app").and_then(Value::as_str) else {
            return;
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = inner
            .list
            .iter_mut()
            .find(|i| i.app == app && i.ended.is_none())
        {
            if open.timeline.len() < TIMELINE {
                open.timeline.push(event.clone());
            } else {
                open.timeline_dropped += 1;
            }
            inner.dirty = true;
        }
    }

    /// One second: open and close incidents from the apps' conditions.
    pub fn tick(&self, now: u64, apps: &[AppCondition]) -> Vec<Change> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        for a in apps {
            let cause = condition(&mut inner, a);
            let open = inner
                .list
                .iter_mut()
                .find(|i| i.app == a.app && i.ended.is_none());
            match (open, cause) {
                (Some(i), Some(_)) => {
                    i.requests_affected += a.second_errors;
                    if a.second_errors > 0 {
                        inner.dirty = true;
                    }
                }
                (Some(i), None) => {
                    i.requests_affected += a.second_errors;
                    i.ended_unix = Some(now);
                    i.ended = Some(rfc3339(now));
                    let closed = i.clone();
                    changes.push(Change::Closed(closed));
                    inner.dirty = true;
                }
                (None, Some((cause, title))) => {
                    let i = Incident {
                        id: format!("{}-{}", a.app, compact(now)),
                        app: a.app.clone(),
                        cause: cause.to_owned(),
                        title,
                        started: rfc3339(now),
                        ended: None,
                        started_unix: now,
                        ended_unix: None,
                        requests_affected: a.second_errors,
                        timeline: Vec::new(),
                        timeline_dropped: 0,
                    };
                    changes.push(Change::Opened(i.clone()));
                    if inner.list.len() == KEPT {
                        inner.list.pop_front();
                    }
                    inner.list.push_back(i);
                    inner.dirty = true;
                }
                (None, None) => {}
            }
        }
        let changed = !changes.is_empty();
        if changed || (inner.dirty && now >= inner.last_save + 10) {
            inner.last_save = now;
            save(&mut inner);
        }
        changes
    }
}

/// Whether `a` is in trouble now, and what to call it.
fn condition(inner: &mut Inner, a: &AppCondition) -> Option<(&'static str, String)> {
    if a.crash_loop {
        return Some((
            "crash_loop",
            format!("{}: every instance keeps crashing (crash loop)", a.app),
        ));
    }
    if !a.remote && a.target > 0 {
        if a.ready > 0 {
            inner.seen_ready.insert(a.app.clone(), true);
            inner.none_ready.remove(&a.app);
        } else if inner.seen_ready.get(&a.app).copied().unwrap_or(false) {
            let n = inner.none_ready.entry(a.app.clone()).or_default();
            *n += 1;
            if *n >= NO_READY_FOR {
                return Some((
                    "no_ready_instance",
                    format!("{}: no ready instance (0 of {} serving)", a.app, a.target),
                ));
            }
        }
    }
    let m = &a.minute;
    if m.points >= 60 && m.requests >= MIN_REQUESTS && m.error_rate() > ERROR_RATE {
        return Some((
            "error_rate",
            format!(
                "{}: {:.0}% of requests answered with a gateway error in the last minute ({} of {})",
                a.app,
                m.error_rate() * 100.0,
                m.errors,
                m.requests
            ),
        ));
    }
    None
}

fn save(inner: &mut Inner) {
    inner.dirty = false;
    let Some(path) = &inner.path else {
        return;
    };
    let list: Vec<&Incident> = inner.list.iter().collect();
    let Ok(text) = serde_json::to_string_pretty(&list) else {
        return;
    };
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

fn rfc3339(unix: u64) -> String {
    super::time::rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

/// `20261202T101500Z`.
fn compact(unix: u64) -> String {
    rfc3339(unix)
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .take(15)
        .collect::<String>()
        + "Z"
}

/// The event kind of a change, and its event.
pub fn event_of(change: &Change) -> Event {
    match change {
        Change::Opened(i) => Event::IncidentOpened {
            app: i.app.clone(),
            id: i.id.clone(),
            cause: i.cause.clone(),
            title: i.title.clone(),
        },
        Change::Closed(i) => Event::IncidentClosed {
            app: i.app.clone(),
            id: i.id.clone(),
            cause: i.cause.clone(),
            duration_s: i.ended_unix.unwrap_or(i.started_unix) - i.started_unix,
            requests_affected: i.requests_affected,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(ready: u32, crash_loop: bool) -> AppCondition {
        AppCondition {
            app: "web".into(),
            target: 2,
            ready,
            crash_loop,
            remote: false,
            minute: Recent {
                points: 60,
                requests: 0,
                errors: 0,
                app_5xx: 0,
                p95_ms: None,
                memory: 0,
            },
            second_errors: 0,
        }
    }

    #[test]
    fn no_ready_instance_opens_after_a_moment_and_closes_when_back() {
        let dir = std::env::temp_dir().join(format!("hg-incidents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("incidents.json");
        let _ = std::fs::remove_file(&path);
        let inc = Incidents::default();
        inc.load(path.clone());
        // Starting up (never ready yet) is not an incident.
        assert!(inc.tick(1, &[cond(0, false)]).is_empty());
        assert!(inc.tick(2, &[cond(0, false)]).is_empty());
        assert!(inc.tick(3, &[cond(2, false)]).is_empty());
        assert!(inc.tick(4, &[cond(0, false)]).is_empty());
        assert!(inc.tick(5, &[cond(0, false)]).is_empty());
        let mut c = cond(0, false);
        c.second_errors = 4;
        let opened = inc.tick(6, &[c]);
        assert!(matches!(&opened[..], [Change::Opened(i)] if i.cause == "no_ready_instance"));
        inc.on_event(&serde_json::json!({"app": "web", "kind": "instance_exited"}));
        inc.on_event(&serde_json::json!({"app": "api", "kind": "instance_exited"}));
        let closed = inc.tick(9, &[cond(1, false)]);
        let [Change::Closed(i)] = &closed[..] else {
            panic!("{closed:?}")
        };
        assert_eq!(i.requests_affected, 4);
        assert_eq!(i.timeline.len(), 1, "only web's events");
        assert_eq!(i.ended_unix, Some(9));
        // Kept across a restart.
        let again = Incidents::default();
        again.load(path.clone());
        assert_eq!(again.list(), inc.list());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn error_rate_needs_a_minute_and_enough_requests() {
        let inc = Incidents::default();
        let mut c = cond(2, false);
        c.minute = Recent {
            points: 60,
            requests: 10,
            errors: 9,
            app_5xx: 0,
            p95_ms: None,
            memory: 0,
        };
        assert!(inc.tick(1, &[c.clone()]).is_empty(), "too few requests");
        c.minute.requests = 100;
        c.minute.errors = 50;
        c.minute.points = 30;
        assert!(inc.tick(2, &[c.clone()]).is_empty(), "not a minute yet");
        c.minute.points = 60;
        assert!(
            matches!(&inc.tick(3, &[c.clone()])[..], [Change::Opened(i)] if i.cause == "error_rate")
        );
        c.minute.errors = 5;
        assert!(matches!(&inc.tick(4, &[c])[..], [Change::Closed(_)]));
        assert!(
            matches!(&inc.tick(5, &[cond(0, true)])[..], [Change::Opened(i)] if i.cause == "crash_loop")
        );
    }

    #[test]
    fn the_list_is_bounded() {
        let inc = Incidents::default();
        for n in 0..(KEPT as u64 + 20) {
            inc.tick(n * 2, &[cond(0, true)]);
            inc.tick(n * 2 + 1, &[cond(1, false)]);
        }
        assert_eq!(inc.list().len(), KEPT);
    }
}
