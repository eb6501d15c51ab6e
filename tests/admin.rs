//! The admin API and the CLI verbs that use it: the real `admin::serve` in-process on
//! 127.0.0.1:0, in front of a fake supervisor whose command channel the test drives
//! (canned answers), plus the real binary's `status`, `recycle`, `scale` and `logs`.

mod common;

use common::{request, Resp, TempDir};
use healgate::admin::{self, AdminState};
use healgate::observe::events::{Event, Events};
use healgate::supervisor::control::{
    AppState, AppStatus, Command, ControlError, Envelope, Handle, InstanceState, InstanceStatus,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The token every fixture uses.
const TOKEN: &str = "test-token-0123456789";

/// The real admin server on 127.0.0.1:0 with a fake supervisor that records every
/// command and answers from a script: app `web` exists with instances `web#1`,
/// `web#2`; anything else is unknown; scaling to 0 is refused.
struct Admin {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    /// Unique per fixture, so a port reused by a parallel test is told apart.
    token: String,
    events: Events,
    received: Arc<Mutex<Vec<Command>>>,
    stop: watch::Sender<bool>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Admin {
    fn start() -> Admin {
        Admin::start_with(true)
    }

    /// `with_supervisor = false`: a gateway that runs no apps.
    fn start_with(with_supervisor: bool) -> Admin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let supervisor = with_supervisor.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(fake_supervisor(rx, received.clone()));
            Handle::new(tx, Arc::new(snapshot))
        });
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let token = format!("{TOKEN}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let events = Events::new(None);
        let state = Arc::new(AdminState {
            token: token.clone(),
            control: supervisor,
            events: events.clone(),
            started: Instant::now() - Duration::from_secs(90),
            metrics_public: false,
            snapshot: Arc::new(Default::default),
            logins: Default::default(),
            diagnostics: None,
            info: Default::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let served = rt.spawn(admin::serve(listener, state, stop_rx));
        Admin {
            rt,
            addr,
            token,
            events,
            received,
            stop,
            served: Some(served),
        }
    }

    /// One request with the right token.
    fn call(&self, method: &str, path: &str, body: &str) -> Resp {
        self.call_as(Some(&self.token), method, path, body)
    }

    fn call_as(&self, token: Option<&str>, method: &str, path: &str, body: &str) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        request(self.addr, method, path, &headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|c| format!("{c:?}"))
            .collect()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(served) = self.served.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await });
        }
    }
}

/// Answer commands the way the real supervisor would, recording each.
async fn fake_supervisor(
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    received: Arc<Mutex<Vec<Command>>>,
) {
    while let Some(Envelope { command, reply }) = rx.recv().await {
        let answer = match &command {
            Command::Restart { app } if app == "web" => {
                Ok("restarting web: 2 instances, one at a time".to_owned())
            }
            Command::Scale { app, instances: 0 } if app == "web" => Err(ControlError::Refused(
                "cannot scale web to 0 instances: at least 1 is needed".to_owned(),
            )),
            Command::Scale { app, instances } if app == "web" => {
                Ok(format!("scaling web from 2 to {instances} instances"))
            }
            Command::Recycle { instance, .. }
                if instance.app == "web" && (1..=2).contains(&instance.slot) =>
            {
                Ok(format!("recycling {instance}"))
            }
            Command::Recycle { instance, .. } => {
                Err(ControlError::UnknownInstance(instance.to_string()))
            }
            Command::Restart { app } | Command::Scale { app, .. } => {
                Err(ControlError::UnknownApp(app.clone()))
            }
            Command::Shutdown => Ok("stopping".to_owned()),
            Command::Reload | Command::Configure { .. } | Command::Remove { .. } => {
                Err(ControlError::Refused("not sent by admin".to_owned()))
            }
        };
        received.lock().unwrap().push(command);
        let _ = reply.send(answer.map(Into::into));
    }
}

