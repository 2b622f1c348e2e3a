#!/usr/bin/env bash
# Install everything the test suite needs and run it.
#   ./scripts/test.sh            the whole suite (as root: real systemd-sysctl, procps, netns, nft)
#   ./scripts/test.sh -k show    extra arguments go to pytest
# System packages are installed with apt-get when missing (root only); Python
# packages go into ./.venv. pytest's "no tests collected" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3-venv procps systemd iproute2 nftables iptables tcpdump tshark conntrack xz-utils zstd kmod cpio mmdebstrap dpkg-dev debian-archive-keyring
  prometheus prometheus-node-exporter nodejs
  man-db bash-completion zsh fish podman runc pipx
  debhelper dh-python lintian python3-click python3-rich python3-pyelftools python3-zstandard)
. scripts/setup-env.sh
install_system_packages "${SYSTEM_PACKAGES[@]}"
install_venv test,conntrack,lab,deploy
install_npm_tools

echo "== running tests"
exec .venv/bin/python -m pytest "$@"
