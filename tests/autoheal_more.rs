//! AutoHeal triggers and actions that had only unit tests, with the real binary and
//! real instances: `cpu_above` on a burning demo instance, `unhealthy` on an app whose
//! health checks fail while it keeps running, and the `command` action's `{pid}` and
//! `{instance}`.

mod common;

use common::{eventually, get, Gateway, Load, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

/// An `[[app]]` named `web` running `command` (a TOML array) with `extra` appended.
fn app(command: &str, instances: u32, health: &str, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"web\"\ncommand = {command}\ninstances = {instances}\nroutes = [\"/\"]\nhealth = {health}\n{extra}\n"
    )
}

/// `instances` demo apps checked every 500 ms.
fn demo(instances: u32, extra: &str) -> String {
    let command = format!(
        "[\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]",
        common::bin()
    );
    app(
        &command,
        instances,
        "{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }",
        extra,
    )
}

/// A python3 app whose `/healthz` answers 500 once `<dir>/sick-<its pid>` exists (the
/// process keeps running and serving `/`); 200 otherwise. Every answer has `X-Pid`.
const SICKLY_APP: &str = r#"
import http.server, os, sys

port, state = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = self.path == "/healthz" and os.path.exists(
            os.path.join(state, "sick-%d" % os.getpid()))
        body = b"sick\n" if sick else b"ok\n"
        self.send_response(500 if sick else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pid", str(os.getpid()))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// `instances` of [`SICKLY_APP`] (written into `dir`) with the `health` table.
fn sickly(dir: &Path, instances: u32, health: &str, extra: &str) -> String {
    let script = dir.join("app.py");
    std::fs::write(&script, SICKLY_APP).unwrap();
    let command = format!(
        "[\"python3\", \"{}\", \"{{port}}\", \"{}\"]",
        script.display(),
        dir.display()
    );
    app(&command, instances, health, extra)
}

/// Make the instance with this pid fail its health checks from now on.
fn make_sick(dir: &Path, pid: u32) {
    std::fs::write(dir.join(format!("sick-{pid}")), "").unwrap();
}

#[test]
fn cpu_rule_recycles_the_burning_instance_only_without_failures() {
    let gw = Gateway::start(&demo(
        2,
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { cpu_above = { percent = 25, for = \"1s\" } }\naction = \"recycle\"\n",
    ));
    let before = gw.wait_ready("web", 2);
    // A light load (each request waits 20 ms in the app, burning nothing) that must
    // not see a failure while the burning instance is replaced.
    let load = Load::start(gw.addr, 2, "/slow?ms=20");
    load.wait_for(20);
    std::thread::sleep(Duration::from_millis(1200)); // two ticks of the light load: no firing
    assert!(
        gw.events("autoheal_fired").is_empty(),
        "the light load is far below 25 %: {:?}",
        gw.events("autoheal_fired")
    );
    // One thread burning for 3 s on whichever instance takes it: well over 25 % (even
    // with half a core on a busy machine) for longer than 1 s, whatever the phase of
    // the 500 ms sampling tick.
    let addr = gw.addr;
    let started = Instant::now();
    let burn = std::thread::spawn(move || get(addr, "/cpu?ms=3000", &[]));
    let fired = eventually(Duration::from_secs(6), || {
        gw.events("autoheal_fired").into_iter().next()
    })
    .unwrap_or_else(|| panic!("the cpu rule fires; status: {}", gw.status()));
    let detection = started.elapsed();
    let r = burn.join().unwrap();
    assert_eq!(r.status, 200, "the burn in flight finishes: {}", r.text());
    let burner: u32 = r.header("x-pid").unwrap().parse().unwrap();
    let (burner_id, _) = before
        .iter()
        .find(|(_, p)| *p == burner)
        .expect("the burner was one of the two")
        .clone();
    assert_eq!(fired["pid"], burner, "{fired}");
    assert_eq!(fired["instance"], burner_id.as_str(), "{fired}");
    assert_eq!(fired["rule"], 0, "{fired}");
    assert_eq!(fired["trigger"], "cpu_above 25% for 1s", "{fired}");
    assert_eq!(fired["threshold"].as_f64(), Some(25.0), "{fired}");
    let measured = fired["measured"].as_f64().unwrap();
    assert!(measured > 25.0, "measured above the threshold: {fired}");
    assert!(
        detection >= Duration::from_secs(1),
        "held for its duration before firing: {detection:?}"
    );
    let recycled = eventually(Duration::from_secs(10), || {
        gw.events("instance_recycled")
            .into_iter()
            .find(|e| e["old_pid"] == burner)
    })
    .expect("the burning instance is recycled");
    assert!(
        recycled["reason"].as_str().unwrap().contains("cpu_above"),
        "{recycled}"
    );
    let after = gw.wait_ready("web", 2);
    load.wait_for(20);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    assert!(!after.iter().any(|(_, p)| *p == burner), "{after:?}");
    let other = before.iter().find(|(_, p)| *p != burner).unwrap();
    assert!(after.contains(other), "the idle instance is left alone");
    let all = gw.events("autoheal_fired");
    assert!(
        all.iter().all(|e| e["pid"] == burner),
        "only the burning instance fired: {all:?}"
    );
    eprintln!("cpu rule: fired {detection:?} after the burn began, measured {measured} %");
}

/// The supervisor replaces an instance on its own after `unhealthy_after × 3` failed
/// checks; at 250 ms × 18 that is ~4.5 s after it turns sick, while the rule fires
/// after its first failed check (≤ 250 ms) + 1 s + one tick (≤ 500 ms). So the
/// recycle asserted here is AutoHeal's, and its reason says so.
#[test]
fn unhealthy_rule_recycles_an_instance_whose_checks_fail_while_it_runs() {
    let dir = TempDir::new("sickly");
    let gw = Gateway::start(&sickly(
        dir.path(),
        2,
        "{ path = \"/healthz\", interval = \"250ms\", timeout = \"200ms\", unhealthy_after = 6 }",
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { unhealthy = { for = \"1s\" } }\naction = \"recycle\"\n",
    ));
    let before = gw.wait_ready("web", 2);
    let (sick_id, sick) = before[0].clone();
    let (_, well) = before[1].clone();
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200);
    make_sick(dir.path(), sick);
    let turned = Instant::now();
    let fired = eventually(Duration::from_secs(4), || {
        gw.events("autoheal_fired").into_iter().next()
    })
    .unwrap_or_else(|| panic!("the unhealthy rule fires; status: {}", gw.status()));
    let detection = turned.elapsed();
    assert_eq!(fired["pid"], sick, "{fired}");
    assert_eq!(fired["instance"], sick_id.as_str(), "{fired}");
    assert_eq!(fired["rule"], 0, "{fired}");
    assert_eq!(fired["trigger"], "unhealthy for 1s", "{fired}");
    assert_eq!(fired["threshold"].as_f64(), Some(1.0), "{fired}");
    assert!(fired["measured"].as_f64().unwrap() >= 1.0, "{fired}");
    assert!(detection >= Duration::from_secs(1), "{detection:?}");
    assert_eq!(fired["actions"], serde_json::json!(["recycle"]), "{fired}");
    let recycled = eventually(Duration::from_secs(10), || {
        gw.events("instance_recycled")
            .into_iter()
            .find(|e| e["old_pid"] == sick)
    })
    .expect("the sick instance is recycled");
    assert_eq!(recycled["instance"], sick_id.as_str());
    assert!(
        recycled["reason"]
            .as_str()
            .unwrap()
            .starts_with("autoheal rule 0: unhealthy for 1s"),
        "AutoHeal's recycle, not the supervisor's own: {recycled}"
    );
    let new_pid = recycled["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, sick);
    let action = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_action")
            .into_iter()
            .find(|e| e["pid"] == sick && e["action"] == "recycle")
    })
    .expect("the recycle action is reported");
    assert_eq!(
        action["outcome"],
        format!("{sick_id} recycled: pid {sick} → pid {new_pid}")
    );
    // The replacement became ready (an event, so this holds whatever happens later).
    assert!(
        gw.events("instance_ready")
            .iter()
            .any(|e| e["pid"] == new_pid && e["instance"] == sick_id.as_str()),
        "the replacement is ready"
    );
    let after = gw.wait_ready("web", 2);
    assert!(!after.iter().any(|(_, p)| *p == sick), "{after:?}");
    assert!(after.iter().any(|(_, p)| *p == well), "the other stays");
    assert!(
        !gw.events("autoheal_fired").iter().any(|e| e["pid"] == well),
        "the healthy instance did not fire"
    );
    // The sick process is gone, not just out of rotation.
    let stopped = eventually(Duration::from_secs(10), || {
        gw.events("instance_stopped")
            .into_iter()
            .find(|e| e["pid"] == sick)
    });
    assert!(stopped.is_some(), "the sick process is stopped");
    eprintln!("unhealthy rule: fired {detection:?} after the checks began to fail");
}

/// A replacement must not inherit the `unhealthy` clock of the process it replaced.
/// `Slot::failing_since` (and `health_fails`) belong to the slot and are not reset
/// when a replacement becomes current (`Actor::ready`), so until the replacement's
/// first health check (one `interval` after it is ready) the rule sees the old
/// process's failure start and fires on the new, healthy process. With a 1 s interval
/// and the 500 ms AutoHeal tick, a tick always falls in that gap.
#[test]

fn unhealthy_rule_does_not_fire_on_the_healthy_replacement() {
    let dir = TempDir::new("sickly");
    let gw = Gateway::start(&sickly(
        dir.path(),
        1,
        "{ path = \"/healthz\", interval = \"1s\", timeout = \"500ms\", unhealthy_after = 10 }",
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { unhealthy = { for = \"500ms\" } }\naction = \"recycle\"\n",
    ));
    let before = gw.wait_ready("web", 1);
    let sick = before[0].1;
    make_sick(dir.path(), sick);
    let recycled = eventually(Duration::from_secs(5), || {
        gw.events("instance_recycled")
            .into_iter()
            .find(|e| e["old_pid"] == sick)
    })
    .unwrap_or_else(|| panic!("the sick instance is recycled; status: {}", gw.status()));
    let new_pid = recycled["pid"].as_u64().unwrap() as u32;
    // Its first check comes 1 s after it is ready; watch a little longer than that.
    let wrong = eventually(Duration::from_millis(2500), || {
        gw.events("autoheal_fired")
            .into_iter()
            .find(|e| e["pid"] == new_pid)
    });
    assert!(
        wrong.is_none(),
        "the healthy replacement (pid {new_pid}) fired: {}",
        wrong.unwrap()
    );
    assert_eq!(gw.ready_pids("web"), vec![(before[0].0.clone(), new_pid)]);
}

#[test]
fn command_action_runs_with_the_instance_pid_and_id_and_reports_its_exit() {
    let out = TempDir::new("command");
    let file = out.path().join("fired");
    // pid and id as positional arguments of `sh -c` (the id, `web#1`, is not quoted
    // inside the script); written to a temporary name, then renamed: the file appears
    // whole. Exit 7: the reported outcome is the command's own.
    let rule = r#"[[app.autoheal.rule]]
when = { requests = { count = 3 } }
action = { command = ["sh", "-c", 'printf "%s %s" "$1" "$2" > "$3.tmp" && mv "$3.tmp" "$3"; exit 7', "sh", "{pid}", "{instance}", "FILE"] }
"#
    .replace("FILE", file.to_str().unwrap());
    let gw = Gateway::start(&demo(
        1,
        &format!("[app.autoheal]\nmin_uptime = \"0s\"\n{rule}"),
    ));
    let before = gw.wait_ready("web", 1);
    let (id, pid) = before[0].clone();
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    let written = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&file).ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "the command ran; events: {:?}",
            gw.events("autoheal_action")
        )
    });
    assert_eq!(written, format!("{pid} {id}"), "the instance's pid and id");
    let fired = gw.events("autoheal_fired");
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["pid"], pid);
    assert_eq!(fired[0]["trigger"], "requests 3");
    assert!(
        fired[0]["actions"][0]
            .as_str()
            .unwrap()
            .starts_with("command sh -c"),
        "{}",
        fired[0]
    );
    let action = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_action").into_iter().next()
    })
    .expect("an autoheal_action event");
    assert_eq!(action["instance"], id.as_str(), "{action}");
    assert_eq!(action["pid"], pid, "{action}");
    assert!(
        action["action"]
            .as_str()
            .unwrap()
            .starts_with("command sh -c"),
        "{action}"
    );
    assert_eq!(action["outcome"], "exited with exit status: 7", "{action}");
    // A command alone does not replace the instance.
    assert_eq!(gw.ready_pids("web"), before);
    assert!(gw.events("instance_recycled").is_empty());
}
