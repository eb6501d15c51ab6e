//! `healgate why REQUEST_ID` and `GET /api/v1/requests/{id}` against the real binary:
//! a request whose instance crashed under it, one refused by a full queue, one that
//! succeeded, and an id no request had; then the same from the files alone.

mod common;

use common::*;
use std::time::Duration;

fn app_config(extra: &str) -> String {
    format!(
        "[[app]]\nname = \"web\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = 1\nroutes = [\"/\"]\n{extra}\n",
        bin()
    )
}

fn request_id(r: &Resp) -> String {
    r.header("x-request-id").expect("x-request-id").to_owned()
}

#[test]
fn why_a_crash_names_the_instance_the_exit_and_the_apps_error_line() {
    let gw = Gateway::start(&app_config(""));
    let ready = gw.wait_ready("web", 1);
    let (instance, pid) = &ready[0];
    let crash = request(gw.addr, "POST", "/crash", &[], b"").unwrap();
    assert_eq!(crash.status, 502, "{}", crash.text());
    let id = request_id(&crash);
    let line = gw.access_entry(&id);
    assert_eq!(line["error"], "connection_terminated", "{line}");
    eventually(Duration::from_secs(10), || {
        (!gw.events("instance_exited").is_empty()).then_some(())
    })
    .expect("the exit is in the event log");

    let (code, out, err) = gw.cli(&["why", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "{instance} (pid {pid}) exited with code 1 while handling it"
        )),
        "{out}"
    );
    assert!(
        out.contains("RuntimeError: crash requested via /crash"),
        "{out}"
    );
    assert!(out.contains("not retried because POST"), "{out}");
    assert!(out.contains("fix the app's error"), "{out}");

    // --json and the API say the same.
    let (code, json, err) = gw.cli(&["why", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let story: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(story["request_id"], id.as_str());
    assert_eq!(story["attempts"][0]["upstream"], instance.as_str());
    assert_eq!(story["attempts"][0]["pid"], *pid);
    assert!(story["headline"]
        .as_str()
        .unwrap()
        .starts_with("502 connection_terminated"));
    let api = gw.admin_get(&format!("/api/v1/requests/{id}"));
    assert_eq!(api.status, 200, "{}", api.text());
    let from_api: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(from_api["headline"], story["headline"]);
    let unauthorized = get(gw.admin, &format!("/api/v1/requests/{id}"), &[]);
    assert_eq!(unauthorized.status, 401);

    // The restart is in the story once it happened.
    eventually(Duration::from_secs(10), || {
        let (_, out, _) = gw.cli(&["why", &id]);
        out.contains(&format!("{instance} was restarted"))
            .then_some(())
    })
    .expect("the restart is told");
}

#[test]
fn why_a_queued_then_refused_request_names_the_queue() {
    let gw = Gateway::start(&app_config(
        "max_concurrency = 1\nqueue = { size = 1, timeout = \"300ms\" }",
    ));
    gw.wait_ready("web", 1);
    let addr = gw.addr;
    let slow: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/slow?ms=2000", &[], b"")))
        .collect();
    let answers: Vec<Resp> = slow
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let refused: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.proxy_error().as_deref() == Some("connection_limit_reached"))
        .collect();
    assert!(
        !refused.is_empty(),
        "no 503 among {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in refused {
        let id = request_id(r);
        gw.access_entry(&id);
        let (code, out, err) = gw.cli(&["why", &id]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("503 connection_limit_reached"), "{out}");
        assert!(out.contains("queue.size = 1"), "{out}");
        assert!(out.contains("max_concurrency = 1"), "{out}");
        assert!(out.contains("raise [app] queue.size"), "{out}");
    }
    // The 200s say who answered.
    let ok = answers
        .iter()
        .find(|r| r.status == 200)
        .expect("one got through");
    let id = request_id(ok);
    gw.access_entry(&id);
    let (code, out, _) = gw.cli(&["why", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("200 from web#1 in "), "{out}");
}

#[test]
fn why_an_unknown_id_says_so_and_the_files_answer_without_a_gateway() {
    let mut gw = Gateway::start(&app_config(""));
    gw.wait_ready("web", 1);
    let (code, _, err) = gw.cli(&["why", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(code, 1);
    assert!(err.contains("no request with this id"), "{err}");
    let ok = get(gw.addr, "/", &[]);
    assert_eq!(ok.status, 200);
    let id = request_id(&ok);
    gw.access_entry(&id);
    gw.terminate();
    // No gateway: the files tell the same story.
    let (code, out, err) = gw.cli(&["why", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("200 from web#1 in "), "{out}");
    let (code, _, err) = gw.cli(&["why", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no request with this id"), "{err}");
}
