#!/usr/bin/env python3
"""Prove a refactoring changed no output: run check/show/explain --format json on the same roots with the
code of REV (a temporary git worktree) and with the working tree, and compare the bytes.

    .venv/bin/python tools/output_diff.py --before main~3          # exit 0: identical; 1: lists what differs

Roots: examples/incident and every finding rule's example and passing roots (the roots tests/findings
builds). Commands per root: `check --format json`, `show --format json`, and `explain KEY --format json`
for every key `check` lists (at most --keys per root). Environment-dependent output (the live host) is not
compared: every root is an offline directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))


def _roots(workdir: Path) -> Dict[str, Path]:
    from findings.example_roots import build_example  # the tests' own root builder

    from sysctl_doctor.findings.registry import all_rules

    roots = {"incident": REPO / "examples" / "incident"}
    for rule in all_rules():
        for kind, example in (("example", rule.example), ("passing", rule.passing)):
            if example is None or example.live_values is not None or example.nat_facts is not None:
                continue  # facts given in-process cannot be passed to the command line
            name = f"{rule.code}-{kind}"
            roots[name] = build_example(example, workdir / name)
    return roots


def _run(src: Path, args: List[str], xdg: Path) -> Tuple[int, bytes]:
    """One command with the code under `src`; its index cache in `xdg` (never in the checkout)."""
    env = dict(os.environ, PYTHONPATH=str(src), XDG_CACHE_HOME=str(xdg))
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, env=env, timeout=600)
    return proc.returncode, proc.stdout


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the git revision to compare with")
    ap.add_argument("--keys", type=int, default=12, help="explain at most this many keys per root")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="output-diff-") as tmp:
        tmpdir = Path(tmp)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmpdir / "before"), args.before],
                       check=True, capture_output=True)
        try:
            before_src, after_src = tmpdir / "before" / "src", REPO / "src"
            roots = _roots(tmpdir / "roots")
            compared, differ = 0, []
            for name, root in roots.items():
                commands = [["check", "--root", str(root), "--format", "json"],
                            ["show", "--root", str(root), "--format", "json"]]
                _, check_out = _run(after_src, commands[0], tmpdir / "xdg-after")
                try:
                    keys = [k["key"] for k in json.loads(check_out)["keys"]][: args.keys]
                except (ValueError, KeyError):
                    keys = []
                commands += [["explain", key, "--root", str(root), "--format", "json"] for key in keys]
                for cmd in commands:
                    compared += 1
                    if _run(before_src, cmd, tmpdir / "xdg-before") != _run(after_src, cmd, tmpdir / "xdg-after"):
                        differ.append(f"{name}: sysctl-doctor {' '.join(cmd).replace(str(root), '<root>')}")
            print(f"{compared} outputs compared on {len(roots)} roots: {len(differ)} differ")
            for line in differ:
                print(f"  {line}")
            return 1 if differ else 0
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmpdir / "before")],
                           capture_output=True)
            shutil.rmtree(tmpdir / "before", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
