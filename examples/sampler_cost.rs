//! How much one AutoHeal sampling tick costs with 20 instances: starts 20 real
//! processes (`sleep`), each with a child of its own (a process tree, as apps have),
//! then times `Sampler::sample` over them.
//!
//! `cargo run --release --example sampler_cost`

use healgate::supervisor::sampler::Sampler;
use std::process::{Child, Command};
use std::time::Instant;

fn main() {
    let mut kids: Vec<Child> = (0..20)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "sleep 60 & exec sleep 60"])
                .spawn()
                .expect("sh")
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let roots: Vec<u32> = kids.iter().map(|c| c.id()).collect();
    let mut s = Sampler::default();
    let warm = s.sample(&roots);
    assert_eq!(warm.len(), 20);
    let rounds = 200;
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    for _ in 0..rounds {
        let got = s.sample(&roots);
        assert_eq!(got.len(), 20);
    }
    let wall = t.elapsed() / rounds;
    let cpu = (cpu_seconds() - cpu0) / rounds as f64;
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    println!("one sample of 20 instance trees ({procs} processes on the machine): {wall:?} wall, {:.3} ms CPU", cpu * 1000.0);
    println!("at 2 ticks/s: {:.2}% of one core", cpu * 2.0 * 100.0);
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
