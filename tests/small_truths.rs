//! Small truths: the demo's 502 names the crashed instance and its exit, and the
//! backoff starts over after a recovery.

mod common;

use common::{eventually, get, Gateway, TempDir};
use std::time::Duration;

#[test]
fn the_demo_crash_502_names_the_instance_and_its_exit() {
    let dir = TempDir::new("demo-details");
    let (mut child, addr) = common::start_demo(dir.path());
    let ready = eventually(Duration::from_secs(20), || {
        (get(addr, "/", &[]).status == 200).then_some(())
    });
    let r = ready.map(|_| get(addr, "/crash", &[]));
    common::signal(child.id(), "TERM");
    let _ = common::wait_timeout(&mut child, Duration::from_secs(30));
    let r = r.expect("the demo answers");
    assert_eq!(r.status, 502, "{}", r.text());
    let ps = r.header("proxy-status").unwrap_or_default();
    assert!(ps.contains("details="), "{ps}");
    assert!(
        ps.contains("demo#") && ps.contains("exited with code 1"),
        "{ps}"
    );
}

#[test]
fn the_backoff_starts_over_after_an_instance_served_a_while() {
    let dir = TempDir::new("backoff-reset");
    // Starts 1-3 exit at once; start 4 serves for 11 s, then exits; later ones serve.
    std::fs::write(
        dir.path().join("app.py"),
        "import os, sys, threading, http.server\n\
         n = int(open('starts').read()) if os.path.exists('starts') else 0\n\
         open('starts', 'w').write(str(n + 1))\n\
         if n < 3:\n    sys.exit(1)\n\
         if n == 3:\n    threading.Timer(11, lambda: os._exit(1)).start()\n\
         http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()\n",
    )
    .unwrap();
    let cwd = dir.path().display().to_string();
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[[app]]\nname = \"web\"\ncommand = [\"python3\", \"app.py\"]\ncwd = \"{cwd}\"\ninstances = 1\nroutes = [\"/\"]\n"
        ),
    );
    let delays = eventually(Duration::from_secs(30), || {
        let d: Vec<u64> = gw
            .events("instance_restarting")
            .iter()
            .map(|e| e["delay_ms"].as_u64().unwrap())
            .collect();
        (d.len() >= 4).then_some(d)
    })
    .expect("four restarts");
    assert_eq!(&delays[..3], [500, 1000, 2000], "{delays:?}");
    assert_eq!(delays[3], 500, "after 11 s of serving: {delays:?}");
    let exits = gw.events("instance_exited");
    assert!(exits[3]["uptime_s"].as_f64().unwrap() >= 10.0, "{exits:?}");
}
