#!/usr/bin/env python3
"""End-to-end file benchmark: 100 files written concurrently (1,000,000 lines in all) ->
logferry (`type = "file"`) -> the fast fake CloudWatch Logs endpoint over HTTPS.

Reports lines/s (first write -> last event counted by the endpoint), logferry's CPU seconds and
peak RSS, and, in the same invocation, a reference: `cat` of the same files into `wc -l`
(the floor any tailer pays to read the bytes), with the ratio, because these machines are
noisy and absolute figures alone mislead. Target (issue 5): >= 200,000 lines/s, < 64 MiB.

`--kubernetes` measures the same path as a Kubernetes node sees it: logferry's
`kubernetes_logs` source with `[sources.files.kubernetes_api]` (pod labels looked up through
kube-rs, over HTTPS with a kubeconfig and a bearer token), `log_stream = "{namespace}.{pod}"`
and `format = "json"`. Each file is a container log, `<tmp>/pods/<ns>_<pod>_<uid>/app/0.log`,
one per pod (same --files/--lines split), in CRI format (`<RFC3339Nano now> stdout F <message>`,
the same ~120-byte messages); every 50th message is written as two CRI parts (`P` then `F`),
so partial-line joining is exercised and a P+F pair counts as one event ("lines" and lines/s
count events; "cri_lines" is what is in the files, and what the `cat | wc -l` reference counts).
The API server is the test stand-in crates/logferry/tests/support/fake_kube_api.py, with a CA
and a server certificate for 127.0.0.1 made with the openssl CLI and 3 labels per pod; the run
also reports the API requests it served (expected: one per pod), and the events per stream.
fake-cloudwatch keeps counters only, not event contents, so whether events carry the labels is
not checked here (crates/logferry/tests/kubernetes_api.rs checks that against moto_server);
the output says so.

With `--kubernetes`, two variants measure issue 15's bars:
- `--format message`: the message text alone, a stream per container
  (`{namespace}.{pod}.{container}`), no `kubernetes_api` (so no labels and no API server): the
  cheapest container path, where memory is what is watched (bar: < 48 MiB peak RSS).
- `--merge-json`: each message is a JSON object, as a structured app writes (~150 bytes), and
  the source has `merge_json = true`; with the default `json` format and labels this is the
  richest path, where CPU is watched (bar: < 2.5 CPU-s per million lines).

Usage: bench/file_tail.py [--files 100] [--lines 1000000] [--target-dir DIR]
                          [--kubernetes [--format json|message] [--merge-json]]
Needs: cargo build --release -p logferry -p cwl-testkit --bins
"""
import argparse, json, os, subprocess, sys, time, uuid
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FakeCloudWatch, cw_sink, free_port, proc_cpu, proc_hwm_kib, scratch_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_KUBE_API = os.path.join(REPO, "crates", "logferry", "tests", "support", "fake_kube_api.py")
KUBE_TOKEN = "bench-kube-token"
PARTIAL_EVERY = 50   # every 50th message is written as a CRI P + F pair


def line(f, i):
    # An application log line of ~120 bytes.
    return b"2026-11-25 16:20:39.%03d INFO [worker-%02d] request id=%08d path=/api/v1/items/%d status=200 took=%dms\n" % (
        i % 1000, f, i, i % 977, i % 300)


def json_line(f, i):
    # A structured app's log line: one JSON object of ~150 bytes, with a nested value.
    return (b'{"time":"2026-11-25T16:20:39.%03dZ","level":"info","logger":"worker-%02d",'
            b'"msg":"request done","request":{"id":"%08d","path":"/api/v1/items/%d"},'
            b'"status":200,"took_ms":%d}\n' % (i % 1000, f, i, i % 977, i % 300))


def rfc3339_nano_now():
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + ".%09dZ" % (ns % 1_000_000_000)


def cri_content(f, per, ts, make_line=line):
    """A pod's container log: `per` messages (`make_line(f, i)`) as CRI lines; every
    PARTIAL_EVERY-th one split into a `P` part and an `F` part. Returns (bytes, number of CRI
    lines)."""
    full = ts + b" stdout F "
    part = ts + b" stdout P "
    out, n = [], 0
    for i in range(per):
        msg = make_line(f, i)
        if i % PARTIAL_EVERY == PARTIAL_EVERY - 1:
            h = (len(msg) - 1) // 2
            out.append(part + msg[:h] + b"\n" + full + msg[h:])
            n += 2
        else:
            out.append(full + msg)
            n += 1
    return b"".join(out), n


