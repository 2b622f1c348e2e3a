"""The tool's side of the comparison: `sysctl-doctor check|fix --root` run from this checkout.

The CLI runs as a subprocess (`python -m sysctl_doctor`, the same interpreter as
pytest, so the checkout's editable install), exactly as a user would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional


class CommandMissing(Exception):
    """The checkout's CLI has no such command (yet): the comparison cannot run."""


@dataclass
class KeyPrediction:
    key: str
    value: Optional[str]       # predicted value after boot (None: key absent / unknown)
    applied: Optional[bool]    # the configured value is guaranteed in effect after boot
    raw: Dict[str, Any]        # the whole JSON object for the key, for failure messages


@dataclass
class CheckRun:
    argv: List[str]
    exit_code: int
    document: Any
    stderr: str


def run_cli(args: List[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args],
                          capture_output=True, text=True, timeout=timeout)


def _missing(proc: subprocess.CompletedProcess, command: str) -> bool:
    return proc.returncode == 2 and f"No such command '{command}'" in proc.stderr


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_check(root: Path) -> CheckRun:
    args = ["check", "--root", str(root), "--format", "json"]
    proc = run_cli(args)
    if _missing(proc, "check"):
        raise CommandMissing(_last_line(proc.stderr))
    if proc.returncode not in (0, 1):
        raise AssertionError(f"sysctl-doctor {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    try:
        document = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"`sysctl-doctor check --format json` printed something that is not JSON ({exc}):\n"
                             f"{proc.stdout[:2000]}")
    return CheckRun(args, proc.returncode, document, proc.stderr)


def run_explain(root: Path, key: str) -> Any:
    """`sysctl-doctor explain KEY --root R --format json`: its document (the boot section carries the verdict)."""
    args = ["explain", key, "--root", str(root), "--format", "json"]
    proc = run_cli(args)
    if proc.returncode not in (0, 1):
        raise AssertionError(f"sysctl-doctor {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def run_fix(root: Path, extra: List[str]) -> subprocess.CompletedProcess:
    args = ["fix", "--root", str(root), *extra]
    proc = run_cli(args)
    if _missing(proc, "fix"):
        raise CommandMissing(_last_line(proc.stderr))
    if proc.returncode not in (0, 1):
        raise AssertionError(f"sysctl-doctor {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stdout.strip()} {proc.stderr.strip()}")
    return proc


def _objects(node: Any) -> Iterator[Dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _objects(child)
    elif isinstance(node, list):
        for child in node:
            yield from _objects(child)


def prediction_for(document: Any, key: str) -> Optional[KeyPrediction]:
    """The object for `key` that carries a `boot` prediction, wherever the report nests it."""
    for obj in _objects(document):
        boot = obj.get("boot")
        if obj.get("key") == key and isinstance(boot, dict):
            value = boot.get("value")
            return KeyPrediction(key, None if value is None else str(value), boot.get("applied"), obj)
    return None


def predicted_keys(document: Any) -> List[str]:
    """Every concrete key the report carries a boot prediction for (globs left out)."""
    keys: List[str] = []
    for obj in _objects(document):
        key = obj.get("key")
        if isinstance(key, str) and isinstance(obj.get("boot"), dict) and not any(c in key for c in "*?["):
            if key not in keys:
                keys.append(key)
    return keys
