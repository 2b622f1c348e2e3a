"""check and fix on a plain Debian 12 root made by mmdebstrap (units in /usr/lib/systemd/system, /lib -> usr/lib).

The root is the one the qemu tier builds (cached under $SYSCTL_DOCTOR_TEST_CACHE/slow/bookworm-*/), or any
root named by $SYSCTL_DOCTOR_DEBIAN_ROOT. It is only read; fix runs on a copy of the parts boot ordering
depends on (/etc, systemd units, udev rules, sysctl.d, the kernel's module metadata).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"


def debian_root() -> Optional[Path]:
    explicit = os.environ.get("SYSCTL_DOCTOR_DEBIAN_ROOT")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("SYSCTL_DOCTOR_TEST_CACHE", Path(__file__).resolve().parents[2] / ".cache"))
    for candidate in sorted((cache / "slow").glob("bookworm-*")):
        if (candidate / ".complete").exists() and (candidate / "usr/lib/systemd/system").is_dir():
            return candidate
    return None


def require_debian_root() -> Path:
    """The Debian 12 root, built (mmdebstrap, about 2 minutes, cached) when no cached one exists yet; a skip
    with the reason only when it cannot be built here. Every test that reads it calls this, so none depends
    on another test file having built it first."""
    found = debian_root()
    if found is not None:
        return found
    from slow.base_root import MirrorUnreachable, ensure_base_root, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(f"NEEDS a mmdebstrap Debian 12 root, and it cannot be built here: {reason}")
    try:
        return ensure_base_root().path
    except MirrorUnreachable as exc:  # an outage, not a defect: one clear line
        pytest.skip(f"NEEDS the Debian mirror to build the Debian 12 root: {exc}")
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"building the mmdebstrap Debian 12 root failed: {exc}")


@pytest.fixture(scope="module")
def root() -> Path:
    return require_debian_root()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True)


def test_check_reads_the_real_debian_root(root: Path) -> None:
    proc = run("check", "--root", str(root), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = {e["key"]: e for e in json.loads(proc.stdout)["keys"]}
    # Debian 12's shipped sysctl.d: systemd's 50-pid-max.conf and procps' 99-protect-links.conf
    assert keys["kernel.pid_max"]["file"] == "/usr/lib/sysctl.d/50-pid-max.conf"
    assert keys["fs.protected_regular"]["boot"] == {"applied": True, "value": "2"}


def test_stock_debian_root_is_quiet_and_every_line_applies(root: Path, tmp_path: Path) -> None:
    """Issue 15 item 7: no SD111 (nor any warning) on the stock layout, each vendor line once with its fate; the
    same /etc and sysctl.d without systemd's binaries (a config-only tree) is still read as systemd-sysctl."""
    doc = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == [], doc["findings"]
    lines = [(a["file"], a["line"]) for a in doc["assignments"]]
    assert len(lines) == len(set(lines)) and all(not f.startswith("/lib/") for f, _ in lines), lines
    assert {a["fate"] for a in doc["assignments"]} == {"applied"}, doc["assignments"]
    assert all(k["fate"] == "applied" for k in doc["keys"])

    partial = tmp_path / "config-only"
    partial.mkdir()
    for link in ("lib", "sbin", "bin", "lib64"):
        if (root / link).is_symlink():
            os.symlink(os.readlink(root / link), partial / link)
    shutil.copytree(root / "etc", partial / "etc", symlinks=True)
    shutil.copytree(root / "usr/lib/sysctl.d", partial / "usr/lib/sysctl.d", symlinks=True)
    proc = run("check", "--root", str(partial))
    assert "sysctl flavour systemd" in proc.stdout and "SD111" not in proc.stdout, proc.stdout
    assert "although the root has no systemd-sysctl binary or unit" in proc.stdout, proc.stdout
    doc = json.loads(run("check", "--root", str(partial), "--format", "json").stdout)
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == [], doc["findings"]


def _copy_boot_parts(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for link in ("lib", "sbin", "bin", "lib64"):
        if (src / link).is_symlink():
            os.symlink(os.readlink(src / link), dest / link)
    shutil.copytree(src / "etc", dest / "etc", symlinks=True)
    for part in ("usr/lib/systemd/system", "usr/lib/udev/rules.d", "usr/lib/sysctl.d", "usr/lib/modules-load.d"):
        if (src / part).exists():
            shutil.copytree(src / part, dest / part, symlinks=True)
    shutil.copy2(src / "usr/lib/systemd/systemd", dest / "usr/lib/systemd/systemd")
    for kdir in (src / "usr/lib/modules").iterdir():
        out = dest / "usr/lib/modules" / kdir.name
        out.mkdir(parents=True)
        for meta in kdir.glob("modules.*"):
            if not meta.name.endswith(".bin"):
                shutil.copy2(meta, out / meta.name)
    return dest


def test_incident_on_debian_root_then_fix(root: Path, tmp_path: Path) -> None:
    copy = _copy_boot_parts(root, tmp_path / "debian")
    (copy / "etc/sysctl.d/90-nat.conf").write_text(f"{KEY} = 1\n")
    (copy / "etc/nftables.conf").write_text(
        (copy / "etc/nftables.conf").read_text().replace(
            "type filter hook input priority filter;\n", "type filter hook input priority filter;\n\t\tct state established,related accept\n", 1))
    wants = copy / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("/lib/systemd/system/nftables.service", wants / "nftables.service")  # what `systemctl enable` does

    proc = run("check", "--root", str(copy), "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": False, "value": "0"}
    sd101 = next(f for f in data["findings"] if f["code"] == "SD101")
    assert "nftables.service" in sd101["message"] and "/etc/nftables.conf:8 `ct state established,related accept`" in sd101["message"], sd101["message"]

    fixed = run("fix", "--root", str(copy))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    after = json.loads(run("check", "--root", str(copy), "--format", "json").stdout)
    assert next(e for e in after["keys"] if e["key"] == KEY)["boot"] == {"applied": True, "value": "1"}
    assert "nothing to change" in run("fix", "--root", str(copy)).stdout
