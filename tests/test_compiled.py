"""Every compiled accelerator pyproject.toml declares is built where a C compiler and Python's headers are
(CI must not silently test only the pure-Python fallbacks), and SYSCTL_DOCTOR_PURE_PYTHON turns them off."""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
from pathlib import Path
from typing import List

import pytest

from sysctl_doctor.compiled import ACCELERATORS, PURE_PYTHON_ENV, load_accelerator, pure_python_forced

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared_accelerators() -> List[str]:
    """The ext-modules names of pyproject.toml (read as text: tomllib is Python 3.11+)."""
    return re.findall(r'\{\s*name\s*=\s*"([\w.]+)"', PYPROJECT.read_text(encoding="utf-8"))


def test_the_accelerators_are_declared() -> None:
    assert declared_accelerators() == ["sysctl_doctor.conntrack._logscan", "sysctl_doctor.conntrack._replayfast"]


@pytest.mark.parametrize("module", declared_accelerators())
def test_each_accelerator_is_built_where_a_compiler_is(module: str) -> None:
    if pure_python_forced():
        pytest.skip(f"{PURE_PYTHON_ENV} is set")
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which("cc") is None or not os.path.exists(header):
        pytest.skip("no C compiler or no Python.h: the pure-Python code is the one installed")
    assert load_accelerator(module) is not None, (
        f"{module} was not built although cc and {header} exist: reinstall (pip install -e .) and read the "
        "build log (ext-modules in pyproject.toml)")


@pytest.mark.parametrize("module", declared_accelerators())
def test_pure_python_turns_each_accelerator_off(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    assert load_accelerator(module) is None


def test_version_says_which_accelerators_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sysctl_doctor.cli import cli

    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    out = CliRunner().invoke(cli, ["--version"]).output.splitlines()
    assert out[0].startswith("sysctl-doctor, version ")
    assert out[1] == f"compiled accelerators: none ({PURE_PYTHON_ENV} is set)"
    monkeypatch.delenv(PURE_PYTHON_ENV)
    built = [m for m in declared_accelerators() if load_accelerator(m) is not None]
    line = CliRunner().invoke(cli, ["--version"]).output.splitlines()[1]
    assert line == ("compiled accelerators: none (not built: pure Python)" if not built else
                    "compiled accelerators: " + ", ".join(w for m, w in ACCELERATORS.items() if m in built))