def pod_names(f):
    """(namespace, pod, uid) of pod f."""
    return (f"bench-ns{f % 4}", f"app-{f:03}-5d8f7b9c6-x{f:03}",
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"logferry-bench-pod-{f}")))


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    ca_key, ca, key, csr, cert = (os.path.join(d, n) for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=logferry bench fake kube CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver")
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2",
        "-days", "2", "-extfile", ext, "-out", cert)
    return ca, cert, key


class FakeKubeApi:
    """fake_kube_api.py on a free port, with a kubeconfig at <tmp>/kubeconfig."""

    def __init__(self, tmp, pods):
        d = os.path.join(tmp, "kube")
        os.makedirs(d)
        ca, cert, key = make_certs(d)
        self.pods_json = os.path.join(d, "pods.json")
        with open(self.pods_json, "w") as f:
            json.dump(pods, f)
        self.request_log = os.path.join(d, "requests.log")
        open(self.request_log, "w").close()
        control = os.path.join(d, "control.json")   # no faults asked for
        with open(control, "w") as f:
            f.write("{}")
        port = free_port()
        self.proc = subprocess.Popen(["python3", FAKE_KUBE_API, str(port), cert, key, KUBE_TOKEN,
                                      self.pods_json, self.request_log, control], stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"fake_kube_api.py did not start (said {ready!r})")
        self.kubeconfig = os.path.join(tmp, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
current-context: bench
clusters:
- name: bench
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: logferry
  user:
    token: {KUBE_TOKEN}
contexts:
- name: bench
  context:
    cluster: bench
    user: logferry
""")

    def requests(self):
        """Requests served, as "METHOD PATH STATUS" lines."""
        with open(self.request_log) as f:
            return f.read().splitlines()

    def stop(self):
        self.proc.terminate(); self.proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/var/tmp/logferry-target"))
    ap.add_argument("--kubernetes", action="store_true",
                    help="container logs in CRI format, kubernetes_logs source with pod labels from a fake API server")
    ap.add_argument("--format", choices=["json", "message"], default="json",
                    help="--kubernetes: the sink's format; `message` also drops the API server (no labels) "
                         "and uses a stream per container")
    ap.add_argument("--merge-json", action="store_true",
                    help="--kubernetes: messages are JSON objects and the source has merge_json = true")
    ap.add_argument("--streams-exist", action="store_true",
                    help="the endpoint creates streams on first write, so what is measured is the data path, "
                         "not CreateLogStream's pace (100 streams at the control plane's 0.5 calls/s take minutes)")
    args = ap.parse_args()
    k8s = args.kubernetes
    if not k8s and (args.format != "json" or args.merge_json):
        ap.error("--format and --merge-json go with --kubernetes")
    if args.merge_json and args.format != "json":
        ap.error("--merge-json shows in the json format only")
    labels = k8s and args.format == "json"
    rel = os.path.join(args.target_dir, "release")
    tmp = scratch_dir("lf-bench-k8s-" if k8s else "lf-bench-files-")
    per = args.lines // args.files
    # Prepared up front so that writing is not what is measured.
    kube = None
    if k8s:
        logs_glob = os.path.join(tmp, "pods", "*", "*", "*.log")
        ts = rfc3339_nano_now().encode()
        content, cri_lines, paths, pods = [], 0, [], {}
        for f in range(args.files):
            c, n = cri_content(f, per, ts, json_line if args.merge_json else line)
            content.append(c)
            cri_lines += n
            ns, pod, uid = pod_names(f)
            d = os.path.join(tmp, "pods", f"{ns}_{pod}_{uid}", "app")
            os.makedirs(d)
            paths.append(os.path.join(d, "0.log"))
            pods[f"{ns}/{pod}"] = {"uid": uid, "node": "bench-node-1", "labels": {
                "app": f"app-{f:03}", "team": f"team-{f % 7}", "version": f"v1.{f % 3}.0"}}
        if labels:
            kube = FakeKubeApi(tmp, pods)
    else:
        logs = os.path.join(tmp, "logs")
        os.makedirs(logs)
        logs_glob = f"{logs}/*.log"
        content = [b"".join(line(f, i) for i in range(per)) for f in range(args.files)]
        paths = [os.path.join(logs, f"app-{f:03}.log") for f in range(args.files)]
    for p in paths:
        open(p, "wb").close()

    fake = FakeCloudWatch(rel, tmp, auto_create=args.streams_exist)
    cfg = os.path.join(tmp, "logferry.toml")
    with open(cfg, "w") as f:
        if k8s:
            f.write(f'''data_dir = "{tmp}/data"
[sources.files]
type = "kubernetes_logs"
include = ["{logs_glob}"]
merge_json = {"true" if args.merge_json else "false"}
''')
            if labels:
                f.write(f'''[sources.files.kubernetes_api]
kubeconfig = "{kube.kubeconfig}"
''')
            stream = "{namespace}.{pod}" if labels else "{namespace}.{pod}.{container}"
            f.write(cw_sink("files", "/bench/kubernetes", stream, args.format, fake.endpoint))
        else:
            f.write(f'''data_dir = "{tmp}/data"
[sources.files]
type = "file"
include = ["{logs}/*.log"]
''' + cw_sink("files", "/bench/files", "node-1", "message", fake.endpoint))
    # LOGFERRY_BENCH_WRAP (e.g. "heaptrack -o /tmp/lf") runs logferry under a profiler; the
    # figures are then the wrapper's and mean little.
    wrap = os.environ.get("LOGFERRY_BENCH_WRAP", "").split()
    lf = subprocess.Popen(wrap + [os.path.join(rel, "logferry"), "run", "--config", cfg], env=fake.env(),
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
    events = fake.wait_events(total)
    elapsed = time.monotonic() - t0
    cpu = proc_cpu(lf.pid) - cpu0
    hwm = proc_hwm_kib(lf.pid)
    lf.terminate(); lf.wait(timeout=60)
    st = fake.stats()
    fake.stop()
    api_requests = []
    if kube:
        api_requests = kube.requests()
        kube.stop()

    r0 = time.monotonic()
    out = subprocess.run(f"cat {logs_glob} | wc -l", shell=True, check=True, capture_output=True, text=True)
    ref_s = time.monotonic() - r0
    ref = int(out.stdout.strip()) / ref_s
    rate = events / elapsed
    if not k8s:
        print(json.dumps({
            "files": args.files, "lines": total, "delivered": events, "delivered_at_exit": st.get("events"),
            "violations": st.get("violations"),
            "requests": st.get("requests"), "seconds": round(elapsed, 3), "write_seconds": round(t_written, 3),
            "lines_per_s": round(rate), "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(hwm / 1024, 1),
            "reference_cat_wc_lines_per_s": round(ref), "ratio_vs_reference": round(rate / ref, 3),
        }, indent=1))
        # Exactly once: counted after logferry's shutdown flush, so a duplicate cannot hide a loss.
        sys.exit(0 if st.get("events") == total and st.get("violations") == 0 else 1)

    # Kubernetes mode: the same figures, plus the API side and the per-pod streams.
    by_status = Counter(r.rsplit(" ", 1)[-1] for r in api_requests)
    per_stream = st.get("by_stream", {})
    streams_ok = len(per_stream) == args.files and all(v == per for v in per_stream.values())
    at_exit = st.get("events")   # after logferry's shutdown flush: more than `lines` = unjoined parts
    print(json.dumps({
        "mode": "kubernetes", "streams_exist": args.streams_exist, "format": args.format, "labels": labels, "merge_json": args.merge_json,
        "files": args.files, "lines": total, "cri_lines": cri_lines,
        "partial_pairs": cri_lines - total, "delivered": events, "delivered_at_exit": at_exit,
        "violations": st.get("violations"), "requests": st.get("requests"),
        "seconds": round(elapsed, 3), "write_seconds": round(t_written, 3),
        "lines_per_s": round(rate), "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(hwm / 1024, 1),
        "reference_cat_wc_lines_per_s": round(ref), "ratio_vs_reference": round(rate / ref, 3),
        "api_requests": len(api_requests), "api_requests_by_status": dict(sorted(by_status.items())),
        "streams": len(per_stream), "streams_each_hold_their_pods_events": streams_ok,
        "label_check": ("skipped: fake-cloudwatch keeps counters only (events, bytes, per stream), "
                        "not event contents, so labels cannot be seen here") if labels else "no labels asked for",
    }, indent=1))
    api_ok = not labels or (len(api_requests) == args.files and by_status.get("200") == args.files)
    ok = at_exit == total and st.get("violations") == 0 and streams_ok and api_ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
