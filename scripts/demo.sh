#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: a local CloudWatch Logs emulator (moto_server),
# a real systemd-journald (private, in its own mount namespace; needs root), logferry, and real
# syslog clients. Prints what arrived in CloudWatch.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/logferry-target}"
scripts/install-deps.sh
cargo build -q -p logferry
LOGFERRY="$CARGO_TARGET_DIR/debug/logferry"

T=$(mktemp -d /tmp/logferry-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. CloudWatch Logs emulator.
MOTO_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$T/moto.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null && break; sleep 0.2; done

# 2. A real journald, private to this demo (a mount namespace; the host journal is untouched),
#    with some entries in it.
mkdir -p "$T/sock" "$T/journal" /run/systemd/journal /run/log/journal
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n' >"$T/journald.conf"
unshare --mount --propagation private sh -c "mount --bind $T/sock /run/systemd/journal && mount --bind $T/journal /run/log/journal && mount --bind $T/journald.conf /etc/systemd/journald.conf && exec /lib/systemd/systemd-journald" >"$T/journald.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$T/sock/socket" ] && break; sleep 0.1; done
python3 - "$T/sock/socket" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i, (ident, msg) in enumerate([("kubelet", "Started pod coredns"), ("containerd", "container created"),
                                   ("sshd", "Accepted publickey for core"), ("kernel-demo", "eth0: link up")]):
    s.sendto(f"MESSAGE={msg}\nSYSLOG_IDENTIFIER={ident}\nPRIORITY=6\n_PID_HINT={1000+i}\n".encode(), sys.argv[1])
PY
sleep 1

# 3. logferry: syslog over TCP and UDP, shipping to the emulator.
SYSLOG_PORT=$(free_port)
cat >"$T/logferry.toml" <<TOML
data_dir = "$T/data"

[sources.syslog_tcp]
type = "syslog"
address = "tcp://127.0.0.1:$SYSLOG_PORT"

[sources.syslog_udp]
type = "syslog"
address = "udp://127.0.0.1:$SYSLOG_PORT"

# The journal read natively from its files: no journalctl, no libsystemd; resumed from a cursor.
[sources.journal]
type = "journald"
directory = "$T/journal"
start = "beginning"

[sinks.cloudwatch]
type = "cloudwatch_logs"
inputs = ["syslog_tcp", "syslog_udp", "journal"]
log_group = "/demo/{hostname}/system"
log_stream = "{instance_id}/{source}"
format = "short"
region = "us-east-1"
endpoint = "http://127.0.0.1:$MOTO_PORT"
retention_days = 14
TOML
"$LOGFERRY" validate --config "$T/logferry.toml"
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true \
  "$LOGFERRY" run --config "$T/logferry.toml" --log-format text 2>"$T/logferry.log" & LF=$!; pids+=($LF)
for _ in $(seq 100); do grep -q "listening.*udp" "$T/logferry.log" 2>/dev/null && break; sleep 0.1; done

# 4. Input: the journal is read natively by the `journal` source; here it also goes the way the
#    old chain sent it (journalctl | ncat into the syslog port), next to real syslog clients.
journalctl -D "$T/journal" -o short --no-pager | ncat 127.0.0.1 "$SYSLOG_PORT"
logger --tcp -n 127.0.0.1 -P "$SYSLOG_PORT" --rfc5424 -t demo-app "hello over TCP, RFC 5424"
logger --udp -n 127.0.0.1 -P "$SYSLOG_PORT" --rfc3164 -t demo-app "hello over UDP, RFC 3164"

# 5. SIGTERM: logferry flushes what it holds, then exits 0.
sleep 2; kill -TERM "$LF"; wait "$LF"
echo "--- logferry's log (tail) ---"; tail -n 5 "$T/logferry.log"

# 6. What arrived in CloudWatch.
echo "--- CloudWatch Logs (emulator) ---"
python3 - "http://127.0.0.1:$MOTO_PORT" <<'PY'
import sys, boto3
c = boto3.client("logs", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="demo", aws_secret_access_key="demo")
for g in c.describe_log_groups()["logGroups"]:
    print(f"log group {g['logGroupName']} (retention {g.get('retentionInDays')} days)")
    for s in c.describe_log_streams(logGroupName=g["logGroupName"])["logStreams"]:
        ev = c.get_log_events(logGroupName=g["logGroupName"], logStreamName=s["logStreamName"], startFromHead=True)["events"]
        print(f"  stream {s['logStreamName']}: {len(ev)} events")
        for e in ev:
            print("    ", e["message"])
PY
