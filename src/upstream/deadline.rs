//! Coarse deadlines for the request path: one ticker task checks every in-flight
//! deadline each [`TICK`], instead of a tokio timer per request.
//!
//! A tokio timer per request is not free: besides the timer wheel's work, registering
//! one that is due before the driver's next planned wake-up makes tokio wake its I/O
//! driver (an `eventfd` write, then a spurious `epoll_wait` return): about one extra
//! syscall per proxied request. Deadlines here cost a table slot, and fire up to one
//! tick late, which is fine for timeouts measured in seconds.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the ticker looks at the deadlines (and so how late one may fire).
pub const TICK: Duration = Duration::from_millis(50);

/// The in-flight deadlines of one gateway.
#[derive(Default)]
pub struct Deadlines {
    table: Mutex<Table>,
    /// Wakes the ticker when the first deadline arrives in an empty table.
    first: Notify,
    ticking: AtomicBool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
}

struct Slot {
    at: Instant,
    waker: Option<Waker>,
    fired: bool,
    used: bool,
}

/// The deadline passed before the work finished.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

impl Deadlines {
    pub fn new() -> Arc<Deadlines> {
        Arc::new(Deadlines::default())
    }

    /// Run `work` until it finishes or `limit` has passed (give or take a [`TICK`]).
    /// Must be called inside a tokio runtime (the ticker is spawned on first use).
    pub async fn within<F: Future>(
        self: &Arc<Self>,
        limit: Duration,
        work: F,
    ) -> Result<F::Output, Elapsed> {
        self.start(limit).run(work).await
    }

    /// A deadline `limit` from now, to run work under and to move ([`Deadline::reset`])
    /// as the work progresses: one table slot for several phases. Removed when dropped.
    /// Must be called inside a tokio runtime (the ticker is spawned on first use).
    pub fn start(self: &Arc<Self>, limit: Duration) -> Deadline<'_> {
        let key = self.insert(Instant::now() + limit);
        Deadline {
            deadlines: self,
            key,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(self: &Arc<Self>, at: Instant) -> usize {
        if !self.ticking.swap(true, Ordering::AcqRel) {
            tokio::spawn(ticker(Arc::downgrade(self)));
        }
        let mut t = self.lock();
        let slot = Slot {
            at,
            waker: None,
            fired: false,
            used: true,
        };
        let key = match t.free.pop() {
            Some(k) => {
                t.slots[k] = slot;
                k
            }
            None => {
                t.slots.push(slot);
                t.slots.len() - 1
            }
        };
        t.live += 1;
        if t.live == 1 {
            self.first.notify_one();
        }
        key
    }

    /// True once the deadline fired; otherwise `waker` is kept for the ticker.
    fn fired_or_wait(&self, key: usize, waker: &Waker) -> bool {
        let mut t = self.lock();
        let slot = &mut t.slots[key];
        if slot.fired {
            return true;
        }
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        false
    }

    fn remove(&self, key: usize) {
        let mut t = self.lock();
        let slot = &mut t.slots[key];
        slot.used = false;
        slot.waker = None;
        t.free.push(key);
        t.live -= 1;
    }

    /// Fire every deadline that passed; true while any are left.
    fn fire(&self, now: Instant) -> bool {
        let mut due = Vec::new();
        let live = {
            let mut t = self.lock();
            for slot in t.slots.iter_mut() {
                if slot.used && !slot.fired && slot.at <= now {
                    slot.fired = true;
                    due.extend(slot.waker.take());
                }
            }
            t.live
        };
        for w in due {
            w.wake();
        }
        live > 0
    }
}

/// One deadline in the table (see [`Deadlines::start`]).
pub struct Deadline<'a> {
    deadlines: &'a Deadlines,
    key: usize,
}

impl Deadline<'_> {
    /// Move the deadline to `limit` from now (and un-fire it).
    pub fn reset(&self, limit: Duration) {
        let at = Instant::now() + limit;
        let mut t = self.deadlines.lock();
        let slot = &mut t.slots[self.key];
        slot.at = at;
        slot.fired = false;
    }

    /// Run `work` until it finishes or the deadline passes.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Elapsed> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if self.deadlines.fired_or_wait(self.key, cx.waker()) {
                Poll::Ready(Err(Elapsed))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        self.deadlines.remove(self.key);
    }
}

/// Fires due deadlines every tick while there are any; sleeps on `first` otherwise.
/// Ends when the deadlines are dropped.
async fn ticker(deadlines: Weak<Deadlines>) {
    loop {
        let Some(d) = deadlines.upgrade() else {
            return;
        };
        if d.fire(Instant::now()) {
            drop(d);
            tokio::time::sleep(TICK).await;
        } else {
            // Idle: wait for a first deadline, looking at the owner once a second.
            let first = d.first.notified();
            tokio::select! {
                _ = first => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_that_finishes_in_time_is_untouched() {
        let d = Deadlines::new();
        let r = d.within(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(r, Ok(7));
        let r = d
            .within(
                Duration::from_secs(1),
                tokio::time::sleep(Duration::from_millis(300)),
            )
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(d.lock().live, 0, "slots are given back");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn slow_work_is_cut_within_a_tick() {
        let d = Deadlines::new();
        let start = Instant::now();
        let r = d
            .within(Duration::from_millis(200), std::future::pending::<()>())
            .await;
        let took = start.elapsed();
        assert_eq!(r, Err(Elapsed));
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(200) + 4 * TICK, "{took:?}");
        // Slots are reused: many sequential deadlines keep the table small.
        for _ in 0..100 {
            d.within(Duration::from_secs(5), async {}).await.unwrap();
        }
        assert!(d.lock().slots.len() <= 2, "{}", d.lock().slots.len());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_deadlines_fire_independently() {
        let d = Deadlines::new();
        let short = d.within(Duration::from_millis(100), std::future::pending::<()>());
        let long = d.within(Duration::from_secs(30), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        });
        let (a, b) = tokio::join!(short, long);
        assert_eq!(a, Err(Elapsed));
        assert_eq!(b, Ok("done"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reset_deadline_counts_from_the_reset() {
        let d = Deadlines::new();
        let deadline = d.start(Duration::from_millis(200));
        // Each step is shorter than the limit, their sum longer: progress resets it.
        for _ in 0..4 {
            let step = deadline.run(tokio::time::sleep(Duration::from_millis(100)));
            assert_eq!(step.await, Ok(()));
            deadline.reset(Duration::from_millis(200));
        }
        let start = Instant::now();
        let stuck = deadline.run(std::future::pending::<()>()).await;
        assert_eq!(stuck, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(200) - TICK);
        // A fired deadline that is reset runs again.
        deadline.reset(Duration::from_secs(5));
        assert_eq!(deadline.run(async { 1 }).await, Ok(1));
        drop(deadline);
        assert_eq!(d.lock().live, 0, "the slot is given back");
    }
}
