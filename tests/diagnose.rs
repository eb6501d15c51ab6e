//! `healgate diagnose` against faults caused for real (the demo app, a refused port, an
//! unresolvable name): the top finding of the report names the fault. Then: no
//! planted secret anywhere in a bundle, the report in headless Chromium, the rate
//! limit and the retention.

mod common;

use common::{eventually, get, Gateway, Refused, TempDir};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An app of `instances` demo-app instances routed at `/`, and `extra` TOML after it.
fn demo(instances: u32, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"web\"\ncommand = [\"{}\", \"demo-app\", \"--port\", \"{{port}}\"]\ninstances = {instances}\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\", timeout = \"400ms\" }}\n{extra}\n",
        common::bin()
    )
}

/// Wait until the access log holds `n` lines matching `f` (the writer is a thread).
fn wait_access(gw: &Gateway, n: usize, f: impl Fn(&Value) -> bool) {
    eventually(Duration::from_secs(10), || {
        (gw.jsonl("access.jsonl").iter().filter(|e| f(e)).count() >= n).then_some(())
    })
    .unwrap_or_else(|| panic!("{n} access lines: {:?}", gw.jsonl("access.jsonl")));
}

/// `healgate diagnose [app] --window 5m` (the real binary): the bundle's path, its
/// report.json and the CLI's stdout.
fn diagnose(gw: &Gateway, app: Option<&str>) -> (PathBuf, Value, String) {
    let mut args = vec!["diagnose"];
    args.extend(app);
    args.extend(["--window", "5m"]);
    let (code, out, err) = gw.cli(&args);
    assert_eq!(code, 0, "diagnose failed:\n{out}\n{err}");
    assert!(
        err.contains("healgate: diagnose: reading the access log"),
        "steps shown: {err}"
    );
    let path = PathBuf::from(out.lines().next().expect("the path first"));
    assert!(path.starts_with(gw.data().join("diagnostics")), "{out}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["version"], 1);
    assert!(path.join("report.html").exists());
    (path, report, out)
}

/// The report's top finding is `id`.
fn top_is(report: &Value, out: &str, id: &str) {
    assert_eq!(
        report["findings"][0]["id"],
        id,
        "headline: {}\nfindings: {}\nCLI:\n{out}",
        report["headline"],
        serde_json::to_string_pretty(&report["findings"]).unwrap()
    );
    assert!(
        out.contains(report["headline"].as_str().unwrap()),
        "the CLI prints the headline"
    );
}

#[test]
fn a_crash_loop_is_the_top_finding_with_the_apps_own_line() {
    let gw = Gateway::start(&demo(1, ""));
    gw.wait_ready("web", 1);
    // Crash it until the supervisor calls it a crash loop (3 fast exits in a row).
    eventually(Duration::from_secs(30), || {
        let _ = get(gw.addr, "/crash", &[]);
        (!gw.events("crash_loop").is_empty()).then_some(())
    })
    .expect("a crash loop");
    for _ in 0..3 {
        let _ = get(gw.addr, "/", &[]);
    }
    wait_access(&gw, 3, |e| e["status"].as_u64().unwrap_or(0) >= 500);
    let (_, report, out) = diagnose(&gw, Some("web"));
    top_is(&report, &out, "crash_loop");
    let top = &report["findings"][0];
    assert!(
        top["evidence"]["error_line"]
            .as_str()
            .unwrap_or("")
            .contains("RuntimeError: crash requested via /crash"),
        "the app's own line: {top}"
    );
    assert!(report["headline"].as_str().unwrap().contains("explains"));
}

#[test]
fn a_leak_recycled_by_autoheal_is_memory_growth() {
    let gw = Gateway::start(&demo(
        1,
        "[app.autoheal]\nmin_uptime = \"0s\"\n[[app.autoheal.rule]]\nwhen = { memory_above = \"48MiB\" }\naction = \"recycle\"\n",
    ));
    gw.wait_ready("web", 1);
    // 8 MiB at a time, each step seen in the history before the next: a trend.
    let memory = || -> u64 {
        let h: Value = serde_json::from_slice(&gw.admin_get("/api/v1/history?app=web").body)
            .unwrap_or_default();
        h["memory_bytes"]
            .as_array()
            .and_then(|m| m.last()?.as_u64())
            .unwrap_or(0)
    };
    for _ in 0..12 {
        if !gw.events("autoheal_fired").is_empty() {
            break;
        }
        let before = memory();
        assert_eq!(get(gw.addr, "/leak?mb=8", &[]).status, 200);
        let _ = eventually(Duration::from_secs(3), || {
            (memory() > before + 4 * 1048576 || !gw.events("autoheal_fired").is_empty())
                .then_some(())
        });
    }
    eventually(Duration::from_secs(20), || {
        gw.events("instance_recycled").into_iter().next()
    })
    .expect("AutoHeal recycles it");
    let (_, report, out) = diagnose(&gw, Some("web"));
    top_is(&report, &out, "memory_growth");
    let top = &report["findings"][0];
    assert_eq!(top["instances"][0], "web#1");
    assert!(
        top["evidence"]["rise_bytes"].as_f64().unwrap() > 8.0 * 1048576.0,
        "{top}"
    );
    assert!(
        top["title"]
            .as_str()
            .unwrap()
            .contains("AutoHeal recycled it"),
        "{top}"
    );
}

#[test]
fn a_slow_endpoint_with_504s_is_named_with_its_share() {
    let gw = Gateway::start(&format!(
        "[gateway.timeouts]\nresponse_header = \"300ms\"\n{}",
        demo(1, "")
    ));
    gw.wait_ready("web", 1);
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/slow?ms=1500", &[]).status, 504);
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    wait_access(&gw, 3, |e| e["status"] == 504);
    let (_, report, out) = diagnose(&gw, None);
    top_is(&report, &out, "slow_endpoint");
    let title = report["findings"][0]["title"].as_str().unwrap();
    assert!(
        title.contains("/slow") && title.contains("100% of all 504"),
        "{title}"
    );
}

#[test]
fn a_full_queue_is_queue_saturation_with_scale_advice() {
    let gw = Gateway::start(&demo(
        1,
        "max_concurrency = 1\nqueue = { size = 1, timeout = \"10s\" }\n",
    ));
    gw.wait_ready("web", 1);
    let addr = gw.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=1000", &[]).status))
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    wait_access(&gw, 6, |e| e["path"] == "/slow?ms=1000");
    let (_, report, out) = diagnose(&gw, Some("web"));
    top_is(&report, &out, "queue_saturation");
    let mitigation = report["findings"][0]["mitigation"].as_str().unwrap();
    assert!(mitigation.contains("healgate scale web "), "{mitigation}");
}

#[test]
fn an_unresolvable_upstream_is_a_dns_failure() {
    let gw = Gateway::start(
        "[[upstream]]\nname = \"api\"\nservers = [\"nonexistent.invalid:80\"]\nroutes = [\"/\"]\n",
    );
    for _ in 0..3 {
        assert!(get(gw.addr, "/", &[]).status >= 502);
    }
    wait_access(&gw, 3, |e| e["status"].as_u64().unwrap_or(0) >= 500);
    let (_, report, out) = diagnose(&gw, None);
    top_is(&report, &out, "dns_failure");
    assert!(report["findings"][0]["title"]
        .as_str()
        .unwrap()
        .contains("nonexistent.invalid"));
}

#[test]
fn a_port_with_nothing_listening_is_connection_refused() {
    let refused = Refused::new();
    let gw = Gateway::start(&format!(
        "[[upstream]]\nname = \"api\"\nservers = [\"{}\"]\nroutes = [\"/\"]\n",
        refused.addr
    ));
    for _ in 0..3 {
        assert!(get(gw.addr, "/", &[]).status >= 502);
    }
    wait_access(&gw, 3, |e| e["status"].as_u64().unwrap_or(0) >= 500);
    let (_, report, out) = diagnose(&gw, Some("api"));
    top_is(&report, &out, "connection_refused");
    let title = report["findings"][0]["title"].as_str().unwrap();
    assert!(title.contains(&refused.addr.to_string()), "{title}");
}

#[test]
fn a_response_header_over_the_limit_is_named() {
    let gw = Gateway::start(&format!(
        "[gateway.limits]\nresponse_header = \"16KiB\"\n{}",
        demo(1, "")
    ));
    gw.wait_ready("web", 1);
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/bigheader?kb=32", &[]).status, 502);
    }
    wait_access(&gw, 2, |e| e["status"] == 502);
    let (_, report, out) = diagnose(&gw, None);
    top_is(&report, &out, "response_header_too_large");
}

