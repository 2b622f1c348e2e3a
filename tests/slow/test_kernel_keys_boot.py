"""The shipped defaults (data/kernel_keys) against a fresh boot of the matrix root (issue 15 item 6).

`tools/gen_kernel_keys.py agree 6.1` as a test: the root booted normally (systemd, Debian 12's own
sysctl.d) with Debian 12's kernel; every key of the guest's /proc/sys with a constant default must show
it, except the four systemd's PID 1 writes itself; every key `check` predicts must show the prediction.
One boot (the other series: run the tool).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_predictions_match_a_fresh_boot_of_debian_12(matrix_roots, capsys):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from gen_kernel_keys import SYSTEMD_PID1_WRITES, agreement
    finally:
        sys.path.pop(0)
    results = agreement(["6.1"])
    assert results is not None, capsys.readouterr().err
    r = results["6.1"]
    assert r["configured"][0] >= 5 and r["configured"][0] == r["configured"][1], r["misses"]
    assert not r["misses"], r["misses"]
    assert r["default"][1] >= 700 and r["default"][0] - r["default"][1] == len(r["pid1"]) <= len(SYSTEMD_PID1_WRITES)
