//! A request that kills the worker serving it, behind a pre-fork server (gunicorn):
//! the master never exits, so no exit notice comes; still the request is retried at
//! most once, and its access line lists every attempt's instance and outcome.

mod common;

use common::{get, Gateway, TempDir};
use std::process::Command;

const APP: &str = r#"
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        os._exit(1)
    body = ("ok from %d\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn gunicorn_available() {
    let ok = Command::new("python3")
        .args(["-c", "import gunicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test runs a real gunicorn: `python3 -m pip install gunicorn` (scripts/test does)"
    );
}

#[test]
fn a_request_that_kills_prefork_workers_is_retried_once_and_every_attempt_is_logged() {
    gunicorn_available();
    let dir = TempDir::new("prefork");
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    let cfg = format!(
        "[[app]]\nname = \"web\"\ncommand = [\"python3\", \"-m\", \"gunicorn\", \"-w\", \"2\", \"-b\", \"127.0.0.1:{{port}}\", \"app:app\"]\n\
         cwd = \"{}\"\ninstances = 3\nroutes = [\"/\"]\nhealth = {{ path = \"/\", interval = \"1s\" }}\n",
        dir.path().display()
    );
    let gw = Gateway::start(&cfg);
    gw.wait_ready("web", 3);
    assert_eq!(get(gw.addr, "/", &[]).status, 200);

    let r = get(gw.addr, "/crash", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("connection_terminated"));
    let entry = gw.access_entry(r.header("x-request-id").unwrap());
    assert_eq!(
        entry["attempts"], 2,
        "retried once, not on every instance: {entry}"
    );
    let tried = entry["tried"].as_array().expect("every attempt listed");
    assert_eq!(tried.len(), 2, "{entry}");
    assert!(
        tried
            .iter()
            .all(|t| t["outcome"] == "connection_terminated"),
        "{entry}"
    );
    assert_ne!(tried[0]["upstream"], tried[1]["upstream"], "{entry}");
    // The third instance was never hit: it still serves, as do the others once
    // their masters replace the workers.
    let ok = common::eventually(std::time::Duration::from_secs(10), || {
        (0..6)
            .all(|_| get(gw.addr, "/", &[]).status == 200)
            .then_some(())
    });
    assert!(ok.is_some());
}
