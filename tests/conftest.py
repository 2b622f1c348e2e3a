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

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from typing import Iterator

import pytest


@contextlib.contextmanager
def fresh_netns(prefix: str) -> Iterator[str]:
    """A new network namespace named `<prefix>-<pid>-<random>` with lo up, always deleted.

    Skips loudly without root or nft (the tests that use it load nft rulesets)."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: network namespaces")
    if shutil.which("nft") is None:
        pytest.skip("NEEDS nft: apt-get install nftables")
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def pytest_configure(config: pytest.Config) -> None:
    # The suite never writes into the user's cache: the kernel index cache
    # (and anything else under XDG_CACHE_HOME) lives in a directory of this run.
    config._sd_cache_dir = tempfile.mkdtemp(prefix="sysctl-doctor-tests-xdg-")
    config._sd_old_xdg = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = config._sd_cache_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    cache_dir = getattr(config, "_sd_cache_dir", None)
    if cache_dir is None:
        return
    if config._sd_old_xdg is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = config._sd_old_xdg
    shutil.rmtree(cache_dir, ignore_errors=True)


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


ALL_NETNS_KEY = "net/netfilter/nf_log_all_netns"


@pytest.fixture
def host_log_switch() -> Iterator[str]:
    """The resting value of the host's nf_log_all_netns; put back after the test, also when it fails.

    Teardown: restore what dead holders left (`recover`), then — under the host lock, when no live
    holder is recorded — write the resting value back if a failed test left it changed."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: nf_log_all_netns is a host setting")
    if not os.path.exists(f"/proc/sys/{ALL_NETNS_KEY}"):
        pytest.skip(f"NEEDS /proc/sys/{ALL_NETNS_KEY} (nf_log, init namespace)")
    from sysctl_doctor import host_switches

    before = host_switches.resting_value(ALL_NETNS_KEY)
    assert before is not None
    try:
        yield before
    finally:
        host_switches.recover()
        with host_switches.host_lock():
            if not host_switches.holders(ALL_NETNS_KEY):
                with open(f"/proc/sys/{ALL_NETNS_KEY}", "w") as fh:
                    fh.write(before + "\n")


def assert_host_switch_at_rest(before: str, lock_held: bool = False) -> None:
    """nf_log_all_netns is back at `before` — unless a run holds it now. The switch is shared by every run
    on the machine (other test sessions too): while any holder is recorded it stays 1, and the last one
    out restores `before`. Read under the host lock (`lock_held`: the caller holds it), so the record and
    the value agree."""
    from sysctl_doctor import host_switches

    with contextlib.nullcontext() if lock_held else host_switches.host_lock():
        held = host_switches.holders(ALL_NETNS_KEY)
        with open(f"/proc/sys/{ALL_NETNS_KEY}") as fh:
            value = fh.read().strip()
    if held:
        assert value == "1", f"{value} while held by {[h.describe() for h in held]}"
    else:
        assert value == before


def host_lock_waiters() -> list:
    """Pids blocked on the host lock now (the ``->`` lines of /proc/locks)."""
    from sysctl_doctor import host_switches

    return host_switches.flock_pids(host_switches.host_lock_path(), waiting=True)


def recovery_reported(who: str, run: "subprocess.Popen", stderr: str, others_waited: list) -> bool:
    """The dead holder `who` was dropped and said so: in the host-switch journal, whichever run did it,
    and on `run`'s stderr when `run` is the one. A test holds the host lock until `run` waits for it, but
    other runs on the machine that waited too (`others_waited`, pids) may get it first — and one of an
    older sysctl-doctor reports on its own stderr only. False (try again) only in that case."""
    import re

    from sysctl_doctor import host_switches

    pattern = (rf"^\S+ pid (\d+): (net\.netfilter\.nf_log_all_netns: (restored to \S+, left by|dropped) "
               rf"{re.escape(who)} \(gone\).*)$")
    found = [m for m in (re.match(pattern, line) for line in host_switches.recovery_journal()) if m]
    if not found and others_waited and f"{who} (gone)" not in stderr:
        return False
    assert found, f"no recovery of {who} in {host_switches.journal_path()}; {run.args[-1]} said: {stderr}"
    last = found[-1]
    if int(last.group(1)) == run.pid:
        assert f"note: {last.group(2)}" in stderr
    return True
