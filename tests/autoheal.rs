//! AutoHeal and autoscale with real instances: a rule fires on what was measured,
//! recycles with overlap, says why in its events, and no request fails.

mod common;

use common::{eventually, get, Gateway, KeepAlive, Load};
use std::time::{Duration, Instant};

fn app(instances: u32, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"web\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = {instances}\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n{extra}\n",
        common::bin()
    )
}

#[test]
fn memory_rule_recycles_the_leaking_instance_within_3s_without_failures() {
    let gw = Gateway::start(&app(
        2,
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { memory_above = \"64MiB\" }\naction = \"recycle\"\n",
    ));
    let before = gw.wait_ready("web", 2);
    let load = Load::start(gw.addr, 3, "/");
    load.wait_for(200);
    // Leak 100 MiB in whichever instance takes this request.
    let r = get(gw.addr, "/leak?mb=100", &[]);
    assert_eq!(r.status, 200);
    let leaker: u32 = r.header("x-pid").unwrap().parse().unwrap();
    let crossed = Instant::now();
    let fired = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_fired").into_iter().next()
    })
    .expect("the memory rule fires within 3 s of crossing the line");
    let detection = crossed.elapsed();
    let recycled = eventually(Duration::from_secs(10), || {
        gw.events("instance_recycled")
            .into_iter()
            .find(|e| e["old_pid"] == leaker)
    })
    .expect("the leaking instance is recycled");
    load.wait_for(200);
    let (done, failures, _) = load.finish();
    common::assert_none_failed(done, &failures);
    assert_eq!(fired["pid"], leaker);
    assert_eq!(fired["threshold"], 64u64 << 20);
    assert!(fired["measured"].as_u64().unwrap() > 64 << 20, "{fired}");
    assert!(fired["trigger"].as_str().unwrap().contains("memory_above"));
    assert!(
        recycled["reason"]
            .as_str()
            .unwrap()
            .contains("memory_above"),
        "{recycled}"
    );
    let after = gw.wait_ready("web", 2);
    assert!(!after.iter().any(|(_, p)| *p == leaker));
    assert!(
        after
            .iter()
            .any(|(_, p)| before.iter().any(|(_, b)| b == p)),
        "the other instance was left alone"
    );
    eprintln!("memory rule detection latency: {detection:?}");
}

#[test]
fn slow_requests_rule_fires_at_its_count_and_respects_min_uptime() {
    let rule = "[[app.autoheal.rule]]\nwhen = { slow_requests = { count = 3, slower_than = \"100ms\", within = \"1m\" } }\naction = \"recycle\"\n";
    // Young instances: min_uptime holds the rule back.
    let gw = Gateway::start(&app(
        1,
        &format!("[app.autoheal]\nmin_uptime = \"1h\"\n{rule}"),
    ));
    gw.wait_ready("web", 1);
    for _ in 0..4 {
        assert_eq!(get(gw.addr, "/slow?ms=150", &[]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(1200)); // two evaluation ticks
    assert!(
        gw.events("autoheal_fired").is_empty(),
        "min_uptime holds the rule back"
    );
    drop(gw);

    let gw = Gateway::start(&app(
        1,
        &format!("[app.autoheal]\nmin_uptime = \"0s\"\n{rule}"),
    ));
    let before = gw.wait_ready("web", 1);
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/slow?ms=150", &[]).status, 200);
    }
    // Fast requests do not count.
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        gw.events("autoheal_fired").is_empty(),
        "two slow requests of three: not yet"
    );
    assert_eq!(get(gw.addr, "/slow?ms=150", &[]).status, 200);
    let fired = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_fired").into_iter().next()
    })
    .expect("fires at the third");
    assert_eq!(fired["measured"], 3);
    assert_eq!(fired["threshold"], 3);
    let after = eventually(Duration::from_secs(10), || {
        let p = gw.ready_pids("web");
        (p.len() == 1 && p[0].1 != before[0].1).then_some(p)
    });
    assert!(after.is_some(), "recycled");
}

