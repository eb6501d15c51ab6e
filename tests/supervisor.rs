//! Hosted apps, with real child processes: crashes, kills, restarts and recycles
//! under load, with the pids, events and statuses a user would look at.

mod common;

use common::{eventually, get, Gateway, Load};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn demo_app(name: &str, instances: u32, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = {instances}\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n{extra}\n",
        common::bin()
    )
}

#[test]
fn kill_9_of_an_instance_under_load_fails_nothing() {
    let gw = Gateway::start(&demo_app("web", 3, ""));
    let before = gw.wait_ready("web", 3);
    let load = Load::start(gw.addr, 4, "/");
    load.wait_for(300);
    let (victim_id, victim_pid) = before[1].clone();
    common::signal(victim_pid, "KILL");
    // The slot comes back with a new pid.
    let after = eventually(Duration::from_secs(15), || {
        let now: HashMap<String, u32> = gw.ready_pids("web").into_iter().collect();
        now.get(&victim_id)
            .filter(|p| **p != victim_pid)
            .map(|_| now.clone())
    })
    .expect("the killed instance is replaced");
    // Keep the load on the whole 10 s.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        load.wait_for(50);
    }
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    assert!(done > 1000, "{done} requests");
    assert_ne!(after[&victim_id], victim_pid);
    let exit = gw
        .events("instance_exited")
        .into_iter()
        .find(|e| e["pid"] == victim_pid)
        .expect("an exit event for the killed pid");
    assert_eq!(exit["signal"], 9, "{exit}");
    assert_eq!(exit["instance"], victim_id.as_str());
}

#[test]
fn crash_under_load_fails_only_the_crashing_request() {
    let gw = Gateway::start(&demo_app("web", 3, ""));
    gw.wait_ready("web", 3);
    let load = Load::start(gw.addr, 4, "/");
    load.wait_for(300);
    let r = get(gw.addr, "/crash", &[]);
    load.wait_for(300);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("connection_terminated"));
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    let details = entry["details"].as_str().unwrap();
    assert!(
        details.contains("web#") && details.contains("exited with code 1"),
        "{details}"
    );
    assert!(
        details.contains("crash requested via /crash"),
        "the last stderr line: {details}"
    );
    // At most one retry after a crash: a poison request cannot take every instance down.
    assert!(gw.events("instance_exited").len() <= 2);
    gw.wait_ready("web", 3);
}

#[test]
fn an_app_that_exits_at_once_is_a_crash_loop_with_its_error() {
    let cfg = "[errors]\ndetails = true\n\n[[app]]\nname = \"broken\"\ncommand = [\"python3\", \"-c\", \"import nosuchmodule\"]\ninstances = 1\nroutes = [\"/\"]\n";
    let gw = Gateway::start(cfg);
    let started = Instant::now();
    let r = eventually(Duration::from_secs(15), || {
        let r = get(gw.addr, "/", &[]);
        (r.status == 503
            && r.header("proxy-status")
                .is_some_and(|p| p.contains("crash loop")))
        .then_some(r)
    })
    .expect("503 naming the crash loop");
    assert_eq!(r.proxy_error().as_deref(), Some("destination_unavailable"));
    let ps = r.header("proxy-status").unwrap();
    assert!(
        ps.contains("ModuleNotFoundError: No module named 'nosuchmodule'"),
        "{ps}"
    );
    assert!(r.header("retry-after").is_some());
    let st = gw.status();
    assert_eq!(st["apps"][0]["state"], "crash_loop", "{st}");
    assert!(!gw.events("crash_loop").is_empty());
    // Backoff grows: each delay at least the one before, and they double.
    let window = Duration::from_secs(8);
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let restarts = gw.events("instance_restarting");
    let delays: Vec<u64> = restarts
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    assert!(
        delays.len() >= 3 && delays[2] >= 4 * delays[0],
        "{delays:?}"
    );
    // No restart storm: 0.5 + 1 + 2 + 4 s of backoff fit at most 5 starts in 8 s.
    let starts = gw.events("instance_started").len();
    assert!((3..=5).contains(&starts), "{starts} starts in {window:?}");
}

