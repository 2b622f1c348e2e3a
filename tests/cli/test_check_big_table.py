"""`check` with many keys (issue 16, item 8): as found, 20 k keys took 16.5 s, 90 % of it drawing
rich's table; above 500 rows the table is plain aligned text, every row still there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.config.test_bounds import CLI, _root


def test_check_table_for_many_keys_is_plain_and_complete(tmp_path: Path) -> None:
    # As found: 20 k keys: `check` 16.5 s, 90 % of it drawing the rich table. Above 500 rows the
    # table is plain aligned text (every row still there); the README's small example stays rich.
    n = 600
    base = _root(tmp_path, {"/etc/sysctl.d/a.conf":
                            "".join(f"net.ipv4.conf.if{i}.rp_filter = 1\n" for i in range(n)).encode()})
    proc = subprocess.run(CLI + ["check", "--root", str(base)], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["key", "configured", "provider", "after", "boot", "verdict"]
    rows = [line for line in lines if line.startswith("net.ipv4.conf.if")]
    assert len(rows) == n and "┃" not in proc.stdout
    assert rows[0].split()[:3] == ["net.ipv4.conf.if0.rp_filter", "1", "interface"]