#[test]
fn the_apps_own_5xx_are_app_errors_and_the_gateway_says_it_is_not_the_problem() {
    let gw = Gateway::start(&demo(1, ""));
    gw.wait_ready("web", 1);
    for code in [500, 500, 503, 500] {
        assert_eq!(get(gw.addr, &format!("/status/{code}"), &[]).status, code);
    }
    wait_access(&gw, 4, |e| e["status"].as_u64().unwrap_or(0) >= 500);
    let (_, report, out) = diagnose(&gw, Some("web"));
    top_is(&report, &out, "app_errors");
    assert!(
        report["headline"]
            .as_str()
            .unwrap()
            .contains("The gateway is not the problem"),
        "{}",
        report["headline"]
    );
}

/// Every file under `dir`, with the text of compressed ones decompressed.
fn every_file(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            every_file(&p, out);
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let name = p.to_string_lossy().to_string();
        let tool = [
            (".gz", "gzip"),
            (".zst", "zstd"),
            (".xz", "xz"),
            (".bz2", "bzip2"),
        ]
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, t)| *t);
        let content = match tool {
            Some(t) => {
                let o = Command::new(t)
                    .args(["-dc"])
                    .arg(&p)
                    .output()
                    .unwrap_or_else(|e| panic!("{t} for {name}: {e}"));
                assert!(o.status.success(), "cannot decompress {name}");
                o.stdout
            }
            None => bytes,
        };
        out.push((p, content));
    }
}

