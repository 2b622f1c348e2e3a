"""The suite survives a kernel ABI bump in the archive; tools/gen_known_keys.py --check reports it.

A local apt repository (dpkg-deb + dpkg-scanpackages, `deb [trusted=yes] file:…`) serves what Debian
will serve one day: linux-image-amd64 depending on a newer ABI, linux-image-6.1.0-99-amd64, whose
package holds two real 6.1 modules filed under the new release. The resolver in tests/kernel_trees.py
and the maintainer check read it through the real apt-get/apt-cache, nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NEW_ABI = "6.1.0-99-amd64"
NEW_VERSION = "6.1.999-1"
MODULES = ("kernel/net/netfilter/nf_conntrack.ko", "kernel/net/bridge/br_netfilter.ko")


def _deb(workdir: Path, out: Path, name: str, version: str, depends: str = "", files=()) -> None:
    pkg = workdir / name
    (pkg / "DEBIAN").mkdir(parents=True)
    control = [f"Package: {name}", f"Version: {version}", "Architecture: amd64",
               "Maintainer: sysctl-doctor tests <tests@invalid>", f"Description: test package {name}"]
    if depends:
        control.insert(3, f"Depends: {depends}")
    (pkg / "DEBIAN/control").write_text("\n".join(control) + "\n")
    for src, rel in files:
        dest = pkg / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "--build", str(pkg), str(out / f"{name}_{version}_amd64.deb")],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def bumped_repo(tmp_path_factory, tree_61):
    """A flat apt repository serving a newer 6.1 ABI; the source line for it."""
    for tool in ("dpkg-deb", "dpkg-scanpackages", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip(f"NEEDS {tool}: apt-get install dpkg-dev apt")
    base = tmp_path_factory.mktemp("bumped")
    repo = base / "repo"
    repo.mkdir()
    src_dir = Path(tree_61) / "lib/modules" / tree_61.kver
    files = [(src_dir / m, f"lib/modules/{NEW_ABI}/{m}") for m in MODULES]
    _deb(base / "build", repo, f"linux-image-{NEW_ABI}", NEW_VERSION, files=files)
    _deb(base / "build", repo, "linux-image-amd64", NEW_VERSION, depends=f"linux-image-{NEW_ABI}")
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, check=True,
                              capture_output=True, text=True).stdout
    (repo / "Packages").write_text(packages)
    return f"deb [trusted=yes] file:{repo} ./", tree_61


def test_resolver_falls_back_to_the_current_package_when_the_pin_is_gone(bumped_repo, tmp_path, monkeypatch):
    """Only the local repository: the committed pin (6.1.0-56) is not served, the newer ABI is used."""
    import kernel_trees

    line, _ = bumped_repo
    monkeypatch.setenv("SYSCTL_DOCTOR_TEST_CACHE", str(tmp_path / "cache"))
    opts = kernel_trees.apt_options("6.1", update=True, sources=[line])
    res = kernel_trees.resolve("6.1", opts)
    assert res.pinned == kernel_trees.committed_pin("6.1")
    assert res.package == kernel_trees.PackagePin(f"linux-image-{NEW_ABI}", NEW_VERSION)
    assert not res.uses_pin
    assert "no longer served" in res.note and NEW_ABI in res.note
    tree = kernel_trees._tree_for(kernel_trees.cache_root(), res.package, opts)
    assert (tree / "lib/modules" / NEW_ABI / MODULES[0]).exists()
    assert (tree / "lib/modules" / NEW_ABI / "modules.dep").exists()  # depmod ran, as the postinst would


def test_the_pin_wins_while_it_is_served(bumped_repo, tmp_path, monkeypatch):
    """The real archive plus the local repository: linux-image-amd64 now points at 6.1.0-99, the tests keep 6.1.0-56."""
    import kernel_trees

    line, tree_61 = bumped_repo
    monkeypatch.setenv(kernel_trees.EXTRA_ENV, json.dumps({"6.1": line}))
    opts = kernel_trees.apt_options("6.1", update=True)
    assert kernel_trees.current_package(opts).name == f"linux-image-{NEW_ABI}"
    res = kernel_trees.resolve("6.1", opts)
    assert res.uses_pin and res.note == ""
    assert res.package == tree_61.package


def test_suite_passes_and_check_reports_the_drift(bumped_repo, tmp_path):
    """In the bumped world the known-keys comparison still passes, and `--check` exits 1 naming the change."""
    import kernel_trees

    line, tree_61 = bumped_repo
    cache = tmp_path / "cache"
    debs = cache / "test-kernels" / "debs"
    debs.mkdir(parents=True)
    for deb in (kernel_trees.cache_root() / "debs").glob(f"{tree_61.package.name}_*.deb"):
        os.symlink(deb, debs / deb.name)  # no second download; the resolution and unpacking run for real
    env = dict(os.environ, SYSCTL_DOCTOR_TEST_CACHE=str(cache), **{kernel_trees.EXTRA_ENV: json.dumps({"6.1": line})})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/kernel/test_known_keys.py::test_committed_list_matches_a_fresh_scan[6.1]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout

    check = subprocess.run([sys.executable, "tools/gen_known_keys.py", "--check", "6.1"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 1, check.stdout + check.stderr
    out = check.stdout
    assert f"the archive now serves linux-image-{NEW_ABI}={NEW_VERSION}" in out
    assert "- sctp\tnet/sctp/rto_min" in out  # not in the two-module package: it would go away
    assert "nf_conntrack\tnet/netfilter/nf_conntrack_tcp_be_liberal" not in out  # kept
    assert "regenerate: .venv/bin/python tools/gen_known_keys.py 6.1" in out
    assert (REPO / "src/sysctl_doctor/data/known_keys/6.1.tsv").read_text().count(str(tree_61.package)) == 1


def test_check_answers_for_the_real_archive(bumped_repo):
    """--check on 6.12 (bookworm-backports, no local repository): exit 0 and "current" while the archive's
    newest package is the committed one, exit 1 naming the newer one once Debian moves on."""
    import kernel_trees

    opts = kernel_trees.apt_options("6.12", update=True)
    current = kernel_trees.current_package(opts)
    proc = subprocess.run([sys.executable, "tools/gen_known_keys.py", "--check", "6.12"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    if str(current) == str(kernel_trees.committed_pin("6.12")):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"6.12: current ({current})" in proc.stdout
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"the archive now serves {current}" in proc.stdout
