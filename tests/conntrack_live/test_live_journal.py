"""`conntrack logs` without FILE on a live host reads `journalctl -k -o json` as it comes, not whole.

This VM runs no journald, so the journal a busy node would hand over (hundreds of MB of JSON during an
incident) comes from an executable named journalctl first on PATH that writes such a journal's lines; the
reading side is the real command. It used to capture journalctl's output whole (a 220 MB journal: >220 MB
resident); streamed, memory stays a block's. With no journal output at all the kernel ring buffer is read.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conntrack_live.test_kernel_log import OVER
from tests.peak_memory import run_with_peak

CLI = [sys.executable, "-m", "sysctl_doctor"]


def _journal_line(i: int) -> str:
    return json.dumps({"__CURSOR": f"s=1;i={i:x}", "__REALTIME_TIMESTAMP": str(1764158401000000 + i * 1000),
                       "_TRANSPORT": "kernel", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "kernel",
                       "_HOSTNAME": "node1", "MESSAGE": OVER.split("] ", 1)[-1]}, separators=(",", ":"))


def _journalctl(tmp_path: Path, lines: int) -> dict:
    """PATH with a journalctl that writes `lines` kernel journal records (the same record, as a flood is)."""
    sample = tmp_path / "record.json"
    sample.write_text(_journal_line(0) + "\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "journalctl"
    body = f'yes "$(cat {sample})" | head -n {lines}\n' if lines else "exit 0\n"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")


def test_a_large_live_journal_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    lines = 300_000  # ~90 MB of JSON
    env = _journalctl(tmp_path, lines)
    proc, peak_mib = run_with_peak(CLI + ["conntrack", "logs", "--format", "json"], env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]  # INVALID records: exit 1
    doc = json.loads(proc.stdout)
    assert doc["source"] == "journalctl -k -o json"
    assert doc["lines"]["total"] == lines and doc["lines"]["conntrack"] == lines
    assert peak_mib < 60, f"{peak_mib:.0f} MiB for a {lines}-line journal: read whole?"
    # a live journal reads as the same lines in a file do (the source aside)
    small = tmp_path / "small"
    small.mkdir()
    path = small / "journal.json"
    path.write_text((_journal_line(0) + "\n") * 1000)
    live = subprocess.run(CLI + ["conntrack", "logs", "--format", "json"], capture_output=True,
                          env=_journalctl(small, 1000))
    from_file = subprocess.run(CLI + ["conntrack", "logs", str(path), "--format", "json"], capture_output=True)
    got, want = json.loads(live.stdout), json.loads(from_file.stdout)
    assert (got.pop("source"), want.pop("source")) == ("journalctl -k -o json", str(path))
    assert got == want


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="NEEDS read access to /dev/kmsg (root)")
def test_no_journal_output_reads_the_ring_buffer(tmp_path: Path) -> None:
    env = _journalctl(tmp_path, 0)
    proc = subprocess.run(CLI + ["conntrack", "logs", "--format", "json"], capture_output=True, env=env, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    assert json.loads(proc.stdout)["source"] == "/dev/kmsg"
