"""`conntrack replay --kernel <version>` against the real conntrack of each supported Debian kernel.

For each of Debian's 5.10, 6.1 and 6.12 kernels (matrix_root.py), one qemu boot runs every run of
tests/conntrack/agreement.py (the same crafted traces the default tier pushes through this machine's
kernel: window bounds, checksums, pickups, SYN/ACKs with new ISNs, SYNs on established entries, RSTs,
the NAT box's own RSTs, …) through the guest kernel's conntrack in network namespaces, recording
the kernel's verdict and log line per packet; the host replays each capture with the profile for
that kernel release and compares packet by packet (verdict and message) and entry by entry.

The table of agreements is written to <cache>/slow/logs/kernel-matrix-<series>/table.txt and printed.

Opt-in: `pytest --run-slow tests/slow/test_kernel_matrix.py` (or scripts/test-slow.sh -k matrix).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from . import base_root as base_root_module
from .real_boot import BOOT_TIMEOUT

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.mark.parametrize("series", ["5.10", "6.1", "6.12"])
def test_replay_agrees_with_the_debian_kernel(matrix_roots, series: str) -> None:  # type: ignore[no-untyped-def]
    from conntrack import agreement

    from sysctl_doctor.conntrack.profiles import profile_for

    from .kernel_matrix import run_matrix

    cache = base_root_module.cache_dir()
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
    try:
        run = run_matrix(matrix_roots[series], series, workdir, cache / "logs", timeout=max(BOOT_TIMEOUT, 1800))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert run.boot.exit_code == 0 and run.complete and run.records, (
        "the guest did not power off after a complete probe:\n" + run.explain())
    assert run.uname and run.uname.startswith(series + "."), run.explain()
    profile = profile_for(run.uname)
    rows, failures = [], []
    for record in run.records:
        mismatches, facts = agreement.compare_run(record, profile, str(run.captures[record["run"]]))
        agreed = facts["injected"] - len([m for m in mismatches if m.startswith("[")])
        rows.append(f"{series:<5} {run.uname:<24} {record['run']:<20} {agreed:>4}/{facts['injected']:<4} "
                    + ("agree" if not mismatches else f"{len(mismatches)} disagreements"))
        failures += [f"{record['run']}: {m}" for m in mismatches]
    for name, error in run.errors.items():
        rows.append(f"{series:<5} {run.uname:<24} {name:<20} ERROR in the guest")
        failures.append(f"{name}: guest error {error[-500:]}")
    table = "\n".join(rows)
    logdir = cache / "logs" / f"kernel-matrix-{series}"
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / "table.txt").write_text(table + "\n\n" + "\n".join(failures) + "\n")
    print("\n" + table)
    assert not failures, f"{len(failures)} disagreements with {run.uname} (see {logdir}/table.txt):\n" + \
        "\n".join(failures[:60])
