"""Real consumers for the fleet outputs: promtool, node_exporter, Prometheus, the SARIF multitool.

Each is found where .ci/run installs it (Debian packages; the multitool from npm under .cache/npm);
a test skips loudly naming the package when one is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
SARIF_SCHEMA = REPO.parent / "shared" / "schemas" / "sarif-schema-2.1.0.json"
NPM_DIR = Path(os.environ.get("SYSCTL_DOCTOR_NPM_DIR", REPO / ".cache" / "npm"))


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"NEEDS {binary}: apt-get install {package}")
    return path


def multitool() -> str:
    launcher = NPM_DIR / "node_modules" / "@microsoft" / "sarif-multitool-linux" / "Sarif.Multitool"
    if not launcher.exists():
        pytest.skip(f"NEEDS the SARIF multitool: npm install --prefix {NPM_DIR} @microsoft/sarif-multitool")
    return str(launcher)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sysctl_doctor(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 300), **kwargs)


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]
