#!/usr/bin/env bash
# The opt-in slow tier: build (once, cached) a minimal Debian 12 root with mmdebstrap and boot
# scenario roots under qemu (software emulation), comparing `sysctl-doctor check --root` with what
# the booted system shows, and runs `sysctl-doctor verify` (the same image builder and qemu harness)
# on those roots. Needs root and the Debian mirror; a few minutes the first time (the base
# root, ~700 MB, is cached under $SYSCTL_DOCTOR_TEST_CACHE/slow, default ./.cache/slow), then about
# one minute per boot.
#   ./scripts/test-slow.sh                  all scenarios
#   ./scripts/test-slow.sh -k udev          extra arguments go to pytest
# Environment: SYSCTL_DOCTOR_TEST_CACHE (cache directory), SYSCTL_DOCTOR_BOOT_TIMEOUT (seconds per
# boot, default 420).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3-venv mmdebstrap debian-archive-keyring qemu-system-x86 e2fsprogs)
. scripts/setup-env.sh
install_system_packages "${SYSTEM_PACKAGES[@]}"
install_venv test

echo "== running the slow tier (real boots under qemu)"
exec .venv/bin/python -m pytest --run-slow tests/slow "$@"