fn snapshot() -> Vec<AppStatus> {
    let instance = |n: u32, state: InstanceState| InstanceStatus {
        id: format!("web#{n}"),
        pid: Some(4000 + n),
        port: 41000 + n as u16,
        state,
        uptime_s: 61.5,
        memory_bytes: 20 * 1024 * 1024,
        cpu_s: 1.25,
        inflight: n,
        restarts: n - 1,
        last_exit: (n == 2).then(|| "exit code 1".to_owned()),
        cpu_pct: 2.5,
        threads: 3,
        open_files: 12,
        requests: Default::default(),
        health: Vec::new(),
        rotation: Vec::new(),
        revision: Some("5f63c3ca".to_owned()),
    };
    vec![AppStatus {
        name: "web".to_owned(),
        state: AppState::Running,
        target: 2,
        ready: 1,
        queued: 0,
        instances: vec![
            instance(1, InstanceState::Ready),
            instance(2, InstanceState::Starting),
        ],
        reason: None,
        revision: "5f63c3ca".to_owned(),
        stable_revision: "5f63c3ca".to_owned(),
        mixed_revisions: false,
    }]
}

fn exited_with_code_1() -> Event {
    Event::InstanceExited {
        app: "web".into(),
        instance: "web#2".into(),
        pid: 4002,
        uptime_s: 0.3,
        reason: "web#2 (pid 4002) exited with code 1 after 0.3s".into(),
        code: Some(1),
        signal: None,
        signal_name: None,
        error: None,
        stderr: Vec::new(),
        error_line: None,
        error_context: Vec::new(),
    }
}

fn json_of(resp: &Resp) -> Value {
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{}",
        resp.text()
    );
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

