//! Observe: `/metrics` after a known mix of requests, parsed by a real Prometheus
//! exposition parser (Python's `prometheus_client`); the admin routes' token rule.

mod common;

use common::{bin, get, Gateway, Refused};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// The samples of an exposition text as parsed by `prometheus_client.parser`:
/// `[{"name", "labels", "value"}]`.
fn parse_exposition(text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .filter_map(|s| s["value"].as_f64())
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied()
}

#[test]
fn metrics_count_a_known_mix_of_requests_exactly() {
    let down = Refused::new();
    let gw = Gateway::start(&format!(
        r#"
[gateway.timeouts]
response_header = "1s"

[[app]]
name = "web"
command = ["{bin}", "demo-app", "--port", "{{port}}"]
instances = 1
routes = ["/"]

[[upstream]]
name = "down"
servers = ["{down}"]
routes = ["/down/"]
"#,
        bin = bin(),
        down = down.addr
    ));
    gw.wait_ready("web", 1);
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    for _ in 0..2 {
        let r = get(gw.addr, "/status/500", &[]);
        assert_eq!(
            (r.status, r.proxy_error()),
            (500, None),
            "the app's own 500"
        );
    }
    for _ in 0..3 {
        let r = get(gw.addr, "/down/x", &[]);
        assert_eq!(r.proxy_error().as_deref(), Some("connection_refused"));
    }
    let slow = get(gw.addr, "/slow?ms=1500", &[]);
    assert_eq!(slow.proxy_error().as_deref(), Some("http_response_timeout"));

    let resp = gw.admin_get("/metrics");
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = resp.text();
    let samples = parse_exposition(&text);
    let count = "http_server_request_duration_seconds_count";
    let web = |code: &'static str| {
        vec![
            ("app", "web"),
            ("http_request_method", "GET"),
            ("http_response_status_code", code),
        ]
    };
    assert_eq!(sample(&samples, count, &web("200")), Some(5.0), "{text}");
    assert_eq!(sample(&samples, count, &web("500")), Some(2.0), "{text}");
    let mut timeout = web("504");
    timeout.push(("error_type", "http_response_timeout"));
    assert_eq!(sample(&samples, count, &timeout), Some(1.0), "{text}");
    let refused = [
        ("app", "down"),
        ("http_response_status_code", "502"),
        ("error_type", "connection_refused"),
    ];
    assert_eq!(sample(&samples, count, &refused), Some(3.0), "{text}");
    // The app's own 500 carries no error_type: the gateway did not make it.
    assert!(samples.iter().all(|s| !(s["name"] == count
        && s["labels"]["http_response_status_code"] == "500"
        && s["labels"].get("error_type").is_some())));
    // The 504 waited the 1 s response-header timeout: not in le=0.75, in le=2.5.
    let bucket = "http_server_request_duration_seconds_bucket";
    let mut le = timeout.clone();
    le.push(("le", "0.75"));
    assert_eq!(sample(&samples, bucket, &le), Some(0.0), "{text}");
    le.pop();
    le.push(("le", "2.5"));
    assert_eq!(sample(&samples, bucket, &le), Some(1.0), "{text}");
    assert_eq!(
        sample(&samples, "http_server_active_requests", &[("app", "web")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &samples,
            "healgate_instance_state",
            &[("instance", "web#1"), ("state", "ready")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &samples,
            "healgate_instance_memory_working_set_bytes",
            &[("instance", "web#1")]
        )
        .is_some_and(|b| b > 1e6),
        "{text}"
    );
    // Requests that reached web#1: 5 + 2 + the timed-out one.
    assert_eq!(
        sample(
            &samples,
            "http_client_request_duration_seconds_count",
            &[("instance", "web#1")]
        ),
        Some(8.0),
        "{text}"
    );
    assert!(
        sample(
            &samples,
            "healgate_events_total",
            &[("kind", "instance_ready")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // No request path or id is ever a label.
    for s in &samples {
        let labels = s["labels"].as_object().unwrap();
        for forbidden in ["path", "request_id", "url"] {
            assert!(!labels.contains_key(forbidden), "{s}");
        }
    }
    // OpenMetrics when asked for it, and that parses too.
    let auth = format!("Bearer {}", gw.token());
    let om = get(
        gw.admin,
        "/metrics",
        &[
            ("Authorization", &auth),
            ("Accept", "application/openmetrics-text; version=1.0.0"),
        ],
    );
    assert!(om
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(om.text().ends_with("# EOF\n"));
}

#[test]
fn every_data_route_needs_the_token_unless_metrics_are_public() {
    let gw = Gateway::start("");
    for path in [
        "/metrics",
        "/api/v1/status",
        "/api/v1/events",
        "/api/v1/history?app=x",
        "/api/v1/incidents",
        "/api/v1/logs",
    ] {
        let r = get(gw.admin, path, &[]);
        assert_eq!(r.status, 401, "{path} without the token");
        assert_ne!(gw.admin_get(path).status, 401, "{path} with it");
    }
    let public = Gateway::start(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:0\"\nmetrics_public = true\n",
    );
    assert_eq!(get(public.admin, "/metrics", &[]).status, 200);
    assert_eq!(get(public.admin, "/api/v1/status", &[]).status, 401);
}

#[test]
fn an_incident_opens_when_no_instance_can_serve_and_survives_a_restart() {
    use common::{eventually, TempDir};
    use std::time::Duration;
    let dir = TempDir::new("incident");
    let flag = dir.path().join("broken");
    let config = format!(
        r#"
[[app]]
name = "web"
command = ["sh", "-c", "if [ -e '{flag}' ]; then echo 'RuntimeError: the flag file is there' >&2; exit 1; fi; exec '{bin}' demo-app --port \"$PORT\""]
instances = 1
routes = ["/"]
"#,
        flag = flag.display(),
        bin = bin()
    );
    let mut gw = Gateway::start_in(dir, &config);
    gw.wait_ready("web", 1);
    std::fs::write(&flag, "").unwrap();
    // The instance crashes and every restart fails: a crash loop.
    let _ = common::request(gw.addr, "GET", "/crash", &[], b"");
    let incidents = |gw: &Gateway| -> Vec<Value> {
        let r = gw.admin_get("/api/v1/incidents");
        assert_eq!(r.status, 200);
        serde_json::from_slice::<Value>(&r.body).unwrap()["incidents"]
            .as_array()
            .unwrap()
            .clone()
    };
    let opened = eventually(Duration::from_secs(30), || {
        incidents(&gw)
            .into_iter()
            .find(|i| i["app"] == "web" && i["ended"].is_null())
    })
    .unwrap_or_else(|| panic!("no incident opened; events: {:?}", gw.jsonl("events.jsonl")));
    let id = opened["id"].as_str().unwrap().to_owned();
    assert!(
        ["crash_loop", "no_ready_instance"].contains(&opened["cause"].as_str().unwrap()),
        "{opened}"
    );
    // Requests meanwhile are gateway-made errors, counted as affected.
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    // `healgate status` shows it.
    let (code, out, _) = gw.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("OPEN since") && out.contains("web"), "{out}");
    std::fs::remove_file(&flag).unwrap();
    let closed = eventually(Duration::from_secs(40), || {
        incidents(&gw)
            .into_iter()
            .find(|i| i["id"] == id.as_str() && !i["ended"].is_null())
    })
    .expect("the incident closes once an instance serves again");
    let kinds: Vec<&str> = closed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"instance_ready"), "{closed}");
    assert!(
        closed["requests_affected"].as_u64().unwrap() >= 1,
        "{closed}"
    );
    // The event log is written by its own thread: wait for the lines.
    let closed_event = eventually(Duration::from_secs(5), || {
        gw.events("incident_closed").into_iter().next()
    })
    .expect("an incident_closed event");
    assert_eq!(closed_event["id"], id.as_str());
    assert_eq!(gw.events("incident_opened").len(), 1);
    // Still listed after the gateway restarts.
    gw.terminate();
    let dir = std::mem::replace(&mut gw.dir, TempDir::new("spare"));
    drop(gw);
    let again = Gateway::start_in(dir, &config);
    let listed = incidents(&again);
    let kept = listed
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not kept: {listed:?}"));
    assert_eq!(kept["ended"], closed["ended"]);
}

/// A webhook receiver on loopback: every JSON body POSTed to it, in order.
struct Hook {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Hook {
    fn start() -> Hook {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        store.lock().unwrap().push(v);
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Hook { addr, bodies }
    }

    fn received(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

#[test]
fn an_error_rate_alert_fires_to_a_webhook_and_resolves() {
    use common::{eventually, KeepAlive};
    use std::time::{Duration, Instant};
    let hook = Hook::start();
    let down = Refused::new();
    let gw = Gateway::start(&format!(
        r#"
[[app]]
name = "web"
command = ["{bin}", "demo-app", "--port", "{{port}}"]
instances = 1
routes = ["/"]

[[alert]]
name = "web-errors"
app = "web"
when = {{ error_rate_above = "5%", for = "2s" }}
webhook = "http://{hook}/hook"

[[alert]]
name = "to-a-dead-hook"
when = {{ error_rate_above = "5%" }}
webhook = "http://{down}/hook"
"#,
        bin = bin(),
        hook = hook.addr,
        down = down.addr,
    ));
    gw.wait_ready("web", 1);
    let mut conn = KeepAlive::new(gw.addr);
    // A burst of the app's own 500s for 3 s: the alert holds its 2 s and fires.
    let burst_end = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < burst_end {
        let t = Instant::now();
        let r = conn.send("GET", "/status/500", b"").unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.0, 500);
        std::thread::sleep(Duration::from_millis(20));
    }
    let fired = eventually(Duration::from_secs(10), || {
        hook.received().into_iter().find(|b| b["state"] == "firing")
    })
    .expect("the alert fires to the webhook");
    assert_eq!(fired["alert"], "web-errors");
    assert_eq!(fired["app"], "web");
    let text = fired["text"].as_str().unwrap();
    assert!(
        text.contains("FIRING web-errors") && text.contains("5xx from the app"),
        "{text}"
    );
    assert_eq!(
        gw.events("alert_fired")
            .iter()
            .filter(|e| e["alert"] == "web-errors")
            .count(),
        1
    );
    // Good requests bring the last minute's error rate under 5%: it resolves, once.
    let sent = hook.received().len();
    let good_end = Instant::now() + Duration::from_secs(30);
    let resolved = loop {
        for _ in 0..200 {
            let t = Instant::now();
            assert_eq!(conn.send("GET", "/", b"").unwrap().0, 200);
            slowest = slowest.max(t.elapsed());
        }
        if let Some(r) = hook
            .received()
            .into_iter()
            .find(|b| b["state"] == "resolved")
        {
            break r;
        }
        assert!(
            Instant::now() < good_end,
            "never resolved: {:?}",
            hook.received()
        );
    };
    assert_eq!(resolved["alert"], "web-errors");
    assert!(resolved["text"].as_str().unwrap().contains("RESOLVED"));
    assert_eq!(
        hook.received()
            .iter()
            .filter(|b| b["alert"] == "web-errors")
            .count(),
        2,
        "one firing and one resolution: {:?} (before: {sent})",
        hook.received()
    );
    // The dead webhook is retried with backoff, and the proxy never waited for it.
    let retried = eventually(Duration::from_secs(10), || {
        gw.stderr()
            .contains("to-a-dead-hook: webhook")
            .then_some(())
            .filter(|()| gw.stderr().contains("attempt 2 of 5"))
    });
    assert!(retried.is_some(), "{}", gw.stderr());
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?}"
    );
}

#[test]
fn the_log_stream_interleaves_app_output_and_events_redacted_and_follows() {
    use common::eventually;
    use std::io::{BufRead, BufReader};
    use std::time::Duration;
    let gw = Gateway::start(&format!(
        r#"
[[app]]
name = "web"
command = ["sh", "-c", "echo 'connecting with DB_PASSWORD=hunter2-very-secret' >&2; exec '{bin}' demo-app --port \"$PORT\""]
instances = 1
routes = ["/"]
"#,
        bin = bin()
    ));
    gw.wait_ready("web", 1);
    let lines = eventually(Duration::from_secs(5), || {
        let r = gw.admin_get("/api/v1/logs?app=web&lines=50");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let lines = v["lines"].as_array().unwrap().clone();
        lines
            .iter()
            .any(|l| l["stream"] == "stderr")
            .then_some(lines)
    })
    .expect("the app's stderr line in the stream");
    let all = serde_json::to_string(&lines).unwrap();
    assert!(!all.contains("hunter2"), "a secret reached the API: {all}");
    assert!(all.contains("DB_PASSWORD=[redacted]"), "{all}");
    assert!(lines
        .iter()
        .any(|l| l["stream"] == "event" && l["text"].as_str().unwrap().contains("instance_ready")));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    // `healgate logs web -f` follows the live stream: a crash's traceback and its
    // exit event arrive, in that order.
    let mut follow = Command::new(bin())
        .args(["logs", "web", "-f", "-n", "1", "-c"])
        .arg(gw.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // It printed the last line: it follows from there on.
    rx.recv_timeout(Duration::from_secs(10))
        .expect("logs -f prints the last line first");
    let _ = common::request(gw.addr, "GET", "/crash", &[], b"");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
        if seen
            .iter()
            .any(|l| l.contains("event | event instance_exited"))
        {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let error = seen
        .iter()
        .position(|l| l.contains("stderr | RuntimeError"));
    let exited = seen.iter().position(|l| l.contains("instance_exited"));
    assert!(
        matches!((error, exited), (Some(e), Some(x)) if e < x),
        "{seen:#?}"
    );
}
