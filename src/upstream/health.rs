//! Active health checks: a GET of the health path on every peer each interval.
//! `unhealthy_after` failures in a row take a peer out of rotation, `healthy_after`
//! successes bring it back. Only state changes are logged.

use super::Pool;
use crate::config::Health;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Check `pool`'s peers until `shutdown` turns true.
pub async fn run(pool: Arc<Pool>, health: Health, mut shutdown: watch::Receiver<bool>) {
    let Some(path) = health.path.clone() else {
        return;
    };
    // Consecutive results per peer id: (failures, successes).
    let mut streaks: HashMap<Arc<str>, (u32, u32)> = HashMap::new();
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
            let s = streaks.entry(peer.id.clone()).or_default();
            match verdict {
                Ok(()) => {
                    *s = (0, s.1 + 1);
                    if !peer.is_healthy() && s.1 >= health.healthy_after {
                        pool.set_health(&peer, true, "health check passed");
                    }
                }
                Err(why) => {
                    *s = (s.0 + 1, 0);
                    if peer.is_healthy() && s.0 >= health.unhealthy_after {
                        pool.set_health(&peer, false, &why);
                    }
                }
            }
        }
        streaks.retain(|id, _| peers.iter().any(|p| &p.id == id));
    }
}
