//! `healgate check` warns about what this machine lacks (a command, a `cwd`, a server
//! name), and a missing `cwd` is reported as a missing directory when the app starts.

mod common;

use common::{eventually, Gateway, TempDir};
use std::time::{Duration, Instant};

#[test]
fn check_warns_about_a_missing_command_cwd_and_server_name_but_stays_valid() {
    let dir = TempDir::new("check-env");
    std::fs::create_dir_all(dir.path().join("site")).unwrap();
    let path = dir.path().join("healgate.toml");
    std::fs::write(
        &path,
        "[[app]]\n\
         name = \"nocmd\"\n\
         command = [\"no-such-program-xyz\", \"--port\", \"{port}\"]\n\
         routes = [\"/a/\"]\n\
         \n\
         [[app]]\n\
         name = \"nodir\"\n\
         command = [\"python3\", \"app.py\"]\n\
         cwd = \"missing-dir\"\n\
         routes = [\"/b/\"]\n\
         \n\
         [[app]]\n\
         name = \"fine\"\n\
         command = [\"sh\", \"-c\", \"exit 0\"]\n\
         cwd = \"site\"\n\
         routes = [\"/c/\"]\n\
         \n\
         [[app]]\n\
         name = \"relative\"\n\
         command = [\"./run.sh\"]\n\
         cwd = \"site\"\n\
         routes = [\"/d/\"]\n\
         \n\
         [[upstream]]\n\
         name = \"api\"\n\
         servers = [\"127.0.0.1:9\", \"localhost:9\", \"nosuch-host.invalid:80\"]\n\
         routes = [\"/api/\"]\n",
    )
    .unwrap();
    let started = Instant::now();
    let (code, out, err) = common::healgate(&["check", "-c", path.to_str().unwrap()]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "check took {:?}",
        started.elapsed()
    );
    assert_eq!(code, 0, "warnings only: {err}");
    assert!(out.contains("valid"), "{out}");
    let warning = |line: usize, key: &str, words: &str| {
        assert!(
            err.lines().any(|l| l.starts_with(&format!("{line}:"))
                && l.contains(": warning: ")
                && l.contains(key)
                && l.contains(words)),
            "line {line} {key}: {words}: {err}"
        )
    };
    warning(3, "app[0].command[0]", "not found on PATH");
    warning(9, "app[1].cwd", "does not exist");
    warning(20, "app[3].command[0]", "\"./run.sh\" does not exist");
    warning(26, "upstream[0].servers[2]", "nosuch-host.invalid");
    assert!(err.contains("host not found"), "{err}");
    assert_eq!(err.matches(": warning: ").count(), 4, "{err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn a_missing_cwd_is_named_as_a_missing_directory() {
    let gw = Gateway::start(
        "[errors]\ndetails = true\n\n[[app]]\nname = \"web\"\ncommand = [\"python3\", \"-m\", \"http.server\", \"{port}\"]\ncwd = \"no-such-dir\"\ninstances = 1\nroutes = [\"/\"]\n",
    );
    let ev = eventually(Duration::from_secs(10), || {
        gw.events("instance_exited").into_iter().next()
    })
    .expect("an instance_exited event");
    let error = ev["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no-such-dir") && error.contains("does not exist"),
        "{ev}"
    );
    assert!(!error.contains("PATH"), "{ev}");
    assert!(
        ev["reason"].as_str().unwrap().contains("does not exist"),
        "{ev}"
    );
}
