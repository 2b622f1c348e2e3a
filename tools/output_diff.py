#!/usr/bin/env python3
"""Prove a refactoring changed no output: run check/show/explain --format json on the same roots with the
code of REV (a temporary git worktree) and with the working tree, and compare the bytes.

    .venv/bin/python tools/output_diff.py --before main~3          # exit 0: identical; 1: lists what differs
    .venv/bin/python tools/output_diff.py --before main --additions  # a contract extension: only added fields
                                                                     # and list items pass; lists what was lost

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


def not_kept(before, after, where: str = "$") -> List[str]:  # type: ignore[no-untyped-def]
    """What of `before` is missing or changed in `after` (JSON values): [] when `after` only adds object fields
    and list items. A list item of `before` is kept when some item of `after` keeps it."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: List[str] = []
        for key, value in before.items():
            if key not in after:
                out.append(f"{where}.{key}: removed")
            else:
                out += not_kept(value, after[key], f"{where}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list):
        out = []
        for i, item in enumerate(before):
            if not any(not not_kept(item, candidate) for candidate in after):
                out.append(f"{where}[{i}]: no item of the new output keeps {json.dumps(item)[:300]}")
        return out
    return [] if before == after else [f"{where}: {json.dumps(before)[:200]} -> {json.dumps(after)[:200]}"]


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the git revision to compare with")
    ap.add_argument("--keys", type=int, default=12, help="explain at most this many keys per root")
    ap.add_argument("--additions", action="store_true",
                    help="a change that only adds JSON fields or list items passes (a contract extension); "
                         "anything removed or changed is listed")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="output-diff-") as tmp:
        tmpdir = Path(tmp)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmpdir / "before"), args.before],
                       check=True, capture_output=True)
        try:
            before_src, after_src = tmpdir / "before" / "src", REPO / "src"
            roots = _roots(tmpdir / "roots")
            compared, differ, added = 0, [], []  # type: ignore[var-annotated]
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
                    old, new = _run(before_src, cmd, tmpdir / "xdg-before"), _run(after_src, cmd, tmpdir / "xdg-after")
                    if old == new:
                        continue
                    label = f"{name}: sysctl-doctor {' '.join(cmd).replace(str(root), '<root>')}"
                    if args.additions and old[0] == new[0]:
                        try:
                            lost = not_kept(json.loads(old[1]), json.loads(new[1]))
                        except ValueError:
                            lost = ["not JSON"]
                        if not lost:
                            added.append(label)
                            continue
                        label += "".join(f"\n      {line}" for line in lost)
                    differ.append(label)
            print(f"{compared} outputs compared on {len(roots)} roots: {len(differ)} differ"
                  + (f", {len(added)} more only add fields or items" if args.additions else ""))
            for line in differ:
                print(f"  {line}")
            return 1 if differ else 0
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmpdir / "before")],
                           capture_output=True)
            shutil.rmtree(tmpdir / "before", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
