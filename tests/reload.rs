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
