//! Child processes: started in their own process group with a parent-death signal
//! (and registered with the watchdog, for their children), signalled as a group,
//! measured from `/proc`.
//!
//! This is the one module that needs `unsafe`, once: `pre_exec` (to set the
//! parent-death signal between fork and exec). Group signals and system constants go
//! through `rustix`'s safe calls.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// What to start.
pub struct Spec {
    pub argv: Vec<String>,
    pub cwd: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

type SpawnJob = (Spec, oneshot::Sender<io::Result<Child>>);

/// Children are forked from one long-lived thread: the parent-death signal fires
/// when the *thread* that forked a child ends, so it must never be a pool thread.
fn launcher() -> &'static Mutex<std_mpsc::Sender<SpawnJob>> {
    static LAUNCHER: OnceLock<Mutex<std_mpsc::Sender<SpawnJob>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || {
                let _rt = handle.enter();
                while let Ok((spec, reply)) = rx.recv() {
                    let _ = reply.send(spawn_here(spec));
                }
            })
            .expect("start the launcher thread");
        Mutex::new(tx)
    })
}

/// Start a child: own process group, stdout/stderr piped, stdin closed, killed by
/// the kernel if the gateway dies (even by SIGKILL).
pub async fn spawn(spec: Spec) -> io::Result<Child> {
    let (tx, rx) = oneshot::channel();
    launcher()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((spec, tx))
        .map_err(|_| io::Error::other("the launcher thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the launcher thread is gone"))?
}

fn spawn_here(spec: Spec) -> io::Result<Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid); it touches no locks or heap.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The gateway died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited during start"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        let not_found = e.kind() == io::ErrorKind::NotFound;
        let what = if not_found && !spec.cwd.is_dir() {
            format!(
                "cannot start {program:?}: its working directory (cwd) {} does not exist",
                spec.cwd.display()
            )
        } else if not_found && Path::new(program).parent() == Some(Path::new("")) {
            format!("cannot start {program:?}: not found on PATH")
        } else if not_found {
            format!(
                "cannot start {program:?}: no such file (cwd {})",
                spec.cwd.display()
            )
        } else {
            format!("cannot start {program:?} in {}: {e}", spec.cwd.display())
        };
        io::Error::new(e.kind(), what)
    })?;
    if let Some(pid) = child.id() {
        super::watchdog::watch(pid);
    }
    Ok(child)
}

pub use rustix::process::Signal;

/// Send `sig` to the process group led by `pid`. A group that is already gone
/// (ESRCH) is not an error worth reporting. After SIGKILL nothing in the group can
/// run (or fork) again, so the watchdog stops watching it.
pub fn signal_group(pid: u32, sig: Signal) {
    if let Some(pgid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pgid, sig);
    }
    if sig == Signal::KILL {
        super::watchdog::forget(pid);
    }
}

/// A signal number's name.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// What the gateway reads of one process's `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

impl Stat {
    /// Read `/proc/<pid>/stat`; `None` when the process is gone or the line is odd.
    pub fn read(pid: u32) -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parse one `stat` line. The command name (field 2) is in parentheses and may
    /// itself hold spaces and `)`, so fields are counted from the last `)`.
    pub fn parse(line: &str) -> Option<Stat> {
        let rest = line.get(line.rfind(')')? + 1..)?;
        // After the name: state (3), ppid (4) ... utime (14), stime (15),
        // num_threads (20), rss (24).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
        Some(Stat {
            ppid: u32::try_from(num(4)?).ok()?,
            cpu_ticks: num(14)? + num(15)?,
            threads: num(20)?,
            rss_pages: num(24)?,
        })
    }

    /// Resident memory, bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.rss_pages * page_size()
    }

    /// CPU time, seconds.
    pub fn cpu_s(&self) -> f64 {
        self.cpu_ticks as f64 / clock_ticks()
    }
}

/// Resident memory (bytes) and CPU time (seconds) of one process, from /proc.
pub fn stats(pid: u32) -> Option<(u64, f64)> {
    Stat::read(pid).map(|s| (s.rss_bytes(), s.cpu_s()))
}

/// Clock ticks per second (for /proc CPU times).
pub fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Loopback ports handed to instances: never one that a live instance of ours still
/// holds, even if the kernel would give it out again.
#[derive(Default)]
pub struct Ports {
    held: Mutex<HashSet<u16>>,
}

impl Ports {
    /// A free port on 127.0.0.1.
    pub fn take(&self) -> io::Result<u16> {
        for _ in 0..64 {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            drop(l);
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.insert(port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free loopback port",
        ))
    }

    /// The process that held `port` is gone (reaped).
    pub fn release(&self, port: u16) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names() {
        let line = "4242 (my app) (x)) S 7 4242 4242 0 -1 4194560 100 0 0 0 \
                    25 17 0 0 20 0 3 0 12345 104857600 2560 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                ppid: 7,
                cpu_ticks: 42,
                threads: 3,
                rss_pages: 2560,
            })
        );
        assert_eq!(Stat::parse("4242 (short) S 7 8"), None);
        assert_eq!(Stat::parse("no parenthesis"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Stat::read(std::process::id()).expect("own stat");
        assert!(me.threads >= 1 && me.rss_pages > 0, "{me:?}");
        assert!(clock_ticks() > 0.0 && page_size() >= 4096);
    }
}
