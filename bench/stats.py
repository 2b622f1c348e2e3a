#!/usr/bin/env python3
"""`conntrack stats` sources side by side: /proc/net/stat/nf_conntrack versus ctnetlink (pyroute2).

    sudo .venv/bin/python bench/stats.py [--reads 2000]

Reads the counters of the host namespace --reads times through each source,
prints the time per read, the ratio, and which counters each source has. Also
times one `sysctl-doctor conntrack stats` run end to end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sysctl_doctor.conntrack.stats import read_netlink_stats, read_proc_stats  # noqa: E402


def per_read(fn, reads: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    start = time.perf_counter()
    for _ in range(reads):
        fn()
    return (time.perf_counter() - start) / reads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=2000)
    args = ap.parse_args()
    t_proc = per_read(read_proc_stats, args.reads)
    t_nl = per_read(read_netlink_stats, args.reads)
    proc, nl = read_proc_stats(), read_netlink_stats()
    print(f"/proc/net/stat/nf_conntrack : {t_proc * 1e6:8.1f} us/read  {len(proc.counters)} counters")
    print(f"ctnetlink (pyroute2)        : {t_nl * 1e6:8.1f} us/read  {len(nl.counters)} counters"
          f"  ({t_nl / t_proc:.1f}x /proc)")
    print("only in /proc :", ", ".join(sorted(set(proc.counters) - set(nl.counters))) or "-")
    print("only in netlink:", ", ".join(sorted(set(nl.counters) - set(proc.counters))) or "-")
    same = {k for k in set(proc.counters) & set(nl.counters) if proc.counters[k] == nl.counters[k]}
    print(f"equal on both : {len(same)} of {len(set(proc.counters) & set(nl.counters))} shared counters")
    cli = [os.path.join(os.path.dirname(sys.executable), "sysctl-doctor"), "conntrack", "stats"]
    for source in ("proc", "netlink"):
        start = time.perf_counter()
        subprocess.run(cli + ["--source", source], stdout=subprocess.DEVNULL, check=True)
        print(f"CLI --source {source:<7}: {time.perf_counter() - start:.3f} s (start-up included)")


if __name__ == "__main__":
    main()
