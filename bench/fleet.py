#!/usr/bin/env python3
"""Fleet benchmark: N logferry processes ("nodes"), each shipping S container streams, all in one
"account": a cwl-proxy with account-wide quotas per API (one token bucket per API shared by every
client) in front of moto_server.

Every pod writes one CRI line per tick for --seconds; then the writers stop and the run waits
until the proxy has forwarded every line. It prints, as issue 14 states them: the share of
PutLogEvents calls throttled, CreateLogStream calls per stream, events per accepted request,
and how long the backlog took to drain after the writers stopped, plus lines lost (read back
from moto). `--reference BIN` runs the same fleet first with another logferry binary (e.g. a
build of an older commit) in the same invocation, so the two rows compare like with like.
Defaults are the issue's scaled-down fleet: 8 nodes x 25 streams, 20 PutLogEvents/s and
4 CreateLogStream/s for the whole account (AWS: 5,000 and 50).

Usage: bench/fleet.py [--nodes 8] [--streams 25] [--seconds 60] [--put-quota 20]
                      [--create-quota 4] [--group-quota 2] [--tick 0.25]
                      [--target-dir DIR] [--profile debug|release] [--reference BIN]
Needs: cargo build [--release] -p logferry -p cwl-testkit --bins; moto_server on PATH.
"""
import argparse, datetime, http.client, json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cw_sink, free_port, scratch_dir  # noqa: E402

GROUP = "/fleet"


class Http:
    """JSON over plain HTTP to one host:port (moto and the proxy's admin API)."""

    def __init__(self, endpoint):
        host, port = endpoint.split("//")[1].split(":")
        self.host, self.port = host, int(port)

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data or b"{}")

    def logs(self, op, body):
        return self.request("POST", "/", body, {
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"Logs_20140328.{op}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/logs/aws4_request, "
                             "SignedHeaders=host, Signature=x"})


