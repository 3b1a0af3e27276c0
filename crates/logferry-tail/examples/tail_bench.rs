//! Throughput of the tailer against the floor: a plain `read` + `memchr` line count.
//!
//! Writes 100 files of 10,000 lines, then reads them all twice in the same run: once with
//! 64 KiB `read(2)` calls counting newlines (no lines built, the least any tailer must do),
//! and once with a [`Tailer`] (discovery, identity, `Line`s with offsets). Both read from the
//! page cache, so this measures CPU, not disk. Prints lines/s for each and their ratio.
//!
//! `cargo run --release -p logferry-tail --example tail_bench [files] [lines] [line_bytes]`

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use logferry_tail::tailer::{Tailer, TailerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let files = args.next().transpose()?.unwrap_or(100);
    let lines = args.next().transpose()?.unwrap_or(10_000);
    let line_bytes = args.next().transpose()?.unwrap_or(120);
    let dir = tempfile::tempdir()?;

    let mut paths = Vec::new();
    for f in 0..files {
        let path = dir.path().join(format!("app-{f:03}.log"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..lines {
            let head = format!("2024-05-01T12:00:00.{i:06}Z host app[{f}]: request {i} ");
            let pad = line_bytes.saturating_sub(head.len() + 1);
            writeln!(out, "{head}{}", "x".repeat(pad))?;
        }
        out.flush()?;
        paths.push(path);
    }
    let total = files * lines;

    let baseline = best_of(3, || {
        let start = Instant::now();
        let mut count = 0;
        let mut buf = vec![0u8; 64 * 1024];
        for p in &paths {
            let mut f = std::fs::File::open(p).expect("open");
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                count += memchr::memchr_iter(b'\n', &buf[..n]).count();
            }
        }
        assert_eq!(count, total);
        start.elapsed()
    });

    let tailer = best_of(3, || {
        let start = Instant::now();
        let opts = TailerOptions {
            include: vec![format!("{}/*.log", dir.path().display())],
            ..TailerOptions::default()
        };
        let mut t = Tailer::new(opts, vec![]).expect("tailer");
        let mut out = Vec::with_capacity(1024);
        let mut count = 0;
        let mut bytes = 0;
        while count < total {
            out.clear();
            if t.read(&mut out, 1024) == 0 {
                t.wait(Duration::from_millis(10));
            }
            count += out.len();
            bytes += out.iter().map(|l| l.bytes.len()).sum::<usize>();
        }
        assert_eq!(count, total);
        assert!(bytes > 0);
        start.elapsed()
    });

    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "{files} files x {lines} lines of {line_bytes} bytes ({:.0} MiB)",
        (total * line_bytes) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "read+memchr baseline: {:>6.1} ms  {:>12.0} lines/s",
        baseline.as_secs_f64() * 1e3,
        rate(baseline)
    );
    println!(
        "Tailer:               {:>6.1} ms  {:>12.0} lines/s",
        tailer.as_secs_f64() * 1e3,
        rate(tailer)
    );
    println!(
        "Tailer / baseline throughput: {:.2}",
        rate(tailer) / rate(baseline)
    );
    Ok(())
}

fn best_of(n: usize, mut run: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| run()).min().unwrap_or_default()
}
