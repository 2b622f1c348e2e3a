"""Real Debian kernel module trees for tests: download with apt, unpack with dpkg-deb, run depmod.

Importable by any branch's tests:

    from kernel_trees import debian_kernel_tree, KernelTreeUnavailable
    tree = debian_kernel_tree("6.1")      # Path of a root holding lib/modules/<kver>/
    tree.kver                             # "6.1.0-56-amd64"
    tree.package                          # PackagePin("linux-image-6.1.0-56-amd64", "6.1.192-2")

Reproducible: each series is pinned to the exact package its committed data were generated from — the
`# source` line of src/sysctl_doctor/data/known_keys/<series>.tsv (one place; `tools/gen_known_keys.py`
moves it). While the archive still serves that package version, the tests use it, whatever is newest
today; when it does not, they fall back to what linux-image-amd64 depends on now and say so (tests that
compare against committed data then compare keys, not version strings).

Series and where they come from (always a *private* apt config under the cache dir: the host's apt
state is never read or touched, `-o Dir::Etc::SourceList=… -o Dir::State::Lists=… -o Dir::Cache=…`):
- "6.1":  bookworm + bookworm-security (uncompressed .ko);
- "6.12": bookworm-backports (.ko.xz);
- "5.10": bullseye (uncompressed .ko; register_sysctl_paths and child tables).
`SYSCTL_DOCTOR_KERNEL_APT_EXTRA` (JSON {"6.1": "deb [trusted=yes] file:/repo ./"}) adds a source line to
a series: the seam the version-bump test uses to make the archive serve a newer ABI.

Cache: $SYSCTL_DOCTOR_TEST_CACHE/test-kernels, else <repo>/.cache/test-kernels; a tree is reused once
complete (marker file), keyed by package and version. Debian's package ships no modules.dep (its postinst
runs depmod): we run `depmod -b` like the postinst does, when kmod is installed. Network steps are tried
three times; a mirror that stays unreachable is one clear line in KernelTreeUnavailable.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "src" / "sysctl_doctor" / "data" / "known_keys"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
SERIES: Dict[str, Tuple[str, ...]] = {
    "6.1": (f"deb [signed-by={{keyring}}] {MIRROR} bookworm main",
            f"deb [signed-by={{keyring}}] {SECURITY} bookworm-security main"),
    "6.12": (f"deb [signed-by={{keyring}}] {MIRROR} bookworm-backports main",),
    "5.10": (f"deb [signed-by={{keyring}}] {MIRROR} bullseye main",),
}
# Where a suite goes once Debian retires it from the main mirror (bullseye's LTS ended in 2026): tried when
# the lines above fail to update. archive.debian.org's Release files are no longer refreshed.
ARCHIVED: Dict[str, Tuple[str, ...]] = {
    "5.10": ("deb [signed-by={keyring} check-valid-until=no] http://archive.debian.org/debian bullseye main",),
}
EXTRA_ENV = "SYSCTL_DOCTOR_KERNEL_APT_EXTRA"
TRIES = 3


class KernelTreeUnavailable(Exception):
    """The tree cannot be fetched here (no apt, no network, no such package); tests skip loudly."""


@dataclass(frozen=True)
class PackagePin:
    """One Debian binary package at one version: "linux-image-6.1.0-56-amd64" "6.1.192-2"."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def abi(self) -> str:
        """The kernel release the package installs: "6.1.0-56-amd64"."""
        return self.name[len("linux-image-"):] if self.name.startswith("linux-image-") else self.name


@dataclass(frozen=True)
class Resolution:
    """Which package a series' tests use, and why."""

    series: str
    package: PackagePin
    pinned: Optional[PackagePin]  # the committed pin (None: no data file names one)
    current: Optional[PackagePin]  # what linux-image-amd64 depends on in the archive now (None: not asked)
    note: str  # "" when the pin is used; otherwise why not, in one line

    @property
    def uses_pin(self) -> bool:
        return self.pinned is not None and self.package == self.pinned


class KernelTree(type(Path())):  # type: ignore[misc]
    kver: str
    package: PackagePin
    note: str


def cache_root() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "test-kernels"


def committed_pin(series: str) -> Optional[PackagePin]:
    """The package data/known_keys/<series>.tsv was generated from (its `# source` line)."""
    path = DATA / f"{series}.tsv"
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                if line.startswith("# source\t"):
                    name, _, version = line.split("\t", 1)[1].strip().partition("=")
                    if name and version:
                        return PackagePin(name, version)
    except OSError:
        return None
    return None