def wait_port(endpoint, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            Http(endpoint).logs("DescribeLogGroups", {})
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{endpoint} did not answer")


def read_stream(moto, stream):
    """Every message of one stream, following GetLogEvents pages."""
    out, token = [], None
    while True:
        body = {"logGroupName": GROUP, "logStreamName": stream, "startFromHead": True}
        if token:
            body["nextToken"] = token
        status, v = moto.logs("GetLogEvents", body)
        if status != 200:
            return out
        out.extend(e["message"] for e in v.get("events", []))
        nxt = v.get("nextForwardToken")
        if not v.get("events") or nxt == token:
            return out
        token = nxt


def run_fleet(args, logferry_bin, proxy_bin, label):
    tmp = scratch_dir("lf-bench-fleet-")
    moto_port = free_port()
    moto_proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moto_ep = f"http://127.0.0.1:{moto_port}"
    procs = [moto_proc]
    try:
        wait_port(moto_ep)
        proxy_proc = subprocess.Popen([proxy_bin, "--upstream", moto_ep, "--listen", "127.0.0.1:0"],
                                      stdout=subprocess.PIPE, text=True)
        procs.append(proxy_proc)
        proxy_ep = proxy_proc.stdout.readline().split()[-1]
        proxy = Http(proxy_ep)
        status, _ = proxy.request("POST", "/__proxy/quota", {
            "PutLogEvents": {"per_second": args.put_quota},
            "CreateLogStream": {"per_second": args.create_quota},
            "CreateLogGroup": {"per_second": args.group_quota}})
        assert status == 200, "this cwl-proxy has no /__proxy/quota"
        files, streams = [], []
        for n in range(args.nodes):
            root = os.path.join(tmp, f"n{n}")
            for s in range(args.streams):
                d = os.path.join(root, f"fleet_n{n}-p{s:03}_00000000-0000-0000-0000-{n:06}{s:06}", "app")
                os.makedirs(d)
                files.append(open(os.path.join(d, "0.log"), "a", buffering=1))
                streams.append(f"fleet.n{n}-p{s:03}")
            cfg = os.path.join(root, "logferry.toml")
            with open(cfg, "w") as f:
                f.write(f'''data_dir = "{root}/data"
shutdown_grace = "5s"
[sources.k]
type = "kubernetes_logs"
include = ["{root}/*/*/*.log"]
''' + cw_sink("k", GROUP, "{namespace}.{pod}", "message", proxy_ep))
            env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDBENCH", AWS_SECRET_ACCESS_KEY="bench",
                       AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", NO_PROXY="127.0.0.1",
                       NODE_NAME=f"node-{n}", LOGFERRY_METRICS_ADDRESS="off", LOGFERRY_LOG="warn")
            log = open(os.path.join(root, "logferry.log"), "w")
            procs.append(subprocess.Popen([logferry_bin, "run", "--config", cfg], env=env,
                                          stdout=subprocess.DEVNULL, stderr=log))
        started, seq = time.time(), 0
        while time.time() - started < args.seconds:
            ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for f, stream in zip(files, streams):
                f.write(f"{ts} stdout F {stream} {seq:07}\n")
            seq += 1
            time.sleep(args.tick)
        stopped, written = time.time(), seq * len(files)
        drained = None
        while time.time() - stopped < args.max_drain:
            _, st = proxy.request("GET", "/__proxy/stats")
            if st["put_events_ingested"] >= written:
                drained = time.time() - stopped
                break
            time.sleep(0.25)
        _, st = proxy.request("GET", "/__proxy/stats")
        _, puts = proxy.request("GET", "/__proxy/puts")
        accepted = [p["events"] for p in puts["puts"] if p["status"] == 200]
        moto = Http(moto_ep)
        lost = 0
        for stream in streams:
            seen = {int(m.rsplit(" ", 1)[1]) for m in read_stream(moto, stream)}
            lost += sum(1 for i in range(seq) if i not in seen)
        ops, throttled = st["requests_by_operation"], st["quota_throttled"]
        put_calls = ops.get("PutLogEvents", 0)
        return {
            "run": label, "nodes": args.nodes, "streams": len(streams), "lines": written, "lost": lost,
            "put_calls": put_calls, "put_throttled": throttled.get("PutLogEvents", 0),
            "throttled_share": round(throttled.get("PutLogEvents", 0) / max(put_calls, 1), 4),
            "create_stream_calls": ops.get("CreateLogStream", 0),
            "creates_per_stream": round(ops.get("CreateLogStream", 0) / len(streams), 3),
            "create_group_calls": ops.get("CreateLogGroup", 0),
            "describe_log_streams_calls": ops.get("DescribeLogStreams", 0),
            "events_per_request": round(sum(accepted) / max(len(accepted), 1), 1),
            "drain_s": round(drained, 1) if drained is not None else f"> {args.max_drain}",
        }
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--streams", type=int, default=25, help="container streams per node")
    ap.add_argument("--seconds", type=float, default=60, help="how long the pods write")
    ap.add_argument("--tick", type=float, default=0.25, help="seconds between a pod's lines")
    ap.add_argument("--put-quota", type=float, default=20)
    ap.add_argument("--create-quota", type=float, default=4)
    ap.add_argument("--group-quota", type=float, default=2)
    ap.add_argument("--max-drain", type=float, default=300)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/var/tmp/logferry-target"))
    ap.add_argument("--profile", default="debug", choices=["debug", "release"])
    ap.add_argument("--reference", help="another logferry binary, run first on the same fleet")
    args = ap.parse_args()
    bins = os.path.join(args.target_dir, args.profile)
    proxy_bin = os.path.join(bins, "cwl-proxy")
    runs = []
    if args.reference:
        runs.append((args.reference, "reference"))
    runs.append((os.path.join(bins, "logferry"), "this build"))
    for binary, label in runs:
        print(json.dumps(run_fleet(args, binary, proxy_bin, label)), flush=True)


if __name__ == "__main__":
    main()