#[test]
fn no_planted_secret_appears_anywhere_in_a_bundle() {
    const ENV_SECRET: &str = "env-secret-4d1f8a2c-token-value";
    const APP_SECRET: &str = "app-db-password-91c7e3";
    const ADMIN_SECRET: &str = "admin-token-5b2e99f0c1";
    const URL_SECRET: &str = "Url-Pa55word-7f3a";
    const QUERY_SECRET: &str = "query-api-key-3c8d21";
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_SECRET}\"\n\n\
         [[app]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", \"echo connecting to postgres://app:{URL_SECRET}@db:5432/x; echo DB_PASSWORD=$DB_PASSWORD >&2; exec {} demo-app\"]\n\
         env = {{ DB_PASSWORD = \"{APP_SECRET}\", APP_ENV = \"production\" }}\nroutes = [\"/\"]\nhealth = {{ path = \"/healthz\", interval = \"500ms\" }}\n",
        common::bin()
    );
    let gw = Gateway::start_with_env(
        TempDir::new("diag-secrets"),
        &config,
        &[("HEALGATE_TEST_SECRET_TOKEN", ENV_SECRET)],
    );
    eventually(Duration::from_secs(20), || {
        (get(gw.addr, "/healthz", &[]).status == 200).then_some(())
    })
    .expect("ready");
    assert_eq!(
        get(gw.addr, &format!("/echo?api_key={QUERY_SECRET}"), &[]).status,
        200
    );
    assert_eq!(get(gw.addr, "/status/500", &[]).status, 500);
    wait_access(&gw, 2, |e| e["status"].as_u64().is_some());
    // The app's output holds the URL before the bundle is taken.
    let logs = gw.data().join("logs/apps/web");
    eventually(Duration::from_secs(5), || {
        std::fs::read_dir(&logs)
            .ok()?
            .flatten()
            .find(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(URL_SECRET)))
    })
    .expect("the planted URL in the app's own log");
    let (dir, _, _) = diagnose(&gw, None);
    let mut files = Vec::new();
    every_file(&dir, &mut files);
    assert!(files.len() >= 10, "a bundle of {} files", files.len());
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    for must in [
        "access.jsonl",
        "events.jsonl",
        "config.txt",
        "healgate.toml",
        "environment.json",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(must)),
            "{must} in {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.contains("/output/web/")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains("/processes/")), "{names:?}");
    for (path, content) in &files {
        let text = String::from_utf8_lossy(content);
        for secret in [
            ENV_SECRET,
            APP_SECRET,
            ADMIN_SECRET,
            URL_SECRET,
            QUERY_SECRET,
        ] {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
    }
    // Redacted, not dropped: the names are there.
    let env = std::fs::read_to_string(dir.join("environment.json")).unwrap();
    assert!(env.contains("HEALGATE_TEST_SECRET_TOKEN") && env.contains("[redacted]"));
    assert!(env.contains("production"), "ordinary values stay");
}

