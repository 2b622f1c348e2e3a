#!/usr/bin/env bash
# Install everything the test suite needs and run it.
#   ./scripts/test.sh            the whole suite (as root: real systemd-sysctl, procps, netns, nft)
#   ./scripts/test.sh -k show    extra arguments go to pytest
# System packages are installed with apt-get when missing (root only); Python
# packages go into ./.venv. pytest's "no tests collected" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3-venv procps systemd iproute2 nftables iptables tcpdump tshark conntrack xz-utils zstd kmod cpio mmdebstrap)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== warning: missing system packages (tests that need them are skipped): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing sysctl-doctor and test dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,conntrack,lab]'

echo "== running tests"
exec .venv/bin/python -m pytest "$@"
