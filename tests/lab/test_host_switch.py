"""The lab and the host's nf_log_all_netns under SIGKILL, Ctrl-C at the lock, and a debug session meanwhile.

Issue 16, items 3, 4 and 6, reproduced the way they were found: real `sysctl-doctor lab` subprocesses,
real signals, the real host setting (put back by the `host_log_switch` fixture, also on failure).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import List

import pytest

from sysctl_doctor import host_switches

from conftest import assert_host_switch_at_rest, host_lock_waiters, recovery_reported

from .conftest import lab_prerequisites

SDOC = [sys.executable, "-m", "sysctl_doctor"]
KEY = "net/netfilter/nf_log_all_netns"
ONE_RUN = ["lab", "--scenario", "seq-under-lower-bound", "--mitigation", "none", "--format", "json"]


def _value() -> str:
    with open(f"/proc/sys/{KEY}") as fh:
        return fh.read().strip()


def _lab_namespaces(pid: int) -> List[str]:
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return [n for n in names if n.startswith(f"sdlab-{pid}x")]


def _wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def _remove_lab_namespaces(pid: int) -> None:
    for name in _lab_namespaces(pid):
        subprocess.run(["ip", "netns", "del", name], check=False)


def _read_until(stream, needle: str, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """Lines of `stream` up to the first that contains `needle` (all read so far when it never comes)."""
    seen = ""
    deadline = time.time() + seconds
    while needle not in seen and time.time() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.time()))
        line = stream.readline() if ready else ""
        if not line:
            break
        seen += line
    return seen


def test_sigkill_during_lab_is_undone_by_the_next_run(host_log_switch: str) -> None:
    """Item 3: kill -9 mid-run left 1 for good, and the next run took 1 for the previous value.

    The host lock and the record are shared by every run on the machine (other test sessions too): any
    of them could recover the killed lab's hold first, and say so on its own stderr. So from the kill until
    the next run waits for the lock, this test holds it: the next run is the one that recovers, and says so.
    Tried again (at most 3 times) only when another run was waiting for the lock too and got it first."""
    lab_prerequisites()
    others = []
    for _ in range(3):
        others = _kill_a_lab_then_run_the_next(host_log_switch)
        if not others:
            return
    pytest.fail(f"other runs on this machine (pids {others}) took the host lock first, 3 times")


def _kill_a_lab_then_run_the_next(before: str) -> list:
    """[] when checked; else the pids of other runs that waited for the lock with the next run."""
    proc = subprocess.Popen(SDOC + ["lab"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nxt = None
    try:
        # the host switch is taken before the first namespace is made
        assert _wait_for(lambda: _lab_namespaces(proc.pid), 60), "the lab never created its namespaces"
        assert _value() == "1"
        with host_switches.host_lock():
            proc.kill()  # SIGKILL: no finally runs
            proc.communicate(timeout=30)
            assert _value() == "1"  # left changed: nothing can restore it in the killed process
            assert any(h.pid == proc.pid for h in host_switches.holders(KEY))  # and still recorded
            nxt = subprocess.Popen(SDOC + ONE_RUN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            waiting = _read_until(nxt.stderr, "waiting for the host lock", 60)
            assert f"waiting for the host lock {host_switches.host_lock_path()} (held by {os.getpid()})" in waiting
            others = [p for p in host_lock_waiters() if p != nxt.pid]
        out, err = nxt.communicate(timeout=120)
        err = waiting + err
        assert nxt.returncode == 0, err
        assert json.loads(out)["host_changes_restored"] == {"net.netfilter.nf_log_all_netns": before}
        assert not any(h.pid == proc.pid for h in host_switches.holders(KEY))
        assert_host_switch_at_rest(before)
        assert _lab_namespaces(proc.pid) == []  # its namespaces went too (remove_stale_namespaces)
        # restored ("left by"), or left to the runs that hold it now ("dropped …; still held by"): said by the
        # next run, and journaled
        return [] if recovery_reported(f"lab (pid {proc.pid})", nxt, err, others) else others
    finally:
        _stop(proc)
        if nxt is not None:
            _stop(nxt)
        _remove_lab_namespaces(proc.pid)  # when the next run never got to it


def test_ctrl_c_while_waiting_for_the_host_lock(host_log_switch: str) -> None:
    """Item 4: Ctrl-C at the lock was held until the lock freed, then exited 130 with the value left at 1."""
    lab_prerequisites()
    before = host_log_switch
    with host_switches.host_lock():
        proc = subprocess.Popen(SDOC + ONE_RUN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            waiting = proc.stderr.readline() if ready else ""
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=15)  # the lock is still held by this test
            except subprocess.TimeoutExpired:
                pytest.fail("Ctrl-C was held while the lab waited for the host lock")
        finally:
            _stop(proc)
        assert_host_switch_at_rest(before, lock_held=True)
    assert "waiting for the host lock" in waiting and f"held by {os.getpid()}" in waiting
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not any(h.pid == proc.pid for h in host_switches.holders(KEY))
    assert_host_switch_at_rest(before)
    assert _lab_namespaces(proc.pid) == []


def test_lab_runs_while_a_debug_session_is_on(host_log_switch: str) -> None:
    """Item 6: `conntrack debug on --for D` held the lock for all of D; a lab waited silently."""
    lab_prerequisites()
    from conftest import fresh_netns

    before = host_log_switch
    with fresh_netns("sdlab-t") as netns:
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], check=True, text=True, input=(
            "table ip sdlabt { chain out { type filter hook output priority 0; policy accept; "
            "ct state invalid counter accept; }; }\n"))
        debug = subprocess.Popen(SDOC + ["conntrack", "debug", "on", "--netns", netns, "--for", "120s"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([debug.stdout], [], [], 60)
            assert ready and "is ON" in debug.stdout.readline()
            started = time.monotonic()
            lab = subprocess.run(SDOC + ONE_RUN, capture_output=True, text=True, timeout=60)
            assert lab.returncode == 0, lab.stderr
            assert time.monotonic() - started < 30
            assert debug.poll() is None, "the debug session is still running"
            # the lab saw the original, and left the switch to the session that still holds it
            assert json.loads(lab.stdout)["host_changes_restored"] == {"net.netfilter.nf_log_all_netns": before}
            assert _value() == "1"
            held = host_switches.holders(KEY)  # other runs on the machine may hold it too, never the lab
            assert debug.pid in [h.pid for h in held] and all(h.alive() for h in held), held
            debug.send_signal(signal.SIGINT)
            _, err = debug.communicate(timeout=30)
            assert debug.returncode == 130, err
        finally:
            _stop(debug)
    assert not any(h.pid == debug.pid for h in host_switches.holders(KEY))
    assert_host_switch_at_rest(before)
