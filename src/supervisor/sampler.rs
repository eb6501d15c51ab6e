//! Measurements of instances' process trees from `/proc`: resident memory, CPU time,
//! threads and open files, summed over each instance's process and its descendants.
//! One scan of `/proc` per tick serves every instance of an app.

use super::process::Stat;
use std::collections::HashMap;
use std::time::Instant;

/// One instance's process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set size (working set), bytes.
    pub rss: u64,
    /// utime + stime of the tree, seconds.
    pub cpu_s: f64,
    /// CPU use since the previous sample, percent of one core.
    pub cpu_pct: f64,
    pub threads: u64,
    pub open_files: u64,
    pub processes: u64,
}

fn read_all() -> HashMap<u32, Stat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(stat) = Stat::read(pid) {
            out.insert(pid, stat);
        }
    }
    out
}

fn count_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// One process of an instance's tree, for the admin API's process view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The command line, redacted ([`crate::observe::redact::argv`]).
    pub cmdline: Vec<String>,
    pub rss_bytes: u64,
    pub cpu_s: f64,
    pub threads: u64,
    pub open_files: u64,
}

/// The process tree rooted at `root` (root first, then its descendants, depth first);
/// empty when `root` is gone.
pub fn tree(root: u32) -> Vec<ProcessInfo> {
    let procs = read_all();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, p) in &procs {
        children.entry(p.ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let Some(p) = procs.get(&pid) else { continue };
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(ProcessInfo {
            pid,
            ppid: p.ppid,
            cmdline: crate::observe::redact::argv(&args),
            rss_bytes: p.rss_bytes(),
            cpu_s: (p.cpu_s() * 1000.0).round() / 1000.0,
            threads: p.threads,
            open_files: count_fds(pid),
        });
        if let Some(c) = children.get(&pid) {
            let mut c = c.clone();
            c.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(c);
        }
    }
    out
}

/// The previous CPU reading of each root, to turn CPU time into percent.
#[derive(Default)]
pub struct Sampler {
    last: HashMap<u32, (f64, Instant)>,
}

impl Sampler {
    /// Sample the trees rooted at `roots`.
    pub fn sample(&mut self, roots: &[u32]) -> HashMap<u32, Sample> {
        let procs = read_all();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, p) in &procs {
            children.entry(p.ppid).or_default().push(*pid);
        }
        let tick = super::process::clock_ticks();
        let page = super::process::page_size();
        let now = Instant::now();
        let mut out = HashMap::new();
        for &root in roots {
            if !procs.contains_key(&root) {
                continue;
            }
            let mut s = Sample::default();
            let mut stack = vec![root];
            let mut ticks = 0;
            while let Some(pid) = stack.pop() {
                let Some(p) = procs.get(&pid) else { continue };
                s.processes += 1;
                s.rss += p.rss_pages * page;
                s.threads += p.threads;
                s.open_files += count_fds(pid);
                ticks += p.cpu_ticks;
                if let Some(c) = children.get(&pid) {
                    stack.extend(c);
                }
            }
            s.cpu_s = ticks as f64 / tick;
            if let Some((prev, at)) = self.last.get(&root) {
                let wall = now.duration_since(*at).as_secs_f64();
                if wall > 0.0 {
                    s.cpu_pct = ((s.cpu_s - prev) / wall * 100.0).max(0.0);
                }
            }
            self.last.insert(root, (s.cpu_s, now));
            out.insert(root, s);
        }
        self.last.retain(|pid, _| out.contains_key(pid));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let mut s = Sampler::default();
        let a = s.sample(&[me]);
        let x = a[&me];
        assert!(x.rss > 1024 * 1024, "{x:?}");
        assert!(
            x.threads >= 1 && x.open_files >= 3 && x.processes >= 1,
            "{x:?}"
        );
        assert!(s.sample(&[999_999_999]).is_empty());
    }
}
