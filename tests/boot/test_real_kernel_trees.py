"""Predictions on the incident root with real Debian kernel module files (ELF sysctl tables, modules.dep).

The trees come from the kernel helper's tests/kernel_trees.py (apt-get download of Debian's
linux-image packages, cached); the netfilter part of a tree is copied into the root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boot.rootfs import copy_incident

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"
PARTS = ("kernel/net/netfilter", "kernel/net/ipv4/netfilter", "kernel/net/ipv6/netfilter", "kernel/lib")


def tree_root(tmp_path: Path, series: str, extra=None) -> Path:
    try:
        from kernel_trees import KernelTreeUnavailable, debian_kernel_tree
    except ImportError:
        pytest.skip("NEEDS tests/kernel_trees.py (kernel branch)")
    try:
        tree = debian_kernel_tree(series)
    except KernelTreeUnavailable as exc:
        pytest.skip(f"NEEDS Debian's {series} kernel package: {exc}")
    root = copy_incident(tmp_path / "root", extra)
    shutil.rmtree(root / "usr/lib/modules")
    src = next((tree / "lib/modules").iterdir())
    dest = root / "usr/lib/modules" / src.name
    dest.mkdir(parents=True)
    for meta in src.glob("modules.*"):
        if not meta.name.endswith(".bin"):
            shutil.copy2(meta, dest / meta.name)
    for part in PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dest / part)
    return root


def check_json(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_elf_tree_typo_gets_a_suggestion_and_incident_still_races(tmp_path: Path) -> None:
    root = tree_root(tmp_path, "6.1", {"/etc/sysctl.d/60-typo.conf": "net.netfilter.nf_conntrack_tcp_be_liberall = 1\n"})
    data = check_json(root)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["provider"] == {"kind": "module", "module": "nf_conntrack"}
    assert entry["boot"] == {"applied": False, "value": "0"}
    typo = next(f for f in data["findings"] if f["code"] == "SD104")
    assert typo["key"] == "net.netfilter.nf_conntrack_tcp_be_liberall"
    assert f"did you mean {KEY}?" in typo["message"]


def test_real_5_10_tree_udev_rule_is_not_guaranteed(tmp_path: Path) -> None:
    rule = ('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
            'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"\n')
    root = tree_root(tmp_path, "5.10", {"/etc/udev/rules.d/90-conntrack.rules": rule})
    data = check_json(root)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["boot"]["applied"] is False and "SD103" in entry["findings"]
