//! Memory goes back to the system after a burst. mimalloc keeps freed pages for reuse
//! and returns them to the OS only when the thread that owns them collects, which a
//! runtime worker that went idle after the burst (20,000 connections closing) never
//! does by itself: each worker asks mimalloc to collect as it goes idle
//! ([`collect_when_idle`], the runtime's park hook), at most once per tick of
//! [`ticker`] (a second), so the hook costs one atomic load otherwise.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// The allocator the binary installs; linked here for `mi_collect`.
use mimalloc as _;

/// Bumped once a second by [`ticker`].
static EPOCH: AtomicU64 = AtomicU64::new(1);

extern "C" {
    /// mimalloc's `void mi_collect(bool force)`: free this thread's unused pages and
    /// return them to the OS once their purge delay passed.
    fn mi_collect(force: bool);
}

/// Called by a runtime worker about to park: collect this thread's free memory, once
/// per tick.
pub fn collect_when_idle() {
    thread_local! {
        static SEEN: Cell<u64> = const { Cell::new(0) };
    }
    let now = EPOCH.load(Ordering::Relaxed);
    if SEEN.with(|seen| seen.replace(now)) != now {
        // SAFETY: `mi_collect` takes no pointers and only gives back memory that no
        // allocation uses; it is safe to call from any thread at any time.
        #[allow(unsafe_code)]
        unsafe {
            mi_collect(false)
        };
    }
}

/// The clock of [`collect_when_idle`]: it also wakes a worker once a second, so an
/// idle gateway still collects after a burst.
pub async fn ticker() {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        EPOCH.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn collecting_is_harmless() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 4096]).collect();
        drop(v);
        super::collect_when_idle();
        super::collect_when_idle();
    }
}
