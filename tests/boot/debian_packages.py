"""Real Debian 12 packages for fixture roots: `package_tree("ifupdown")` is the unpacked .deb (fetched once with
`apt-get download` into $SYSCTL_DOCTOR_TEST_CACHE/debs, unpacked under .../deb-pkg); `install_into(root, tree)`
copies it into a merged-/usr root (its /lib, /bin, /sbin go to /usr) the way dpkg would place the files."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cache() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return Path(base) if base else REPO / ".cache"


def _deb(name: str) -> Optional[Path]:
    debs = _cache() / "debs"
    found = sorted(debs.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        return None
    debs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None
    found = sorted(debs.glob(f"{name}_*.deb"))
    return found[-1] if found else None


def package_tree(name: str) -> Path:
    """The unpacked files of Debian package `name` (skips the test when it cannot be fetched)."""
    deb = _deb(name)
    if deb is None or shutil.which("dpkg-deb") is None:
        pytest.skip(f"NEEDS the Debian package {name} (apt-get download {name}) and dpkg-deb")
    tree = _cache() / "deb-pkg" / deb.stem
    if (tree / ".complete").exists():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{deb.stem}-", dir=tree.parent))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, capture_output=True)
        (tmp / ".complete").write_text(deb.name + "\n")
        if tree.exists():
            shutil.rmtree(tree)
        os.rename(tmp, tree)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return tree


def install_into(root: Path, tree: Path) -> None:
    """Copy a package's files into `root`, following the root's /lib -> usr/lib style links."""
    for src in tree.rglob("*"):
        if src.is_dir() or src.name == ".complete":
            continue
        rel = src.relative_to(tree)
        parts = list(rel.parts)
        if parts[0] in ("lib", "bin", "sbin") and (root / parts[0]).is_symlink():
            parts = ["usr"] + parts
        dest = root.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            os.symlink(os.readlink(src), dest)
        else:
            shutil.copy2(src, dest)
