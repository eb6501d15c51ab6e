//! Containment: an instance's whole process tree dies with it, and with the gateway
//! even when the gateway is killed by SIGKILL.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Kills (SIGKILL) every process group (`.0`, instance leaders) and process (`.1`)
/// it was given when dropped, so a failing test leaves nothing running.
#[derive(Default)]
struct Reaper(Vec<u32>, Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pgid in self.0.iter().filter(|p| alive(**p)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
        for pid in self.1.iter().filter(|p| alive(**p)) {
            signal(*pid, "KILL");
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: it holds no port and runs no code.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// An app whose shell leaves a grandchild that ignores SIGTERM (and gets no
/// parent-death signal), then execs a real HTTP server; the grandchild's pid goes
/// to `dir/grandchild.pid`.
fn config(dir: &Path) -> String {
    let script = format!(
        "(trap '' TERM; exec sleep 1000) & echo $! > {}/grandchild.pid; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        dir.display()
    );
    format!(
        "[[app]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", {script:?}]\ninstances = 1\nroutes = [\"/\"]\nshutdown_grace = \"1s\"\nhealth = {{ path = \"/\", interval = \"500ms\", timeout = \"400ms\" }}\n"
    )
}

/// The gateway's watchdog process (a child whose command line is `__watchdog`).
fn watchdog_of(gw: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{gw}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__watchdog"))
        })
}

fn grandchild(dir: &Path) -> u32 {
    eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("grandchild.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .expect("the app wrote its grandchild's pid")
}

#[test]
fn grandchildren_die_when_the_gateway_is_killed() {
    let dir = TempDir::new("contain-kill");
    let cfg = config(dir.path());
    let mut gw = Gateway::start_in(dir, &cfg);
    let mut reaper = Reaper::default();
    let (_, leader) = gw.wait_ready("web", 1)[0].clone();
    reaper.0.push(leader);
    let gc = grandchild(gw.dir.path());
    reaper.1.push(gc);
    assert!(alive(gc));
    let watchdog = watchdog_of(gw.pid()).expect("the gateway has a watchdog");
    reaper.1.push(watchdog);
    let mut child = gw.child.take().unwrap();
    signal(child.id(), "KILL");
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(5), || {
        (!alive(gc) && !alive(leader) && !alive(watchdog)).then_some(())
    });
    assert!(
        gone.is_some(),
        "after SIGKILL of the gateway: grandchild {gc} alive: {}, instance {leader} alive: {}, watchdog {watchdog} alive: {}",
        alive(gc),
        alive(leader),
        alive(watchdog)
    );
}

#[test]
fn a_recycled_instance_takes_its_grandchildren_with_it() {
    let dir = TempDir::new("contain-recycle");
    let cfg = config(dir.path());
    let gw = Gateway::start_in(dir, &cfg);
    let mut reaper = Reaper::default();
    let (_, old) = gw.wait_ready("web", 1)[0].clone();
    reaper.0.push(old);
    let gc = grandchild(gw.dir.path());
    reaper.1.push(gc);
    std::fs::remove_file(gw.dir.path().join("grandchild.pid")).unwrap();
    let (code, out, err) = gw.cli(&["recycle", "web#1"]);
    assert_eq!(code, 0, "{out}{err}");
    let new = eventually(Duration::from_secs(20), || {
        gw.ready_pids("web")
            .first()
            .map(|(_, p)| *p)
            .filter(|p| *p != old)
    })
    .expect("a replacement serves");
    reaper.0.push(new);
    reaper.1.push(grandchild(gw.dir.path()));
    let gone = eventually(Duration::from_secs(10), || {
        (!alive(gc) && !alive(old)).then_some(())
    });
    assert!(
        gone.is_some(),
        "after the recycle: old grandchild {gc} alive: {}, old instance {old} alive: {}",
        alive(gc),
        alive(old)
    );
}

#[test]
fn grandchildren_die_on_a_normal_stop() {
    let dir = TempDir::new("contain-stop");
    let cfg = config(dir.path());
    let mut gw = Gateway::start_in(dir, &cfg);
    let mut reaper = Reaper::default();
    let (_, leader) = gw.wait_ready("web", 1)[0].clone();
    reaper.0.push(leader);
    let gc = grandchild(gw.dir.path());
    reaper.1.push(gc);
    assert_eq!(gw.terminate().code(), Some(0));
    let gone = eventually(Duration::from_secs(5), || {
        (!alive(gc) && !alive(leader)).then_some(())
    });
    assert!(
        gone.is_some(),
        "after SIGTERM of the gateway: grandchild {gc} alive: {}",
        alive(gc)
    );
}

/// The children of `pid` (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn gunicorn_workers_die_when_the_gateway_is_killed() {
    if Command::new("python3")
        .args(["-c", "import gunicorn"])
        .status()
        .map_or(true, |s| !s.success())
    {
        panic!(
            "this test runs a real gunicorn: `python3 -m pip install gunicorn` (scripts/test does)"
        );
    }
    let dir = TempDir::new("contain-gunicorn");
    std::fs::write(
        dir.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    )
    .unwrap();
    let cfg = format!(
        "[[app]]\nname = \"web\"\ncommand = [\"python3\", \"-m\", \"gunicorn\", \"-w\", \"2\", \"-b\", \"127.0.0.1:{{port}}\", \"app:app\"]\n\
         cwd = \"{}\"\ninstances = 1\nroutes = [\"/\"]\nhealth = {{ path = \"/\", interval = \"500ms\" }}\n",
        dir.path().display()
    );
    let mut gw = Gateway::start_in(dir, &cfg);
    let mut reaper = Reaper::default();
    let (_, master) = gw.wait_ready("web", 1)[0].clone();
    reaper.0.push(master);
    let workers = eventually(Duration::from_secs(10), || {
        let w = children(master);
        (w.len() == 2).then_some(w)
    })
    .expect("two gunicorn workers");
    reaper.1.extend(&workers);
    let mut child = gw.child.take().unwrap();
    signal(child.id(), "KILL");
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(3), || {
        workers.iter().all(|w| !alive(*w)).then_some(())
    });
    assert!(
        gone.is_some(),
        "gunicorn workers outlived the gateway: {:?}",
        workers.iter().filter(|w| alive(**w)).collect::<Vec<_>>()
    );
}
