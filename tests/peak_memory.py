"""Run a command and measure its own peak memory (not the test process's other children).

RUSAGE_CHILDREN of the test process is the largest of every child it ever waited for (a Prometheus
server, another test's CLI run), so it cannot bound one command. A small wrapper process waits for the
command with wait4 and reports that child's ru_maxrss alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import List, Tuple

_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "sys.stderr.write('\\n@@peak_kib=%d\\n' % usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
_MARK = re.compile(rb"\n@@peak_kib=(\d+)\n$")


def run_with_peak(cmd: List[str], **kwargs) -> Tuple[subprocess.CompletedProcess, float]:  # type: ignore[no-untyped-def]
    """(the completed command, its peak resident memory in MiB); stderr without the wrapper's line."""
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, **kwargs)
    match = _MARK.search(proc.stderr)
    assert match, f"no peak-memory line from the wrapper: {proc.stderr[-500:]!r}"
    proc.stderr = proc.stderr[: match.start()]
    return proc, int(match.group(1)) / 1024
