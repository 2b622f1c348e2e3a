"""Shared test configuration.

Tiers:
- default: everything that runs on this machine as root in a few minutes
  (real systemd-sysctl and procps in private mount namespaces, real Debian
  module trees, the real kernel's conntrack in network namespaces);
- slow (`--run-slow`): real boots of Debian roots under qemu.

A test that needs something this machine lacks is skipped with a loud reason,
never passed silently.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the qemu boot tier")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="SLOW TIER NOT RUN: pass --run-slow (boots Debian under qemu)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: namespaces and mounts are unavailable to this user")
