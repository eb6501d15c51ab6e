//! Capture one instance's process state into `data_dir/diagnostics/<time>-<instance>/`:
//! process status, command line, limits, memory summary, open files, threads (with
//! their kernel stacks), the process tree, and native stacks when `eu-stack` or `gdb`
//! is installed. The environment is never captured: it holds secrets.

use serde_json::json;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long a native stack dump may take.
const STACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Capture `pid` (instance `instance`, because of `why`) under `diagnostics_dir`.
/// Returns the folder written. Blocking: call from a blocking thread.
pub fn capture_process(
    diagnostics_dir: &Path,
    instance: &str,
    pid: u32,
    why: &str,
) -> io::Result<PathBuf> {
    let stamp = crate::observe::time::compact(SystemTime::now());
    let dir = diagnostics_dir.join(format!("{stamp}-{}-{pid}", instance.replace('#', "-")));
    std::fs::create_dir_all(&dir)?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    for name in ["status", "limits", "smaps_rollup", "io", "wchan", "stat"] {
        if let Ok(text) = std::fs::read_to_string(proc_dir.join(name)) {
            std::fs::write(dir.join(format!("{name}.txt")), text)?;
        }
    }
    let cmdline = std::fs::read(proc_dir.join("cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let fds = list_fds(&proc_dir);
    std::fs::write(dir.join("open_files.txt"), fds.join("\n"))?;
    let threads = list_threads(&proc_dir);
    std::fs::write(dir.join("threads.txt"), &threads.1)?;
    let started = Instant::now();
    let stacks = native_stacks(pid);
    if let Some((tool, text)) = &stacks {
        std::fs::write(dir.join(format!("stacks-{tool}.txt")), text)?;
    }
    let summary = json!({
        "instance": instance,
        "pid": pid,
        "reason": why,
        "captured_at": crate::observe::time::rfc3339_millis(SystemTime::now()),
        "cmdline": cmdline,
        "open_files": fds.len(),
        "threads": threads.0,
        "native_stacks": stacks.as_ref().map(|(t, _)| *t),
        "native_stacks_ms": stacks.as_ref().map(|_| started.elapsed().as_millis() as u64),
        "files": std::fs::read_dir(&dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    Ok(dir)
}

fn list_fds(proc_dir: &Path) -> Vec<String> {
    let mut out: Vec<(u64, String)> = std::fs::read_dir(proc_dir.join("fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse::<u64>().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((n, format!("{n} -> {}", target.display())))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

/// (thread count, "tid name state" lines with each thread's kernel stack).
fn list_threads(proc_dir: &Path) -> (usize, String) {
    let mut text = String::new();
    let mut n = 0;
    let Ok(tasks) = std::fs::read_dir(proc_dir.join("task")) else {
        return (0, text);
    };
    let mut tids: Vec<u64> = tasks
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    for tid in tids {
        n += 1;
        let t = proc_dir.join("task").join(tid.to_string());
        let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let state = std::fs::read_to_string(t.join("stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..i + 3].to_owned()))
            .unwrap_or_default();
        let _ = writeln!(text, "{tid} {} {state}", name.trim());
        if let Ok(stack) = std::fs::read_to_string(t.join("stack")) {
            for l in stack.lines() {
                let _ = writeln!(text, "    {l}");
            }
        }
    }
    (n, text)
}

fn native_stacks(pid: u32) -> Option<(&'static str, String)> {
    let tools: [(&str, Vec<String>); 2] = [
        ("eu-stack", vec!["-p".into(), pid.to_string()]),
        (
            "gdb",
            vec![
                "-p".into(),
                pid.to_string(),
                "-batch".into(),
                "-nx".into(),
                "-ex".into(),
                "thread apply all bt".into(),
            ],
        ),
    ];
    for (tool, args) in tools {
        let Ok(mut child) = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        let deadline = Instant::now() + STACK_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        let mut out = String::new();
        if let Some(mut so) = child.stdout.take() {
            let _ = io::Read::read_to_string(&mut so, &mut out);
        }
        if !out.trim().is_empty() {
            return Some((tool, out));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_this_process_without_its_environment() {
        let dir = std::env::temp_dir().join(format!("healgate-capture-{}", std::process::id()));
        let out = capture_process(&dir, "web#1", std::process::id(), "test").unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["instance"], "web#1");
        assert!(summary["threads"].as_u64().unwrap() >= 1);
        assert!(out.join("status.txt").exists() && out.join("open_files.txt").exists());
        assert!(!out.join("environ.txt").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
