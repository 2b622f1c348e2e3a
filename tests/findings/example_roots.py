"""Build a rule's example root (examples/incident or an empty root, plus the example's files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sysctl_doctor.findings.model import Example

REPO = Path(__file__).resolve().parents[2]
INCIDENT = REPO / "examples" / "incident"


def build_example(example: Example, dest: Path) -> Path:
    if example.base == "incident":
        shutil.copytree(INCIDENT, dest, symlinks=True)
    else:
        (dest / "usr" / "lib").mkdir(parents=True)
        os.symlink("usr/lib", dest / "lib")
    for inside in example.removed:
        host = dest / inside.lstrip("/")
        if host.is_symlink() or host.is_file():
            host.unlink()
        elif host.is_dir():
            shutil.rmtree(host)
    for inside, content in example.files.items():
        host = dest / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        if host.is_symlink() or host.exists():
            host.unlink()
        if isinstance(content, tuple):
            os.symlink(content[1], host)
        else:
            host.write_text(content)
    return dest


def check_example(example: Example, dest: Path):
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.root import Root

    root = build_example(example, dest)
    return run_check(Root(root), kernel=example.kernel, cmdline=example.cmdline, live_values=example.live_values,
                     nat_facts=example.nat_facts)