#[test]
fn rolling_restart_under_load_changes_every_pid_and_fails_nothing() {
    let gw = Gateway::start(&demo_app("web", 3, ""));
    let before: HashSet<u32> = gw
        .wait_ready("web", 3)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let load = Load::start(gw.addr, 4, "/");
    load.wait_for(300);
    let (code, out, err) = gw.cli(&["restart", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    load.wait_for(300);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    let after: HashSet<u32> = gw
        .wait_ready("web", 3)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert!(
        before.is_disjoint(&after),
        "every pid changed: {before:?} → {after:?}"
    );
    assert_eq!(gw.events("instance_recycled").len(), 3);
    // The old processes are gone.
    for pid in before {
        assert!(
            eventually(Duration::from_secs(10), || (!std::path::Path::new(
                &format!("/proc/{pid}")
            )
            .exists())
            .then_some(()))
            .is_some()
        );
    }
}

#[test]
fn a_replacement_that_never_gets_ready_leaves_the_old_one_serving() {
    // First start: the demo app. Any later start: a process that never answers.
    let dir = common::TempDir::new("never-ready");
    let script = format!(
        "if [ -e started-once ]; then exec sleep 600; else touch started-once; exec {} demo-app --port \"$PORT\"; fi",
        common::bin()
    );
    let cfg = format!(
        "[[app]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", {script:?}]\ninstances = 1\nroutes = [\"/\"]\nstartup_timeout = \"2s\"\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n"
    );
    let gw = Gateway::start_in(dir, &cfg);
    let before = gw.wait_ready("web", 1);
    let (code, _out, err) = gw.cli(&["recycle", "web#1"]);
    assert_eq!(code, 1, "the recycle is reported as failed");
    assert!(err.contains("old instance keeps serving"), "{err}");
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-pid").unwrap().parse::<u32>().unwrap(),
        before[0].1
    );
    let failed = gw.events("recycle_failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not ready within"),
        "{}",
        failed[0]
    );
    assert_eq!(gw.ready_pids("web"), before);
}

fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            out.push((p, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn kill_9_of_the_gateway_leaves_no_instance() {
    let mut gw = Gateway::start(&demo_app("web", 3, ""));
    let pids: Vec<u32> = gw
        .wait_ready("web", 3)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut child = gw.child.take().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(2), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(
        gone.is_some(),
        "instances outlived the gateway: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_stops_every_instance_and_no_zombie_is_ever_seen() {
    let mut gw = Gateway::start(&demo_app("web", 3, ""));
    let gw_pid = gw.pid();
    let pids: Vec<u32> = gw
        .wait_ready("web", 3)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    // Crash one and let it be restarted, watching for zombies all along.
    let mut zombies = Vec::new();
    let _ = get(gw.addr, "/crash", &[]);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        zombies.extend(children_of(gw_pid).into_iter().filter(|(_, s)| *s == 'Z'));
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.wait_ready("web", 3);
    // The gateway's children, but its watchdog: that one exits once it sees the
    // gateway's end of its pipe close, a moment after the gateway.
    let is_watchdog = |p: u32| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.windows(10).any(|w| w == b"__watchdog"))
    };
    let (watchdogs, all): (Vec<u32>, Vec<u32>) = children_of(gw_pid)
        .into_iter()
        .map(|(p, _)| p)
        .partition(|p| is_watchdog(*p));
    let status = gw.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(zombies.is_empty(), "zombies seen: {zombies:?}");
    for p in pids.iter().chain(all.iter()) {
        assert!(!alive(*p), "pid {p} outlived the gateway");
    }
    for p in watchdogs {
        let gone = eventually(Duration::from_secs(5), || (!alive(p)).then_some(()));
        assert!(gone.is_some(), "the watchdog {p} outlived the gateway");
    }
    assert!(!gw.events("instance_stopped").is_empty());
}

#[test]
fn concurrency_limit_and_queue_refuse_the_third_request() {
    let gw = Gateway::start(&demo_app(
        "web",
        1,
        "max_concurrency = 1\nqueue = { size = 1, timeout = \"10s\" }",
    ));
    gw.wait_ready("web", 1);
    let addr = gw.addr;
    let first = std::thread::spawn(move || get(addr, "/slow?ms=2000", &[]));
    // The first is in flight once the instance reports it.
    eventually(Duration::from_secs(5), || {
        let st = gw.status();
        (st["apps"][0]["instances"][0]["inflight"] == 1).then_some(())
    })
    .expect("first request in flight");
    let second = std::thread::spawn(move || get(addr, "/slow?ms=10", &[]));
    eventually(Duration::from_secs(5), || {
        (gw.status()["apps"][0]["queued"] == 1).then_some(())
    })
    .expect("second request queued");
    let third = get(addr, "/slow?ms=10", &[]);
    assert_eq!(third.status, 503, "{}", third.text());
    assert_eq!(
        third.proxy_error().as_deref(),
        Some("connection_limit_reached")
    );
    assert!(third.header("retry-after").is_some());
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(second.join().unwrap().status, 200);
}

#[test]
fn scale_up_and_down() {
    let gw = Gateway::start(&demo_app("web", 1, "max_instances = 3"));
    gw.wait_ready("web", 1);
    // Bounded: a typo cannot start a thousand processes.
    let (code, out, err) = gw.cli(&["scale", "web", "1000"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("at most 3 instances"),
        "{out}{err}"
    );
    let (code, out, err) = gw.cli(&["scale", "web", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    gw.wait_ready("web", 3);
    let (code, _, err) = gw.cli(&["scale", "web", "2"]);
    assert_eq!(code, 0, "{err}");
    let left = gw.wait_ready("web", 2);
    assert!(left.iter().all(|(id, _)| id != "web#3"), "{left:?}");
    assert!(!gw.events("scaled").is_empty());
}

#[test]
fn app_output_is_captured_per_instance() {
    let gw = Gateway::start(&demo_app("web", 1, ""));
    gw.wait_ready("web", 1);
    let r = get(gw.addr, "/slow?ms=5", &[]);
    assert_eq!(r.status, 200);
    let log = gw.data().join("logs/apps/web/web#1.log");
    let text = eventually(Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.contains("GET /slow?ms=5").then_some(t)
    })
    .expect("the request line in the instance log");
    let line = text.lines().find(|l| l.contains("GET /slow?ms=5")).unwrap();
    // The instance's measurements are in the status.
    let inst = eventually(Duration::from_secs(5), || {
        let st = gw.status();
        let i = st["apps"][0]["instances"][0].clone();
        (i["threads"].as_u64() > Some(0)).then_some(i)
    })
    .expect("sampled");
    assert!(inst["requests"]["total"].as_u64().unwrap() >= 1, "{inst}");
    assert!(
        inst["requests"]["by_class"]["2xx"].as_u64().unwrap() >= 1,
        "{inst}"
    );
    assert!(inst["requests"]["p50_ms"].as_u64().is_some(), "{inst}");
    assert!(inst["open_files"].as_u64().unwrap() >= 3, "{inst}");
    assert!(inst["memory_bytes"].as_u64().unwrap() > 1 << 20, "{inst}");
    assert!(
        line.starts_with("20") && line.contains(" stdout | "),
        "{line}"
    );
}

#[test]
fn demo_answers_and_status_shows_three_ready_instances() {
    let dir = common::TempDir::new("demo");
    let (mut child, addr) = common::start_demo(dir.path());
    let status = || {
        let out = std::process::Command::new(common::bin())
            .args(["status", "--json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    let st = eventually(Duration::from_secs(20), || {
        status().filter(|s| s["apps"][0]["ready"] == 3)
    });
    let r = eventually(Duration::from_secs(5), || {
        let r = get(addr, "/", &[]);
        (r.status == 200).then_some(r)
    });
    common::signal(child.id(), "TERM");
    let exit = common::wait_timeout(&mut child, Duration::from_secs(30));
    let st = st.expect("three ready instances in status");
    assert_eq!(st["apps"][0]["name"], "demo");
    assert_eq!(st["apps"][0]["instances"].as_array().unwrap().len(), 3);
    assert!(r
        .expect("the demo answers")
        .text()
        .starts_with("hello from demo#"));
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
}

/// `healgate status` names each instance's state as its life goes: a hung instance
/// turns `unhealthy` once its checks fail `unhealthy_after` times in a row, then the
/// supervisor replaces it and the slot is `ready` again under a new pid.
#[test]
fn status_shows_a_hung_instance_unhealthy_until_it_is_replaced() {
    let gw = Gateway::start(&demo_app("web", 1, ""));
    let (id, hung) = gw.wait_ready("web", 1)[0].clone();
    let state = |gw: &Gateway| {
        let st = gw.status();
        let inst = &st["apps"][0]["instances"][0];
        (
            inst["state"].as_str().unwrap_or("-").to_owned(),
            inst["pid"].as_u64().unwrap_or(0) as u32,
        )
    };
    assert_eq!(state(&gw), ("ready".to_owned(), hung));
    // Never answered (the instance is replaced under it): sent, not waited for.
    let mut hang = std::net::TcpStream::connect(gw.addr).unwrap();
    std::io::Write::write_all(&mut hang, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    eventually(Duration::from_secs(10), || {
        (state(&gw) == ("unhealthy".to_owned(), hung)).then_some(())
    })
    .unwrap_or_else(|| panic!("{id} shown unhealthy: {}", gw.status()));
    let (_, new_pid) = eventually(Duration::from_secs(20), || {
        let (s, pid) = state(&gw);
        (s == "ready" && pid != hung).then_some((s, pid))
    })
    .unwrap_or_else(|| panic!("{id} replaced and ready: {}", gw.status()));
    let recycled = gw
        .events("instance_recycled")
        .into_iter()
        .find(|e| e["old_pid"] == hung)
        .expect("a recycle of the hung process");
    assert_eq!(recycled["pid"], new_pid);
    assert!(
        recycled["reason"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy: "),
        "{recycled}"
    );
    drop(hang);
}
