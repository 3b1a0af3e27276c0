#!/usr/bin/env python3
"""A stand-in for the Kubernetes API server's pod reads: `GET /api/v1/namespaces/NS/pods/NAME`,
and the node-scoped list and watch `GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`
(`&watch=true&resourceVersion=R&allowWatchBookmarks=true`).

No real API server can run on the test machines (none is packaged for Debian or PyPI), so
the tests talk to this over real HTTPS, through the real kube-rs client, with a real
kubeconfig. It answers what the API server answers for those calls: the Pod object, a
`Status` of reason NotFound (404), Unauthorized (401) without the right bearer token; a
PodList with its `metadata.resourceVersion`; a watch as a chunked stream of JSON lines
(ADDED / MODIFIED / DELETED as the pods file changes, a BOOKMARK every second, an ERROR event
with a 410 `Status` for a resourceVersion older than the server keeps), ended after the
request's `timeoutSeconds`.

Usage: fake_kube_api.py PORT CERT KEY TOKEN PODS_JSON REQUEST_LOG CONTROL_JSON
  PODS_JSON: {"NS/NAME": {"uid": ..., "labels": {...}, "annotations": {...}, "node": ...,
  "delay": seconds}}
  re-read on every GET and polled every 50 ms for the watch, so a test can change it while
  the server runs.
  REQUEST_LOG: one line per request: "METHOD PATH STATUS" (a watch's when it starts).
  CONTROL_JSON (polled too): {"list_watch_status": 500} answers lists and watches with that
  status (GETs still answer); {"expire": N}: each increase ends every open watch with a 410
  ERROR event and makes every resourceVersion seen so far too old.
"""

import http.server
import json
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

PORT, CERT, KEY, TOKEN, PODS, LOG, CONTROL = sys.argv[1:8]

BOOKMARK_EVERY = 1.0


def status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def pod_object(key, pod, rv):
    ns, name = key.split("/", 1)
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": pod["uid"],
            "resourceVersion": str(rv),
            "labels": pod.get("labels", {}),
            "annotations": pod.get("annotations", {}),
        },
        "spec": {
            "nodeName": pod.get("node"),
            "containers": [{"name": "app", "image": "example/app:1"}],
        },
        "status": {"phase": "Running"},
    }


class World:
    """The pods as the watch sees them: each change of the pods file gets a resourceVersion."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 1000
        self.pods = {}  # key -> (pod dict, rv)
        self.history = []  # (rv, type, object)
        self.too_old_below = 0
        self.expire = 0
        self.control = {}
        self.poll()

    def poll(self):
        new = read_json(PODS)
        control = read_json(CONTROL)
        with self.cond:
            self.control = control
            for key, pod in new.items():
                old = self.pods.get(key)
                if old is None or old[0] != pod:
                    self.rv += 1
                    kind = "ADDED" if old is None else "MODIFIED"
                    self.pods[key] = (pod, self.rv)
                    self.history.append((self.rv, kind, pod_object(key, pod, self.rv)))
            for key in [k for k in self.pods if k not in new]:
                pod, _ = self.pods.pop(key)
                self.rv += 1
                self.history.append((self.rv, "DELETED", pod_object(key, pod, self.rv)))
            if control.get("expire", 0) > self.expire:
                # Every version handed out so far becomes too old; a new list's is not.
                self.expire = control["expire"]
                self.rv += 1
                self.too_old_below = self.rv
            self.cond.notify_all()

    def run(self):
        while True:
            time.sleep(0.05)
            self.poll()


WORLD = World()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def logged(self, code):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {code}\n")

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.logged(code)

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if parts == ["api", "v1", "pods"]:
            return self.node_pods(query)
        # api/v1/namespaces/NS/pods/NAME
        if len(parts) != 6 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
            return self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
        ns, name = parts[3], parts[5]
        pods = read_json(PODS)
        pod = pods.get(f"{ns}/{name}")
        if pod is None:
            return self.reply(404, status(404, "NotFound", f'pods "{name}" not found'))
        time.sleep(pod.get("delay", 0))
        with WORLD.cond:
            rv = WORLD.pods.get(f"{ns}/{name}", (None, WORLD.rv))[1]
        self.reply(200, pod_object(f"{ns}/{name}", pod, rv))

    def node_pods(self, query):
        selector = query.get("fieldSelector", "")
        if not selector.startswith("spec.nodeName="):
            return self.reply(400, status(400, "BadRequest", "only spec.nodeName= is served here"))
        node = selector[len("spec.nodeName="):]
        down = WORLD.control.get("list_watch_status")
        if down:
            return self.reply(down, status(down, "InternalError", "the fake is told to fail"))
        if query.get("watch") in ("true", "1"):
            return self.watch(node, query)
        with WORLD.cond:
            items = [
                pod_object(key, pod, rv)
                for key, (pod, rv) in sorted(WORLD.pods.items())
                if pod.get("node") == node
            ]
            rv = WORLD.rv
        self.reply(
            200,
            {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items},
        )

    def watch(self, node, query):
        since = int(query.get("resourceVersion") or 0)
        seconds = float(query.get("timeoutSeconds", 290))
        end = time.monotonic() + seconds
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.logged(200)
        try:
            self.stream(node, since, end)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.close_connection = True

    def send_event(self, kind, obj):
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self, node, since, end):
        expire = WORLD.expire
        last_bookmark = time.monotonic()
        while True:
            with WORLD.cond:
                gone = since < WORLD.too_old_below or WORLD.expire != expire
                events = [(rv, kind, obj) for rv, kind, obj in WORLD.history if rv > since]
                current = WORLD.rv
                if not gone and not events:
                    WORLD.cond.wait(timeout=0.2)
            if gone:
                gone_status = status(410, "Expired", f"too old resource version: {since} ({current})")
                return self.send_event("ERROR", gone_status)
            for rv, kind, obj in events:
                since = rv
                if obj["spec"].get("nodeName") == node:
                    self.send_event(kind, obj)
            now = time.monotonic()
            if now >= end:
                return
            if now - last_bookmark >= BOOKMARK_EVERY:
                last_bookmark = now
                since = max(since, current)
                bookmark = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(since)}}
                self.send_event("BOOKMARK", bookmark)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


threading.Thread(target=WORLD.run, daemon=True).start()
server = Server(("127.0.0.1", int(PORT)), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
