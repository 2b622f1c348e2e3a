#!/usr/bin/env python3
"""Benchmark `sysctl-doctor show` on a big root: 200 sysctl.d files x 50 lines.

Times the whole process (startup included), best and median of N runs, and prints ratios
against baselines measured in the same run:
  - `python -c pass` (interpreter startup: the floor for any Python CLI);
  - the real systemd-sysctl applying the same files to a fake /proc/sys in a private mount
    namespace (root only; skipped with a message otherwise).

    .venv/bin/python bench/show.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = 200
LINES = 50
TARGET = 0.2  # seconds, the target for the whole process


def build_root(base: Path) -> Path:
    """A root whose sysctl.d holds 200 files x 50 lines: comments, distinct keys, overrides
    of earlier files' keys, a few globs, /etc overriding /usr/lib names. Returns the key tree dir."""
    dirs = [base / "etc/sysctl.d", base / "usr/lib/sysctl.d", base / "run/sysctl.d"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (base / "usr/lib/systemd/system").mkdir(parents=True)
    (base / "usr/lib/systemd/system/systemd-sysctl.service").write_text("[Unit]\n")
    keys = set()
    for f in range(FILES):
        lines = [f"# bench file {f}", ""]
        for n in range(LINES - 2):
            if n % 12 == 11:
                lines.append(f"bench.f{(f * 7) % FILES:03d}.k{n:02d} = {f}")  # overrides another file's key
            elif n == 5 and f % 40 == 0:
                lines.append(f"bench.f{f:03d}.*  = glob{f}")
            else:
                key = f"bench.f{f:03d}.k{n:02d}"
                keys.add(key.replace(".", "/"))
                lines.append(f"{key} = {n} {f}")
        (dirs[f % 3] / f"{f:03d}-bench.conf").write_text("\n".join(lines) + "\n")
    tree = base / "proc-sys"
    for k in keys:
        p = tree / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("0\n")
    return tree


CPU: dict = {}  # command name -> CPU seconds (user+sys) per run, less sensitive to a busy machine
# The child processes may write .pyc files (as an installed tool has them): with
# PYTHONDONTWRITEBYTECODE set, every run would compile changed modules from source again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_runs(argv, runs: int, name: str = "") -> list:
    import resource

    times = []
    cpu = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')}")
    CPU[name] = cpu
    return times


def real_systemd_sysctl(base: Path, tree: Path, runs: int):
    """Median seconds of the real systemd-sysctl on the same files (private mount namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.access("/usr/lib/systemd/systemd-sysctl", os.X_OK):
        return None, "needs root, unshare and /usr/lib/systemd/systemd-sysctl"
    work = tempfile.mkdtemp(prefix="sd-bench-ns-")
    try:
        shutil.copytree(tree, Path(work) / "proc-sys")
        script = f"""
set -e
mount --bind {base}/etc/sysctl.d /etc/sysctl.d
mount --bind {base}/usr/lib/sysctl.d /usr/lib/sysctl.d
mount -t tmpfs sd-bench /run && mkdir /run/sysctl.d && cp {base}/run/sysctl.d/* /run/sysctl.d/
mount --bind {work}/proc-sys /proc/sys
for i in $(seq {runs}); do
  s=$(date +%s%N); /usr/lib/systemd/systemd-sysctl >/dev/null 2>&1 || true; e=$(date +%s%N)
  echo $((e - s))
done
"""
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, text=True, check=True).stdout
        return [int(x) / 1e9 for x in out.split()], None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = [sys.executable, "-m", "sysctl_doctor"]
    with tempfile.TemporaryDirectory(prefix="sd-bench-") as tmp:
        base = Path(tmp)
        tree = build_root(base)
        n_keys = sum(1 for _ in tree.rglob("*") if _.is_file())
        print(f"root: {FILES} files x {LINES} lines = {FILES * LINES} lines; key tree: {n_keys} keys; "
              f"{args.runs} runs each, whole process")
        commands = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
            ("sysctl-doctor show", exe + ["show", "--root", str(base)]),
            ("sysctl-doctor show --format json", exe + ["show", "--root", str(base), "--format", "json"]),
            ("sysctl-doctor show --proc-sys (globs, exists)",
             exe + ["show", "--root", str(base), "--proc-sys", str(tree), "--format", "json"]),
            ("for scale: show on examples/incident (5 files)",
             exe + ["show", "--root", str(Path(__file__).resolve().parents[1] / "examples" / "incident")]),
        ]
        for _name, argv in commands:  # warm-up: .pyc files, page cache
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        rows = [(name, time_runs(argv, args.runs, name)) for name, argv in commands]
        real, why = real_systemd_sysctl(base, tree, args.runs)
        if real is not None:
            rows.append(("real systemd-sysctl, same files (baseline)", real))
        base_py = statistics.median(rows[0][1])
        base_real = statistics.median(real) if real else None
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"{'command':50s} {'best':>8s} {'median':>8s} {'cpu':>8s} {'x python':>9s} {'x systemd':>10s}")
        for name, times in rows:
            med = statistics.median(times)
            vs_real = f"{med / base_real:9.1f}x" if base_real else "       n/a"
            cpu = f"{statistics.median(CPU[name]):7.3f}s" if name in CPU else "     n/a"
            print(f"{name:50s} {min(times):7.3f}s {med:7.3f}s {cpu} {med / base_py:8.1f}x {vs_real}")
        if real is None:
            print(f"(real systemd-sysctl baseline skipped: {why})")
        worst = max(min(times) for _, times in rows[1:4])
        print(f"target: whole `show` process <= {TARGET:.2f}s -> slowest variant, best run: {worst:.3f}s "
              f"({'met' if worst <= TARGET else 'NOT met'}; medians are inflated on a busy machine)")


if __name__ == "__main__":
    main()
