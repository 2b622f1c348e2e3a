"""verify's qemu harness without booting a root: the command line, the accelerator choice from the
environment, and teardown — a timeout and SIGTERM both leave no process behind (real processes)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sysctl_doctor.verify.qemu import BootFiles, Terminated, choose_accel, qemu_command, run_qemu


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it (killed, not running)."""
    for _ in range(50):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_qemu_command_is_serial_only_with_the_roots_kernel(tmp_path):
    files = BootFiles("6.1.0-50-amd64", Path("/r/boot/vmlinuz-6.1.0-50-amd64"), Path("/r/boot/initrd.img-6.1.0-50-amd64"))
    cmd = qemu_command(files, tmp_path / "disk.img", tmp_path / "c.log", tmp_path / "p.log", "tcg", "modules_load=x")
    assert cmd[cmd.index("-accel") + 1] == "tcg"
    assert "-nodefaults" in cmd and cmd[cmd.index("-display") + 1] == "none" and "-no-reboot" in cmd
    assert [cmd[i + 1] for i, word in enumerate(cmd) if word == "-serial"] == [
        f"file:{tmp_path / 'c.log'}", f"file:{tmp_path / 'p.log'}"]
    assert cmd[cmd.index("-initrd") + 1] == str(files.initrd)
    assert cmd[cmd.index("-append") + 1].endswith("console=ttyS0 panic=-1 systemd.show_status=1 modules_load=x")
    no_initrd = qemu_command(BootFiles("k", Path("/v"), None), Path("/w,x/d"), tmp_path / "c", tmp_path / "p")
    assert "-initrd" not in no_initrd
    assert no_initrd[no_initrd.index("-drive") + 1] == "file=/w,,x/d,format=raw,if=virtio"


def test_the_environment_decides_the_accelerator_without_a_probe(tmp_path):
    files = BootFiles("k", tmp_path / "vmlinuz", None)  # no kernel: a probe would fail loudly
    assert choose_accel(files, tmp_path, {"SYSCTL_DOCTOR_ACCEL": "tcg"}) == ("tcg", "SYSCTL_DOCTOR_ACCEL=tcg")
    assert choose_accel(files, tmp_path, {"SYSCTL_DOCTOR_ACCEL": "KVM"})[0] == "kvm"


def test_the_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    code, seconds = run_qemu(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=1.0)
    assert code is None and 0.9 < seconds < 20 and time.monotonic() - started < 30
    assert _gone(int(pidfile.read_text())), "a child of the killed process survived"


def test_sigterm_stops_the_boot_and_kills_qemu(tmp_path):
    pidfile = tmp_path / "pid"
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(Terminated):
            run_qemu(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=60)
    finally:
        timer.cancel()
    assert _gone(int(pidfile.read_text()))
    assert signal.getsignal(signal.SIGTERM) == previous, "the SIGTERM handler is restored"
