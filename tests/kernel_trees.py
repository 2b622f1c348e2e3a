"""Real Debian kernel module trees for tests: download with apt, unpack with dpkg-deb, run depmod.

Importable by any branch's tests:

    from kernel_trees import debian_kernel_tree, KernelTreeUnavailable
    tree = debian_kernel_tree("6.1")      # Path of a root holding lib/modules/<kver>/
    tree.kver                             # "6.1.0-56-amd64"

Series:
- "6.1":  bookworm's linux-image-amd64 from the host's configured apt sources (uncompressed .ko);
- "6.12": bookworm-backports from deb.debian.org via a *private* apt config in the cache dir
          (-o Dir::Etc::SourceList=… -o Dir::State::Lists=… -o Dir::Cache=…; the host's apt config
          is never touched); its modules are .ko.xz;
- "5.10": bullseye, the same way (uncompressed .ko; register_sysctl_paths and child tables).
Cache: $SYSCTL_DOCTOR_TEST_CACHE/test-kernels, else <repo>/.cache/test-kernels; a tree is reused once
complete (marker file). Debian's package ships no modules.dep (its postinst runs depmod): we run
`depmod -b` like the postinst does, when kmod is installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SERIES: Dict[str, Optional[str]] = {
    "6.1": None,  # host apt sources (bookworm)
    "6.12": "deb [signed-by={keyring}] http://deb.debian.org/debian bookworm-backports main",
    "5.10": "deb [signed-by={keyring}] http://deb.debian.org/debian bullseye main",
}


class KernelTreeUnavailable(Exception):
    """The tree cannot be fetched here (no apt, no network, no such package); tests skip loudly."""


class KernelTree(type(Path())):  # type: ignore[misc]
    kver: str


def cache_root() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "test-kernels"


def _run(cmd: List[str], cwd: Optional[Path] = None, timeout: int = 900) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise KernelTreeUnavailable(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelTreeUnavailable(f"{' '.join(cmd[:3])} timed out") from exc
    if proc.returncode != 0:
        raise KernelTreeUnavailable(f"{' '.join(cmd[:4])} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def _apt_options(series: str, base: Path) -> List[str]:
    line = SERIES[series]
    if line is None:
        return []
    d = base / f"apt-{series}"
    for sub in ("lists/partial", "cache/archives/partial", "sourceparts"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "sources.list").write_text(line.format(keyring=DEBIAN_KEYRING) + "\n")
    opts = [
        f"-o=Dir::Etc::SourceList={d}/sources.list",
        f"-o=Dir::Etc::SourceParts={d}/sourceparts",
        f"-o=Dir::State::Lists={d}/lists",
        f"-o=Dir::Cache={d}/cache",
    ]
    if not any((d / "lists").glob("*Packages*")):
        _run(["apt-get", *opts, "update"])
    return opts


def _package_name(opts: List[str]) -> str:
    out = _run(["apt-cache", *opts, "depends", "linux-image-amd64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split(":", 1)[1].strip()
    raise KernelTreeUnavailable("apt-cache: linux-image-amd64 depends on no linux-image-* package")


def debian_kernel_tree(series: str) -> KernelTree:
    """The unpacked root for `series` ("6.1" or "6.12"), fetched on first use."""
    if series not in SERIES:
        raise ValueError(f"unknown series {series!r} (have {', '.join(SERIES)})")
    base = cache_root()
    base.mkdir(parents=True, exist_ok=True)
    tree = base / "trees" / series
    marker = tree / ".complete"
    with open(base / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
                raise KernelTreeUnavailable("apt-get/dpkg-deb not available (not a Debian system)")
            opts = _apt_options(series, base)
            pkg = _package_name(opts)
            debs = base / "debs"
            debs.mkdir(exist_ok=True)
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if not found:
                _run(["apt-get", *opts, "download", pkg], cwd=debs)
                found = sorted(debs.glob(f"{pkg}_*.deb"))
                if not found:
                    raise KernelTreeUnavailable(f"apt-get download {pkg} left no .deb")
            tmp = Path(tempfile.mkdtemp(prefix=f".tree-{series}-", dir=base))
            try:
                _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
                kvers = sorted(p.name for p in (tmp / "lib/modules").iterdir())
                if not kvers:
                    raise KernelTreeUnavailable(f"{found[-1].name} holds no lib/modules/<kver>")
                depmod = shutil.which("depmod") or next((p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(p)), None)
                if depmod:
                    _run([depmod, "-b", str(tmp), kvers[-1]])
                (tmp / ".complete").write_text(kvers[-1] + "\n" + ("depmod\n" if depmod else "no-depmod\n"))
                if tree.exists():
                    shutil.rmtree(tree)
                tree.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, tree)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    result = KernelTree(tree)
    result.kver = marker.read_text().split("\n", 1)[0].strip()
    return result
