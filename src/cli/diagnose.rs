//! `healgate diagnose [APP] [--window 15m] [--dumps]`: ask the running gateway for a
//! bundle, print its steps while it collects, then the path, the headline and the
//! findings. `--analyze DIR` re-analyzes a bundle on disk (no gateway needed).

use super::Resolved;
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long a bundle may take (native stacks of many instances, a core).
const COLLECT_LIMIT: Duration = Duration::from_secs(600);

/// Collect through the gateway.
pub(super) fn collect(g: &Resolved, app: Option<&str>, window: &str, dumps: bool) -> ExitCode {
    if let Err(why) = crate::diagnose::parse_window(window) {
        eprintln!("healgate: {why}");
        return ExitCode::from(super::USAGE);
    }
    let body = json!({"app": app, "window": window, "dumps": dumps, "reason": "healgate diagnose"});
    let started = match g.call("POST", "/api/v1/diagnose", Some(&body)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("healgate: diagnose refused: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = started["name"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + COLLECT_LIMIT;
    let mut shown = 0;
    loop {
        let list = match g.call("GET", "/api/v1/diagnostics", None) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("healgate: reading the bundle's progress: {e}");
                return ExitCode::FAILURE;
            }
        };
        let item = list["diagnostics"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        let steps = item["steps"].as_array().cloned().unwrap_or_default();
        for s in steps.iter().skip(shown) {
            eprintln!("healgate: diagnose: {}", s.as_str().unwrap_or_default());
        }
        shown = shown.max(steps.len());
        match item["state"].as_str() {
            Some("done") => {
                let path = item["path"].as_str().unwrap_or_default();
                return print_report(Path::new(path));
            }
            Some("failed") | Some("incomplete") => {
                eprintln!(
                    "healgate: the bundle {name} failed: {}",
                    item["error"].as_str().unwrap_or("see the gateway's log")
                );
                return ExitCode::FAILURE;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            eprintln!("healgate: the bundle {name} is still collecting after {COLLECT_LIMIT:?}; see GET /api/v1/diagnostics");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Analyze a bundle on disk again and rewrite its report.
pub(super) fn reanalyze(dir: &Path) -> ExitCode {
    let b = match crate::diagnose::bundle::Bundle::load(dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("healgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = crate::diagnose::analyze::analyze(&b);
    if let Err(e) = crate::diagnose::report::write(dir, &b, &report) {
        eprintln!("healgate: writing the report in {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    print_report(dir)
}

/// The path, the headline and the findings of the bundle in `dir`.
fn print_report(dir: &Path) -> ExitCode {
    println!("{}", dir.display());
    let report: Value = match std::fs::read_to_string(dir.join("report.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("healgate: {}: {e}", dir.join("report.json").display());
            return ExitCode::FAILURE;
        }
    };
    println!();
    println!("{}", report["headline"].as_str().unwrap_or_default());
    println!();
    for (i, f) in report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!(
            "{}. [{}] {}: {}",
            i + 1,
            f["severity"].as_str().unwrap_or_default(),
            f["id"].as_str().unwrap_or_default(),
            f["title"].as_str().unwrap_or_default()
        );
        if let Some(m) = f["mitigation"].as_str().filter(|m| !m.is_empty()) {
            println!("   what to do: {m}");
        }
    }
    println!();
    println!("report: {}", dir.join("report.html").display());
    ExitCode::SUCCESS
}
