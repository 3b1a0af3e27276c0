#!/usr/bin/env python3
"""End-to-end file benchmark: 100 files written concurrently (1,000,000 lines in all) ->
logferry (`type = "file"`) -> the fast fake CloudWatch Logs endpoint over HTTPS.

Reports lines/s (first write -> last event counted by the endpoint), logferry's CPU seconds and
peak RSS, and, in the same invocation, a reference: `cat` of the same files into `wc -l`
(the floor any tailer pays to read the bytes), with the ratio, because these machines are
noisy and absolute figures alone mislead. Target (issue 5): >= 200,000 lines/s, < 64 MiB.

Usage: bench/file_tail.py [--files 100] [--lines 1000000] [--target-dir DIR]
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FakeCloudWatch, proc_cpu, proc_hwm_kib  # noqa: E402


def line(f, i):
    # An application log line of ~120 bytes.
    return b"2026-11-25 16:20:39.%03d INFO [worker-%02d] request id=%08d path=/api/v1/items/%d status=200 took=%dms\n" % (
        i % 1000, f, i, i % 977, i % 300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/var/tmp/logferry-target"))
    args = ap.parse_args()
    rel = os.path.join(args.target_dir, "release")
    tmp = tempfile.mkdtemp(prefix="lf-bench-files-")
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    per = args.lines // args.files
    # Prepared up front so that writing is not what is measured.
    content = [b"".join(line(f, i) for i in range(per)) for f in range(args.files)]
    paths = [os.path.join(logs, f"app-{f:03}.log") for f in range(args.files)]
    for p in paths:
        open(p, "wb").close()

    fake = FakeCloudWatch(rel, tmp)
    cfg = os.path.join(tmp, "logferry.toml")
    with open(cfg, "w") as f:
        f.write(f'''data_dir = "{tmp}/data"
[sources.files]
type = "file"
include = ["{logs}/*.log"]
[sinks.cw]
type = "cloudwatch_logs"
inputs = ["files"]
log_group = "/bench/files"
log_stream = "node-1"
format = "message"
region = "us-east-1"
endpoint = "{fake.endpoint}"
''')
    lf = subprocess.Popen([os.path.join(rel, "logferry"), "run", "--config", cfg], env=fake.env(),
                          stderr=open(os.path.join(tmp, "logferry.log"), "w"))
    time.sleep(1.0)  # let it open the (empty) files
    cpu0 = proc_cpu(lf.pid)
    t0 = time.monotonic()
    # Concurrent writers: every file grows a slice at a time, interleaved, like busy services.
    handles = [open(p, "ab", buffering=0) for p in paths]
    slices = 20
    for s in range(slices):
        for f, h in enumerate(handles):
            c = content[f]
            a, b = len(c) * s // slices, len(c) * (s + 1) // slices
            # cut on line boundaries
            a = c.rfind(b"\n", 0, a) + 1 if a else 0
            b = c.rfind(b"\n", 0, b) + 1 if s + 1 < slices else len(c)
            h.write(c[a:b])
    for h in handles:
        h.close()
    t_written = time.monotonic() - t0
    total = per * args.files
    deadline = time.monotonic() + 600
    events = 0
    while time.monotonic() < deadline:
        events = fake.stats()["events"]
        if events >= total:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu = proc_cpu(lf.pid) - cpu0
    hwm = proc_hwm_kib(lf.pid)
    lf.terminate(); lf.wait(timeout=60)
    st = fake.stats()
    fake.stop()

    r0 = time.monotonic()
    out = subprocess.run(f"cat {logs}/*.log | wc -l", shell=True, check=True, capture_output=True, text=True)
    ref_s = time.monotonic() - r0
    ref = int(out.stdout.strip()) / ref_s
    rate = events / elapsed
    print(json.dumps({
        "files": args.files, "lines": total, "delivered": events, "violations": st.get("violations"),
        "requests": st.get("requests"), "seconds": round(elapsed, 3), "write_seconds": round(t_written, 3),
        "lines_per_s": round(rate), "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(hwm / 1024, 1),
        "reference_cat_wc_lines_per_s": round(ref), "ratio_vs_reference": round(rate / ref, 3),
    }, indent=1))
    sys.exit(0 if events >= total and st.get("violations") == 0 else 1)


if __name__ == "__main__":
    main()
