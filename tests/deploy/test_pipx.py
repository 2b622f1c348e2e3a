"""`pipx install .` and `pipx install '.[lab]'` in a clean HOME give a working command (the real pipx).

pip's download cache is shared ($SYSCTL_DOCTOR_TEST_CACHE/pip) to spare the registry; HOME, PIPX_HOME and
the bin directory are new for each install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from cli.console import INCIDENT, REPO


def _pipx_env(tmp: Path) -> Dict[str, str]:
    cache = Path(os.environ.get("SYSCTL_DOCTOR_TEST_CACHE") or REPO / ".cache") / "pip"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPX_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(tmp / "home"), PIPX_HOME=str(tmp / "pipx"), PIPX_BIN_DIR=str(tmp / "bin"),
               PIP_CACHE_DIR=str(cache), PATH="/usr/local/bin:/usr/bin:/bin")
    env.pop("SYSCTL_DOCTOR_DEBUG", None)
    (tmp / "home").mkdir()
    return env


def _install(tmp: Path, spec: str) -> Path:
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.skip("NEEDS pipx: apt-get install pipx")
    env = _pipx_env(tmp)
    done = subprocess.run([pipx, "install", "--pip-args", f"-c {REPO / 'constraints.txt'}", spec],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600, cwd=tmp)
    assert done.returncode == 0, done.stdout.decode()
    command = tmp / "bin" / "sysctl-doctor"
    assert command.exists(), done.stdout.decode()
    return command


def _run(command: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(command), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(command.parent.parent / "home")})


def test_pipx_install_gives_a_working_check(tmp_path: Path) -> None:
    command = _install(tmp_path, str(REPO))
    done = _run(command, "check", "--root", str(INCIDENT))
    assert done.returncode == 1, done.stderr.decode()
    assert "SD101" in done.stdout.decode()
    version = _run(command, "--version").stdout.decode()
    assert version.startswith("sysctl-doctor, version ")
    # pipx's pip built a wheel from the checkout: with the C accelerators where cc and that Python's headers are
    python = tmp_path / "pipx" / "venvs" / "sysctl-doctor" / "bin" / "python"
    include = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    if shutil.which("cc") and os.path.exists(os.path.join(include, "Python.h")):
        assert "compiled accelerators: conntrack logs, conntrack replay\n" in version, version
    if os.geteuid() == 0 and shutil.which("nft"):
        lab = _run(command, "lab", "--scenario", "seq-over-upper-bound", "--mitigation", "none")
        assert lab.returncode == 2 and "the lab needs pyroute2" in lab.stderr.decode(), lab.stderr.decode()


def test_pipx_install_with_the_lab_extra_runs_the_lab(tmp_path: Path) -> None:
    command = _install(tmp_path, f"{REPO}[lab]")
    assert _run(command, "check", "--root", str(INCIDENT)).returncode == 1
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("NEEDS ROOT and nft to run the lab (the install itself passed)")
    lab = _run(command, "lab", "--scenario", "seq-over-upper-bound", "--mitigation", "none")
    assert lab.returncode == 0, lab.stdout.decode() + lab.stderr.decode()
