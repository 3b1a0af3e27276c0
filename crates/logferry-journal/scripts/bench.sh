#!/bin/sh
# Read benchmark: builds the release example and compares our reader with
# `journalctl -o export` on a 300,000-entry journal written by a private journald (root
# needed), or on DIR if given. Usage: scripts/bench.sh [--entries N] [DIR]
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/lf-target-journal}"
cargo build --release --example bench_read
exec "$CARGO_TARGET_DIR/release/examples/bench_read" "$@"
