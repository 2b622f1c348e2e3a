"""`conntrack debug`: on records then changes, off restores exactly, --for restores on its own and on Ctrl-C,
and the lines it makes the kernel write are explained by `conntrack logs`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from sysctl_doctor import host_switches
from sysctl_doctor.conntrack import debug
from sysctl_doctor.conntrack.kernel_log import parse_kernel_log, read_kmsg_records
from sysctl_doctor.conntrack.stats import in_netns
from sysctl_doctor.errors import DoctorError

from conftest import assert_host_switch_at_rest, host_lock_waiters, recovery_reported

from .conftest import send_lone_rst

SDOC = [sys.executable, "-m", "sysctl_doctor", "conntrack", "debug"]


def _netns_value(netns: str, key: str) -> str:
    with in_netns(netns):
        return open(f"/proc/sys/{key}").read().strip()


def _resting_host_value() -> str:
    """nf_log_all_netns as it is when no run holds it (other runs and tests hold it at times)."""
    from sysctl_doctor.host_switches import resting_value

    value = resting_value("net/netfilter/nf_log_all_netns")
    assert value is not None
    return value


def test_plan_is_pure_and_minimal() -> None:
    values = {("netns", "net/netfilter/nf_log/2"): "NONE", ("netns", "net/netfilter/nf_log/10"): "nf_log_ipv6",
              ("netns", debug.LOG_INVALID): "0", ("host", debug.ALL_NETNS): "0"}
    plan = debug.plan_debug_on("pod", lambda scope, key: values.get((scope, key)))
    assert [(c.scope, c.key, c.old, c.new) for c in plan] == [
        ("netns", "net/netfilter/nf_log/2", "NONE", "nf_log_ipv4"),
        ("netns", debug.LOG_INVALID, "0", "255"),
        ("host", debug.ALL_NETNS, "0", "1"),
    ]
    # the host namespace needs no nf_log_all_netns; values already right are left alone
    values[("netns", debug.LOG_INVALID)] = "6"
    plan = debug.plan_debug_on(None, lambda scope, key: values.get((scope, key)), "6")
    assert [c.key for c in plan] == ["net/netfilter/nf_log/2"]
    with pytest.raises(DoctorError, match="conntrack not loaded"):
        debug.plan_debug_on(None, lambda scope, key: None)


def test_on_then_off_restores_exactly(lab_netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host_before = _resting_host_value()
    with in_netns(lab_netns):
        open("/proc/sys/" + debug.LOG_INVALID, "w").write("17\n")  # an odd value to get back
    state = debug.debug_on(lab_netns, state_dir=str(tmp_path))
    try:
        saved = json.loads((tmp_path / f"conntrack-debug-{lab_netns}.json").read_text())
        assert saved["netns"] == lab_netns and saved["until"] is None
        assert {"scope": "netns", "key": debug.LOG_INVALID, "old": "17", "new": "255"} in saved["changes"]
        assert _netns_value(lab_netns, debug.LOG_INVALID) == "255"
        with pytest.raises(DoctorError, match="already on"):
            debug.debug_on(lab_netns, state_dir=str(tmp_path))
    finally:
        restored, diags = debug.debug_off(lab_netns, state_dir=str(tmp_path))
    assert restored is not None and diags == []
    assert [c.key for c in restored.changes] == [c.key for c in state.changes]
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "17"
    assert _resting_host_value() == host_before
    assert not (tmp_path / f"conntrack-debug-{lab_netns}.json").exists()
    assert debug.debug_off(lab_netns, state_dir=str(tmp_path)) == (None, [])


def test_off_after_the_namespace_is_gone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    host_before = _resting_host_value()
    state = debug.DebugState("sdlab-gone", time.time(), None, None, [
        debug.DebugChange("netns", debug.LOG_INVALID, "0", "255"),
        debug.DebugChange("host", debug.ALL_NETNS, host_before, "1")])
    debug._write_atomic(debug.state_path("sdlab-gone", str(tmp_path)), json.dumps(state.to_json()))
    restored, diags = debug.debug_off("sdlab-gone", state_dir=str(tmp_path))
    assert restored is not None and "not found" in str(diags[0])
    assert _resting_host_value() == host_before


def test_for_logs_then_restores_and_logs_explains(lab_netns) -> None:  # type: ignore[no-untyped-def]
    """The operator's flow: debug on --for, the kernel logs the INVALID packet, logs explains it."""
    host_before = _resting_host_value()
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)
    try:
        proc = subprocess.Popen(SDOC + ["on", "--netns", lab_netns, "--for", "30s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # "… is ON …" is printed once every setting is in place (the host key may wait for the lock)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and "is ON" in proc.stdout.readline()
        assert _netns_value(lab_netns, debug.LOG_INVALID) == "255"
        send_lone_rst(lab_netns, 41001, 41002)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C long before the 30 s are up
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "restored" in err and "Traceback" not in err
        data = read_kmsg_records(handle=kmsg)
    finally:
        os.close(kmsg)
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "0"
    assert _resting_host_value() == host_before
    assert not os.path.exists(debug.state_path(lab_netns))
    report = parse_kernel_log(data, "/dev/kmsg")
    mine = [r for r in report.records if r.record.int_field("SPT") == 41001]
    assert mine and mine[0].reason.code == "invalid-new" and mine[0].reason.verdict == "INVALID"


def test_for_expires_by_itself(lab_netns) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(SDOC + ["on", "--netns", lab_netns, "--for", "0.5s"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "restored to 0" in proc.stdout
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "0"


def test_cli_on_tells_to_run_off(lab_netns) -> None:  # type: ignore[no-untyped-def]
    on = subprocess.run(SDOC + ["on", "--netns", lab_netns, "--protocol", "tcp"], capture_output=True,
                        text=True, timeout=60)
    try:
        assert on.returncode == 0, on.stderr
        assert f"sysctl-doctor conntrack debug off --netns {lab_netns}" in on.stdout
        assert _netns_value(lab_netns, debug.LOG_INVALID) == "6"
        status = subprocess.run(SDOC + ["status", "--netns", lab_netns], capture_output=True, text=True)
        assert "ON" in status.stdout
    finally:
        off = subprocess.run(SDOC + ["off", "--netns", lab_netns], capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and "restored net.netfilter.nf_conntrack_log_invalid = 0" in off.stdout
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "0"


def _host_value() -> str:
    return open("/proc/sys/" + debug.ALL_NETNS).read().strip()


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(SDOC + list(args), capture_output=True, text=True, timeout=60)


def test_overlapping_sessions_share_the_host_switch(lab_netns, other_lab_netns, host_log_switch) -> None:  # type: ignore[no-untyped-def]
    """Item 5: on A, on B, off A put the shared switch back while B still said ON — B's lines were lost."""
    a, b = lab_netns, other_lab_netns
    try:
        assert _cli("on", "--netns", a).returncode == 0
        assert _cli("on", "--netns", b).returncode == 0
        off_a = _cli("off", "--netns", a)
        assert off_a.returncode == 0, off_a.stderr
        assert _host_value() == "1", "B still holds the host switch"
        assert re.search(rf"still held by (.*, )?conntrack debug --netns {b}(,|$)", off_a.stdout, re.M), off_a.stdout
        status = _cli("status", "--netns", b)
        assert "is ON" in status.stdout
        assert re.search(rf"holders: (.*, )?conntrack debug --netns {b}(,|$)", status.stdout, re.M), status.stdout
        # and B's lines really reach the log
        kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(kmsg, 0, os.SEEK_END)
        try:
            send_lone_rst(b, 41011, 41012)
            time.sleep(0.1)
            data = read_kmsg_records(handle=kmsg)
        finally:
            os.close(kmsg)
        assert [r for r in parse_kernel_log(data, "/dev/kmsg").records if r.record.int_field("SPT") == 41011]
    finally:
        _cli("off", "--netns", a)
        off_b = _cli("off", "--netns", b)
    # the last holder out restores; other runs on the machine (other test sessions) may hold it still
    assert re.search(rf"^(restored net\.netfilter\.nf_log_all_netns = {host_log_switch}"
                     r"|left net\.netfilter\.nf_log_all_netns = 1: still held by .*)$",
                     off_b.stdout, re.M), off_b.stdout
    assert_host_switch_at_rest(host_log_switch)


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


def test_removed_namespace_releases_the_host_switch(host_log_switch) -> None:  # type: ignore[no-untyped-def]
    """`on --netns X`, then X is deleted without `off`: the next run puts the host switch back.

    Every run on the machine (other test sessions too) recovers from the shared record, and says so on its
    own stderr: from the deletion until `status` waits for the host lock, this test holds it, so `status`
    is the run that finds the namespace gone. Tried again (at most 3 times) only when another run was
    waiting for the lock too and got it first."""
    others = []
    for _ in range(3):
        others = _remove_a_namespace_then_status(host_log_switch)
        if not others:
            return
    pytest.fail(f"other runs on this machine (pids {others}) took the host lock first, 3 times")


def _remove_a_namespace_then_status(before: str) -> list:
    """[] when checked; else the pids of other runs that waited for the lock with `status`."""
    from .conftest import conntrack_netns

    name = None
    status = None
    try:
        with contextlib.ExitStack() as locked:
            with conntrack_netns() as name:
                on = _cli("on", "--netns", name)
                assert on.returncode == 0, on.stderr
                assert _host_value() == "1"
                locked.enter_context(host_switches.host_lock())
            assert _host_value() == "1"  # the namespace went; its hold is still recorded
            status = subprocess.Popen(SDOC + ["status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            waiting = _read_until(status.stderr, "waiting for the host lock", 60)
            assert f"(held by {os.getpid()})" in waiting, waiting
            others = [p for p in host_lock_waiters() if p != status.pid]
        out, err = status.communicate(timeout=60)
        err = waiting + err
        assert status.returncode == 0, err
        assert not any(h.netns == name for h in host_switches.holders(debug.ALL_NETNS))
        assert_host_switch_at_rest(before)
        # restored ("left by"), or left to the runs that hold it now ("dropped …; still held by"): said by
        # `status`, and journaled
        checked = recovery_reported(f"conntrack debug --netns {name}", status, err, others)
    finally:
        if status is not None and status.poll() is None:
            status.kill()
            status.communicate(timeout=30)
        if name is not None:
            _cli("off", "--netns", name)  # its state file (the namespace's own settings went with it)
    assert not os.path.exists(debug.state_path(name))
    return [] if checked else others


def test_killed_for_session_is_restored_by_the_next_on(lab_netns, host_log_switch) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of `on --for`: the host switch comes back at the next run, the netns settings at the next on."""
    proc = subprocess.Popen(SDOC + ["on", "--netns", lab_netns, "--for", "60s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and "is ON" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert _host_value() == "1" and _netns_value(lab_netns, debug.LOG_INVALID) == "255"
    try:
        on = _cli("on", "--netns", lab_netns, "--protocol", "tcp")
        assert on.returncode == 0, on.stderr
        assert f"killed `conntrack debug on --for` (pid {proc.pid})" in on.stderr
        assert "(was 0)" in on.stdout  # the recorded original, not the value the killed run left
    finally:
        _cli("off", "--netns", lab_netns)
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "0"
    assert not any(h.pid == proc.pid for h in host_switches.holders(debug.ALL_NETNS))
    assert_host_switch_at_rest(host_log_switch)


@pytest.mark.parametrize("extra", [[], ["--for", "60s"]], ids=["on", "on-for"])
def test_ctrl_c_while_on_waits_for_the_host_lock(lab_netns, host_log_switch, extra) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C while `on` waits for the host lock: exit 130 at once, nothing left changed."""

    with host_switches.host_lock():
        proc = subprocess.Popen(SDOC + ["on", "--netns", lab_netns] + extra,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            waiting = proc.stderr.readline() if ready else ""
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=15)  # the lock is still held by this test
            except subprocess.TimeoutExpired:
                pytest.fail("Ctrl-C was held while `on` waited for the host lock")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        assert_host_switch_at_rest(host_log_switch, lock_held=True)
    assert "waiting for the host lock" in waiting
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _netns_value(lab_netns, debug.LOG_INVALID) == "0"
    assert not os.path.exists(debug.state_path(lab_netns))
    assert not any(h.netns == lab_netns or h.pid == proc.pid for h in host_switches.holders(debug.ALL_NETNS))
