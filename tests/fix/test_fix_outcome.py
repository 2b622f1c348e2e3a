"""Issue 16 item 12: what `fix` writes must win, and what it says must be what `check` predicts.

Found: a later-sorting drop-in resetting `After=` voided fix's drop-in (the race stayed), the rerun printed
"nothing to change" next to "still not guaranteed (race)", and with `--init sysvinit` (procps never started)
fix said every key "already applies" while SD110 said nothing is applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from boot.rootfs import copy_incident

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"
DROPINS = "etc/systemd/system/systemd-sysctl.service.d"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True)


def boot_entry(root: Path, *extra: str) -> dict:
    data = json.loads(run("check", "--root", str(root), "--format", "json", *extra).stdout)
    return next(e for e in data["keys"] if e["key"] == KEY)


def test_dropin_sorts_after_a_later_after_reset(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {f"/{DROPINS}/zz-reset.conf": "[Unit]\nAfter=\n"})
    first = run("fix", "--root", str(root))
    assert first.returncode == 0, first.stdout + first.stderr
    written = sorted(p.name for p in (root / DROPINS).iterdir())
    assert written[-1] == "zz-sysctl-doctor-after-modules.conf", written
    assert "After=systemd-modules-load.service" in (root / DROPINS / written[-1]).read_text()
    assert f"{KEY}: applied at boot" in first.stdout
    assert boot_entry(root)["boot"]["applied"] is True
    again = run("fix", "--root", str(root))
    assert again.returncode == 0 and "still not" not in again.stdout
    assert again.stdout.startswith("nothing to change")


def test_old_dropin_voided_by_a_new_reset_gets_a_later_one(tmp_path: Path) -> None:
    """A drop-in from an earlier fix, then someone adds a reset that sorts after it."""
    root = copy_incident(tmp_path / "r", {
        f"/{DROPINS}/sysctl-doctor-after-modules.conf": "[Unit]\nAfter=systemd-modules-load.service\n",
        f"/{DROPINS}/zz-reset.conf": "[Unit]\nAfter=\n",
        "/etc/modules-load.d/sysctl-doctor.conf": "nf_conntrack\n",
    })
    assert boot_entry(root)["boot"]["applied"] is False
    proc = run("fix", "--root", str(root))
    assert "nothing to change" not in proc.stdout and proc.returncode == 0, proc.stdout + proc.stderr
    assert boot_entry(root)["boot"]["applied"] is True


def test_rerun_never_says_nothing_to_change_and_still_at_risk(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r")
    proc = run("fix", "--root", str(root), "--init", "sysvinit")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "already applies" not in proc.stdout
    assert "does not run at boot" in proc.stdout and "SD110" in proc.stdout
    assert f"{KEY}: still not applied at boot (sysctl-step-not-run)" in proc.stdout
    check = json.loads(run("check", "--root", str(root), "--init", "sysvinit", "--format", "json").stdout)
    assert "SD110" in [f["code"] for f in check["findings"]]
