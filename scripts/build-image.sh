#!/usr/bin/env bash
# Builds the container image users get and tags it localhost/logferry:test (or $1):
#   1. scripts/build-static.sh    static, stripped dist/logferry
#   2. stages dist/image/         the build context deploy/container/Containerfile expects
#   3. podman build               (docker where its daemon answers and podman is absent)
# Offline: FROM scratch, nothing pulled. Prints the image's size and fails above 25 MiB.
#
#   scripts/build-image.sh                         -> localhost/logferry:test
#   scripts/build-image.sh ghcr.io/example/logferry:0.1.0
#   LOGFERRY_SKIP_STATIC=1 scripts/build-image.sh  reuse dist/logferry as it is
#
# podman runs with --runtime runc here: crun refuses hosts with a hybrid cgroup layout. The
# podman store is the default one (/var/lib/containers), which CI keeps between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-localhost/logferry:test}"
MAX_BYTES=$((25 * 1024 * 1024))

if [[ "${LOGFERRY_SKIP_STATIC:-}" != 1 || ! -x dist/logferry ]]; then
  scripts/build-static.sh
fi

CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -s "$CA_BUNDLE" ]] || {
  echo "build-image: no CA bundle at $CA_BUNDLE (apt-get install ca-certificates, or set CA_BUNDLE)" >&2
  exit 1
}

ctx=dist/image
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/var/lib" "$ctx/state/logferry"
install -m 0755 dist/logferry "$ctx/rootfs/usr/local/bin/logferry"
install -m 0644 "$CA_BUNDLE" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
install -m 0644 deploy/container/passwd "$ctx/rootfs/etc/passwd"
install -m 0644 deploy/container/group "$ctx/rootfs/etc/group"
chmod 0700 "$ctx/state/logferry"

if command -v podman >/dev/null; then
  engine=(podman --runtime runc)
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=(docker)
else
  echo "build-image: neither podman nor a running docker (apt-get install podman runc)" >&2
  exit 1
fi

previous=$("${engine[@]}" image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
start=$(date +%s)
"${engine[@]}" build --quiet --file deploy/container/Containerfile --tag "$TAG" "$ctx" >/dev/null
elapsed=$(($(date +%s) - start))
# The image the tag pointed at before is garbage now, unless something still uses it.
if [[ -n "$previous" && "$previous" != "$("${engine[@]}" image inspect --format '{{.Id}}' "$TAG")" ]]; then
  "${engine[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$TAG")
echo "build-image: $TAG: $size bytes ($((size / 1024 / 1024)) MiB), image build ${elapsed}s (${engine[0]})"
if ((size > MAX_BYTES)); then
  echo "build-image: $TAG is larger than 25 MiB" >&2
  exit 1
fi
