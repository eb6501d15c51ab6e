//! Child processes: started in their own process group with a parent-death signal,
//! signalled as a group, measured from `/proc`.
//!
//! This is the one module that needs `unsafe`: `pre_exec` (to set the parent-death
//! signal between fork and exec) and `killpg`. Each use says why it is sound.
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
    cmd.spawn().map_err(|e| {
        let what = if !Path::new(program).is_absolute() && e.kind() == io::ErrorKind::NotFound {
            format!("cannot start {program:?}: not found on PATH")
        } else {
            format!("cannot start {program:?} in {}: {e}", spec.cwd.display())
        };
        io::Error::new(e.kind(), what)
    })
}

/// Send `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: killpg has no memory effects; a stale pgid at worst returns ESRCH.
    unsafe {
        libc::killpg(pid as libc::pid_t, sig);
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

/// Resident memory (bytes) and CPU time (seconds) of one process, from /proc.
pub fn stats(pid: u32) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let tick = clock_ticks();
    Some((rss_pages * page_size(), (utime + stime) as f64 / tick))
}

/// Clock ticks per second (for /proc CPU times).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
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
