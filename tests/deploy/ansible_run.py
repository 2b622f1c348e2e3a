"""Run the real ansible-playbook (-c local) against the collection in deploy/ansible."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "deploy" / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "sysctl_doctor" / "core"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"NEEDS {name}: pip install -e '.[deploy]' (Python >= 3.11 for ansible-core 2.19)")
        return found
    return str(path)


def ansible_env(tmp: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    env.pop("SYSCTL_DOCTOR_DEBUG", None)
    return env


def playbook(tmp: Path, text: str, extra: Optional[List[str]] = None) -> subprocess.CompletedProcess:
    book = tmp / "play.yml"
    book.write_text(text)
    argv = [tool("ansible-playbook"), "-c", "local", "-i", "localhost,",
            "-e", f"ansible_python_interpreter={sys.executable}", str(book), *(extra or [])]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ansible_env(tmp),
                          timeout=600, cwd=tmp)


def recap(out: str) -> Dict[str, int]:
    m = re.search(r"^localhost\s+:\s+(.*)$", out, flags=re.M)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def result_file(tmp: Path) -> dict:
    return json.loads((tmp / "result.json").read_text())
