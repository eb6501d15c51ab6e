//! The history's memory is flat: a day and more of points (a simulated clock) for
//! three apps of four instances each, measured by a counting allocator.

use healgate::error::Cause;
use healgate::observe::history::History;
use healgate::observe::metrics::{InstanceSample, Metrics, PeerSample, Snapshot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn snapshot(t: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for app in ["web", "api", "jobs"] {
        for n in 1..=4 {
            let id = format!("{app}#{n}");
            s.instances.push(InstanceSample {
                app: app.into(),
                instance: id.clone(),
                state: "ready",
                memory_bytes: 100 << 20,
                cpu_s: t as f64,
                cpu_pct: 5.0,
                inflight: 1,
                restarts: (t / 3600) as u32,
            });
            s.peers.push(PeerSample {
                app: app.into(),
                instance: id,
                buckets: vec![(0.01, t * 10), (f64::INFINITY, t)],
                sum_s: t as f64,
                requests: t * 11,
                errors: t / 10,
                status_5xx: t / 10,
            });
        }
        s.queues.push((app.into(), 0));
    }
    s
}

#[test]
fn a_day_of_history_takes_no_more_memory_than_an_hour() {
    let metrics = Metrics::default();
    let meters: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|a| metrics.app(a))
        .collect();
    let history = Arc::new(History::default());
    let t0 = 1_900_000_000u64;
    let mut at_hour = 0isize;
    let day = 26 * 3600;
    for s in 0..day {
        let t = t0 + s;
        for m in &meters {
            for _ in 0..3 {
                m.record(0, 200, None, Duration::from_millis(3));
            }
            m.record(
                0,
                502,
                Some(Cause::ConnectionRefused),
                Duration::from_millis(1),
            );
        }
        history.tick(t, &meters, &snapshot(s));
        if s == 3600 {
            at_hour = LIVE.load(Ordering::Relaxed);
        }
    }
    let at_day = LIVE.load(Ordering::Relaxed);
    let grown = at_day - at_hour;
    eprintln!("history: {at_hour} bytes live after 1 h, {at_day} after 26 h ({grown:+})");
    assert!(
        grown.abs() < 256 * 1024,
        "grew {grown} bytes from hour 1 to hour 26"
    );
    assert!(
        at_day < 32 << 20,
        "{at_day} bytes for 3 apps and 12 instances"
    );
    let v = history.series("web", None, true).unwrap();
    assert_eq!(
        v["t"].as_array().unwrap().len(),
        24 * 60,
        "a full day of minutes"
    );
    let v = history.series("web", Some("web#2"), false).unwrap();
    assert_eq!(v["t"].as_array().unwrap().len(), 15 * 60);
}
