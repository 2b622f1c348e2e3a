#!/usr/bin/env python3
"""Benchmark `show`, `check` and `explain` on hostile sysctl.d input (issue 16, item 8).

The cases as they were found: 100 MB of random bytes in one file (was: killed after 300 s at
2.7 GB), 100 files of 1 MB of random bytes, 200 files x 50 lines with 10 % globs (was: `check`
16 s), 20,000 keys (was: `check` 16.5 s, 90 % of it the table). Each run is a whole process;
figures are wall time, CPU time (user+sys, less distorted by other jobs on the machine) and peak
memory (ru_maxrss), with the ratio to the baseline run in the same script: the same command on
the bundled incident root (9 keys).

    .venv/bin/python bench/hostile_sysctl.py [--runs 1] [--case NAME]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

REPO = Path(__file__).resolve().parent.parent


def _base(root: Path) -> Path:
    (root / "etc/sysctl.d").mkdir(parents=True)
    unit = root / "usr/lib/systemd/system/systemd-sysctl.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    return root


def random_100mb(root: Path) -> None:
    rng = random.Random(1)
    with open(_base(root) / "etc/sysctl.d/x.conf", "wb") as fh:
        for _ in range(100):
            fh.write(rng.randbytes(1_000_000))


def random_100_files(root: Path) -> None:
    rng = random.Random(5)
    d = _base(root) / "etc/sysctl.d"
    for i in range(100):
        (d / f"{i:03d}.conf").write_bytes(rng.randbytes(1_000_000))


def globs_200x50(root: Path) -> None:
    rng = random.Random(2)
    d = _base(root) / "etc/sysctl.d"
    for f in range(200):
        lines = [f"net.ipv4.conf.*.k{rng.randrange(100)} = {n}" if rng.random() < 0.1 else
                 f"net.ipv4.conf.if{f}.k{n} = {n}" for n in range(50)]
        (d / f"{f:03d}.conf").write_text("\n".join(lines) + "\n")


def keys_20k(root: Path) -> None:
    (_base(root) / "etc/sysctl.d/a.conf").write_text(
        "".join(f"net.ipv4.conf.if{i}.rp_filter = 1\n" for i in range(20000)))


def runtime_only_250mb(root: Path) -> None:
    """Files the boot never reads (an offline root's /run): 200 MB in one line and 50 MB of random bytes
    (was: check 9.9 s and 457 MB, explain 43 s and 485 MB: their lines were read whole)."""
    d = _base(root) / "run/sysctl.d"
    d.mkdir(parents=True)
    (root / "etc/sysctl.d/10-a.conf").write_text("net.ipv4.conf.*.rp_filter = 2\n")
    rng = random.Random(1)
    with open(d / "big.conf", "wb") as big, open(d / "bin.conf", "wb") as binary:  # in 1 MiB pieces: the
        for i in range(200):  # children's ru_maxrss starts from this process's at fork
            big.write(b"a" * (1 << 20))
            if i < 50:
                binary.write(rng.randbytes(1 << 20))


def globs_1000_x_unset_100k(root: Path) -> None:
    """1,000 glob lines and 100,000 keys set only in a runtime-only file (was: check 32 s, explain 27 s in
    unset_keys: one glob test per key and glob in Python)."""
    (_base(root) / "etc/sysctl.d/20-g.conf").write_text(
        "".join(f"net.ipv4.conf.*.x{j}* = 1\n" for j in range(1000)))
    (root / "run/sysctl.d").mkdir(parents=True)
    (root / "run/sysctl.d/x.conf").write_text(
        "".join(f"net.ipv4.conf.eth{j}.rp_filter = 1\n" for j in range(100000)))


def brace_bomb(root: Path) -> None:
    """A glob line with 4 million brace alternatives (was: check and explain past 120 s)."""
    (_base(root) / "etc/sysctl.d/10-b.conf").write_text("net.ipv4.conf.*" + "{a,b}" * 22 + ".rp_filter = 1\n")


CASES: Dict[str, Callable[[Path], None]] = {
    "random 100 MB, 1 file": random_100mb, "random 100 x 1 MB": random_100_files,
    "200 files x 50 lines, 10% globs": globs_200x50, "20,000 keys": keys_20k,
    "runtime-only 250 MB": runtime_only_250mb, "1,000 globs x 100k unset keys": globs_1000_x_unset_100k,
    "brace bomb (4M alternatives)": brace_bomb,
}


def run_once(argv: list) -> Tuple[float, float, float, int]:
    """(wall s, cpu s, peak MB, exit status) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def best(argv: list, runs: int) -> Tuple[float, float, float, int]:
    results = [run_once(argv) for _ in range(runs)]
    return (min(r[0] for r in results), min(r[1] for r in results), max(r[2] for r in results), results[-1][3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--case", action="append", choices=list(CASES))
    args = ap.parse_args()
    cli = [sys.executable, "-m", "sysctl_doctor"]
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        base = {cmd: best(cli + [cmd, *(["net.ipv4.conf.eth5.rp_filter"] if cmd == "explain" else []), "--root",
                              str(REPO / "examples/incident")], args.runs) for cmd in ("show", "check", "explain")}
        for cmd, (wall, cpu, mb, _rc) in base.items():
            print(f"baseline {cmd} (incident root, 9 keys): {wall:.2f} s wall, {cpu:.2f} s CPU, {mb:.0f} MB")
        print(f"{'case':<34} {'cmd':<6} {'wall s':>7} {'CPU s':>6} {'peak MB':>8} {'CPU ratio':>9} exit")
        for name, build in CASES.items():
            if args.case and name not in args.case:
                continue
            root = tmp / name.replace(" ", "_").replace("%", "").replace(",", "")
            build(root)
            for cmd in ("show", "check", "explain"):
                extra = ["net.ipv4.conf.eth5.rp_filter"] if cmd == "explain" else []
                wall, cpu, mb, rc = best(cli + [cmd, *extra, "--root", str(root)], args.runs)
                print(f"{name:<34} {cmd:<6} {wall:>7.2f} {cpu:>6.2f} {mb:>8.0f} {cpu / base[cmd][1]:>8.1f}x {rc}")
            shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
