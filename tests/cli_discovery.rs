//! The CLI finds a running gateway from any directory (`HEALGATE_DATA_DIR`, then the
//! per-user runtime file) and says which one it reached.

mod common;

use common::{bin, TempDir};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli(cwd: &Path, runtime: &Path, data_dir: Option<&Path>) -> (i32, String, String) {
    let mut c = Command::new(bin());
    c.args(["status", "--json"])
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("HEALGATE_DATA_DIR")
        .env_remove("HEALGATE_ADMIN_TOKEN");
    if let Some(d) = data_dir {
        c.env("HEALGATE_DATA_DIR", d);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_reaches_the_gateway_from_another_directory_and_says_how() {
    let home = TempDir::new("discover-home");
    let elsewhere = TempDir::new("discover-elsewhere");
    let runtime = TempDir::new("discover-runtime");
    let empty_runtime = TempDir::new("discover-runtime-empty");
    let cfg = home.path().join("healgate.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9\"]\nroutes = [\"/\"]\n",
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env_remove("HEALGATE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("healgate: admin listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    let runtime_file = runtime.path().join("healgate/admin.json");

    // From another directory, by the runtime file.
    let (code, out, err) = cli(elsewhere.path(), runtime.path(), None);
    // By HEALGATE_DATA_DIR (no runtime file to help).
    let data = home.path().join("data");
    let by_env = cli(elsewhere.path(), empty_runtime.path(), Some(&data));
    // Neither: no gateway reached.
    let none = cli(elsewhere.path(), empty_runtime.path(), None);

    common::signal(pid, "TERM");
    let exit = common::wait_timeout(&mut child, Duration::from_secs(30));
    assert!(exit.is_some(), "the gateway stopped");

    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["pid"], pid, "{st}");
    assert!(
        err.contains(&runtime_file.display().to_string()) && err.contains(&pid.to_string()),
        "says which it reached: {err}"
    );
    assert_eq!(by_env.0, 0, "{}", by_env.2);
    assert!(by_env.2.contains("HEALGATE_DATA_DIR="), "{}", by_env.2);
    assert_ne!(none.0, 0, "{}", none.1);
    // The runtime file goes with the gateway.
    assert!(!runtime_file.exists());
}