#[test]
fn the_report_opens_in_headless_chromium_without_errors() {
    let chromium = Path::new("/usr/bin/chromium");
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        chromium.exists(),
        "/usr/bin/chromium is missing: run scripts/test"
    );
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "tests/dashboard/node_modules is missing: run scripts/test"
    );
    let gw = Gateway::start(&format!(
        "[gateway.timeouts]\nresponse_header = \"300ms\"\n{}",
        demo(1, "")
    ));
    gw.wait_ready("web", 1);
    for i in 0..40 {
        let path = match i % 8 {
            0 => "/status/500",
            1 => "/slow?ms=800",
            _ => "/",
        };
        let _ = get(gw.addr, path, &[]);
    }
    // The history's seconds hold them (a point a second).
    eventually(Duration::from_secs(10), || {
        let h: Value =
            serde_json::from_slice(&gw.admin_get("/api/v1/history?app=web").body).ok()?;
        let n: u64 = h["requests"]
            .as_array()?
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        (n >= 40).then_some(())
    })
    .expect("the history counted the requests");
    wait_access(&gw, 40, |_| true);
    let (dir, report, _) = diagnose(&gw, None);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    let mut node = Command::new("node")
        .arg(js.join("report.mjs"))
        .env("HG_REPORT", dir.join("report.html"))
        .env("HG_HEADLINE", report["headline"].as_str().unwrap())
        .env("HG_SCREENSHOT", &png)
        .current_dir(&js)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("node");
    let status = common::wait_timeout(&mut node, Duration::from_secs(90));
    if status.is_none() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(format!("-{}", node.id()))
            .status();
        let _ = node.wait();
    }
    let out = node.wait_with_output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.is_some_and(|s| s.success()), "report.mjs:\n{said}");
    assert!(png.exists(), "a screenshot: {said}");
}

#[test]
fn a_fourth_diagnose_within_a_minute_is_refused_and_the_last_ten_are_kept() {
    let gw = Gateway::start(&demo(1, ""));
    gw.wait_ready("web", 1);
    // Ten older bundles on disk: the oldest goes when a new one is written.
    let diags = gw.data().join("diagnostics");
    for i in 0..10 {
        let d = diags.join(format!("20200101T0000{i:02}Z"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("bundle.json"), "{}").unwrap();
    }
    for _ in 0..3 {
        diagnose(&gw, None);
    }
    let (code, out, err) = gw.cli(&["diagnose", "--window", "1m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("at most 3 diagnostic bundles a minute") && err.contains("try again in"),
        "{err}"
    );
    assert!(err.contains("429"), "{err}");
    let mut kept: Vec<String> = std::fs::read_dir(&diags)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("bundle.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 10, "{kept:?}");
    assert_eq!(
        kept[0], "20200101T000003Z",
        "the three oldest went: {kept:?}"
    );
    // The API lists them, newest first, with their reports.
    let list: Value = serde_json::from_slice(&gw.admin_get("/api/v1/diagnostics").body).unwrap();
    let first = &list["diagnostics"][0];
    assert_eq!(first["state"], "done", "{first}");
    let html = gw.admin_get(first["report"].as_str().unwrap());
    assert_eq!(html.status, 200);
    assert!(html.text().contains("id=\"headline\""));
    assert_eq!(
        get(gw.admin, first["report"].as_str().unwrap(), &[]).status,
        401,
        "token required"
    );
}