#[test]
fn every_api_route_needs_the_token() {
    let a = Admin::start();
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/events?since=0"),
        ("POST", "/api/v1/apps/web/restart"),
        ("POST", "/api/v1/instances/web%232/recycle"),
        ("POST", "/api/v1/login/code"),
        ("GET", "/no/such/route"),
    ] {
        for token in [None, Some("wrong-token"), Some("test-token-012345678")] {
            let r = a.call_as(token, method, path, "");
            assert_eq!(
                r.status,
                401,
                "{method} {path} with {token:?}: {}",
                r.text()
            );
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(json_of(&r)["error"].is_string());
        }
    }
    // Not even a restart slipped through.
    assert!(a.received().is_empty(), "{:?}", a.received());
    // The scheme is case-insensitive; the right token passes.
    let r = request(
        a.addr,
        "GET",
        "/api/v1/status",
        &[("Authorization", &format!("bearer {}", a.token))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_page_on_another_host_name_gets_nothing_dns_rebinding() {
    let a = Admin::start();
    let auth = format!("Bearer {}", a.token);
    let rebound = request(
        a.addr,
        "POST",
        "/api/v1/apps/web/restart",
        &[("Authorization", &auth), ("Host", "attacker.example:9901")],
        b"",
    )
    .unwrap();
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(
        rebound.text().contains("DNS rebinding"),
        "{}",
        rebound.text()
    );
    assert!(a.received().is_empty(), "{:?}", a.received());
    let local = request(
        a.addr,
        "GET",
        "/api/v1/status",
        &[
            ("Authorization", &auth),
            ("Host", &format!("localhost:{}", a.addr.port())),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(local.status, 200, "{}", local.text());
}

#[test]
fn healthz_and_the_dashboard_are_public_and_show_no_data() {
    let a = Admin::start();
    let r = a.call_as(None, "GET", "/healthz", "");
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["status"], "ok");
    let r = a.call_as(None, "GET", "/", "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<title>healgate</title>"), "{}", r.text());
    assert!(!r.text().contains("web#1"), "{}", r.text());
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // The page's assets, by the names it gives them.
    let page = r.text();
    let mut assets = 0;
    for src in page.split('"').filter(|s| s.starts_with("assets/")) {
        let r = a.call_as(None, "GET", &format!("/{src}"), "");
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{src}");
        assert!(
            r.header("cache-control").unwrap().contains("immutable"),
            "{src}: a versioned asset is cached"
        );
        assets += 1;
    }
    assert_eq!(assets, 5, "favicon, 2 scripts, 2 style sheets: {page}");
    let r = a.call_as(None, "GET", "/assets/nothing.js", "");
    assert_eq!(r.status, 404);
}

/// A one-time code from the token-protected route.
fn login_code(a: &Admin) -> String {
    let r = a.call("POST", "/api/v1/login/code", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["expires_in_s"], 600);
    v["code"].as_str().unwrap().to_owned()
}

fn login(a: &Admin, headers: &[(&str, &str)], body: &str) -> Resp {
    request(a.addr, "POST", "/api/v1/login", headers, body.as_bytes()).unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn a_login_code_gives_the_token_once() {
    let a = Admin::start();
    let r = a.call_as(None, "POST", "/api/v1/login/code", "");
    assert_eq!(r.status, 401, "issuing codes needs the token");
    let code = login_code(&a);
    assert_eq!(code.len(), 32, "{code}");
    let body = json!({ "code": code }).to_string();
    // Not JSON (a form post from another page needs no preflight): refused.
    let r = login(&a, &[("Content-Type", "text/plain")], &body);
    assert_eq!(r.status, 415, "{}", r.text());
    // From a page on another origin: refused.
    let r = login(&a, &[JSON, ("Origin", "http://evil.example")], &body);
    assert_eq!(r.status, 403, "{}", r.text());
    let origin = format!("http://{}", a.addr);
    let r = login(&a, &[JSON, ("Origin", &origin)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["token"], a.token.as_str());
    let r = login(&a, &[JSON], &body);
    assert_eq!(r.status, 401, "a code works once: {}", r.text());
    assert!(json_of(&r)["error"].as_str().unwrap().contains("used"));
    let r = login(&a, &[JSON], r#"{"token": "x"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn failed_logins_are_rate_limited() {
    let a = Admin::start();
    let code = login_code(&a);
    for n in 0..10 {
        let r = login(
            &a,
            &[JSON],
            &json!({ "code": format!("{n:032}") }).to_string(),
        );
        assert_eq!(r.status, 401, "attempt {n}: {}", r.text());
    }
    // Now even the right code waits.
    let r = login(&a, &[JSON], &json!({ "code": code }).to_string());
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[test]
fn status_has_apps_instances_and_uptime() {
    let a = Admin::start();
    let r = a.call("GET", "/api/v1/status", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert!(v["uptime_s"].as_f64().unwrap() >= 90.0, "{v}");
    let app = &v["apps"][0];
    assert_eq!(app["name"], "web");
    assert_eq!(app["state"], "running");
    assert_eq!(
        (app["ready"].as_u64(), app["target"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(app["queued"], 0);
    let inst = &app["instances"][1];
    assert_eq!(inst["id"], "web#2");
    assert_eq!(inst["pid"], 4002);
    assert_eq!(inst["port"], 41002);
    assert_eq!(inst["state"], "starting");
    assert_eq!(inst["memory_bytes"], 20 * 1024 * 1024);
    assert_eq!(inst["cpu_s"], 1.25);
    assert_eq!(inst["inflight"], 2);
    assert_eq!(inst["restarts"], 1);
    assert_eq!(inst["last_exit"], "exit code 1");
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let a = Admin::start();
    let r = a.call("GET", "/api/v1/nothing", "");
    assert_eq!(r.status, 404);
    assert!(json_of(&r)["error"]
        .as_str()
        .unwrap()
        .contains("/api/v1/nothing"));
    let r = a.call("GET", "/api/v1/apps/web/restart", "");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow"), Some("POST"));
    let r = a.call("POST", "/api/v1/status", "");
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("GET"));
    assert!(a.received().is_empty());
}

#[test]
fn scale_with_a_bad_body_is_400_naming_the_problem() {
    let a = Admin::start();
    for (body, expect) in [
        ("", "missing body"),
        ("{instances: 3}", "bad body"),
        (r#"{"instances": "three"}"#, "invalid type"),
        (r#"{"instances": -1}"#, "-1"),
        (r#"{"count": 3}"#, "count"),
    ] {
        let r = a.call("POST", "/api/v1/apps/web/scale", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let error = json_of(&r)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(expect), "{body}: {error}");
        assert!(error.contains("instances"), "{body}: {error}");
    }
    assert!(a.received().is_empty(), "{:?}", a.received());

    let r = a.call("POST", "/api/v1/apps/web/scale", r#"{"instances": 4}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["ok"], true);
    assert_eq!(v["message"], "scaling web from 2 to 4 instances");
    assert_eq!(a.received(), vec![r#"Scale { app: "web", instances: 4 }"#]);
}

#[test]
fn command_refusals_are_409_and_unknown_names_404() {
    let a = Admin::start();
    let r = a.call("POST", "/api/v1/apps/web/scale", r#"{"instances": 0}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("at least 1"), "{v}");

    let r = a.call("POST", "/api/v1/apps/nosuch/restart", "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(json_of(&r)["ok"], false);

    let r = a.call("POST", "/api/v1/apps/web/restart", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json_of(&r)["message"],
        "restarting web: 2 instances, one at a time"
    );
}

#[test]
fn recycle_decodes_the_instance_id() {
    let a = Admin::start();
    let r = a.call("POST", "/api/v1/instances/web%232/recycle", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["message"], "recycling web#2");
    let r = a.call(
        "POST",
        "/api/v1/instances/web-1/recycle",
        r#"{"reason": "leaking"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.call("POST", "/api/v1/instances/web%239/recycle", "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(json_of(&r)["error"], r#"unknown instance "web#9""#);
    let got = a.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with(r#"Recycle { instance: "web#2""#),
        "{got:?}"
    );
    assert_eq!(
        got[1],
        r#"Recycle { instance: "web#1", reason: "leaking" }"#
    );
    assert!(
        got[2].starts_with(r#"Recycle { instance: "web#9""#),
        "{got:?}"
    );
}

#[test]
fn events_since_returns_only_newer_events() {
    let a = Admin::start();
    let r = a.call("GET", "/api/v1/events", "");
    assert_eq!(json_of(&r), json!({"events": [], "last": 0}));
    a.events.emit(Event::InstanceStarted {
        app: "web".into(),
        instance: "web#1".into(),
        pid: 4001,
        port: 41001,
    });
    a.events.emit(Event::InstanceReady {
        app: "web".into(),
        instance: "web#1".into(),
        pid: 4001,
        port: 41001,
        startup_ms: 120,
    });
    a.events.emit(exited_with_code_1());
    let all = json_of(&a.call("GET", "/api/v1/events?since=0", ""));
    assert_eq!(all["last"], 3);
    let seqs: Vec<u64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(all["events"][0]["event"]["kind"], "instance_started");
    assert_eq!(all["events"][0]["event"]["pid"], 4001);

    let newer = json_of(&a.call("GET", "/api/v1/events?since=2", ""));
    assert_eq!(newer["last"], 3);
    assert_eq!(newer["events"].as_array().unwrap().len(), 1);
    assert_eq!(newer["events"][0]["seq"], 3);
    assert_eq!(newer["events"][0]["event"]["kind"], "instance_exited");
    assert_eq!(newer["events"][0]["event"]["code"], 1);

    let none = json_of(&a.call("GET", "/api/v1/events?since=3", ""));
    assert_eq!(none, json!({"events": [], "last": 3}));

    let r = a.call("GET", "/api/v1/events?since=yesterday", "");
    assert_eq!(r.status, 400);
    assert!(json_of(&r)["error"].as_str().unwrap().contains("yesterday"));
}

#[test]
fn without_a_supervisor_there_are_no_apps() {
    let a = Admin::start_with(false);
    let v = json_of(&a.call("GET", "/api/v1/status", ""));
    assert_eq!(v["apps"], json!([]));
    let r = a.call("POST", "/api/v1/apps/web/restart", "");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn serve_stops_when_shutdown_turns_true() {
    let mut a = Admin::start();
    assert_eq!(a.call("GET", "/healthz", "").status, 200);
    a.stop.send(true).unwrap();
    let served = a.served.take().unwrap();
    a.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), served).await })
        .expect("serve did not return within 5s of shutdown")
        .unwrap();
    // The port is closed. Another test may bind the freed port at once, so a
    // connection that does open must at least not be this server (its token).
    if std::net::TcpStream::connect(a.addr).is_ok() {
        let answered = request(
            a.addr,
            "GET",
            "/api/v1/status",
            &[("Authorization", &format!("Bearer {}", a.token))],
            b"",
        );
        assert!(
            answered.map_or(true, |r| r.status != 200),
            "the stopped admin API still answers"
        );
    }
}

#[test]
fn token_is_generated_once_with_mode_0600() {
    let dir = TempDir::new("admin-token");
    let data = dir.path().join("data");
    let first = admin::token(&data, None).unwrap();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    let path = data.join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), first);
    let second = admin::token(&data, None).unwrap();
    assert_eq!(second, first);
    // A configured token wins and leaves the file alone.
    assert_eq!(
        admin::token(&data, Some("from-config")).unwrap(),
        "from-config"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), first);
    // A different data dir gets a different token.
    assert_ne!(
        admin::token(&dir.path().join("other"), None).unwrap(),
        first
    );
}

/// A data dir as a running gateway leaves it: `admin.token` and `admin.json`.
fn gateway_files(a: &Admin, tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path().join("admin.token"), format!("{}\n", a.token)).unwrap();
    admin::write_admin_file(dir.path(), a.addr).unwrap();
    dir
}

#[test]
fn client_finds_the_gateway_through_admin_json() {
    let a = Admin::start();
    let dir = gateway_files(&a, "admin-client");
    let refused = common::Refused::new();
    let nothing_there = refused.addr;
    let v = admin::client::call(
        dir.path(),
        None,
        nothing_there,
        "GET",
        "/api/v1/status",
        None,
    )
    .unwrap();
    assert_eq!(v["apps"][0]["name"], "web");
    let v = admin::client::call(
        dir.path(),
        None,
        nothing_there,
        "POST",
        "/api/v1/apps/web/scale",
        Some(&json!({"instances": 3})),
    )
    .unwrap();
    assert_eq!(v["message"], "scaling web from 2 to 3 instances");
    let e = admin::client::call(
        dir.path(),
        Some("nope"),
        nothing_there,
        "GET",
        "/api/v1/status",
        None,
    )
    .unwrap_err();
    assert!(e.starts_with("admin token rejected"), "{e}");
    let e = admin::client::call(
        dir.path(),
        None,
        nothing_there,
        "POST",
        "/api/v1/apps/x/restart",
        None,
    )
    .unwrap_err();
    assert!(e.contains(r#"unknown app "x""#) && e.contains("404"), "{e}");

    // Without admin.json and nothing at the configured address: a clear message.
    admin::remove_admin_file(dir.path());
    assert!(!dir.path().join("admin.json").exists());
    let e = admin::client::call(
        dir.path(),
        None,
        nothing_there,
        "GET",
        "/api/v1/status",
        None,
    )
    .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "no gateway is running: cannot connect to {nothing_there}"
        )),
        "{e}"
    );
}

/// A config whose data_dir is `dir` and whose admin address is `admin`.
fn config_file(dir: &TempDir, admin: SocketAddr) -> String {
    let path = dir.path().join("healgate.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\ndata_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn cli_verbs_drive_the_running_gateway() {
    let a = Admin::start();
    let dir = gateway_files(&a, "admin-cli");
    // The configured address is wrong on purpose: admin.json must win.
    let refused = common::Refused::new();
    let unused = refused.addr;
    let cfg = config_file(&dir, unused);
    a.events.emit(exited_with_code_1());

    let (code, out, err) = common::healgate(&["status", "-c", &cfg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let app_line = out
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        app_line.contains("running") && app_line.contains("1/2"),
        "{out}"
    );
    let inst = out
        .lines()
        .find(|l| l.starts_with("web#2"))
        .unwrap_or_else(|| panic!("{out}"));
    for part in [
        "4002",
        "41002",
        "starting",
        "1m01s",
        "20.0 MiB",
        "1.25s",
        "exit code 1",
    ] {
        assert!(inst.contains(part), "{part} missing from {inst:?}");
    }
    assert!(
        out.contains("instance_exited") && out.contains("code=1"),
        "{out}"
    );

    let (code, out, _) = common::healgate(&["status", "--json", "-c", &cfg]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["apps"][0]["instances"][0]["id"], "web#1");

    let (code, out, err) = common::healgate(&["recycle", "web#2", "-c", &cfg]);
    assert_eq!((code, out.trim()), (0, "recycling web#2"), "{err}");
    let (code, out, err) = common::healgate(&["scale", "web", "5", "-c", &cfg]);
    assert_eq!(
        (code, out.trim()),
        (0, "scaling web from 2 to 5 instances"),
        "{err}"
    );
    let (code, _, err) = common::healgate(&["restart", "nosuch", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains(r#"unknown app "nosuch""#), "{err}");
    let (code, _, err) = common::healgate(&["recycle", "web", "-c", &cfg]);
    assert_eq!(code, 2, "{err}");
    let got = a.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with(r#"Recycle { instance: "web#2""#),
        "{got:?}"
    );
    assert_eq!(got[1], r#"Scale { app: "web", instances: 5 }"#);

    // No gateway: exit 1 with the address it tried.
    std::fs::remove_file(dir.path().join("admin.json")).unwrap();
    let (code, _, err) = common::healgate(&["status", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no gateway is running") && err.contains(&unused.to_string()),
        "{err}"
    );
    // An invalid config: a note that it has problems, then the running gateway is
    // reached with what can be read of it (here its data_dir, with no admin.json, and
    // its admin address, where nothing listens).
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[gateway]\ndata_dir = \"{}\"\nlistn = 1\n[admin]\nlisten = \"{unused}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, _, err) = common::healgate(&["status", "-c", &bad.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("has 1 problem")
            && err.contains("no gateway is running")
            && err.contains(&unused.to_string()),
        "{err}"
    );
}

#[test]
fn logs_prints_events_and_app_output() {
    let dir = TempDir::new("admin-logs");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("apps/web")).unwrap();
    std::fs::write(
        logs.join("events.jsonl"),
        concat!(
            r#"{"ts":"2025-01-01T00:00:00.000Z","kind":"instance_ready","app":"web","instance":"web#1"}"#,
            "\n",
            r#"{"ts":"2025-01-01T00:00:01.000Z","kind":"instance_ready","app":"api","instance":"api#1"}"#,
            "\n",
        ),
    )
    .unwrap();
    std::fs::write(
        logs.join("apps/web/web#1.log"),
        "hello from web#1\nsecond line\n",
    )
    .unwrap();
    let cfg = config_file(&dir, "127.0.0.1:1".parse().unwrap());

    let (code, out, err) = common::healgate(&["logs", "web", "-c", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("instance_ready") && out.contains("web#1"),
        "{out}"
    );
    assert!(!out.contains("api#1"), "{out}");
    assert!(
        out.contains("hello from web#1") && out.contains("second line"),
        "{out}"
    );

    let (code, out, _) = common::healgate(&["logs", "-n", "1", "-c", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("api#1") && !out.contains("web#1"), "{out}");
}
