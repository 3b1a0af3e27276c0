#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need, when it is missing:
# Debian packages (ncat, logger, socat, openssl, logrotate, journald tools, rsyslog, promtool),
# the deployment tests' tools (podman + runc, systemd-nspawn, mmdebstrap, tinyproxy, kubectl,
# musl-tools and rustup's musl target for scripts/build-static.sh) and moto_server from PyPI.
# Idempotent and quiet; safe to run on every CI run.
set -euo pipefail

missing=()
command -v ncat >/dev/null || missing+=(ncat)
command -v logger >/dev/null || missing+=(bsdutils)
command -v journalctl >/dev/null || missing+=(systemd)
[ -x /lib/systemd/systemd-journal-remote ] || missing+=(systemd-journal-remote)
command -v socat >/dev/null || missing+=(socat)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v logrotate >/dev/null || missing+=(logrotate)
command -v gzip >/dev/null || missing+=(gzip)
command -v cc >/dev/null || missing+=(gcc)
command -v file >/dev/null || missing+=(file)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# promtool (`check metrics`, the strict reader of /metrics in tests/operator.rs) comes only with
# Debian's prometheus server package: install it alone and keep the server it brings stopped.
if ! command -v promtool >/dev/null; then
  echo "install-deps: apt-get install prometheus (for promtool)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  echo "install-deps: rustup target add x86_64-unknown-linux-musl" >&2
  rustup target add x86_64-unknown-linux-musl >&2
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "install-deps: apt-get install python3-yaml" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null
fi

if ! command -v moto_server >/dev/null || ! python3 -c 'import moto, flask, boto3' 2>/dev/null; then
  echo "install-deps: pip install moto[server]" >&2
  python3 -m pip install -q 'moto[server]>=5.1,<6' boto3
fi