def _run(cmd: List[str], cwd: Optional[Path] = None, timeout: int = 900, tries: int = 1) -> str:
    """Run `cmd`; a network step (`tries` > 1) is retried with a growing pause before giving up."""
    last = ""
    for attempt in range(1, tries + 1):
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise KernelTreeUnavailable(f"{cmd[0]} is not installed") from exc
        except subprocess.TimeoutExpired:
            last = f"timed out after {timeout} s"
        else:
            if proc.returncode == 0:
                return proc.stdout
            last = (proc.stderr.strip() or proc.stdout.strip())[-300:]
        if attempt < tries:
            time.sleep(2 * attempt)
    what = " ".join(c for c in cmd if not c.startswith("-o="))
    if tries > 1:
        raise KernelTreeUnavailable(f"Debian mirror unreachable? `{what}` failed {tries} times: {last}")
    raise KernelTreeUnavailable(f"`{what}` failed: {last}")


def _source_lines(series: str) -> List[str]:
    lines = [line.format(keyring=DEBIAN_KEYRING) for line in SERIES[series]]
    extra = os.environ.get(EXTRA_ENV)
    if extra:
        try:
            add = json.loads(extra).get(series)
        except (ValueError, AttributeError) as exc:
            raise KernelTreeUnavailable(f"{EXTRA_ENV} is not a JSON object of series -> source line: {exc}")
        if add:
            lines += [add] if isinstance(add, str) else list(add)
    return lines


def apt_options(series: str, update: bool = False, sources: Optional[List[str]] = None) -> List[str]:
    """apt -o options for a private apt state holding `sources` (default: the series' lines).

    The state directory is named after the sources, so an extra test repository never mixes into the
    lists of the real series. `update`: refresh the lists even when some are cached."""
    lines = sources if sources is not None else _source_lines(series)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    d = cache_root() / f"apt-{series}-{digest}"
    for sub in ("lists/partial", "cache/archives/partial", "sourceparts", "preferences.d"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "sources.list").write_text("\n".join(lines) + "\n")
    opts = [
        f"-o=Dir::Etc::SourceList={d}/sources.list",
        f"-o=Dir::Etc::SourceParts={d}/sourceparts",
        f"-o=Dir::Etc::PreferencesParts={d}/preferences.d",
        f"-o=Dir::State::Lists={d}/lists",
        f"-o=Dir::Cache={d}/cache",
        "-o=Acquire::Retries=3",
        "-o=APT::Sandbox::User=root",  # the private state dirs belong to the test user, not _apt
    ]
    if update or not any((d / "lists").glob("*Packages*")):
        try:
            _run(["apt-get", *opts, "--error-on=any", "update"], tries=TRIES)  # plain update exits 0 offline
        except KernelTreeUnavailable as exc:
            if sources is not None or series not in ARCHIVED:
                raise
            archived = [line.format(keyring=DEBIAN_KEYRING) for line in ARCHIVED[series]]
            try:
                return apt_options(series, update, archived)
            except KernelTreeUnavailable as again:
                raise KernelTreeUnavailable(f"{exc}; the archive fallback too: {again}") from None
    return opts


def _served_versions(opts: List[str], name: str) -> List[str]:
    """Versions of package `name` the archive serves (apt-cache madison), newest first."""
    try:
        out = _run(["apt-cache", *opts, "madison", name])
    except KernelTreeUnavailable:
        return []
    return [cols[1].strip() for cols in (line.split("|") for line in out.splitlines()) if len(cols) >= 2]


def current_package(opts: List[str]) -> PackagePin:
    """What linux-image-amd64 (at its candidate version) depends on now."""
    out = _run(["apt-cache", *opts, "show", "linux-image-amd64"])
    best: Optional[Tuple[str, str]] = None
    for record in out.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", record, re.M))
        dep = re.match(r"(linux-image-[^\s,(]+)", fields.get("Depends", ""))
        if "Version" in fields and dep and (best is None or _newer(fields["Version"], best[0])):
            best = (fields["Version"], dep.group(1))
    if best is None:
        raise KernelTreeUnavailable("apt-cache: linux-image-amd64 depends on no linux-image-* package")
    versions = _served_versions(opts, best[1])
    if not versions:
        raise KernelTreeUnavailable(f"apt-cache: {best[1]} is not served")
    return PackagePin(best[1], versions[0])


