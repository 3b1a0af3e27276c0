#!/usr/bin/env bash
# Prints the path of a Debian bookworm root filesystem tarball with systemd as init, for the
# tests that boot deploy/systemd/logferry.service under a real systemd (systemd-nspawn -b).
# Made once with mmdebstrap (about a minute, ~210 MB) and cached outside the clone:
#
#   scripts/nspawn-rootfs.sh            -> /var/tmp/logferry-nspawn/bookworm-systemd.tar
#   LOGFERRY_NSPAWN_CACHE=DIR scripts/nspawn-rootfs.sh
#
# The mirror is the one apt on this machine uses (MIRROR overrides it). Needs root and
# mmdebstrap (Debian package).
set -euo pipefail
CACHE="${LOGFERRY_NSPAWN_CACHE:-/var/tmp/logferry-nspawn}"
# Bump when the package list changes, so a cached tarball is not reused.
VERSION=2
TARBALL="$CACHE/bookworm-systemd-v$VERSION.tar"
# ca-certificates: every real host has it; without a CA bundle the AWS SDK's HTTPS client
# refuses to start.
PACKAGES=systemd,systemd-sysv,dbus,ca-certificates

if [[ -s "$TARBALL" ]]; then
  echo "$TARBALL"
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "nspawn-rootfs: mmdebstrap missing (apt-get install mmdebstrap)" >&2
  exit 1
}
if [[ -z "${MIRROR:-}" ]]; then
  MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [[ -n "$MIRROR" ]] || MIRROR=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
mkdir -p "$CACHE"
tmp="$TARBALL.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "nspawn-rootfs: mmdebstrap bookworm ($PACKAGES) from $MIRROR" >&2
mmdebstrap --quiet --mode=root --format=tar --variant=minbase --include="$PACKAGES" \
  bookworm "$tmp" "deb $MIRROR bookworm main" >&2
mv "$tmp" "$TARBALL"
echo "$TARBALL"
