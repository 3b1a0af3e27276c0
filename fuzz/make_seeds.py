#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (run from anywhere; idempotent).

journal_file seeds need two tiny journal files made by systemd-journal-remote; see
make_journal_seeds() for how (root only; skipped when the tool is missing).
"""
import os, shutil, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
CONFIG_TESTDATA = os.path.join(HERE, "..", "crates", "logferry", "src", "config", "testdata")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# ---- syslog_codec: [max][seed lo][seed hi][clock] stream
def syslog():
    rfc5424 = b"<165>1 2026-11-25T16:20:39.123Z web-1 nginx 812 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\]\"][x@1 a=\"b\"] GET /index.html 200"
    streams = {
        "octet": b"%d " % len(rfc5424) + rfc5424 + b"\n",
        "newline3164": b"<13>Nov 25 16:20:39 node-1 kubelet[2174]: I1125 started\r\nNov  5 01:02:03 host sshd: x\n\n\x00",
        "journalctl": b"Nov 25 16:20:39 node-1 systemd[1]: Started foo.service.\n2026-11-25T16:20:39+01:00 h app[1]: iso\n<190>%ASA-6-302013: Built\n",
        "oversize": b"999 <1>" + b"a" * 120 + b"\n" + b"b" * 150 + b"\r\nshort\n12 <5>1 - - - - - -",
        "mixed": b"20 <13>1 - h a p m - m\n<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed\n0 <1>x\n",
    }
    for name, s in streams.items():
        put("syslog_codec", name, bytes([40, 7, 1, 110]) + s)


# ---- spool_recovery: [flags][params][acks][appends] segment [ckpt]
def record(rid, payload, ms=1_764_000_000_000):
    h = struct.pack("<IIQQ", len(payload), crc32c(payload), rid, ms)
    return h + struct.pack("<I", crc32c(h)) + payload


def ckpt(w):
    b = b"LFSPACK1" + struct.pack("<Q", w)
    return b + struct.pack("<I", crc32c(b))


def spool():
    seg = record(1, b"one") + record(2, b"two two") + record(3, b"three")
    put("spool_recovery", "clean", bytes([0, 0x12, 0x55, 2]) + seg)
    put("spool_recovery", "ckpt", bytes([1, 0x41, 0xA5, 3]) + seg + ckpt(2))
    put("spool_recovery", "torn", bytes([0, 0x80, 0x0F, 1]) + seg + record(4, b"four")[:20])
    put("spool_recovery", "fixcrc", bytes([3, 0x23, 0xFF, 4]) + seg + record(9, b"bad id") + ckpt(1))
    put("spool_recovery", "zeros", bytes([0, 0, 0, 0]) + seg + bytes(40))


# ---- config_parser: TOML text
def config():
    # The config unit tests' fixtures (crates/logferry/src/config/testdata), one source for both.
    for name in ("good", "errors"):
        with open(os.path.join(CONFIG_TESTDATA, name + ".toml"), "rb") as f:
            put("config_parser", name, f.read())
    put("config_parser", "env", b'''data_dir = "${LOGFERRY_DATA_DIR:-/var/lib/logferry}"
shutdown_grace = "25s"

[sources.journal]
type = "journald"
directory = ["/var/log/journal", "/run/log/journal"]
start = "${START:-end}"

[sources.in]
type = "stdin"

[sinks.cloudwatch]
type = "cloudwatch_logs"
inputs = ["journal", "in"]
log_group = "/k8s/${FUZZ}/system"
log_stream = "{instance_id}-{unit}"
format = "json"
max_batch_events = 0
max_batch_bytes = 1023
''')
    put("config_parser", "syntax", b'[sources.a]\ntype = "syslog"\naddress = \n')


# ---- cloudwatch_batcher: [events][bytes][split] then ops [op, d_lo, d_hi, n]
def batcher():
    def op(kind, d, n):
        return bytes([kind]) + struct.pack("<h", d) + bytes([n])
    put("cloudwatch_batcher", "basic", bytes([0, 0, 0]) + op(0, 5, 10) + op(2, -3, 20) + op(0x08, 1, 40) + op(0x18, 0, 63))
    put("cloudwatch_batcher", "span", bytes([0, 0, 0]) + op(4, 23, 5) + op(4, 2, 5) + op(4, -30, 5) + op(5, 1, 1) + op(5, 0, 1))
    put("cloudwatch_batcher", "oversize", bytes([0, 0, 0]) + op(0x20, 0, 130) + op(0x30, 1, 255) + op(0, 0, 3))
    put("cloudwatch_batcher", "many", bytes([0, 0, 0]) + op(0xc0, 0, 200) + op(0xc1, 1, 3))
    put("cloudwatch_batcher", "small", bytes([130, 129, 140]) + op(0x08, 0, 60) + op(0x38, 0, 1) + op(0xd8, 2, 2))


# ---- journal_file: [journal][cursor][cursor len]
# ---- container_lines: [max_bytes] lines (CRI, Docker json-file, log paths)
def container():
    cri = (b"2024-01-02T03:04:05.123456789Z stdout F hello\n"
           b"2024-01-02T03:04:05Z stderr P par\n"
           b"2024-01-02T03:04:06+01:00 stdout P one \n"
           b"2024-01-02T03:04:05Z stderr F t\n"
           b"2024-01-02T03:04:07.5-05:30 stdout F two\n"
           b"2024-01-02T03:04:08Z stdout F\n")
    put("container_lines", "cri", b"\x10" + cri)
    docker = (b'{"log":"hello\\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}\n'
              b'{"stream":"stderr","log":"part \\u00e9\\t","time":"2024-01-02T03:04:05Z","attrs":{}}\n'
              b'{"time":"2024-01-02T03:04:06Z","stream":"stderr","log":"end\\n"}\n')
    put("container_lines", "docker", b"\x08" + docker)
    paths = (b"/var/log/pods/default_web-1_0f1e2d3c-aaaa-bbbb-cccc-123456789abc/app/0.log\n"
             b"/var/log/pods/kube-system_dns_1234/coredns/3.log.20240102-030405.gz\n"
             b"/var/log/containers/web-1_default_app-"
             + b"0123456789abcdef" * 4 + b".log\n")
    put("container_lines", "paths", b"\x3f" + paths)


def make_journal_seeds():
    tool = "/lib/systemd/systemd-journal-remote"
    if not os.path.exists(tool) or os.geteuid() != 0:
        print("journal seeds skipped (need root and systemd-journal-remote)", file=sys.stderr)
        return
    boot = "f8674995be1b48e4a15ae1cb62e16d7f"
    exports = {
        "two": f"__REALTIME_TIMESTAMP=1700000000000000\n__MONOTONIC_TIMESTAMP=12345\n_BOOT_ID={boot}\nMESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=fuzz\n\n"
               f"__REALTIME_TIMESTAMP=1700000001000000\n__MONOTONIC_TIMESTAMP=22345\n_BOOT_ID={boot}\nMESSAGE=world\nPRIORITY=3\n\n",
        # A 600-byte message: stored zstd-compressed.
        "zstd": f"__REALTIME_TIMESTAMP=1700000000000000\n__MONOTONIC_TIMESTAMP=12345\n_BOOT_ID={boot}\nMESSAGE={'x' * 300 + 'y' * 300}\nPRIORITY=6\n\n"
                f"__REALTIME_TIMESTAMP=1700000002000000\n__MONOTONIC_TIMESTAMP=32345\n_BOOT_ID={boot}\nMESSAGE=short\nPRIORITY=6\n\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        # journal-remote sizes its hash tables from the file system's size: a 4 MB tmpfs
        # gives the smallest (2047 buckets), and the file is then cut after its last object.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", mnt], check=True)
        try:
            for name, text in exports.items():
                src = os.path.join(tmp, name + ".export")
                with open(src, "w") as f:
                    f.write(text)
                out = os.path.join(mnt, name + ".journal")
                subprocess.run([tool, "--output=" + out, src], check=True, capture_output=True)
                d = open(out, "rb").read()
                hs = struct.unpack_from("<Q", d, 88)[0]
                tail = struct.unpack_from("<Q", d, 136)[0]
                size = struct.unpack_from("<Q", d, tail + 8)[0]
                end = tail + ((size + 7) & ~7)
                b = bytearray(d[:end])
                struct.pack_into("<Q", b, 96, end - hs)  # arena_size: what is left
                cur = subprocess.run(["journalctl", "--file=" + out, "-n1", "-o", "export"],
                                     capture_output=True, check=True).stdout
                cursor = cur.split(b"\n")[0].split(b"=", 1)[1] if cur.startswith(b"__CURSOR=") else b""
                if name == "two":
                    first = cursor.replace(b";i=2;", b";i=1;")
                    put("journal_file", name + "-cursor", bytes(b) + first + bytes([len(first)]))
                    put("journal_file", name + "-partial", bytes(b) + b"i=1" + bytes([3]))
                put("journal_file", name, bytes(b) + bytes([0]))
        finally:
            subprocess.run(["umount", mnt], check=False)


if __name__ == "__main__":
    syslog()
    spool()
    config()
    batcher()
    container()
    make_journal_seeds()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        print(t, len(files), "files")
