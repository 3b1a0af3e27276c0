//! Read throughput: our reader against `journalctl -D DIR -o export > /dev/null`.
//!
//! `bench_read [--entries N] [--keep DIR] [DIR]`: with a DIR, benchmarks that journal;
//! without one (needs root), starts a private systemd-journald (same recipe as the tests),
//! has it write N entries (default 300,000) with its usual trusted fields, stops it, then
//! benchmarks the result. Prints entries/s for both readers and the ratio.
//!
//! Our side is measured three ways: reading entries with every field touched (what the
//! shipper does), reading through `next_entry` (allocating), and producing the same export
//! text journalctl produces, to compare like with like.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logferry_journal::{Entry, Journal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut n = 300_000usize;
    let mut dir: Option<PathBuf> = None;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => n = args.next().ok_or("--entries N")?.parse()?,
            "--keep" => keep = Some(args.next().ok_or("--keep DIR")?.into()),
            _ => dir = Some(a.into()),
        }
    }
    let _tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            let t = tempfile::Builder::new().prefix("lf-bench-").tempdir()?;
            let root = keep.clone().unwrap_or_else(|| t.path().to_path_buf());
            std::fs::create_dir_all(&root)?;
            write_journal(&root, n)?;
            _tmp = t;
            root.join("log")
        }
    };

    // Warm the page cache so both readers see the same conditions.
    journalctl_export(&dir)?;

    let mut best_touch = f64::MAX;
    let mut count = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut j = Journal::open_dirs(std::slice::from_ref(&dir))?;
        let mut e = Entry::new();
        let (mut k, mut bytes) = (0usize, 0usize);
        while j.next_entry_into(&mut e)? {
            k += 1;
            for (name, value) in e.fields() {
                bytes += name.len() + value.len();
            }
        }
        std::hint::black_box(bytes);
        best_touch = best_touch.min(t.elapsed().as_secs_f64());
        count = k;
        if j.file_error_count() > 0 {
            eprintln!("file errors: {:?}", j.file_errors());
        }
    }
    let t = Instant::now();
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir))?;
    let mut k = 0usize;
    while let Some(e) = j.next_entry()? {
        k += std::hint::black_box(e.len()).min(1);
    }
    let alloc = t.elapsed().as_secs_f64();
    assert_eq!(k, count);

    let t = Instant::now();
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir))?;
    let mut sink = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create("/dev/null")?);
    let mut e = Entry::new();
    while j.next_entry_into(&mut e)? {
        e.write_export(&mut sink)?;
    }
    sink.flush()?;
    let ours_export = t.elapsed().as_secs_f64();

    let mut best_jctl = f64::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        journalctl_export(&dir)?;
        best_jctl = best_jctl.min(t.elapsed().as_secs_f64());
    }

    let rate = |secs: f64| count as f64 / secs;
    println!("journal: {} ({} entries)", dir.display(), count);
    println!(
        "ours (next_entry_into, fields touched): {:>10.0} entries/s",
        rate(best_touch)
    );
    println!(
        "ours (next_entry, allocating):          {:>10.0} entries/s",
        rate(alloc)
    );
    println!(
        "ours (export format to /dev/null):      {:>10.0} entries/s",
        rate(ours_export)
    );
    println!(
        "journalctl -o export > /dev/null:       {:>10.0} entries/s",
        rate(best_jctl)
    );
    println!(
        "ratio ours/journalctl: {:.1}x (export vs export: {:.1}x)",
        best_jctl / best_touch,
        best_jctl / ours_export
    );
    Ok(())
}

fn journalctl_export(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let st = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args(["-o", "export", "--no-pager"])
        .stdout(std::fs::File::create("/dev/null")?)
        .status()?;
    if !st.success() {
        return Err("journalctl failed".into());
    }
    Ok(())
}

/// Starts a private journald in `root` (root needed), writes `n` entries, stops it.
fn write_journal(root: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    for d in ["sock", "log"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::create_dir_all("/run/systemd/journal")?;
    std::fs::create_dir_all("/run/log/journal")?;
    std::fs::write(
        root.join("journald.conf"),
        "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n\
         RuntimeMaxFileSize=128M\nRuntimeMaxUse=4G\nReadKMsg=no\nForwardToSyslog=no\n\
         ForwardToWall=no\n",
    )?;
    let r = root.display();
    let script = format!(
        "mount --bind {r}/sock /run/systemd/journal && mount --bind {r}/log /run/log/journal \
         && mount --bind {r}/journald.conf /etc/systemd/journald.conf \
         && exec /lib/systemd/systemd-journald"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let sock = root.join("sock/socket");
    let start = Instant::now();
    while !sock.exists() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            return Err("journald did not start (root needed)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = UnixDatagram::unbound()?;
    let t = Instant::now();
    let units = ["nginx", "sshd", "cron", "kernel", "app-worker"];
    for i in 0..n {
        let unit = units[i % units.len()];
        let mut msg = format!(
            "MESSAGE={unit}[{}]: request {i} handled in {} ms path=/api/v1/items/{}\n\
             PRIORITY={}\nSYSLOG_IDENTIFIER={unit}\nCODE_LINE={}\n",
            1000 + i % 97,
            i % 1000,
            i * 7919 % 100_000,
            i % 8,
            i % 500
        )
        .into_bytes();
        if i % 50 == 0 {
            // A stack trace sized field: compressed by journald.
            let trace: String = (0..20)
                .map(|k| format!("  at frame{k}(module{}.rs:{})\n", i % 13, k * i % 997))
                .collect();
            msg.extend_from_slice(b"TRACE\n");
            msg.extend_from_slice(&(trace.len() as u64).to_le_bytes());
            msg.extend_from_slice(trace.as_bytes());
            msg.push(b'\n');
        }
        while s.send_to(&msg, &sock).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // journald handles datagrams in order: once the sentinel is readable, all are written.
    s.send_to(b"MESSAGE=bench-done\nLF_BENCH_DONE=1\n", &sock)?;
    let log = root.join("log");
    loop {
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(&log)
            .args(["-q", "-o", "cat", "LF_BENCH_DONE=1"])
            .output()?;
        if !out.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "wrote {n} entries through journald in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    Ok(())
}
