//! An idle logferry costs next to nothing: it runs on every node of a fleet, so its idle cost
//! is multiplied by the fleet. With a real journald, TCP and UDP syslog (spooled), a file and
//! Kubernetes container logs, each having shipped a line to moto, a quiet minute must cost
//! under 0.1% of a core, and the process must sleep: no timer faster than once a second
//! (the journal and file readers' shutdown checks), counted as context switches of all its
//! threads.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cwl_testkit::Journald;
use support::*;

const GROUP: &str = "/idle";
const QUIET: Duration = Duration::from_secs(60);

/// Time on a CPU (ns, from the scheduler's own accounting in `schedstat`: exact, unlike the
/// clock ticks of `stat`, which charge a whole tick to whoever runs when it fires) and context
/// switches, per thread of `pid` (`tid comm` → cost): a failure names the thread that woke.
fn cost(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut threads = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("logferry (pid {pid}) is gone: {e}"));
    for task in tasks {
        let task = task.expect("task").path();
        // A thread that ended between readdir and here has nothing to count.
        let (Ok(comm), Ok(schedstat), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("schedstat")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue;
        };
        let on_cpu_ns = schedstat
            .split(' ')
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("schedstat format: {schedstat}"));
        let mut switches = 0;
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().expect("a count");
            }
        }
        let tid = task
            .file_name()
            .expect("tid")
            .to_string_lossy()
            .into_owned();
        threads.insert(format!("{tid} {}", comm.trim_end()), (on_cpu_ns, switches));
    }
    threads
}

/// What each thread spent between two [`cost`] readings, and the totals.
fn spent(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> (u64, u64, String) {
    let (mut ns, mut switches, mut table) = (0, 0, String::new());
    for (thread, (n1, s1)) in after {
        let (n0, s0) = before.get(thread).copied().unwrap_or_default();
        ns += n1 - n0;
        switches += s1 - s0;
        table.push_str(&format!(
            "  {thread}: {:.1} ms on a CPU, {} switches\n",
            (n1 - n0) as f64 / 1e6,
            s1 - s0
        ));
    }
    (ns, switches, table)
}

#[test]
fn a_quiet_minute_costs_under_a_tenth_of_a_percent_of_a_core() {
    let Some(jd) = Journald::start("") else {
        return;
    };
    let moto = Moto::start().expect("moto");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("app.log");
    let pods = dir.path().join("pods");
    let container = pods.join("default_web-1_0000/web");
    std::fs::create_dir_all(&container).expect("pod dir");
    let (tcp, udp) = (free_port(), free_port());
    let sources = [
        source(
            "journal",
            "journald",
            &format!("directory = \"{}\"", jd.log_dir().display()),
        ),
        syslog_source("tcp", "tcp", tcp, ""),
        syslog_source("udp", "udp", udp, ""),
        source(
            "file",
            "file",
            &format!("include = [\"{}\"]", file.display()),
        ),
        source(
            "containers",
            "kubernetes_logs",
            &format!("include = [\"{}/*/*/*.log\"]", pods.display()),
        ),
    ]
    .join("\n");
    let sink = cw_sink(
        &["journal", "tcp", "udp", "file", "containers"],
        GROUP,
        "{source}",
        &moto.endpoint(),
    );
    let (lf, metrics) = start_with_metrics(&pipeline(&sources, &sink));
    lf.wait_listening(2);

    // Every source ships a line first: what was busy once must go back to sleep.
    jd.sender()
        .send(&[("MESSAGE", b"idle journal"), ("SYSLOG_IDENTIFIER", b"app")]);
    tcp_send(tcp, b"<14>1 - host app - - - idle tcp\n");
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("udp")
        .send_to(b"<14>1 - host app - - - idle udp", ("127.0.0.1", udp))
        .expect("send udp");
    std::fs::write(&file, b"idle file\n").expect("file");
    std::fs::write(
        container.join("0.log"),
        b"2026-12-03T08:00:00.000000000Z stdout F idle container\n",
    )
    .expect("container log");
    let endpoint = moto.endpoint();
    for stream in ["journal", "tcp", "udp", "file", "containers"] {
        wait_events(&endpoint, GROUP, stream, 1, Duration::from_secs(60));
    }
    // Positions saved, spool checkpoints written, requests finished.
    let settled = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_sink_events_delivered_total", &[]) == Some(5.0)
    });
    assert!(
        settled,
        "the five lines were not all acknowledged:\n{}",
        lf.log()
    );
    std::thread::sleep(Duration::from_secs(2));

    let pid = lf.pid();
    let before = cost(pid);
    let started = Instant::now();
    std::thread::sleep(QUIET);
    let after = cost(pid);
    let seconds = started.elapsed().as_secs_f64();
    let (ns, switches, table) = spent(&before, &after);
    let per_second = switches as f64 / seconds;
    let share = ns as f64 / 1e9 / seconds;
    eprintln!(
        "idle for {seconds:.1} s: {:.1} ms on a CPU ({:.4}% of a core), {per_second:.1} context switches/s\n{table}",
        ns as f64 / 1e6,
        share * 100.0
    );
    assert!(
        share < 0.001,
        "an idle logferry used {:.4}% of a core (bound 0.1%):\n{table}",
        share * 100.0
    );
    // The journal and file readers check for shutdown once a second; everything else sleeps
    // until something arrives. A 10 ms timer anywhere would show as 100/s.
    assert!(
        per_second < 5.0,
        "an idle logferry woke {per_second:.1} times a second (bound 5):\n{table}"
    );
}
