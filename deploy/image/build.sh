#!/usr/bin/env bash
# Build the sysctl-doctor container image from Debian packages, without pulling a base image:
# mmdebstrap makes a Debian 12 (bookworm) root with python3 and the runtime dependencies from the
# archive (python3-click, -rich, -pyelftools, -zstandard, -pyroute2; nft and iptables-save for the
# running rules), copies this checkout's src/sysctl_doctor in, and writes it as a tarball; with a TAG,
# `podman import` turns the tarball into an image.
#
#   deploy/image/build.sh OUT.tar [TAG]         e.g. deploy/image/build.sh /tmp/sd.tar localhost/sysctl-doctor:0.1.0
#
# Reproducible: the same checkout, SOURCE_DATE_EPOCH and archive state give the same tarball
# (SOURCE_DATE_EPOCH defaults to the last commit's time). Needs root (or mmdebstrap's unshare mode)
# and the Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build.sh OUT.tar [TAG]}
tag=${2:-}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

# The package list (also read by the tests, which key their cached image on it).
PACKAGES=python3,python3-click,python3-rich,python3-pyelftools,python3-zstandard,python3-pyroute2,nftables,iptables

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$repo/src" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.so' --exclude='*.c' -cf "$stage/src.tar" sysctl_doctor

mmdebstrap --quiet --variant=essential --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="tar -C \"\$1/usr/lib/python3/dist-packages\" --no-same-owner -xf $stage/src.tar" \
  --customize-hook="install -m 0755 $repo/deploy/bin/sysctl-doctor \"\$1/usr/bin/sysctl-doctor\"" \
  --customize-hook='chroot "$1" python3 -m compileall -q --invalidation-mode checked-hash /usr/lib/python3/dist-packages/sysctl_doctor' \
  --customize-hook='mkdir -p "$1/host" "$1/cache" && chmod 1777 "$1/cache"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/etc/machine-id' \
  bookworm "$out" "$mirror"

if [ -n "$tag" ]; then
  # The same defaults the DaemonSet sets: non-root, the index cache in a writable /cache, no colour.
  podman import --quiet \
    --change 'ENTRYPOINT ["/usr/bin/sysctl-doctor"]' \
    --change 'CMD ["check", "--root", "/host", "--live"]' \
    --change 'USER 65534:65534' \
    --change 'ENV XDG_CACHE_HOME=/cache NO_COLOR=1' \
    --change 'LABEL org.opencontainers.image.title=sysctl-doctor' \
    "$out" "$tag"
fi
