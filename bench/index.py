#!/usr/bin/env python3
"""Benchmark the kernel index on a real Debian modules tree.

    SYSCTL_DOCTOR_TEST_CACHE=/work/cache .venv/bin/python bench/index.py [--series 6.1|6.12] [--runs 3]

Prints: cold build (no cache; process pool over all cores), warm load (cached), and the same tree
searched by a naive shell loop (`strings | grep` per .ko, `xzcat | strings | grep` per .ko.xz),
which only finds *which files mention* sysctl registration — far less than the index learns.
Targets (issue #3, 2 cores): cold <= 3 s on Debian 6.1, warm <= 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kernel_trees import debian_kernel_tree  # noqa: E402

from sysctl_doctor.kernel import load_module_index  # noqa: E402
from sysctl_doctor.root import Root  # noqa: E402


def naive(moddir: Path) -> "tuple[float, int]":
    script = r"""
n=0
while IFS= read -r -d '' f; do
  case "$f" in
    *.ko.xz)  xzcat "$f" | strings | grep -q -e register_sysctl -e register_net_sysctl && n=$((n+1)) ;;
    *.ko.zst) zstdcat "$f" | strings | grep -q -e register_sysctl -e register_net_sysctl && n=$((n+1)) ;;
    *.ko.gz)  zcat "$f" | strings | grep -q -e register_sysctl -e register_net_sysctl && n=$((n+1)) ;;
    *.ko)     strings "$f" | grep -q -e register_sysctl -e register_net_sysctl && n=$((n+1)) ;;
  esac
done < <(find "$1" -name '*.ko*' -print0)
echo $n
"""
    start = time.perf_counter()
    out = subprocess.run(["bash", "-c", script, "naive", str(moddir)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, int(out.stdout.strip() or 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", default="6.1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    tree = debian_kernel_tree(args.series)
    moddir = Path(tree) / "lib/modules" / tree.kver
    nfiles = sum(1 for _ in moddir.rglob("*.ko*"))
    print(f"tree: Debian {args.series} ({tree.kver}), {nfiles} module files; cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        # warm the page cache once so cold figures measure the index, not the disk
        for f in moddir.rglob("*.ko*"):
            f.read_bytes()
        colds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            index = load_module_index(Root(tree), tree.kver, use_cache=False)
            colds.append(time.perf_counter() - start)
        keys = len(index.elf_keys())
        mods = len(index.to_json()["modules"])
        load_module_index(Root(tree), tree.kver)  # store in the cache
        warms = []
        for _ in range(max(10, args.runs)):
            start = time.perf_counter()
            warm = load_module_index(Root(tree), tree.kver)
            warms.append(time.perf_counter() - start)
        assert warm.from_cache
    cold, hot = min(colds), statistics.median(warms)
    print(f"cold index (no cache):  min {cold:.2f} s  median {statistics.median(colds):.2f} s over {args.runs} runs"
          f"  -> {keys} keys in {mods} modules")
    print(f"warm index (cached):    median {hot * 1000:.1f} ms over {len(warms)} runs")
    if not args.no_baseline:
        base, hits = naive(moddir)
        print(f"naive strings|grep loop: {base:.2f} s  -> {hits} files mention a register call (no keys, no dirs)")
        print(f"ratio naive/cold: {base / cold:.1f}x   naive/warm: {base / hot:.0f}x")


if __name__ == "__main__":
    main()
