"""The host-switch record on its own: holders counted, dead ones dropped, the original restored once.

A key file under tmp_path stands in for /proc/sys and SYSCTL_DOCTOR_RUN_DIR points the record at tmp_path, so
these run without touching the host; the real switch is covered by tests/lab/test_host_switch.py and
tests/conntrack_live/test_debug.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor import host_switches
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.host_switches import Holder, SwitchHold

KEY = "net/netfilter/nf_log_all_netns"


@pytest.fixture
def proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(host_switches.RUN_DIR_ENV, str(tmp_path / "run"))
    root = tmp_path / "proc-sys"
    (root / KEY).parent.mkdir(parents=True)
    (root / KEY).write_text("0\n")
    return root


def _value(proc_sys: Path) -> str:
    return (proc_sys / KEY).read_text().strip()


def _dead_holder() -> Holder:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = host_switches.process_start(proc.pid)
    proc.wait()
    return Holder(what="killed run", pid=proc.pid, start=start, token="t")


def test_last_holder_out_restores(proc_sys: Path) -> None:
    first = SwitchHold(KEY, "1", Holder.this_process("first"), proc_sys)
    second = SwitchHold(KEY, "1", Holder.this_process("second"), proc_sys)
    assert first.take() == "0" and _value(proc_sys) == "1"
    assert second.take() == "0" and second.others == 1  # the original, not the value first set
    first.release()
    assert _value(proc_sys) == "1"
    assert [h.what for h in host_switches.holders(KEY, proc_sys)] == ["second"]
    (host_switches.record_path().parent / "host-switches.json.tmp.999999").write_text("{")  # a killed save
    second.release()
    assert _value(proc_sys) == "0"
    assert list(host_switches.record_path().parent.iterdir()) == []
    second.release()  # twice: nothing to do


def test_failed_switch_takes_the_holder_back(proc_sys: Path) -> None:
    # a real read-only key: it reads, the write fails once the record names the holder
    hold = SwitchHold("kernel/osrelease", "1", Holder.this_process("lab"), Path("/proc/sys"))
    with pytest.raises(DoctorError, match="cannot set kernel.osrelease=1"):
        hold.take()
    assert not hold.recorded
    assert not host_switches.record_path().exists()


def test_dead_holders_are_dropped_and_the_original_restored(proc_sys: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dead = _dead_holder()
    reused = Holder(what="pid reused", pid=Holder.this_process("x").pid, start=1, token="u")
    for holder in (dead, reused):
        SwitchHold(KEY, "1", holder, proc_sys).take()
    assert len(host_switches.holders(KEY, proc_sys)) == 1  # the second take dropped the first (dead)
    assert _value(proc_sys) == "1"
    done = host_switches.recover()
    assert _value(proc_sys) == "0"
    assert done == [f"{host_switches.dotted(str(proc_sys / KEY))}: restored to 0, left by pid reused "
                    f"(pid {reused.pid}) (gone)"]
    assert "note:" in capsys.readouterr().err
    assert host_switches.recover() == []


def test_namespace_holder_lives_as_long_as_its_namespace(proc_sys: Path, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    (netns_dir / "pod").write_text("")
    monkeypatch.setattr(host_switches, "NETNS_DIR", str(netns_dir))
    SwitchHold(KEY, "1", Holder.namespace("pod", "conntrack debug --netns pod"), proc_sys).take()
    assert host_switches.recover() == [] and _value(proc_sys) == "1"
    (netns_dir / "pod").unlink()
    assert host_switches.recover() and _value(proc_sys) == "0"
    with pytest.raises(DoctorError, match="not found"):
        Holder.namespace("pod", "x")


def test_corrupt_record_is_a_clean_error(proc_sys: Path) -> None:
    path = host_switches.record_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"switches": {"x": ')
    with pytest.raises(DoctorError, match="unreadable host-switch record"):
        host_switches.recover()
    path.write_text(json.dumps({"switches": {"x": {"value": "1"}}}))
    with pytest.raises(DoctorError, match="by hand"):
        SwitchHold(KEY, "1", Holder.this_process("lab"), proc_sys).take()


def test_cli_with_a_corrupt_record_says_so(proc_sys: Path) -> None:
    path = host_switches.record_path()
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "debug", "off"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unreadable host-switch record" in proc.stderr and "Traceback" not in proc.stderr


def test_resting_value_is_the_original_and_recovers(proc_sys: Path) -> None:
    live = SwitchHold(KEY, "1", Holder.this_process("lab"), proc_sys)
    live.take()
    try:
        assert host_switches.resting_value(KEY, proc_sys) == "0" and _value(proc_sys) == "1"
    finally:
        live.release()
    SwitchHold(KEY, "1", _dead_holder(), proc_sys).take()
    assert host_switches.resting_value(KEY, proc_sys) == "0" and _value(proc_sys) == "0"
    assert not host_switches.record_path().exists()


_FORK_WHILE_LOCKED = """
import os, signal, sys, time
from pathlib import Path
from sysctl_doctor import host_switches
host_switches.HOST_LOCK = Path(sys.argv[1])
with host_switches.host_lock():
    if os.fork() == 0:  # a helper forked without exec while the lock is held (pyroute2 does this)
        os.write(1, b"child\\n")  # after the fork hooks ran (one write each: lines never interleave)
        time.sleep(60)
        os._exit(0)
    os.write(1, b"locked\\n")
    time.sleep(60)  # SIGKILLed here: no finally runs
