#!/usr/bin/env python3
"""A stand-in for the Kubernetes API server's `GET /api/v1/namespaces/NS/pods/NAME`.

No real API server can run on the test machines (none is packaged for Debian or PyPI), so
the tests talk to this over real HTTPS, through the real kube-rs client, with a real
kubeconfig. It answers what the API server answers for that one call: the Pod object, a
`Status` of reason NotFound (404), or Unauthorized (401) without the right bearer token.

Usage: fake_kube_api.py PORT CERT KEY TOKEN PODS_JSON REQUEST_LOG
  PODS_JSON: {"NS/NAME": {"uid": ..., "labels": {...}, "annotations": {...}, "node": ...,
  "delay": seconds}}
  re-read on every request, so a test can change it while the server runs.
  REQUEST_LOG: one line per request: "METHOD PATH STATUS".
"""

import http.server
import json
import socketserver
import ssl
import sys
import time

PORT, CERT, KEY, TOKEN, PODS, LOG = sys.argv[1:7]


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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {code}\n")

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
        parts = self.path.split("?")[0].strip("/").split("/")
        # api/v1/namespaces/NS/pods/NAME
        if len(parts) != 6 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
            return self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
        ns, name = parts[3], parts[5]
        with open(PODS) as f:
            pods = json.load(f)
        pod = pods.get(f"{ns}/{name}")
        if pod is None:
            return self.reply(404, status(404, "NotFound", f'pods "{name}" not found'))
        time.sleep(pod.get("delay", 0))
        self.reply(
            200,
            {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": pod["uid"],
                    "labels": pod.get("labels", {}),
                    "annotations": pod.get("annotations", {}),
                },
                "spec": {
                    "nodeName": pod.get("node"),
                    "containers": [{"name": "app", "image": "example/app:1"}],
                },
                "status": {"phase": "Running"},
            },
        )


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", int(PORT)), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
