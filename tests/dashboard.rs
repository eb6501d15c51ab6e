//! The dashboard in a real browser: the real binary with 3 demo-app instances, and
//! `tests/dashboard/test.mjs` driving Debian's headless Chromium (playwright-core)
//! through it: one-time link login, three ready instances, a crash seen in the event
//! feed and the instance's row, a confirmed recycle that changes the pid, screenshots
//! in `target/test-artifacts/`, no console or page error; then the token form at
//! phone width. `scripts/test` installs Chromium and the npm package when missing.

mod common;

use common::{request, wait_timeout, Gateway};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// `target/test-artifacts` (next to the `tmp` dir cargo gives integration tests).
fn artifacts() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-artifacts")
}

/// Read a child's pipe to the end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    })
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let dir = script_dir();
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/test (it installs Debian's chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/dashboard/node_modules is missing: run scripts/test (it runs npm ci there)"
    );
    let bin = common::bin();
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"demo\"\ncommand = [\"{bin}\", \"demo-app\", \"--port\", \"{{port}}\"]\n\
         instances = 3\nroutes = [\"/\"]\n\
         health = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n"
    ));
    gw.wait_ready("demo", 3);
    let token = std::fs::read_to_string(gw.data().join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_owned();
    let auth = format!("Bearer {token}");
    let issued = request(
        gw.admin,
        "POST",
        "/api/v1/login/code",
        &[("Authorization", &auth)],
        b"",
    )
    .expect("POST /api/v1/login/code");
    assert_eq!(issued.status, 200, "{}", issued.text());
    let code: serde_json::Value = serde_json::from_slice(&issued.body).unwrap();
    let code = code["code"].as_str().expect("a code").to_owned();

    let mut node = Command::new("node")
        .arg("test.mjs")
        .current_dir(&dir)
        .env("HG_ADMIN", format!("http://{}", gw.admin))
        .env("HG_PROXY", format!("http://{}", gw.addr))
        .env("HG_TOKEN", &token)
        .env("HG_CODE", &code)
        .env("HG_ARTIFACTS", artifacts())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung run is killed with its Chromium.
        .process_group(0)
        .spawn()
        .expect("run node (install nodejs)");
    let out = drain(node.stdout.take().unwrap());
    let err = drain(node.stderr.take().unwrap());
    let status = wait_timeout(&mut node, Duration::from_secs(150));
    if status.is_none() {
        common::signal(node.id(), "KILL");
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(format!("-{}", node.id()))
            .status();
        let _ = node.wait();
    }
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    println!("--- test.mjs stdout\n{out}--- test.mjs stderr\n{err}---");
    let status = status.expect("test.mjs did not finish within 150 s");
    assert!(status.success(), "test.mjs failed ({status}):\n{err}");
    for shot in ["dashboard.png", "dashboard-phone.png"] {
        let path = artifacts().join(shot);
        assert!(path.exists(), "no screenshot {}", path.display());
    }
}
