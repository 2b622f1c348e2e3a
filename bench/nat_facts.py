"""Benchmark: what the CT rules add to `check` — gathering the host's NAT facts.

Times, in-process and interleaved so machine load affects all alike (median / best of N):
- live: `read_live_rules()` (runs `nft -j list ruleset` and `iptables-save`, builds the facts);
- offline: `read_persisted_rules()` on a root (default examples/incident: nft text with includes);
- baseline: the bare `nft -j list ruleset` subprocess (what the live path cannot avoid).

    .venv/bin/python bench/nat_facts.py [--runs N] [--root DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List

from sysctl_doctor.conntrack.nat_facts import read_live_rules
from sysctl_doctor.conntrack.persisted_rules import read_persisted_rules
from sysctl_doctor.root import Root

REPO = Path(__file__).resolve().parents[1]


def _time(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--root", default=str(REPO / "examples" / "incident"))
    args = parser.parse_args()
    root = Root(args.root)
    cases: Dict[str, Callable[[], object]] = {
        "offline read_persisted_rules": lambda: read_persisted_rules(root),
        "live read_live_rules": lambda: read_live_rules(None),
    }
    if shutil.which("nft"):
        cases["baseline: nft -j list ruleset"] = lambda: subprocess.run(
            ["nft", "-j", "list", "ruleset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for func in cases.values():
        func()  # warm-up
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, func in cases.items():
            samples[name].append(_time(func))
    print(f"NAT facts, {args.runs} runs (median / best), offline root {args.root}:")
    base = statistics.median(samples.get("baseline: nft -j list ruleset", [float("nan")]))
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = "" if name.startswith("baseline") else f"   {median / base:.1f}x the nft baseline"
        print(f"  {name:32s} {median * 1000:7.2f} ms / {min(values) * 1000:7.2f} ms{ratio}")


if __name__ == "__main__":
    main()