def _newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def resolve(series: str, opts: Optional[List[str]] = None, pin: Optional[PackagePin] = None) -> Resolution:
    """The package `series` uses: the committed pin while served, else the current one (with a note)."""
    if series not in SERIES:
        raise ValueError(f"unknown series {series!r} (have {', '.join(SERIES)})")
    if opts is None:
        opts = apt_options(series)
    pinned = pin if pin is not None else committed_pin(series)
    if pinned is not None and pinned.version in _served_versions(opts, pinned.name):
        return Resolution(series, pinned, pinned, None, "")
    current = current_package(opts)
    if pinned is None:
        note = f"data/known_keys/{series}.tsv names no package: using the current {current}"
    else:
        note = f"the pinned {pinned} is no longer served: using the current {current}"
    return Resolution(series, current, pinned, current, note)


_REFRESHED: set = set()


def _tree_dir(base: Path, pkg: PackagePin) -> Path:
    return base / "trees" / re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{pkg.name}_{pkg.version}")


def _cached_tree(base: Path, pkg: PackagePin) -> Optional[Path]:
    tree = _tree_dir(base, pkg)
    return tree if (tree / ".complete").exists() else None


def _tree_for(base: Path, pkg: PackagePin, opts: List[str]) -> Path:
    """The unpacked, depmod'ed tree of `pkg` under the cache (fetched on first use)."""
    tree = _tree_dir(base, pkg)
    safe = tree.name
    if (tree / ".complete").exists():
        return tree
    debs = base / "debs"
    debs.mkdir(exist_ok=True)
    deb_name = re.sub(r"^\d+:", "", pkg.version)  # apt drops the epoch from file names (it writes %3a)
    found = sorted(debs.glob(f"{pkg.name}_{deb_name}_*.deb")) + sorted(debs.glob(f"{pkg.name}_*%3a{deb_name}_*.deb"))
    if not found:
        _run(["apt-get", *opts, "download", str(pkg)], cwd=debs, tries=TRIES)
        found = sorted(debs.glob(f"{pkg.name}_*.deb"))
        found = [f for f in found if deb_name in f.name] or found
        if not found:
            raise KernelTreeUnavailable(f"apt-get download {pkg} left no .deb")
    tmp = Path(tempfile.mkdtemp(prefix=f".tree-{safe}-", dir=base))
    try:
        _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
        moddir = tmp / "lib/modules"
        kvers = sorted(p.name for p in moddir.iterdir()) if moddir.is_dir() else []
        if not kvers:
            raise KernelTreeUnavailable(f"{found[-1].name} holds no lib/modules/<kver>")
        depmod = shutil.which("depmod") or next((p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(p)), None)
        if depmod:
            _run([depmod, "-b", str(tmp), kvers[-1]])
        (tmp / ".complete").write_text(f"{kvers[-1]}\n{'depmod' if depmod else 'no-depmod'}\n{pkg}\n")
        if tree.exists():
            shutil.rmtree(tree)
        tree.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, tree)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return tree


def debian_kernel_tree(series: str) -> KernelTree:
    """The unpacked root for `series` ("5.10", "6.1" or "6.12"), fetched on first use."""
    if series not in SERIES:
        raise ValueError(f"unknown series {series!r} (have {', '.join(SERIES)})")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise KernelTreeUnavailable("apt-get/dpkg-deb not available (not a Debian system)")
    base = cache_root()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pinned = committed_pin(series)
        cached = _cached_tree(base, pinned) if pinned is not None else None
        if cached is not None:  # the pinned tree is here already: no need to ask the archive
            tree, res = cached, Resolution(series, pinned, pinned, None, "")
        else:
            opts = apt_options(series)
            if pinned is not None and series not in _REFRESHED and pinned.version not in _served_versions(opts, pinned.name):
                # cached lists can predate (or outlive) the pin: decide on fresh ones, once per process
                opts = apt_options(series, update=True)
                _REFRESHED.add(series)
            res = resolve(series, opts)
            if res.note:
                print(f"kernel_trees: {series}: {res.note}", file=sys.stderr)
            tree = _tree_for(base, res.package, opts)
    result = KernelTree(tree)
    result.kver = (tree / ".complete").read_text().split("\n", 1)[0].strip()
    result.package = res.package
    result.note = res.note
    return result
