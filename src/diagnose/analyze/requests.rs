//! Detectors over the requests: slow endpoints, response timeouts against the
//! configured one, a full queue (with the scale-out it needs), and 5xx that the app
//! answered itself.

use super::{failed_where, failed_with, secs, Access, Finding, Severity};
use crate::diagnose::bundle::Bundle;
use serde_json::json;
use std::collections::BTreeMap;

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One path's row: p95, 504 timeouts, (app, method, path), its requests.
type PathRow = (f64, usize, (String, String, String), Vec<usize>);

fn is_timeout(a: &Access) -> bool {
    a.gateway_made && a.error.as_deref() == Some("http_response_timeout")
}

/// `slow_endpoint`: the paths with the highest p95 (at least 1 s, or any 504 response
/// timeout), with their share of the 504s; claims those 504s.
pub fn slow_endpoint(b: &Bundle) -> Vec<Finding> {
    let mut by: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (i, a) in b.access.iter().enumerate() {
        by.entry((a.app.clone(), a.method.clone(), a.route_path().to_owned()))
            .or_default()
            .push(i);
    }
    let timeouts_total = b.access.iter().filter(|a| is_timeout(a)).count();
    let mut rows: Vec<PathRow> = by
        .into_iter()
        .map(|(k, idx)| {
            let mut d: Vec<f64> = idx.iter().map(|&i| b.access[i].duration_ms).collect();
            let p95 = quantile(&mut d, 0.95);
            let n504 = idx.iter().filter(|&&i| is_timeout(&b.access[i])).count();
            (p95, n504, k, idx)
        })
        .filter(|(p95, n504, _, idx)| *n504 > 0 || (*p95 >= 1000.0 && idx.len() >= 5))
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.total_cmp(&a.0)));
    rows.truncate(5);
    let timeout = b.facts["timeouts"]["response_header_ms"].as_f64();
    let (p95, n504, (app, method, path), idx) = &rows[0];
    let claims: Vec<usize> = rows
        .iter()
        .flat_map(|r| r.3.iter().copied())
        .filter(|&i| is_timeout(&b.access[i]))
        .collect();
    let mut title = format!(
        "{method} {path} is slow: p95 {} over {} requests",
        secs(*p95),
        idx.len()
    );
    if *n504 > 0 {
        title.push_str(&format!(
            "; {n504} of them hit the {} response timeout (504), {}% of all 504 timeouts",
            timeout.map_or("configured".to_owned(), secs),
            n504 * 100 / timeouts_total.max(1)
        ));
    }
    let table: Vec<_> = rows
        .iter()
        .map(|(p95, n504, (app, m, p), idx)| {
            json!({"app": app, "method": m, "path": p, "requests": idx.len(), "p95_ms": p95,
                   "timeouts_504": n504, "share_of_504": if timeouts_total == 0 { 0.0 } else { *n504 as f64 / timeouts_total as f64 }})
        })
        .collect();
    let f = Finding::new("slow_endpoint", if *n504 > 0 { Severity::Critical } else { Severity::Warning }, title)
        .app(app)
        .with("paths", table)
        .with("timeout_ms", json!(timeout))
        .mitigation(format!(
            "{path} takes longer than users (and timeouts.response_header) wait: make it faster (a slow query, a lock, \
             an external call; the stacks in processes/ show where it waits), move the work to a background job, or \
             raise timeouts.response_header for it if the wait is expected."
        ))
        .claim(b, claims);
    vec![f]
}

/// `response_timeout`: 504 http_response_timeout against the configured timeout.
pub fn response_timeout(b: &Bundle) -> Vec<Finding> {
    let claims = failed_with(b, &["http_response_timeout"]);
    if claims.is_empty() {
        return Vec::new();
    }
    let timeout = b.facts["timeouts"]["response_header_ms"].as_f64();
    let mut d: Vec<f64> = claims.iter().map(|&i| b.access[i].duration_ms).collect();
    let median = quantile(&mut d, 0.5);
    let mut apps: Vec<String> = claims.iter().map(|&i| b.access[i].app.clone()).collect();
    apps.sort();
    apps.dedup();
    let mut f = Finding::new(
        "response_timeout",
        Severity::Critical,
        format!(
            "{} requests got no response header within timeouts.response_header = {} (504); they waited {} (median)",
            claims.len(),
            timeout.map_or("?".to_owned(), secs),
            secs(median)
        ),
    )
    .with("timeout_ms", json!(timeout))
    .with("median_wait_ms", median)
    .mitigation(
        "The upstream did not answer in time. If the app is overloaded or stuck, see the other findings; if the \
         work really takes that long, raise [gateway.timeouts] response_header above the p99 of the slow path.",
    )
    .claim(b, claims);
    if apps.len() == 1 {
        f = f.app(&apps[0]);
    }
    vec![f]
}

