//! The watchdog: a small process started with the gateway that SIGKILLs every
//! instance's process group when the gateway dies, however it dies (even SIGKILL).
//!
//! The parent-death signal reaches only an instance's first process; its children
//! (`sh -c 'worker & exec server'`, a pre-fork server's workers) would outlive the
//! gateway and keep their ports. So the gateway starts `healgate __watchdog` (its own
//! binary, via `/proc/self/exe`) in a process group of its own with a pipe on its
//! stdin, and writes `+<pgid>` when an instance starts and `-<pgid>` once the group
//! has been sent SIGKILL (every exit ends that way: `crash::finish_proc`). The
//! pipe's write end is close-on-exec, so only the gateway holds it: when the gateway
//! is gone the watchdog reads end-of-file, kills every group still registered and
//! exits. A process that leaves its group (`setsid`,
//! double-fork daemons) escapes it; only a cgroup would catch that.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};

/// The hidden first argument that makes the binary the watchdog.
pub const SUBCOMMAND: &str = "__watchdog";

static PIPE: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();

/// Start the watchdog for this process (once; later calls do nothing).
pub fn start() -> io::Result<u32> {
    let mut child = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own group: a Ctrl-C meant for the gateway must not kill the watchdog
        // before the gateway has stopped its instances.
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the watchdog: {e}")))?;
    let pid = child.id();
    // Never waited for: it outlives the gateway by design (init reaps it).
    let _ = PIPE.set(Mutex::new(child.stdin.take()));
    Ok(pid)
}

/// An instance's process group (led by `pgid`) started: kill it if the gateway dies.
pub fn watch(pgid: u32) {
    send(&format!("+{pgid}\n"));
}

/// That group was sent SIGKILL: nothing left to watch (and its id may be reused).
pub fn forget(pgid: u32) {
    send(&format!("-{pgid}\n"));
}

fn send(line: &str) {
    let Some(pipe) = PIPE.get() else { return };
    let mut pipe = pipe.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = pipe.as_mut() {
        if let Err(e) = w.write_all(line.as_bytes()) {
            tracing::error!(
                "the watchdog is gone ({e}): instances' child processes may outlive the gateway if it is killed"
            );
            *pipe = None;
        }
    }
}

/// The watchdog process: read registrations until end-of-file, then kill what is
/// registered.
pub fn main() -> ExitCode {
    let mut groups: HashSet<u32> = HashSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, n) = line.split_at(line.len().min(1));
        let Ok(pgid) = n.trim().parse::<u32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        super::process::signal_group(pgid, super::process::Signal::KILL);
    }
    ExitCode::SUCCESS
}
