"""Started with stdout closed (`>&-`, issue 16 item 14) or, for `conntrack logs -`, stdin closed: a
clear error and exit 2, never "internal error … this is a bug" (Python gives such a process no
sys.stdout / sys.stdin at all)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "incident"


@pytest.mark.parametrize("args", [
    ["check", "--root", str(EXAMPLE)],
    ["show", "--root", str(EXAMPLE)],
    ["explain", "SD101"],
    ["conntrack", "logs", "/dev/null"],
])
def test_closed_stdout_is_a_clean_error(args: list) -> None:
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "sysctl_doctor", *args])
    proc = subprocess.run(["sh", "-c", f"exec {cmd} >&-"], capture_output=False, stderr=subprocess.PIPE)
    assert proc.returncode == 2
    assert b"error: standard output is closed" in proc.stderr
    assert b"internal error" not in proc.stderr and b"Traceback" not in proc.stderr


def test_closed_stdin_is_a_clean_error() -> None:
    cmd = f"exec {shlex.quote(sys.executable)} -m sysctl_doctor conntrack logs - <&-"
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True)
    assert proc.returncode == 2
    assert b"error: <stdin>: standard input is closed" in proc.stderr and b"internal error" not in proc.stderr
