//! What ten thousand idle files cost: the time to discover and open them, and the CPU used
//! while nothing is written (which must stay near zero: no per-file polling).
//!
//! Creates `files` files (one line each) spread over `dirs` directories, then prints the time
//! for `Tailer::new` (first scan), for reading the initial lines, the CPU used over an idle
//! window that includes one periodic rescan, and the latency of one line appended afterwards.
//!
//! `cargo run --release -p logferry-tail --example idle_files [files] [dirs] [idle_seconds]`

use std::io::Write;
use std::time::{Duration, Instant};

use logferry_tail::tailer::{Tailer, TailerOptions};

/// CPU time of the calling thread in nanoseconds (the tailer runs on it).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let files = args.next().transpose()?.unwrap_or(10_000);
    let dirs = args.next().transpose()?.unwrap_or(1_000).max(1);
    let idle = Duration::from_secs(args.next().transpose()?.unwrap_or(11));
    let root = tempfile::tempdir()?;
    for f in 0..files {
        let dir = root.path().join(format!("d{:04}", f % dirs));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{f}.log")), format!("line of file {f}\n"))?;
    }

    let opts = TailerOptions {
        include: vec![format!("{}/*/*.log", root.path().display())],
        ..TailerOptions::default()
    };
    let rescan = opts.rescan_interval;
    let (cpu0, t0) = (thread_cpu_ns(), Instant::now());
    let mut t = Tailer::new(opts, vec![])?;
    let new_time = t0.elapsed();
    let new_cpu = thread_cpu_ns() - cpu0;

    let mut out = Vec::new();
    let (cpu0, t0) = (thread_cpu_ns(), Instant::now());
    let mut count = 0u64;
    while count < files {
        out.clear();
        count += t.read(&mut out, 1024) as u64;
    }
    let first_read = t0.elapsed();
    let first_read_cpu = thread_cpu_ns() - cpu0;
    let mut notices = Vec::new();
    t.drain_notices(&mut notices);

    let (cpu0, t0) = (thread_cpu_ns(), Instant::now());
    let mut rounds = 0;
    let mut rescans = Vec::new();
    while t0.elapsed() < idle {
        out.clear();
        let before = thread_cpu_ns();
        t.read(&mut out, 1024);
        let spent = thread_cpu_ns() - before;
        // Anything above a millisecond is a rescan; the other rounds cost microseconds.
        if spent > 1_000_000 {
            rescans.push(format!("{:.1}", spent as f64 / 1e6));
        }
        assert!(out.is_empty(), "idle files produced lines");
        t.wait(Duration::from_millis(500));
        rounds += 1;
    }
    let idle_cpu = thread_cpu_ns() - cpu0;
    let idle_wall = t0.elapsed();

    let target = root.path().join(format!("d{:04}", 7 % dirs)).join("f7.log");
    let t0 = Instant::now();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&target)?
        .write_all(b"one more\n")?;
    loop {
        out.clear();
        if t.read(&mut out, 1024) > 0 {
            break;
        }
        t.wait(Duration::from_secs(1));
    }
    let latency = t0.elapsed();

    println!(
        "{files} files in {dirs} dirs, {} open, {} notices",
        t.open_files(),
        notices.len()
    );
    println!(
        "new (first scan, open, fingerprint): {:>8.1} ms wall {:>8.1} ms cpu",
        new_time.as_secs_f64() * 1e3,
        new_cpu as f64 / 1e6
    );
    println!(
        "first read of all files:             {:>8.1} ms wall {:>8.1} ms cpu",
        first_read.as_secs_f64() * 1e3,
        first_read_cpu as f64 / 1e6
    );
    println!(
        "idle {:.1} s ({rounds} read/wait rounds, rescan every {:?}): {:.1} ms cpu = {:.2}% of a core",
        idle_wall.as_secs_f64(),
        rescan,
        idle_cpu as f64 / 1e6,
        idle_cpu as f64 / idle_wall.as_nanos() as f64 * 100.0
    );
    println!(
        "rescans during the idle window (ms cpu each; the first re-checks the fingerprints of \
         the files read since the previous one): [{}]",
        rescans.join(", ")
    );
    println!(
        "latency of one appended line:        {:>8.2} ms",
        latency.as_secs_f64() * 1e3
    );
    Ok(())
}
