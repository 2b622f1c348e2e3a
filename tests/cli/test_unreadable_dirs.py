"""Issue 16 item 10: an unreadable directory is not a missing one.

Found as user `nobody` with the root's usr/lib/systemd/system at mode 000: the flavour flipped to procps,
SD101 (error) became SD102 (warning) and `check` exited 0 instead of 1. Now every command that reads the
root stops with exit 2 and names the directory and the reason (README "Exit codes").
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

from cli.console import INCIDENT
from unprivileged import require_nobody, run_as_nobody

ERROR = 2


def _as_nobody(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_as_nobody(args, cwd, text=True)


@pytest.fixture
def base(require_root: None) -> Iterator[Path]:
    require_nobody()
    where = Path(tempfile.mkdtemp(prefix="sd-unreadable-dir-"))
    where.chmod(0o755)
    shutil.copytree(INCIDENT, where / "root", symlinks=True)
    try:
        yield where
    finally:
        for path in [where, *where.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(where, ignore_errors=True)


def test_readable_root_as_nobody_is_the_usual_answer(base: Path) -> None:
    result = _as_nobody(["check", "--root", str(base / "root")], base)
    assert result.returncode == 1, result.stderr
    assert "sysctl flavour systemd" in result.stdout and "error SD101" in result.stdout


@pytest.mark.parametrize("args", [
    ["check"], ["check", "--format", "json"], ["show"], ["explain", "net.netfilter.nf_conntrack_tcp_be_liberal"],
    ["fix", "--dry-run"], ["fix"],
], ids=lambda a: " ".join(a))
def test_unreadable_unit_directory_is_exit_2_naming_it(base: Path, args: List[str]) -> None:
    root = base / "root"
    (root / "usr/lib/systemd/system").chmod(0)
    result = _as_nobody([*args, "--root", str(root)], base)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.returncode == ERROR, (result.returncode, result.stdout, result.stderr)
    assert "/usr/lib/systemd/system" in result.stderr and "Permission denied" in result.stderr
    assert result.stdout == ""  # no (wrong) answer: not procps, not SD102
    assert not (root / "etc/modules-load.d/sysctl-doctor.conf").exists()


def test_unreadable_sysctl_d_directory_is_exit_2(base: Path) -> None:
    root = base / "root"
    (root / "usr/lib/sysctl.d").chmod(0)
    for args in (["show"], ["check"]):
        result = _as_nobody([*args, "--root", str(root)], base)
        assert result.returncode == ERROR, (args, result.stdout, result.stderr)
        assert "/usr/lib/sysctl.d: cannot list: Permission denied" in result.stderr


def test_unreadable_files_are_one_kind_of_note_each_naming_file_and_reason(base: Path) -> None:
    """Issue 10: one policy for unreadable files. A unit file, a udev rules file, the nft ruleset, an
    initramfs module list and a GRUB drop-in that exist but cannot be read are skipped (as systemd, udev
    and kmod skip them) and each is a note `file: cannot read: reason` - none is dropped silently."""
    # (the persisted nft ruleset is read for the NAT facts after the boot readers: the same note)
    root = base / "root"
    (root / "etc/initramfs-tools").mkdir(parents=True)
    (root / "etc/initramfs-tools/modules").write_text("nf_conntrack\n")
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/default/grub.d/50-x.cfg").write_text('GRUB_CMDLINE_LINUX="quiet"\n')
    unreadable = ["/usr/lib/systemd/system/systemd-modules-load.service", "/usr/lib/udev/rules.d/99-systemd.rules",
                  "/etc/nftables.conf", "/etc/initramfs-tools/modules", "/etc/default/grub.d/50-x.cfg"]
    for inside in unreadable:
        (root / inside.lstrip("/")).chmod(0)
    result = _as_nobody(["check", "--root", str(root)], base)
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), (result.returncode, result.stderr)
    notes = result.stdout.split("\nNotes\n", 1)[1]
    for inside in unreadable:
        assert f"{inside}: cannot read: Permission denied" in notes, (inside, notes)
