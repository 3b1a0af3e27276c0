#!/usr/bin/env python3
"""End-to-end syslog benchmark: N syslog lines over one TCP connection -> logferry -> a fast
fake CloudWatch Logs endpoint speaking HTTPS (cwl-testkit's fake-cloudwatch).

Reports events/s (first byte sent -> last event counted by the endpoint), logferry's CPU
seconds (utime+stime from /proc) and peak RSS (VmHWM), plus a reference run in the same
invocation (the same bytes through `ncat` into `ncat -l > /dev/null`) and the ratio, because
these machines are noisy and absolute figures alone mislead.

`--stream-exists`: the endpoint treats the log group and stream as existing (a restarted node's
stream), so the run measures the data path; without it the first request waits for
CreateLogGroup/CreateLogStream at the control plane's fleet-safe pace (ARCHITECTURE.md, "Pacing
at start"). `first_event_s` and `steady_events_per_s` tell that start from the rate after it.

Usage: bench/syslog_tcp.py [--lines N] [--target-dir DIR] [--spool] [--stream-exists]
"""
import argparse
import datetime, json, os, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FakeCloudWatch, cw_sink, free_port, proc_cpu, proc_hwm_kib, scratch_dir  # noqa: E402


def make_lines(path, n):
    # RFC 5424 lines like a busy node's: ~130 bytes each, stamped in the order they are written
    # (one microsecond apart, from two minutes ago), as a real sender's are. (They once all
    # carried the same second of a fixed date: out of order within every request, so each
    # request overlapped the previous one's time range and the sink sent them one at a time,
    # and a fixed date falls out of CloudWatch's 14 days.)
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=2)
    with open(path, "wb") as f:
        chunk = []
        for i in range(n):
            t = start + datetime.timedelta(microseconds=i)
            stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%f").encode()
            chunk.append(b"<30>1 %sZ node-1 kubelet 2174 - - I1125 16:20:39.%06d 2174 kubelet.go:2174] \"SyncLoop\" pod=\"kube-system/coredns-%d\"\n" % (stamp, i % 1000000, i))
            if len(chunk) == 10000:
                f.write(b"".join(chunk)); chunk = []
        f.write(b"".join(chunk))

def reference_rate(path, n):
    port = free_port()
    sink = subprocess.Popen(["ncat", "-l", "127.0.0.1", str(port), "--recv-only"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    t0 = time.monotonic()
    with open(path, "rb") as f:
        subprocess.run(["ncat", "--send-only", "127.0.0.1", str(port)], stdin=f, check=True)
    sink.wait(timeout=60)
    return n / (time.monotonic() - t0)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/var/tmp/logferry-target"))
    ap.add_argument("--spool", action="store_true", help="put the syslog source behind the disk spool")
    ap.add_argument("--stream-exists", action="store_true",
                    help="the group and stream exist already (a restarted node's): no creates")
    args = ap.parse_args()
    rel = os.path.join(args.target_dir, "release")
    tmp = scratch_dir("lf-bench-")
    data = os.path.join(tmp, "lines.txt")
    make_lines(data, args.lines)
    fake = FakeCloudWatch(rel, tmp, auto_create=args.stream_exists)
    fake_stats = fake.stats
    addr = fake.endpoint

    sport = free_port()
    cfg = os.path.join(tmp, "logferry.toml")
    spool = '\nspool = true' if args.spool else '\nspool = false'
    with open(cfg, "w") as f:
        f.write(f'''data_dir = "{tmp}/data"
[sources.syslog]
type = "syslog"
address = "tcp://127.0.0.1:{sport}"{spool}
''' + cw_sink("syslog", "/bench/system", "node-1", "short", addr))
    env = fake.env()
    lf = subprocess.Popen([os.path.join(rel, "logferry"), "run", "--config", cfg], env=env,
                          stderr=open(os.path.join(tmp, "logferry.log"), "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", sport), timeout=0.2).close(); break
        except OSError:
            time.sleep(0.1)
    cpu0 = proc_cpu(lf.pid)
    t0 = time.monotonic()
    with open(data, "rb") as f:
        subprocess.run(["ncat", "--send-only", "127.0.0.1", str(sport)], stdin=f, check=True)
    t_sent = time.monotonic() - t0
    events = fake.wait_events(args.lines)
    elapsed = time.monotonic() - t0
    first = (fake.first[0] - t0, fake.first[1]) if fake.first else None
    cpu = proc_cpu(lf.pid) - cpu0
    hwm = proc_hwm_kib(lf.pid)
    lf.terminate(); lf.wait(timeout=60)
    st = fake_stats()
    fake.stop()
    ref = reference_rate(data, args.lines)
    rate = events / elapsed
    result = {
        "lines": args.lines, "delivered": events, "delivered_at_exit": st.get("events"), "violations": st.get("violations"),
        "requests": st.get("requests"), "seconds": round(elapsed, 3), "send_seconds": round(t_sent, 3),
        "events_per_s": round(rate),
        # Until the first accepted request (config, TLS, stream creation), and the rate after.
        "first_event_s": round(first[0], 3) if first else None,
        "steady_events_per_s": round((events - first[1]) / (elapsed - first[0])) if first and elapsed > first[0] else None, "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(hwm / 1024, 1),
        "reference_ncat_lines_per_s": round(ref), "ratio_vs_reference": round(rate / ref, 3),
        "spool": args.spool, "stream_exists": args.stream_exists,
    }
    print(json.dumps(result, indent=1))
    # Exactly once: counted after logferry's shutdown flush, so a duplicate cannot hide a loss.
    ok = st.get("events") == args.lines and st.get("violations") == 0
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