/// `queue_saturation`: 503 connection_limit_reached; the concurrency there is, the
/// concurrency the load needed (Little's law over the busiest 10 s), and the scale
/// that would serve it.
pub fn queue_saturation(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let all = failed_with(b, &["connection_limit_reached"]);
    let mut by_app: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in all {
        by_app.entry(b.access[i].app.clone()).or_default().push(i);
    }
    for (app, claims) in by_app {
        let facts = b.app_facts(&app);
        let per = facts
            .and_then(|f| f["max_concurrency"].as_u64())
            .unwrap_or(0);
        let instances = facts
            .and_then(|f| f["instances"].as_u64())
            .unwrap_or(1)
            .max(1);
        let queue = facts.and_then(|f| f["queue_size"].as_u64()).unwrap_or(0);
        let reqs: Vec<&Access> = b.access.iter().filter(|a| a.app == app).collect();
        // Busiest 10 s window of arrivals, and the service time of what was served.
        let mut times: Vec<u64> = reqs.iter().map(|a| a.t).collect();
        times.sort_unstable();
        let mut busiest = 0usize;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i] - times[j] > 10_000 {
                j += 1;
            }
            busiest = busiest.max(i - j + 1);
        }
        let rate = busiest as f64 / 10.0;
        let mut served: Vec<f64> = reqs
            .iter()
            .filter(|a| a.status < 500)
            .map(|a| a.duration_ms)
            .collect();
        let service_ms = quantile(&mut served, 0.5).max(1.0);
        // Little's law over the busiest 10 s, or the most arrivals within one
        // service time (a burst), whichever is more.
        let mut arrivals: Vec<f64> = reqs.iter().map(|a| a.t as f64 - a.duration_ms).collect();
        arrivals.sort_by(|a, b| a.total_cmp(b));
        let mut burst = 0usize;
        let mut k = 0;
        for i in 0..arrivals.len() {
            while arrivals[i] - arrivals[k] >= service_ms {
                k += 1;
            }
            burst = burst.max(i - k + 1);
        }
        let needed = ((rate * service_ms / 1000.0).ceil() as u64)
            .max(burst as u64)
            .max(1);
        let peak_queue = b
            .history
            .get(&app)
            .map(|h| {
                super::column(&h["1s"], "queue")
                    .iter()
                    .map(|p| p.1)
                    .fold(0.0, f64::max)
            })
            .unwrap_or(0.0);
        let capacity = per * instances;
        let scale_to = if per == 0 {
            instances + 1
        } else {
            needed.div_ceil(per).max(instances + 1)
        };
        let f = Finding::new(
            "queue_saturation",
            Severity::Critical,
            format!(
                "{app} is overloaded: {} requests refused with a full queue (503); {} in service at once ({} × max_concurrency {per}) \
                 and a queue of {queue}, while the load needed about {needed} at once",
                claims.len(),
                capacity,
                instances
            ),
        )
        .app(&app)
        .with("max_concurrency", per)
        .with("instances", instances)
        .with("queue_size", queue)
        .with("peak_queue", peak_queue)
        .with("busiest_rate_per_s", rate)
        .with("median_service_ms", service_ms)
        .with("concurrency_needed", needed)
        .with("burst_within_service_time", burst)
        .with("scale_to", scale_to)
        .mitigation(format!(
            "Scale out: `healgate scale {app} {scale_to}` (or [app.autoscale] with max ≥ {scale_to}); the load needs \
             about {needed} requests in service at once ({burst} arrived within one service time of {}, {rate:.1}/s \
             over the busiest 10 s) and {app} has {capacity}. Raising max_concurrency \
             helps only if the app really serves that many at once; a bigger queue only makes users wait longer.",
            secs(service_ms)
        ))
        .claim(b, claims);
        out.push(f);
    }
    out
}

