"""Build a rule's example root (examples/incident or an empty root, plus the example's files)."""

from __future__ import annotations

from pathlib import Path

from fixture_roots import INCIDENT, REPO, write_root
from sysctl_doctor.findings.model import Example

__all__ = ["INCIDENT", "REPO", "build_example", "check_example"]


def build_example(example: Example, dest: Path) -> Path:
    return write_root(dest, example.files, base=INCIDENT if example.base == "incident" else None,
                      removed=example.removed)


def check_example(example: Example, dest: Path):
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.root import Root

    root = build_example(example, dest)
    return run_check(Root(root), kernel=example.kernel, cmdline=example.cmdline, live_values=example.live_values,
                     nat_facts=example.nat_facts)
