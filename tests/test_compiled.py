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

from sysctl_doctor.compiled import PURE_PYTHON_ENV, load_accelerator, pure_python_forced

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
