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
