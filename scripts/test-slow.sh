#!/usr/bin/env bash
# The opt-in slow tier: build (once, cached) a minimal Debian 12 root with mmdebstrap and boot
# scenario roots under qemu (software emulation), comparing `sysctl-doctor check --root` with what
# the booted system shows. Needs root and the Debian mirror; a few minutes the first time (the base
# root, ~700 MB, is cached under $SYSCTL_DOCTOR_TEST_CACHE/slow, default ./.cache/slow), then about
# one minute per boot.
#   ./scripts/test-slow.sh                  all scenarios
#   ./scripts/test-slow.sh -k udev          extra arguments go to pytest
# Environment: SYSCTL_DOCTOR_TEST_CACHE (cache directory), SYSCTL_DOCTOR_BOOT_TIMEOUT (seconds per
# boot, default 420).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3-venv mmdebstrap debian-archive-keyring qemu-system-x86 e2fsprogs)
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
    echo "== warning: missing system packages (the slow tier skips without them): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing sysctl-doctor and test dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== running the slow tier (real boots under qemu)"
exec .venv/bin/python -m pytest --run-slow tests/slow "$@"
