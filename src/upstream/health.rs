//! Active health checks: a GET of the health path on every peer each interval.
//! `unhealthy_after` failures in a row take a peer out of rotation, `healthy_after`
//! successes bring it back ([`Streak`], also used for supervised instances). Only
//! state changes are logged.

use super::Pool;
use crate::config::Health;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// One peer's consecutive check results, and the verdict they call for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    /// Failed checks in a row.
    pub fails: u32,
    /// Passed checks in a row.
    pub oks: u32,
}

impl Streak {
    /// Count one check result of a peer that is `healthy` now. Returns the new health
    /// verdict when it changes: `Some(false)` after `unhealthy_after` failures in a
    /// row, `Some(true)` after `healthy_after` successes in a row.
    pub fn record(&mut self, passed: bool, healthy: bool, health: &Health) -> Option<bool> {
        if passed {
            *self = Streak {
                fails: 0,
                oks: self.oks + 1,
            };
            (!healthy && self.oks >= health.healthy_after).then_some(true)
        } else {
            *self = Streak {
                fails: self.fails + 1,
                oks: 0,
            };
            (healthy && self.fails >= health.unhealthy_after).then_some(false)
        }
    }
}

/// Check `pool`'s peers until `shutdown` turns true.
pub async fn run(pool: Arc<Pool>, health: Health, mut shutdown: watch::Receiver<bool>) {
    let Some(path) = health.path.clone() else {
        return;
    };
    let mut streaks: HashMap<Arc<str>, Streak> = HashMap::new();
    let mut tick = tokio::time::interval(health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let peers = pool.peers();
        for peer in peers.iter() {
            peer.conns.sweep();
        }
        let checks: Vec<_> = peers
            .iter()
            .map(|peer| {
                let pool = pool.clone();
                let peer = peer.clone();
                let path = path.clone();
                let timeout = health.timeout;
                async move {
                    let got = tokio::time::timeout(
                        timeout,
                        pool.connector
                            .probe_get(&peer.id, &peer.target, peer.tls, &path),
                    )
                    .await;
                    let verdict = match got {
                        Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
                        Ok(Ok(status)) => Err(format!("health check GET {path} answered {status}")),
                        Ok(Err(e)) => Err(format!("health check GET {path}: {e}")),
                        Err(_) => Err(format!(
                            "health check GET {path}: no answer within {timeout:?}"
                        )),
                    };
                    (peer, verdict)
                }
            })
            .map(tokio::spawn)
            .collect();
        for check in checks {
            let Ok((peer, verdict)) = check.await else {
                continue;
            };
            pool.health_checked(&peer, &verdict);
            let streak = streaks.entry(peer.id.clone()).or_default();
            match verdict {
                Ok(()) => {
                    if streak.record(true, peer.is_healthy(), &health) == Some(true) {
                        pool.set_health(&peer, true, "health check passed");
                    }
                }
                Err(why) => {
                    if streak.record(false, peer.is_healthy(), &health) == Some(false) {
                        pool.set_health(&peer, false, &why);
                    }
                }
            }
        }
        streaks.retain(|id, _| peers.iter().any(|p| &p.id == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaks_change_the_verdict_after_enough_results_in_a_row() {
        let h = Health {
            unhealthy_after: 3,
            healthy_after: 2,
            ..Health::app_default()
        };
        let mut s = Streak::default();
        assert_eq!(s.record(false, true, &h), None);
        assert_eq!(s.record(false, true, &h), None);
        // A pass in between starts the count over.
        assert_eq!(s.record(true, true, &h), None);
        assert_eq!(s.record(false, true, &h), None);
        assert_eq!(s.record(false, true, &h), None);
        assert_eq!(s.record(false, true, &h), Some(false));
        assert_eq!(s.fails, 3);
        // Unhealthy now: more failures change nothing, two passes bring it back.
        assert_eq!(s.record(false, false, &h), None);
        assert_eq!(s.record(true, false, &h), None);
        assert_eq!(s.record(true, false, &h), Some(true));
        assert_eq!(s, Streak { fails: 0, oks: 2 });
    }
}
