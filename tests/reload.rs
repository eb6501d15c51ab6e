//! Live reload: a valid file is applied as a diff under load; an invalid one is
//! refused with the `check` messages and nothing changes.

mod common;

use common::{eventually, get, Gateway, KeepAlive};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(web_command: &str) -> String {
    let bin = common::bin();
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[app]]\nname = \"web\"\ncommand = {web_command}\ninstances = 2\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n\n\
         [[app]]\nname = \"api\"\ncommand = [\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = 2\nroutes = [\"/api\"]\nstrip_prefix = true\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n"
    )
}

fn pids(gw: &Gateway, app: &str) -> HashSet<u32> {
    gw.ready_pids(app).into_iter().map(|(_, p)| p).collect()
}

fn wait_pids(gw: &Gateway, app: &str, n: usize) -> HashSet<u32> {
    eventually(Duration::from_secs(20), || {
        let p = pids(gw, app);
        (p.len() == n).then_some(p)
    })
    .unwrap_or_else(|| panic!("{app}: {n} ready"))
}

#[test]
fn reload_rolls_only_the_changed_app_and_refuses_an_invalid_file() {
    let bin = common::bin();
    let old_cmd = format!("[\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]");
    let gw = Gateway::start(&config(&old_cmd));
    let web_before = wait_pids(&gw, "web", 2);
    let api_before = wait_pids(&gw, "api", 2);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = ["/", "/api/", "/", "/api/"]
        .into_iter()
        .map(|path| {
            let (stop, done, failures, addr) =
                (stop.clone(), done.clone(), failures.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                let deadline = Instant::now() + Duration::from_secs(90);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match c.send("GET", path, b"") {
                        Ok((200, _, _)) => {}
                        Ok((s, h, _)) => {
                            failures.lock().unwrap().push(format!("{path}: {s} {h:?}"))
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let progress = |n: usize| {
        let t = done.load(Ordering::SeqCst) + n;
        eventually(Duration::from_secs(30), || {
            (done.load(Ordering::SeqCst) >= t).then_some(())
        })
        .expect("load progresses");
    };
    progress(200);

    // Change web's command only.
    let new_cmd = format!("[\"{bin}\", \"demo-app\", \"--port={{port}}\"]");
    std::fs::write(gw.config_path(), config(&new_cmd)).unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 changed"), "{out}");
    let web_after = eventually(Duration::from_secs(30), || {
        let p = pids(&gw, "web");
        (p.len() == 2 && p.is_disjoint(&web_before)).then_some(p)
    })
    .expect("web rolled to new pids");
    progress(200);

    // An invalid file: refused with the check messages; everything keeps running.
    std::fs::write(
        gw.config_path(),
        config(&new_cmd).replace(
            "instances = 2\nroutes = [\"/api\"]",
            "instancs = 2\nroutes = [\"/api\"]",
        ),
    )
    .unwrap();
    common::signal(gw.pid(), "HUP");
    let rejected = eventually(Duration::from_secs(5), || {
        gw.jsonl("events.jsonl")
            .into_iter()
            .find(|e| e["kind"] == "config_rejected")
    })
    .expect("a config_rejected event");
    assert!(
        rejected["problems"][0]
            .as_str()
            .unwrap()
            .contains("instancs"),
        "{rejected}"
    );
    let (code, _out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("instancs"), "{err}");
    progress(200);

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        done.load(Ordering::SeqCst),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(
        pids(&gw, "api"),
        api_before,
        "the unchanged app was not touched"
    );
    assert_eq!(
        pids(&gw, "web"),
        web_after,
        "the invalid file changed nothing"
    );
    let reloaded: Vec<_> = gw
        .jsonl("events.jsonl")
        .into_iter()
        .filter(|e| e["kind"] == "config_reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(reloaded[0]["changed"], serde_json::json!(["web"]));
    assert_eq!(reloaded[0]["routes_changed"], false, "a new command only");
    assert_eq!(get(gw.addr, "/api/", &[]).status, 200);
}

#[test]
fn reload_adds_and_removes_routes_atomically() {
    let up = common::upstreams::ok("from the new upstream");
    let bin = common::bin();
    let base = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[app]]\nname = \"web\"\ncommand = [\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\" }}\n"
    );
    let gw = Gateway::start(&base);
    wait_pids(&gw, "web", 1);
    let r = get(gw.addr, "/new/x", &[]);
    assert!(
        r.text().starts_with("hello") || r.status == 404,
        "served by web before the reload"
    );
    std::fs::write(
        gw.config_path(),
        format!(
            "{base}\n[[upstream]]\nname = \"new\"\nservers = [\"{}\"]\nroutes = [\"/new\"]\n",
            up.addr
        ),
    )
    .unwrap();
    common::signal(gw.pid(), "HUP");
    let r = eventually(Duration::from_secs(5), || {
        let r = get(gw.addr, "/new/x", &[]);
        (r.text() == "from the new upstream").then_some(r)
    });
    assert!(r.is_some(), "the new route serves after SIGHUP");
    std::fs::write(gw.config_path(), &base).unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 removed"), "{out}");
    assert_ne!(get(gw.addr, "/new/x", &[]).text(), "from the new upstream");
    let reloads = eventually(Duration::from_secs(5), || {
        let all = gw.events("config_reloaded");
        (all.len() == 2).then_some(all)
    })
    .expect("two config_reloaded events");
    let reloads: Vec<_> = reloads
        .iter()
        .map(|e| {
            (
                e["added"].clone(),
                e["removed"].clone(),
                e["routes_changed"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reloads,
        [
            (
                serde_json::json!(["new"]),
                serde_json::json!([]),
                true.into()
            ),
            (
                serde_json::json!([]),
                serde_json::json!(["new"]),
                true.into()
            ),
        ]
    );
}

/// A config with `web` running `web_command` (2 instances, `startup_timeout`) and
/// `api` (the demo app) that no reload below changes.
fn honest_config(web_command: &str, startup_timeout: &str) -> String {
    let bin = common::bin();
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[app]]\nname = \"web\"\ncommand = {web_command}\ninstances = 2\nroutes = [\"/\"]\nstartup_timeout = \"{startup_timeout}\"\n\
         health = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n\n\
         [[app]]\nname = \"api\"\ncommand = [\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = 1\nroutes = [\"/api\"]\nstrip_prefix = true\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n"
    )
}

/// `web` in the status answer.
fn web_status(gw: &Gateway) -> serde_json::Value {
    let st = gw.status();
    st["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "web").cloned())
        .unwrap_or_else(|| panic!("no web in {st}"))
}

/// Every web instance's revision (from status), by instance id.
fn web_revisions(gw: &Gateway) -> Vec<(String, serde_json::Value)> {
    web_status(gw)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["revision"].clone()))
        .collect()
}

/// The command line of a live process.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The old revision as status shows it once every web instance is ready on it.
fn settled_revision(gw: &Gateway) -> serde_json::Value {
    let web = web_status(gw);
    let rev = web["revision"].clone();
    assert!(rev.is_string(), "web has a revision: {web}");
    assert_eq!(web["mixed_revisions"], false, "{web}");
    for (id, r) in web_revisions(gw) {
        assert_eq!(r, rev, "{id} runs the app's revision: {web}");
    }
    rev
}

/// After a failed roll: web's instances all run `old` (the config's revision is the
/// failed one), none mixed; their pids are `pids`.
fn assert_still_on(gw: &Gateway, old: &serde_json::Value, pids_before: &HashSet<u32>) {
    let web = eventually(Duration::from_secs(10), || {
        let w = web_status(gw);
        (w["mixed_revisions"] == false && pids(gw, "web") == *pids_before).then_some(w)
    })
    .unwrap_or_else(|| {
        panic!(
            "web back on its old instances, not mixed: {}",
            web_status(gw)
        )
    });
    assert_eq!(web["stable_revision"], *old, "{web}");
    assert_ne!(
        web["revision"], *old,
        "the config's revision is the new one: {web}"
    );
    for (id, r) in web_revisions(gw) {
        assert_eq!(r, *old, "{id} stays on the old revision: {web}");
    }
}

#[test]
fn a_reload_whose_new_command_crashes_fails_loudly_and_keeps_the_old_revision() {
    let bin = common::bin();
    let old_cmd = format!("[\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]");
    let gw = Gateway::start(&honest_config(&old_cmd, "10s"));
    let before = wait_pids(&gw, "web", 2);
    let api_before = wait_pids(&gw, "api", 1);
    let old_rev = settled_revision(&gw);
    let load = common::Load::start(gw.addr, 3, "/");
    load.wait_for(100);

    let crashing = r#"["python3", "-c", "import sys; print('starting', flush=True); print('RuntimeError: bad config value', file=sys.stderr); sys.exit(1)"]"#;
    std::fs::write(gw.config_path(), honest_config(crashing, "10s")).unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    let said = format!("{out}{err}");
    assert_ne!(code, 0, "a failed roll is not a success: {said}");
    assert!(said.contains("web#"), "names the instance: {said}");
    assert!(
        said.contains("RuntimeError: bad config value"),
        "names the app's error: {said}"
    );
    load.wait_for(100);
    assert_still_on(&gw, &old_rev, &before);
    let failed = eventually(Duration::from_secs(5), || {
        gw.events("reload_failed").into_iter().next()
    })
    .expect("a reload_failed event");
    assert_eq!(failed["app"], "web", "{failed}");
    assert!(
        failed["instance"]
            .as_str()
            .unwrap_or("")
            .starts_with("web#"),
        "{failed}"
    );
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("RuntimeError: bad config value"),
        "{failed}"
    );

    // An old instance that crashes now comes back with the old command.
    let (victim_id, victim) = gw.ready_pids("web")[0].clone();
    common::signal(victim, "KILL");
    let back = eventually(Duration::from_secs(20), || {
        gw.ready_pids("web")
            .into_iter()
            .find(|(id, p)| *id == victim_id && *p != victim)
            .map(|(_, p)| p)
    })
    .unwrap_or_else(|| panic!("{victim_id} restarted: {}", web_status(&gw)));
    assert!(
        cmdline(back).contains("demo-app"),
        "restarted with the old command: {}",
        cmdline(back)
    );
    let web = web_status(&gw);
    assert_eq!(web["mixed_revisions"], false, "{web}");
    for (id, r) in web_revisions(&gw) {
        assert_eq!(
            r, old_rev,
            "{id} on the old revision after the restart: {web}"
        );
    }
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 200);
    load.wait_for(100);

    // A good command afterwards: rolls, says so, exits 0; nothing mixed once done.
    let fixed = format!("[\"{bin}\", \"demo-app\", \"--port={{port}}\"]");
    std::fs::write(gw.config_path(), honest_config(&fixed, "10s")).unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("web") && out.contains("rolled"), "{out}");
    assert!(out.contains("api") && out.contains("unchanged"), "{out}");
    let web = web_status(&gw);
    let new_rev = web["revision"].clone();
    assert_ne!(new_rev, old_rev, "{web}");
    assert_eq!(web["stable_revision"], new_rev, "{web}");
    assert_eq!(web["mixed_revisions"], false, "{web}");
    for (id, r) in web_revisions(&gw) {
        assert_eq!(r, new_rev, "{id} on the new revision: {web}");
    }
    let now = pids(&gw, "web");
    assert!(now.is_disjoint(&before) && !now.contains(&back), "{web}");
    for p in &now {
        assert!(cmdline(*p).contains("--port="), "{}", cmdline(*p));
    }
    load.wait_for(100);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    assert_eq!(
        pids(&gw, "api"),
        api_before,
        "the unchanged app was not touched"
    );
}

#[test]
fn a_reload_whose_new_command_never_gets_ready_fails_loudly_and_keeps_the_old_revision() {
    let bin = common::bin();
    let old_cmd = format!("[\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]");
    let gw = Gateway::start(&honest_config(&old_cmd, "10s"));
    let before = wait_pids(&gw, "web", 2);
    let old_rev = settled_revision(&gw);
    let load = common::Load::start(gw.addr, 3, "/");
    load.wait_for(100);

    let stuck = r#"["python3", "-c", "import sys, time; print('waiting for the database at db:5432', file=sys.stderr, flush=True); time.sleep(600)"]"#;
    std::fs::write(gw.config_path(), honest_config(stuck, "2s")).unwrap();
    let started = Instant::now();
    let (code, out, err) = gw.cli(&["reload"]);
    let said = format!("{out}{err}");
    assert_ne!(code, 0, "a failed roll is not a success: {said}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by startup_timeout: {:?}",
        started.elapsed()
    );
    assert!(said.contains("web#"), "names the instance: {said}");
    assert!(said.contains("not ready within 2s"), "says why: {said}");
    assert!(
        said.contains("waiting for the database at db:5432"),
        "names the app's last line: {said}"
    );
    assert_still_on(&gw, &old_rev, &before);
    // The stuck process is gone.
    let stuck_pids: Vec<u32> = gw
        .events("instance_started")
        .iter()
        .filter(|e| e["app"] == "web")
        .filter_map(|e| e["pid"].as_u64().map(|p| p as u32))
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!stuck_pids.is_empty());
    for p in stuck_pids {
        let gone = eventually(Duration::from_secs(10), || {
            (!std::path::Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        });
        assert!(gone.is_some(), "the stuck instance {p} was stopped");
    }
    let (text_code, text, _) = gw.cli(&["status"]);
    assert_eq!(text_code, 0);
    assert!(
        text.contains("reload failed") || text.contains("wanted"),
        "{text}"
    );
    load.wait_for(100);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
}

#[test]
fn a_roll_that_fails_half_way_rolls_the_replaced_instances_back() {
    let bin = common::bin();
    let old_cmd = format!("[\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]");
    let gw = Gateway::start(&honest_config(&old_cmd, "10s"));
    let before = wait_pids(&gw, "web", 2);
    let old_rev = settled_revision(&gw);
    let load = common::Load::start(gw.addr, 3, "/");
    load.wait_for(100);

    // The first new instance gets ready, the second finds the lock taken and fails.
    let lock = gw.dir.path().join("first-one-only");
    let half = format!(
        "[\"sh\", \"-c\", \"if mkdir {}; then exec {bin} demo-app --port=$PORT; else echo 'RuntimeError: only one may run' >&2; exit 1; fi\"]",
        lock.display()
    );
    std::fs::write(gw.config_path(), honest_config(&half, "10s")).unwrap();
    let (code, out, err) = gw.cli(&["reload"]);
    let said = format!("{out}{err}");
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("web#2") && said.contains("RuntimeError: only one may run"),
        "{said}"
    );
    assert!(
        said.contains("rolled back") && said.contains("web#1"),
        "{said}"
    );
    let web = web_status(&gw);
    assert_eq!(web["mixed_revisions"], false, "{web}");
    for (id, r) in web_revisions(&gw) {
        assert_eq!(r, old_rev, "{id} back on the old revision: {web}");
    }
    let now = pids(&gw, "web");
    assert_eq!(now.len(), 2, "{web}");
    for p in &now {
        assert!(!cmdline(*p).contains("--port="), "{}", cmdline(*p));
    }
    assert!(!now.is_disjoint(&before), "web#2 kept its process: {web}");
    load.wait_for(100);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
}
