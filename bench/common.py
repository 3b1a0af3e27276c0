"""Helpers shared by the end-to-end benchmarks: process figures from /proc and the fast fake
CloudWatch Logs endpoint (cwl-testkit's `fake-cloudwatch`, HTTPS with its own CA)."""
import atexit, http.client, json, os, shutil, socket, ssl, subprocess, tempfile, time


def scratch_dir(prefix):
    """A temporary directory removed when the script exits (a run leaves 100-150 MB of
    generated logs behind otherwise); LOGFERRY_BENCH_KEEP=1 keeps it for inspection."""
    path = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("LOGFERRY_BENCH_KEEP"):
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def cw_sink(source, group, stream, fmt, endpoint):
    """The `[sinks.cw]` table of every benchmark's config: `source`'s events to CloudWatch Logs
    `group`/`stream` (templates as the config takes them) at `endpoint`, in us-east-1."""
    return f'''[sinks.cw]
type = "cloudwatch_logs"
inputs = ["{source}"]
log_group = "{group}"
log_stream = "{stream}"
format = "{fmt}"
region = "us-east-1"
endpoint = "{endpoint}"
''' + os.environ.get("LOGFERRY_BENCH_SINK_EXTRA", "").replace(";", "\n") + "\n"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def proc_cpu(pid):
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick


def proc_hwm_kib(pid):
    """Peak resident set size of `pid` (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class FakeCloudWatch:
    """`fake-cloudwatch` on a free port; `stats()` returns its counters."""

    def __init__(self, release_dir, tmp, auto_create=False):
        """`auto_create`: groups and streams exist once written to (no CreateLogStream calls,
        which logferry paces at the control plane's quota: 100 new streams take minutes)."""
        self.ca = os.path.join(tmp, "ca.pem")
        self.proc = subprocess.Popen(
            [os.path.join(release_dir, "fake-cloudwatch"), "--listen", "127.0.0.1:0", "--ca-out", self.ca]
            + (["--auto-create"] if auto_create else []),
            stdout=subprocess.PIPE, text=True)
        self.endpoint = self.proc.stdout.readline().split()[-1]   # "listening https://127.0.0.1:PORT"
        host, port = self.endpoint.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.conn = None

    def stats(self):
        # One kept-alive connection: a TLS handshake per poll would steal CPU on a small box.
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=5)
                self.conn.request("GET", "/stats")
                return json.loads(self.conn.getresponse().read())
            except (OSError, http.client.HTTPException):
                self.conn = None
        raise RuntimeError("fake-cloudwatch /stats unreachable")

    def wait_events(self, total, timeout=600):
        """Polls until the endpoint has counted `total` events (or `timeout` s): the count.
        `first` is then (time.monotonic(), events) of the first poll that counted some, to tell
        the start (config, TLS, stream creation) from the rate after it."""
        deadline = time.monotonic() + timeout
        events = 0
        self.first = None
        while time.monotonic() < deadline:
            events = self.stats()["events"]
            if self.first is None and events > 0:
                self.first = (time.monotonic(), events)
            if events >= total:
                break
            time.sleep(0.02)
        return events

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        self.proc.terminate(); self.proc.wait(timeout=10)

    def env(self):
        """Environment for a logferry process talking to this endpoint."""
        return dict(os.environ, AWS_ACCESS_KEY_ID="AKIDBENCH", AWS_SECRET_ACCESS_KEY="bench",
                    AWS_EC2_METADATA_DISABLED="true", SSL_CERT_FILE=self.ca, LOGFERRY_LOG="warn",
                    LOGFERRY_METRICS_ADDRESS="off")
