#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of every crate
# against real peers (moto_server, logger, ncat, systemd-journald).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/logferry-target}"
export CARGO_TERM_COLOR=never
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Test binaries find cwl-proxy and fake-cloudwatch next to them.
cargo build --workspace --bins
cargo test --workspace
# Deployment artifacts: Dockerfile lint, Kubernetes schemas, systemd-analyze, Ignition, IAM.
scripts/test-deploy.sh