#[test]
fn status_rule_recycles_then_max_recycles_suppresses() {
    let gw = Gateway::start(&app(
        2,
        "[app.autoheal]\nmin_uptime = \"0s\"\nmax_recycles = { count = 1, within = \"1h\" }\n[[app.autoheal.rule]]\nwhen = { status = { codes = \"500-599\", count = 5, within = \"1m\" } }\naction = \"recycle\"\n",
    ));
    gw.wait_ready("web", 2);
    let burst = |gw: &Gateway| {
        // A burst of 500s from one instance: keep-alive on one connection goes to
        // whichever instance the balancer picks; count per instance.
        let mut c = KeepAlive::new(gw.addr);
        for _ in 0..20 {
            let (s, _, _) = c.send("GET", "/status/500", b"").unwrap();
            assert_eq!(s, 500, "the app's own 500 passes through");
        }
    };
    burst(&gw);
    let fired = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_fired").into_iter().next()
    })
    .expect("fires");
    assert!(fired["trigger"]
        .as_str()
        .unwrap()
        .starts_with("status 500-599"));
    eventually(Duration::from_secs(10), || {
        (!gw.events("instance_recycled").is_empty()).then_some(())
    })
    .expect("recycled");
    gw.wait_ready("web", 2);
    burst(&gw);
    let suppressed = eventually(Duration::from_secs(3), || {
        gw.events("autoheal_suppressed").into_iter().next()
    })
    .expect("the second firing is suppressed");
    assert!(
        suppressed["reason"]
            .as_str()
            .unwrap()
            .contains("max_recycles"),
        "{suppressed}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gw.events("instance_recycled").len(), 1, "no second recycle");
}

#[test]
fn diagnose_action_captures_the_process_before_the_recycle() {
    let gw = Gateway::start(&app(
        1,
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { requests = { count = 5 } }\naction = [\"diagnose\", \"recycle\"]\n",
    ));
    let before = gw.wait_ready("web", 1);
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    let captured = eventually(Duration::from_secs(30), || {
        gw.events("autoheal_action")
            .into_iter()
            .find(|e| e["action"] == "diagnose")
    })
    .expect("a diagnose action event");
    assert_eq!(captured["outcome"], "captured", "{captured}");
    // A whole diagnostic bundle with its report, the instance captured first.
    let bundle = std::path::PathBuf::from(captured["path"].as_str().unwrap());
    assert!(bundle.join("report.json").exists() && bundle.join("report.html").exists());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("bundle.json")).unwrap())
            .unwrap();
    let dir = bundle.join(manifest["processes"][0]["dir"].as_str().unwrap());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["pid"], before[0].1,
        "the old process, captured before its recycle"
    );
    assert!(summary["threads"].as_u64().unwrap() >= 1);
    for f in ["status.txt", "open_files.txt", "threads.txt"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(dir.join("status.txt"))
        .unwrap()
        .contains("VmRSS"));
    assert!(bundle.starts_with(gw.data().join("diagnostics")));
    let recycled = eventually(Duration::from_secs(15), || {
        gw.events("instance_recycled").into_iter().next()
    })
    .expect("then recycled");
    assert_eq!(recycled["old_pid"], before[0].1);
}

#[test]
fn autoscale_grows_to_max_under_load_and_shrinks_to_min_after_cooldown() {
    let gw = Gateway::start(&app(
        1,
        "max_concurrency = 4\n[app.autoscale]\nmin = 1\nmax = 3\ntarget_inflight = 2\ncooldown = \"2s\"\n",
    ));
    gw.wait_ready("web", 1);
    // 8 concurrent slow requests: 4 per instance needed at target 2 → max.
    let load = Load::start(gw.addr, 8, "/slow?ms=200");
    let grown = eventually(Duration::from_secs(20), || {
        (gw.ready_pids("web").len() == 3).then_some(())
    });
    load.wait_for(40);
    let (done, failures, _) = load.finish();
    assert!(grown.is_some(), "grew to max: {}", gw.status());
    common::assert_none_failed(done, &failures);
    let shrunk = eventually(Duration::from_secs(20), || {
        (gw.ready_pids("web").len() == 1
            && gw.status()["apps"][0]["instances"]
                .as_array()
                .unwrap()
                .len()
                == 1)
            .then_some(())
    });
    assert!(
        shrunk.is_some(),
        "back to min after the cooldown: {}",
        gw.status()
    );
    let scaled = gw.events("scaled");
    assert!(scaled.iter().any(|e| e["to"] == 3), "{scaled:?}");
    assert!(scaled.last().unwrap()["to"] == 1, "{scaled:?}");
    assert!(scaled
        .iter()
        .all(|e| e["reason"].as_str().unwrap().starts_with("autoscale")));
}
