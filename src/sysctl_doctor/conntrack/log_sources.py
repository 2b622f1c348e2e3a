"""Where `conntrack logs` reads from on a live host, and the --since syntax.

Order: the systemd journal (``journalctl -k -o json``, which honours
``--since`` itself), else the kernel ring buffer (/dev/kmsg, what dmesg reads).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Optional

from sysctl_doctor.conntrack.kernel_log import read_kmsg_records
from sysctl_doctor.errors import DoctorError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*(?:ago)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: Optional[float] = None) -> float:
    """Unix seconds of ``--since``: a duration ago ("10m", "2h", "90s", "1d") or a date/time (ISO 8601)."""
    now = time.time() if now is None else now
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise DoctorError(f"--since {text!r}: not a duration (10m, 2h, 1d) or an ISO date/time") from exc
    try:
        if stamp.tzinfo is None:
            stamp = stamp.astimezone()
        return stamp.timestamp()
    except (ValueError, OverflowError) as exc:  # 0001-01-01 has no local time or Unix stamp
        raise DoctorError(f"--since {text!r}: out of range ({exc})") from exc


def boot_time() -> Optional[float]:
    """Unix seconds at boot (for dmesg/kmsg stamps of this boot)."""
    try:
        with open("/proc/uptime") as fh:
            return time.time() - float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class LiveKernelLog:
    stream: IO[bytes]  # read in blocks like a file: journalctl's output is streamed, never held whole
    source: str  # "journalctl -k -o json" or "/dev/kmsg"
    boot_clock: bool  # stamps are seconds since boot
    process: Optional["subprocess.Popen[bytes]"] = None  # journalctl, while it writes

    def close(self) -> None:
        """Stop journalctl if the reader stopped early (an error, Ctrl-C) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def read_live_kernel_log(since: Optional[float] = None) -> LiveKernelLog:
    journalctl = shutil.which("journalctl")
    if journalctl:
        argv = [journalctl, "-k", "-o", "json", "--no-pager", "-q"]
        if since is not None:
            argv += ["--since", "@" + str(int(since))]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        except OSError:
            proc = None
        if proc is not None:
            assert proc.stdout is not None
            # The journal of a busy node in an incident is hundreds of MB of JSON: read as it comes (memory stays
            # a block), not captured whole. Nothing at all (no journal, journald not running): the ring buffer.
            if proc.stdout.peek(1):
                return LiveKernelLog(proc.stdout, "journalctl -k -o json", False, proc)
            proc.wait()
            proc.stdout.close()
    try:
        return LiveKernelLog(io.BytesIO(read_kmsg_records()), "/dev/kmsg", True)
    except PermissionError as exc:
        raise DoctorError("/dev/kmsg: permission denied (run as root, or pass a log FILE)") from exc
    except OSError as exc:
        if os.path.exists("/dev/kmsg"):
            raise DoctorError(f"/dev/kmsg: {exc}") from exc
        raise DoctorError("no journal and no /dev/kmsg: pass a log FILE (dmesg output, syslog, journalctl)") from exc
