#!/usr/bin/env python3
"""End-to-end journal benchmark: a journal of >= 300,000 entries -> logferry (`type = "journald"`,
`start = "beginning"`) -> a fast fake CloudWatch Logs endpoint speaking HTTPS (cwl-testkit's
fake-cloudwatch).

Reports entries/s (logferry started -> last event counted by the endpoint; also the time to the
first accepted request and the rate after it), logferry's CPU
seconds (utime+stime from /proc) and peak RSS (VmHWM), plus a reference measured in the same
invocation, `journalctl -D DIR -o export > /dev/null` (reading and serialising every entry
without shipping it), and the ratio, because these machines are noisy and absolute figures alone
mislead. Targets (issue #18): >= 330,000 entries/s end to end, >= 2.5x the reference, and
< 40 MiB peak RSS.

`--stream-exists`: the endpoint treats the log group and stream as existing (a node restarted
after downtime, the usual backfill: its stream was created on its first start), so the run
measures the data path. Without it the stream is new, and the first request waits for
CreateLogGroup/CreateLogStream at the control plane's fleet-safe pace (0.5 calls/s after a
random part of one interval, see ARCHITECTURE.md "Pacing at start").

The journal: `--journal DIR` if given, else /var/tmp/lf-bench-journal/log if it holds one (left
by an earlier run), else one is created there from a generated export stream with
systemd-journal-remote (journald's own file format, the default compact/keyed-hash/zstd layout).

Usage: bench/journal_e2e.py [--journal DIR] [--entries N] [--target-dir DIR] [--format short]
                            [--stream-exists]
"""
import argparse, glob, json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FakeCloudWatch, cw_sink, proc_cpu, proc_hwm_kib, scratch_dir  # noqa: E402

DEFAULT_DIR = "/var/tmp/lf-bench-journal/log"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


def has_journal(d):
    return bool(glob.glob(os.path.join(d, "**", "*.journal*"), recursive=True))


def create_journal(d, n):
    """Writes n entries like a busy node's (~100-byte messages, a few identifiers and units)
    into d/system.journal with systemd-journal-remote."""
    os.makedirs(d, exist_ok=True)
    now = int(time.time() * 1_000_000) - n  # recent: inside CloudWatch's 14-day window
    boot = "0123456789abcdef0123456789abcdef"
    exp = os.path.join(os.path.dirname(d.rstrip("/")) or ".", "bench.export")
    with open(exp, "wb") as f:
        chunk = []
        for i in range(n):
            ident = ("app-worker", "kubelet", "containerd", "sshd")[i % 4]
            chunk.append(
                (f"__REALTIME_TIMESTAMP={now + i}\n__MONOTONIC_TIMESTAMP={1_000_000 + i}\n"
                 f"_BOOT_ID={boot}\n_HOSTNAME=node-1\n_TRANSPORT=journal\nPRIORITY={i % 8}\n"
                 f"SYSLOG_IDENTIFIER={ident}\n_PID={1000 + i % 50}\n_COMM={ident}\n"
                 f"_SYSTEMD_UNIT={ident}.service\n"
                 f"MESSAGE=request {i} handled in {i % 1000} ms path=/api/v1/items/{i * 7 % 100000}\n\n"
                 ).encode())
            if len(chunk) == 10000:
                f.write(b"".join(chunk)); chunk = []
        f.write(b"".join(chunk))
    subprocess.run([JOURNAL_REMOTE, f"--output={d}/system.journal", exp], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.remove(exp)


def count_entries(d):
    p = subprocess.Popen(["journalctl", "-D", d, "--no-pager", "-o", "export"], stdout=subprocess.PIPE)
    n = 0
    for line in p.stdout:
        if line.startswith(b"__CURSOR="):
            n += 1
    p.wait()
    return n


def reference_rate(d, n):
    t0 = time.monotonic()
    subprocess.run(["journalctl", "-D", d, "--no-pager", "-o", "export"], stdout=subprocess.DEVNULL, check=True)
    return n / (time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--journal", default=None)
    ap.add_argument("--entries", type=int, default=300_000, help="entries when creating a journal")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/var/tmp/logferry-target"))
    ap.add_argument("--format", default="short", choices=["short", "json", "message"])
    ap.add_argument("--stream-exists", action="store_true",
                    help="the group and stream exist already (a restart's backfill): no creates")
    args = ap.parse_args()
    rel = os.path.join(args.target_dir, "release")
    jdir = args.journal or DEFAULT_DIR
    if not has_journal(jdir):
        print(f"creating a {args.entries}-entry journal in {jdir}", file=sys.stderr)
        create_journal(jdir, args.entries)
    n = count_entries(jdir)
    if n < 300_000:
        print(f"warning: the journal holds only {n} entries", file=sys.stderr)

    tmp = scratch_dir("lf-bench-journal-")
    fake = FakeCloudWatch(rel, tmp, auto_create=args.stream_exists)
    fake_stats = fake.stats
    addr = fake.endpoint

    cfg = os.path.join(tmp, "logferry.toml")
    with open(cfg, "w") as f:
        f.write(f'''data_dir = "{tmp}/data"
[sources.journal]
type = "journald"
directory = "{jdir}"
start = "beginning"
''' + cw_sink("journal", "/bench/journal", "node-1", args.format, addr))
    env = fake.env()
    t0 = time.monotonic()
    lf = subprocess.Popen([os.path.join(rel, "logferry"), "run", "--config", cfg], env=env,
                          stderr=open(os.path.join(tmp, "logferry.log"), "w"))
    deadline = time.monotonic() + 600
    events, first = 0, None
    while time.monotonic() < deadline:
        events = fake_stats()["events"]
        if first is None and events > 0:
            first = (time.monotonic() - t0, events)
        if events >= n or lf.poll() is not None:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu = proc_cpu(lf.pid)
    hwm = proc_hwm_kib(lf.pid)
    lf.terminate(); lf.wait(timeout=60)
    st = fake_stats()
    fake_cpu = fake.cpu()
    fake.stop()
    ref = reference_rate(jdir, n)
    rate = events / elapsed
    result = {
        "journal": jdir, "entries": n, "delivered": st.get("events"), "violations": st.get("violations"),
        "rejected": st.get("rejected_events"), "requests": st.get("requests"), "format": args.format,
        "stream_exists": args.stream_exists,
        "seconds": round(elapsed, 3), "entries_per_s": round(rate),
        # Startup (config, TLS, CreateLogGroup/Stream) until the first accepted request, and the
        # rate after it: the part that scales with the journal's size.
        "first_event_s": round(first[0], 3) if first else None,
        "steady_entries_per_s": round((events - first[1]) / (elapsed - first[0])) if first and elapsed > first[0] else None, "cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(hwm / 1024, 1), "fake_cloudwatch_cpu_seconds": round(fake_cpu, 2),
        "reference_journalctl_export_per_s": round(ref), "ratio_vs_reference": round(rate / ref, 3),
        "targets_met": rate >= 330_000 and rate / ref >= 2.5 and hwm / 1024 < 40,
    }
    print(json.dumps(result, indent=1))
    # Exactly once (counted after logferry's shutdown flush, so a duplicate cannot hide a loss),
    # and the targets it reports: a run that misses them exits non-zero.
    ok = st.get("events") == n and st.get("violations") == 0 and result["targets_met"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