"""


def test_a_child_forked_while_locked_never_keeps_the_host_lock(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock holder is SIGKILLed while its forked child lives on: the lock is free at once."""
    import fcntl
    import os
    import signal

    lock = tmp_path / "host.lock"
    monkeypatch.setattr(host_switches, "HOST_LOCK", lock)
    proc = subprocess.Popen([sys.executable, "-c", _FORK_WHILE_LOCKED, str(lock)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert {proc.stdout.readline().strip(), proc.stdout.readline().strip()} == {"locked", "child"}
        ino = os.stat(lock).st_ino
        keepers = [p for p in os.listdir("/proc") if p.isdigit() and _has_open(int(p), ino)]
        assert keepers == [str(proc.pid)]  # the child closed its copy of the lock descriptor
        proc.kill()
        proc.wait(timeout=30)
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if the child kept it
        finally:
            os.close(fd)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned child too
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _has_open(pid: int, ino: int) -> bool:
    import os

    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == ino:
                return True
        except OSError:
            pass
    return False


def test_a_forked_child_never_releases_its_parents_hold(proc_sys: Path) -> None:
    """A child forked without exec that unwinds its parent's stack must leave the parent's hold alone."""
    import os

    hold = SwitchHold(KEY, "1", Holder.this_process("lab"), proc_sys)
    hold.take()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                hold.release()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert _value(proc_sys) == "1"
        assert [h.pid for h in host_switches.holders(KEY, proc_sys)] == [os.getpid()]
    finally:
        hold.release()
    assert _value(proc_sys) == "0"


def test_release_reports_the_dead_holder_it_drops(proc_sys: Path) -> None:
    """Another run's release drops a killed run's hold: it says so (the killed run is never undone silently)."""
    live = SwitchHold(KEY, "1", Holder.this_process("lab"), proc_sys)
    live.take()
    dead = _dead_holder()
    SwitchHold(KEY, "1", dead, proc_sys).take()
    said: list = []
    live.release(notice=said.append)
    assert _value(proc_sys) == "0"
    assert said == [f"note: {host_switches.dotted(str(proc_sys / KEY))}: dropped killed run (pid {dead.pid}) "
                    f"(gone); still held by lab (pid {live.holder.pid})"]
    assert not host_switches.record_path().exists()
    # and the journal keeps it, with the run that did it
    journal = host_switches.recovery_journal()
    assert len(journal) == 1 and journal[0].endswith(f" pid {os.getpid()}: {said[0][len('note: '):]}")


def test_resting_value_reports_the_dead_holder_it_drops(proc_sys: Path) -> None:
    dead = _dead_holder()
    SwitchHold(KEY, "1", dead, proc_sys).take()
    said: list = []
    assert host_switches.resting_value(KEY, proc_sys, notice=said.append) == "0"
    assert said == [f"note: {host_switches.dotted(str(proc_sys / KEY))}: restored to 0, "
                    f"left by killed run (pid {dead.pid}) (gone)"]
