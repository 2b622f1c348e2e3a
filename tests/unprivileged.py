"""Run the real command line as user `nobody` (uid 65534): root reads every file, so unreadable input can
only be tested unprivileged.

The venv's console script is used when `nobody` can run it. In a clone under a directory `nobody` cannot
search (mktemp's 0700, as CI makes it) a readable copy of the package is run by the distribution's Python
instead (its click, rich, pyelftools and zstandard come from Debian; scripts/test.sh installs them), so the
tests still run rather than skip.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from cli.console import REPO, console_script

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"


@lru_cache(maxsize=None)
def _command() -> Tuple[Tuple[str, ...], Optional[str]]:
    """(argv prefix, None) or ((), why it cannot run)."""
    if shutil.which("setpriv") is None:
        return (), "NEEDS setpriv(1) to drop to an unprivileged user (root reads every file)"
    script = console_script()
    if subprocess.run([*NOBODY, "test", "-x", str(script)]).returncode == 0:
        return (str(script),), None
    copy = Path(tempfile.mkdtemp(prefix="sd-nobody-src-"))
    atexit.register(shutil.rmtree, copy, True)
    shutil.copytree(REPO / "src" / "sysctl_doctor", copy / "sysctl_doctor",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([*NOBODY, SYSTEM_PYTHON, "-c", "import sysctl_doctor.cli"], env=env,
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        return (), (f"NEEDS {script} to be executable by nobody (uid 65534), or {SYSTEM_PYTHON} with "
                    f"click, rich, pyelftools and zstandard: {probe.stderr.strip()[-300:]}")
    return ("env", f"PYTHONPATH={copy}", "PYTHONDONTWRITEBYTECODE=1", SYSTEM_PYTHON, "-m", "sysctl_doctor"), None


def require_nobody() -> None:
    """Skip (loudly, with what is missing) when the command cannot be run as nobody here."""
    if _command()[1] is not None:
        pytest.skip(_command()[1])


def run_as_nobody(args: List[str], cwd: Path, env: Optional[Dict[str, str]] = None,
                  text: bool = False) -> subprocess.CompletedProcess:
    require_nobody()
    full = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(cwd),
            "XDG_CACHE_HOME": str(cwd / "cache")}
    full.update(env or {})
    full.pop("SYSCTL_DOCTOR_DEBUG", None)  # the user's view: never a traceback
    return subprocess.run([*NOBODY, *_command()[0], *args], cwd=cwd, capture_output=True, text=text,
                          timeout=120, env=full)


__all__ = ["NOBODY", "require_nobody", "run_as_nobody"]
