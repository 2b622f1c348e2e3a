"""Boot a disk image under qemu: serial console only, a hard timeout, nothing left running.

- serial 0 (ttyS0) is the kernel and init console, serial 1 (ttyS1) the probe's own line; each goes to a
  file on the host. No display, no network, no default devices.
- The accelerator: KVM only when it really runs a kernel here. Opening /dev/kvm is not enough (on some
  nested hosts a guest under KVM hangs without a line of output), so `choose_accel` boots the root's own
  kernel with no root device under KVM, bounded (`KVM_PROBE_SECONDS`): a kernel that reaches its panic
  and powers off proves KVM; anything else means TCG (software emulation). `SYSCTL_DOCTOR_ACCEL=tcg|kvm`
  decides without a probe.
- Teardown: qemu runs in its own session; at the timeout, on Ctrl-C (KeyboardInterrupt) and on SIGTERM
  its process group is killed and reaped before the exception goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

from sysctl_doctor.verify.serial import read_lines, tail
from sysctl_doctor.verify.tools import QEMU, require

KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1"
KVM_PROBE_SECONDS = 15.0
ACCEL_ENV = "SYSCTL_DOCTOR_ACCEL"


@dataclass(frozen=True)
class BootFiles:
    """The kernel a root boots with: its version, image and initramfs (None: no initramfs)."""

    kernel: str
    vmlinuz: Path
    initrd: Optional[Path]


@dataclass(frozen=True)
class BootRun:
    console_log: Path
    probe_log: Path
    seconds: float  # wall time of the qemu process
    exit_code: Optional[int]  # None: killed at the timeout
    accel: str
    command: List[str] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None

    def probe_lines(self) -> List[str]:
        return read_lines(self.probe_log)

    def console_tail(self, count: int = 40) -> List[str]:
        return tail(read_lines(self.console_log), count)


def qemu_command(files: BootFiles, image: Path, console_log: Path, probe_log: Path, accel: str = "tcg",
                 cmdline_extra: str = "", memory_mb: int = 1024, qemu: str = QEMU) -> List[str]:
    cmd = [
        qemu,
        "-accel", accel,
        "-m", str(memory_mb),
        "-smp", "1",
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(files.vmlinuz),
    ]
    if files.initrd is not None:
        cmd += ["-initrd", str(files.initrd)]
    cmd += [
        "-append", f"{KERNEL_CMDLINE} {cmdline_extra}".strip(),
        "-drive", f"file={str(image).replace(',', ',,')},format=raw,if=virtio",  # a comma in -drive is doubled
        "-serial", f"file:{console_log}",
        "-serial", f"file:{probe_log}",
    ]
    return cmd


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while qemu ran (handled like Ctrl-C: qemu is killed, the job stops)."""


@dataclass
class SigtermRaises:
    """While active (main thread only), SIGTERM raises Terminated, so every `finally` runs (qemu killed, work
    directory removed); the previous handler is restored on exit."""

    previous: object = None
    installed: bool = False

    def __enter__(self) -> "SigtermRaises":
        if threading.current_thread() is threading.main_thread():
            def _raise(_signum, _frame):  # type: ignore[no-untyped-def]
                raise Terminated()

            self.previous = signal.signal(signal.SIGTERM, _raise)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]


def _kill(proc: subprocess.Popen) -> None:
    """Kill qemu's process group and reap it (bounded: a process stuck in the kernel is left, not waited on)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def run_qemu(cmd: List[str], timeout: float, stderr_path: Optional[Path] = None) -> Tuple[Optional[int], float]:
    """Run qemu to its end or the timeout; (exit code or None when killed at the timeout, seconds)."""
    started = time.monotonic()
    stderr = open(stderr_path, "wb") if stderr_path is not None else subprocess.DEVNULL
    try:
        with SigtermRaises():
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                    start_new_session=True)
            try:
                code: Optional[int] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _kill(proc)  # also on KeyboardInterrupt / Terminated
    finally:
        if stderr is not subprocess.DEVNULL:
            stderr.close()  # type: ignore[union-attr]
    return code, time.monotonic() - started


def boot(files: BootFiles, image: Path, logdir: Path, timeout: float, accel: str = "tcg",
         cmdline_extra: str = "", memory_mb: int = 1024) -> BootRun:
    """Boot `image` until the guest powers off or `timeout` seconds pass; qemu is always reaped."""
    logdir.mkdir(parents=True, exist_ok=True)
    console_log, probe_log = logdir / "console.log", logdir / "probe.log"
    for log in (console_log, probe_log):
        if log.exists():
            log.unlink()
    cmd = qemu_command(files, image, console_log, probe_log, accel, cmdline_extra, memory_mb, require(QEMU))
    code, seconds = run_qemu(cmd, timeout, logdir / "qemu.stderr")
    return BootRun(console_log, probe_log, seconds, code, accel, cmd)


def _kvm_device_opens() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def choose_accel(files: BootFiles, workdir: Path, env: Mapping[str, str] = os.environ) -> Tuple[str, str]:
    """("kvm" | "tcg", why). The environment decides when set; otherwise a bounded KVM boot of the kernel."""
    wanted = env.get(ACCEL_ENV, "").strip().lower()
    if wanted in ("tcg", "kvm"):
        return wanted, f"{ACCEL_ENV}={wanted}"
    if not _kvm_device_opens():
        return "tcg", "/dev/kvm cannot be opened: software emulation (TCG)"
    log = workdir / "kvm-probe.log"
    cmd = [require(QEMU), "-accel", "kvm", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
           "-display", "none", "-no-reboot", "-kernel", str(files.vmlinuz),
           "-append", "console=ttyS0 panic=-1 root=/dev/sysctl-doctor-no-root", "-serial", f"file:{log}"]
    code, seconds = run_qemu(cmd, KVM_PROBE_SECONDS)
    printed = any(line.strip() for line in read_lines(log))
    if code == 0 and printed:
        return "kvm", f"KVM ran the kernel to its panic in {seconds:.1f} s"
    what = "no exit" if code is None else f"exit {code}"
    return "tcg", (f"KVM did not run the kernel ({what} after {seconds:.0f} s, "
                   f"{'some' if printed else 'no'} console output): software emulation (TCG)")
