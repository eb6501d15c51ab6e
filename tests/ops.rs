//! Operating the gateway: its stderr log lines, the data-dir lock, log reopening and
//! rotation, and what every signal does.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn demo_app(instances: u32) -> String {
    format!(
        "[[app]]\nname = \"web\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = {instances}\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n",
        bin()
    )
}

#[test]
fn stderr_under_a_pipe_is_plain_and_an_event_is_one_line() {
    let gw = Gateway::start(&demo_app(1));
    let ready = gw.wait_ready("web", 1);
    let pid = ready[0].1;
    let err = eventually(Duration::from_secs(5), || {
        let e = gw.stderr();
        e.contains("instance_ready").then_some(e)
    })
    .expect("instance_ready on stderr");
    assert!(
        !err.contains('\x1b'),
        "ANSI escapes in piped stderr:\n{err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("instance_ready"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(
        line.contains("INFO event instance_ready app=web instance=web#1")
            && line.contains(&format!("pid={pid}")),
        "{line}"
    );
    assert!(!line.contains('{') && !line.contains("\"ts\""), "{line}");
}

#[test]
fn rust_log_is_honoured() {
    let dir = TempDir::new("rustlog");
    let cfg = dir.path().join("healgate.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    // `error` hides the INFO lines; a lock failure (exit 1) is printed anyway.
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .env_remove("HEALGATE_LOG")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gw_started = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("data/logs/events.jsonl"))
            .ok()
            .filter(|t| t.contains("gateway_started"))
    });
    signal(child.id(), "TERM");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(gw_started.is_some(), "the gateway did not start");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("INFO"), "RUST_LOG=error ignored:\n{err}");
}

#[test]
fn a_second_gateway_on_the_same_data_dir_refuses_to_start() {
    let gw = Gateway::start("");
    let first = gw.pid();
    let mut second = Command::new(bin())
        .args(["run", "-c"])
        .arg(gw.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut second, Duration::from_secs(10));
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second gateway started on the same data_dir");
    }
    let mut err = String::new();
    use std::io::Read;
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.unwrap().code(), Some(1), "{err}");
    assert!(
        err.contains("in use by another gateway") && err.contains(&format!("pid {first}")),
        "{err}"
    );
    // The first one is untouched.
    assert!(get(gw.addr, "/nothing", &[]).status == 404);
    let pid_file = std::fs::read_to_string(gw.data().join("healgate.pid")).unwrap();
    assert_eq!(pid_file.trim(), first.to_string());
}

fn access_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn sigusr1_reopens_the_logs_after_a_rename() {
    let gw = Gateway::start("");
    let logs = gw.data().join("logs");
    for id in ["before-1", "before-2"] {
        assert_eq!(get(gw.addr, "/x", &[("X-Request-Id", id)]).status, 404);
    }
    gw.access_entry("before-2");
    std::fs::rename(logs.join("access.jsonl"), logs.join("access.jsonl.1")).unwrap();
    std::fs::rename(logs.join("events.jsonl"), logs.join("events.jsonl.1")).unwrap();
    signal(gw.pid(), "USR1");
    eventually(Duration::from_secs(5), || {
        gw.stderr().contains("SIGUSR1: reopening").then_some(())
    })
    .unwrap_or_else(|| panic!("no reopen line; stderr:\n{}", gw.stderr()));
    assert_eq!(
        get(gw.addr, "/x", &[("X-Request-Id", "after-1")]).status,
        404,
        "the gateway still serves after SIGUSR1"
    );
    gw.access_entry("after-1");
    assert_eq!(access_ids(&logs.join("access.jsonl")), ["after-1"]);
    assert_eq!(
        access_ids(&logs.join("access.jsonl.1")),
        ["before-1", "before-2"]
    );
    let mut gw = gw;
    assert!(gw.terminate().success());
    // The event log was reopened too: the stop lands in the new file.
    let events = std::fs::read_to_string(logs.join("events.jsonl")).unwrap();
    assert!(events.contains("gateway_stopped"), "{events}");
    assert!(!events.contains("gateway_started"), "{events}");
}

#[test]
fn access_log_rotates_at_max_size_keeping_keep_files() {
    let gw = Gateway::start(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n[gateway.logs]\nmax_size = \"1KiB\"\nkeep = 2\n",
    );
    for i in 0..40 {
        let id = format!("req-{i:02}");
        assert_eq!(get(gw.addr, "/x", &[("X-Request-Id", &id)]).status, 404);
    }
    let logs = gw.data().join("logs");
    eventually(Duration::from_secs(5), || {
        access_ids(&logs.join("access.jsonl"))
            .contains(&"req-39".to_owned())
            .then_some(())
    })
    .expect("the last request is in the live file");
    for name in ["access.jsonl", "access.jsonl.1", "access.jsonl.2"] {
        let len = std::fs::metadata(logs.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0 && len < 2048, "{name}: {len} bytes");
    }
    assert!(!logs.join("access.jsonl.3").exists());
}

#[test]
fn an_unhandled_signal_is_a_logged_orderly_exit() {
    let mut gw = Gateway::start("");
    let mut child = gw.child.take().unwrap();
    signal(child.id(), "USR2");
    let status = wait_timeout(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running after SIGUSR2")
    });
    let err = gw.stderr();
    assert!(status.success(), "{status:?}; stderr:\n{err}");
    assert!(
        err.contains("SIGUSR2: not a signal healgate acts on") && err.contains("shutting down"),
        "{err}"
    );
    let stopped = gw.events("gateway_stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["signal"], "SIGUSR2");
}
