#!/usr/bin/env bash
# Builds the release binary users get: static, stripped, to dist/logferry.
#
#   scripts/build-static.sh            musl (x86_64-unknown-linux-musl), else the fallback below
#
# musl needs the rustup target and a C compiler for it (Debian `musl-tools`: musl-gcc builds
# aws-lc-sys, the AWS SDK's TLS crypto). Without them (no rustup, no network for the target, no
# musl-gcc) it falls back to glibc linked statically (x86_64-unknown-linux-gnu with
# `-C target-feature=+crt-static`) and says so. Either result runs on any x86_64 Linux and in a
# `FROM scratch` image: `file dist/logferry` says "statically linked" and the script checks it.
#
# The target dir is the one CI uses (CARGO_TARGET_DIR, default /var/tmp/logferry-target), so a
# warm CI machine rebuilds only the workspace's crates. The musl and crt-static builds live in
# their own per-target subdirectories and never invalidate the debug build the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/logferry-target}"
export CARGO_TERM_COLOR=never
# Stripped and without the debug info the release profile keeps for benchmarks and profiling.
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_STRIP=symbols

MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu

musl_ready() {
  command -v musl-gcc >/dev/null || return 1
  command -v rustup >/dev/null || return 1
  rustup target list --installed 2>/dev/null | grep -qx "$MUSL" && return 0
  echo "build-static: rustup target add $MUSL" >&2
  rustup target add "$MUSL" >&2
}

start=$(date +%s)
if musl_ready; then
  target=$MUSL
  how="musl ($MUSL)"
  export CC_x86_64_unknown_linux_musl=musl-gcc
  cargo build --locked --release -p logferry --bin logferry --target "$target"
else
  target=$GNU
  how="glibc static ($GNU, -C target-feature=+crt-static; musl target or musl-gcc unavailable)"
  echo "build-static: FALLBACK: $how" >&2
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --release -p logferry --bin logferry --target "$target"
fi
elapsed=$(($(date +%s) - start))

mkdir -p dist
install -m 0755 "$CARGO_TARGET_DIR/$target/release/logferry" dist/logferry.new
mv -f dist/logferry.new dist/logferry
# A dynamically linked binary cannot run in the FROM scratch image: refuse it here.
if ! file -b dist/logferry | grep -Eq 'statically linked|static-pie linked'; then
  echo "build-static: dist/logferry is not statically linked: $(file -b dist/logferry)" >&2
  exit 1
fi
dist/logferry --version >/dev/null
size=$(stat -c %s dist/logferry)
echo "build-static: dist/logferry: $how, $size bytes ($((size / 1024 / 1024)) MiB), built in ${elapsed}s"
