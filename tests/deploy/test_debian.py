"""The Debian package: dpkg-buildpackage builds it from this checkout, lintian finds no error or warning,
and installing it into a fresh Debian 12 root (mmdebstrap, the package's Depends from the archive) gives
the command, the man pages, the completion, the enabled timer and the example.

Both artefacts are cached under $SYSCTL_DOCTOR_TEST_CACHE (default <repo>/.cache): the .deb keyed by a
hash of the files it is built from (about 10 s to build), the installed root keyed by the .deb's hash
(about 2 minutes)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List

import pytest

from cli.console import REPO
from deploy.image import prune_older


def _cache() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return Path(base) if base else REPO / ".cache"


def _source_files() -> List[str]:
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (REPO / f).exists() and not (REPO / f).is_dir())


def _key(files: List[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        path = REPO / name
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def package() -> Path:
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if shutil.which(tool) is None:
            pytest.skip(f"NEEDS {tool}: apt-get install dpkg-dev debhelper dh-python lintian")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("NEEDS a git checkout (the package is built from its files)")
    files = _source_files()
    out = _cache() / "deb" / _key(files)
    debs = sorted(out.glob("sysctl-doctor_*_all.deb"))
    if debs:
        return debs[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "sysctl-doctor"
        src.mkdir()
        subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", str(Path(tmp) / "src.tar")],
                       input="\0".join(files).encode(), check=True)
        subprocess.run(["tar", "-C", str(src), "-xf", str(Path(tmp) / "src.tar")], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        done = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=900)
        assert done.returncode == 0, done.stdout.decode()[-6000:]
        built = Path(tmp) / "out"
        built.mkdir()
        for f in Path(tmp).iterdir():
            if f.is_file() and f.name.startswith("sysctl-doctor_") and f.suffix in (".deb", ".changes", ".buildinfo"):
                shutil.move(str(f), built / f.name)
        built.rename(out)
    prune_older(out.parent, "?" * 16, keep=out)
    return sorted(out.glob("sysctl-doctor_*_all.deb"))[0]


def test_lintian_finds_no_error_or_warning(package: Path) -> None:
    done = subprocess.run(["lintian", "--fail-on", "error,warning", str(package)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=600)
    text = done.stdout.decode()
    assert done.returncode == 0, text
    assert not [ln for ln in text.splitlines() if ln.startswith(("E:", "W:"))], text


def test_the_package_holds_what_it_should(package: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(package)], stdout=subprocess.PIPE, check=True).stdout.decode()
    for path in ("./usr/bin/sysctl-doctor", "./usr/share/man/man1/sysctl-doctor-conntrack-logs.1.gz",
                 "./usr/share/bash-completion/completions/sysctl-doctor",
                 "./usr/share/zsh/vendor-completions/_sysctl-doctor",
                 "./usr/share/fish/vendor_completions.d/sysctl-doctor.fish",
                 "./lib/systemd/system/sysctl-doctor-textfile.timer",
                 "./lib/systemd/system/sysctl-doctor-textfile.service",
                 "./usr/share/doc/sysctl-doctor/examples/incident/etc/sysctl.conf",
                 "./usr/lib/python3/dist-packages/sysctl_doctor/data/providers.tsv"):
        assert f" {path}" in listing, path
    assert "__pycache__" not in listing and ".pyc" not in listing
    fields = subprocess.run(["dpkg-deb", "-f", str(package), "Depends"], stdout=subprocess.PIPE,
                            check=True).stdout.decode()
    for dep in ("python3-click", "python3-rich", "python3-pyelftools", "python3-zstandard"):
        assert dep in fields


@pytest.fixture(scope="module")
def installed(package: Path) -> Path:
    """A fresh Debian 12 root with the package installed by apt (its Depends from the archive)."""
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        pytest.skip("NEEDS ROOT and mmdebstrap")
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from slow.base_root import host_mirror

    digest = hashlib.sha256(package.read_bytes() + host_mirror().encode()).hexdigest()[:16]
    root = _cache() / "deb-root" / digest
    if (root / "usr/bin/sysctl-doctor").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        target = Path(tmp) / "root"
        done = subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=essential",
             "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount",
             "--include=man-db,bash-completion", f"--include={package}",
             "--dpkgopt=path-exclude=/usr/share/locale/*", "bookworm", str(target), host_mirror()],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1200)
        assert done.returncode == 0, done.stdout.decode()[-4000:]
        target.rename(root)
    prune_older(root.parent, "?" * 16, keep=root)
    return root


def _chroot(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "MANWIDTH": "100",
           "MAN_DISABLE_SECCOMP": "1"}
    return subprocess.run(["chroot", str(root), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=300)


def test_the_installed_command_checks_the_example(installed: Path) -> None:
    done = _chroot(installed, "sysctl-doctor", "check", "--root", "/usr/share/doc/sysctl-doctor/examples/incident")
    assert done.returncode == 1, done.stderr.decode()
    assert "SD101" in done.stdout.decode()


def test_the_installed_man_pages_are_found_by_name(installed: Path) -> None:
    for page in ("sysctl-doctor", "sysctl-doctor-check", "sysctl-doctor-conntrack-logs"):
        done = _chroot(installed, "man", page)
        assert done.returncode == 0, done.stderr.decode()
        assert f"{page} - " in " ".join(done.stdout.decode().split()), done.stdout.decode()[:300]


def test_the_installed_bash_completion_loads_on_demand(installed: Path) -> None:
    script = ("source /usr/share/bash-completion/bash_completion; __load_completion sysctl-doctor || exit 4; "
              'COMP_WORDS=(sysctl-doctor conntrack ""); COMP_CWORD=2; '
              '_sysctl_doctor_completion sysctl-doctor ""; printf "%s\\n" "${COMPREPLY[@]}"')
    done = _chroot(installed, "bash", "--norc", "--noprofile", "-c", script)
    assert done.returncode == 0, done.stderr.decode()
    assert set(done.stdout.decode().split()) == {"debug", "logs", "replay", "stats"}


def test_the_fleet_units_are_installed_not_enabled(installed: Path) -> None:
    """The units of `sysctl-doctor fleet install-units`, for /usr/bin; left disabled, since they write into
    prometheus-node-exporter's directory (`systemctl enable --now sysctl-doctor-textfile.timer`)."""
    from sysctl_doctor.fleet.shipped import unit_files

    for name, text in unit_files("/usr/bin/sysctl-doctor", "/var/lib/prometheus/node-exporter").items():
        assert (installed / "lib/systemd/system" / name).read_text() == text
    assert not (installed / "etc/systemd/system/timers.target.wants/sysctl-doctor-textfile.timer").exists()
    done = _chroot(installed, "sysctl-doctor", "check", "--root", "/usr/share/doc/sysctl-doctor/examples/incident",
                   "--format", "prometheus")
    assert done.returncode == 1 and 'sysctl_doctor_findings{code="SD101",severity="error"} 1' in done.stdout.decode()
