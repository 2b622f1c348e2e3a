"""Benchmark: `sysctl-doctor check` on this live host, whole process, warm index.

Prints the median wall time of N runs of `python -m sysctl_doctor check --format json`
(after one warm-up run that fills the index cache) and the ratio against two baselines
run in the same script, interleaved so machine load affects all alike:
- the interpreter floor: `python -c pass`;
- `systemd-analyze cat-config sysctl.d`: systemd's own reader of the same files (C).
Target: check <= 0.3 s.

    .venv/bin/python bench/check.py [--runs N] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List


# The children may write .pyc files (as an installed tool has them): with PYTHONDONTWRITEBYTECODE
# set, every run would compile changed modules from source again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CPU: Dict[str, List[float]] = {}  # CPU seconds (user+sys) per run: less distorted by a busy machine


def _time(cmd: List[str], name: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--root", default="/")
    args = parser.parse_args()
    check = [sys.executable, "-m", "sysctl_doctor", "check", "--format", "json", "--root", args.root]
    commands: Dict[str, List[str]] = {"check": check, "python -c pass": [sys.executable, "-c", "pass"]}
    if shutil.which("systemd-analyze"):
        commands["systemd-analyze cat-config sysctl.d"] = ["systemd-analyze", "cat-config", "sysctl.d"]
    _time(check)  # warm-up: index cache, .pyc files
    samples: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            samples[name].append(_time(cmd, name))
    median = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    print(f"sysctl-doctor check --root {args.root}, {args.runs} runs (median / best wall, median CPU), "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs:")
    for name in commands:
        ratio = median["check"] / median[name] if median[name] else float("nan")
        extra = "" if name == "check" else f"   check is {ratio:.1f}x this"
        cpu = statistics.median(CPU[name]) * 1000
        print(f"  {name:40s} {median[name] * 1000:7.1f} ms / {best[name] * 1000:7.1f} ms  cpu {cpu:6.1f} ms{extra}")
    verdict = "OK" if median["check"] <= 0.3 else "OVER"
    print(f"target 300 ms: {verdict} (median {median['check'] * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
