//! Throughput benchmark: append + read back + ack of 1,000,000 records of 150
//! bytes per fsync setting, against a reference run of plain buffered
//! `write` of the same bytes (no framing) plus reading them back.
//!
//! `cargo run --release --example spool_bench [DIR] [RECORDS]`
//! (DIR defaults to a fresh directory under /var/tmp).
//!
//! The writer and the reader/acker run in two threads, as in logferry. CPU
//! time (user+sys, whole process) per record is printed too: the budget is
//! < 25 % of a 350k events/s pipeline, i.e. < ~0.7 µs of CPU per record.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_spool::{FsyncPolicy, Spool, SpoolConfig};

const PAYLOAD: usize = 150;

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut p = format!("<13>Jan  1 00:00:00 host app[{i}]: ").into_bytes();
            p.resize(PAYLOAD, b'x');
            p
        })
        .collect()
}

struct Result {
    name: String,
    wall: Duration,
    cpu: Duration,
    records: usize,
}

impl Result {
    fn rec_per_s(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        (self.records * PAYLOAD) as f64 / self.wall.as_secs_f64() / 1e6
    }
}

fn reference(dir: &Path, data: &[Vec<u8>]) -> Result {
    let path = dir.join("reference.bin");
    let cpu0 = cpu_time();
    let t = Instant::now();
    {
        let f = std::fs::File::create(&path).expect("create reference file");
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
        for p in data {
            w.write_all(p).expect("write");
        }
        w.flush().expect("flush");
    }
    let back = std::fs::read(&path).expect("read back");
    assert_eq!(back.len(), data.len() * PAYLOAD);
    let r = Result {
        name: "reference: buffered write + read back".into(),
        wall: t.elapsed(),
        cpu: cpu_time() - cpu0,
        records: data.len(),
    };
    let _ = std::fs::remove_file(&path);
    r
}

fn run_spool(dir: &Path, name: &str, fsync: FsyncPolicy, batch: usize, data: &[Vec<u8>]) -> Result {
    let sdir = dir.join(name.replace([' ', '(', ')', '='], "_"));
    let _ = std::fs::remove_dir_all(&sdir);
    let cfg = SpoolConfig {
        fsync,
        ..SpoolConfig::default()
    };
    let (spool, _) = Spool::open(&sdir, cfg).expect("open spool");
    let spool = Arc::new(spool);
    let total = data.len();
    let cpu0 = cpu_time();
    let t = Instant::now();
    let reader = {
        let spool = Arc::clone(&spool);
        let notify = spool.data_notify();
        std::thread::spawn(move || {
            let mut got = 0usize;
            let mut ids = Vec::with_capacity(1000);
            while got < total {
                let b = spool.next_batch(1000, 1 << 20).expect("next_batch");
                if b.is_empty() {
                    // A real reader awaits `notify.notified()` (no runtime in
                    // this example): park briefly like an idle task would.
                    let _ = &notify;
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                got += b.len();
                ids.clear();
                ids.extend(b.iter().map(|r| r.id));
                spool.ack_many(&ids);
            }
        })
    };
    let refs: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
    for chunk in refs.chunks(batch) {
        loop {
            match spool.append_batch(chunk) {
                Ok(_) => break,
                Err(e) if e.is_full() => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => panic!("append: {e}"),
            }
        }
    }
    reader.join().expect("reader");
    spool.flush().expect("flush");
    let wall = t.elapsed();
    let cpu = cpu_time() - cpu0;
    let st = spool.stats();
    assert_eq!(st.records_pending, 0);
    drop(spool);
    let _ = std::fs::remove_dir_all(&sdir);
    Result {
        name: name.into(),
        wall,
        cpu,
        records: total,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/spool-bench-{}", std::process::id())));
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let data = payloads(n);
    println!("{n} records x {PAYLOAD} B payload in {}", dir.display());

    let reference = reference(&dir, &data);
    let results = [
        run_spool(
            &dir,
            "Interval(100ms) batch=1000",
            FsyncPolicy::default(),
            1000,
            &data,
        ),
        run_spool(
            &dir,
            "Interval(100ms) batch=100",
            FsyncPolicy::default(),
            100,
            &data,
        ),
        run_spool(
            &dir,
            "Interval(100ms) batch=1",
            FsyncPolicy::default(),
            1,
            &data,
        ),
        run_spool(&dir, "Always batch=1000", FsyncPolicy::Always, 1000, &data),
    ];
    println!(
        "{:<40} {:>9} {:>10} {:>12} {:>12} {:>9}",
        "setting", "wall s", "MB/s", "records/s", "cpu us/rec", "vs ref"
    );
    for r in std::iter::once(&reference).chain(results.iter()) {
        println!(
            "{:<40} {:>9.3} {:>10.1} {:>12.0} {:>12.3} {:>8.2}x",
            r.name,
            r.wall.as_secs_f64(),
            r.mb_per_s(),
            r.rec_per_s(),
            r.cpu.as_secs_f64() * 1e6 / r.records as f64,
            r.rec_per_s() / reference.rec_per_s(),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