/// `app_errors`: 5xx that the app itself answered, passed through untouched. The
/// gateway is not the problem.
pub fn app_errors(b: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let all = failed_where(b, |a| !a.gateway_made);
    let mut by_app: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in all {
        by_app.entry(b.access[i].app.clone()).or_default().push(i);
    }
    for (app, claims) in by_app {
        let mut paths: BTreeMap<String, usize> = BTreeMap::new();
        let mut instances: Vec<String> = Vec::new();
        for &i in &claims {
            let a = &b.access[i];
            *paths
                .entry(format!("{} {} → {}", a.method, a.route_path(), a.status))
                .or_default() += 1;
            if let Some(u) = &a.upstream {
                if !instances.contains(u) {
                    instances.push(u.clone());
                }
            }
        }
        let mut top: Vec<(String, usize)> = paths.into_iter().collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        top.truncate(5);
        // The app's own error lines, from its output.
        let lines: Vec<String> = b
            .output
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("{app}#")))
            .flat_map(|(_, l)| l.iter())
            .filter(|l| {
                let low = l.to_ascii_lowercase();
                low.contains("error") || low.contains("exception") || low.contains(" 5")
            })
            .rev()
            .take(10)
            .cloned()
            .collect();
        instances.sort();
        let mut f = Finding::new(
            "app_errors",
            Severity::Warning,
            format!(
                "{app} itself answered {} requests with 5xx (top: {}): the gateway passed them through; it is not the problem",
                claims.len(),
                top.first().map_or(String::new(), |t| format!("{} ×{}", t.0, t.1))
            ),
        )
        .app(&app)
        .with("paths", top.iter().map(|(p, n)| json!({"request": p, "count": n})).collect::<Vec<_>>())
        .with("lines", lines)
        .mitigation(format!(
            "These errors come from {app}'s code, not from the gateway or the network: read its output (output/{app}/) \
             and its own logs around the request ids. Retrying or scaling will not help."
        ))
        .claim(b, claims);
        f.instances = instances;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;

    #[test]
    fn the_slowest_path_with_its_share_of_504s() {
        let mut b = bundle();
        for i in 0..4 {
            b.access.push(req(
                i * 10,
                "/slow?ms=3000",
                504,
                Some("http_response_timeout"),
                1000.0,
            ));
        }
        b.access.push(req(
            50,
            "/other",
            504,
            Some("http_response_timeout"),
            1000.0,
        ));
        for i in 0..20 {
            b.access.push(req(100 + i, "/", 200, None, 2.0));
        }
        let f = slow_endpoint(&b);
        assert!(
            f[0].title.starts_with("GET /slow is slow"),
            "{}",
            f[0].title
        );
        assert!(f[0].title.contains("80% of all 504"), "{}", f[0].title);
        assert_eq!(f[0].claims.len(), 5, "both paths listed, both claimed");
        let r = response_timeout(&b);
        assert!(r[0].title.contains("1.0 s"), "{}", r[0].title);
    }

    #[test]
    fn a_full_queue_says_how_far_to_scale() {
        let mut b = bundle();
        // 20 requests/s for 5 s, of 500 ms: 10 at once (10 arrive within a service
        // time), where Little's law over 10 s would say 5; 1 instance × 1.
        for i in 0..100 {
            let refused = i % 2 == 0;
            b.access.push(req(
                i * 50,
                "/slow",
                if refused { 503 } else { 200 },
                refused.then_some("connection_limit_reached"),
                if refused { 0.1 } else { 500.0 },
            ));
        }
        let f = queue_saturation(&b);
        assert_eq!(f[0].claims.len(), 50);
        assert_eq!(f[0].evidence["concurrency_needed"], 10);
        assert_eq!(f[0].evidence["scale_to"], 10);
        assert!(
            f[0].mitigation.contains("healgate scale web 10"),
            "{}",
            f[0].mitigation
        );
    }

    #[test]
    fn the_apps_own_5xx_are_not_the_gateways() {
        let mut b = bundle();
        b.access.push(req(0, "/status/500", 500, None, 1.0));
        b.access.push(req(1, "/status/503", 503, None, 1.0));
        b.access
            .push(req(2, "/", 502, Some("connection_refused"), 1.0));
        b.output.insert(
            "web#1".into(),
            vec!["GET /status/500 500 1ms".into(), "ok".into()],
        );
        let f = app_errors(&b);
        assert_eq!(f[0].claims, vec![0, 1]);
        assert!(f[0].title.contains("not the problem"));
        assert_eq!(f[0].evidence["lines"][0], "GET /status/500 500 1ms");
    }
}
