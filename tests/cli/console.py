"""Run the real console script (`sysctl-doctor` next to this interpreter) as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
INCIDENT = REPO / "examples" / "incident"


def console_script() -> Path:
    script = Path(sys.executable).parent / "sysctl-doctor"
    if not script.exists():
        pytest.skip(f"NEEDS the installed console script {script}: pip install -e . into this venv")
    return script


def run_cli(args: List[str], cwd: Optional[Path] = None, stdin: Optional[bytes] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SYSCTL_DOCTOR_DEBUG", None)  # the user's view: never a traceback
    return subprocess.run([str(console_script()), *args], cwd=cwd, input=stdin if stdin is not None else b"",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
