#!/usr/bin/env python3
"""`conntrack logs` throughput against `grep -c nf_ct_proto` on the same 1 M-line file.

    .venv/bin/python bench/logs.py [--lines 1000000] [--density 0.001 0.01 0.1] [--runs 3]
    .venv/bin/python bench/logs.py --density 1.0 --runs 1     # every line a conntrack line (slow)

For each density (share of lines that are conntrack nf_log lines, the rest
ordinary kernel messages in dmesg format) it writes one file, then times, best
of --runs: `grep -c nf_ct_proto FILE`, the library (`parse_kernel_log` on the
file's bytes, read included) and the whole CLI (`sysctl-doctor conntrack logs
FILE --format json > /dev/null`, every record emitted, and the default text
view, which shows 200 records and counts the rest; Python start-up included).
Prints lines/s, the ratio to grep and CPU seconds (user+sys; less distorted
than wall time on a busy machine). Targets: ≥ 1 M lines/s and ≤ 3× grep.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sysctl_doctor.conntrack.kernel_log import parse_kernel_log  # noqa: E402

CT = ("[{t:12.6f}] nf_ct_proto_6: SEQ is over upper bound {b} (over the window of the receiver) IN=to-srv OUT= "
      "MAC=4e:2f:10:e1:97:62:8e:ff:6d:c4:ef:5b:08:00 SRC=10.232.2.{h} DST=10.232.2.1 LEN=1274 TOS=0x00 "
      "PREC=0x00 TTL=61 ID=24301 DF PROTO=TCP SPT={p} DPT=59596 SEQ={s} ACK=3659454992 WINDOW=509 RES=0x00 "
      "ACK PSH URGP=0 \n")
OTHER = [
    "[{t:12.6f}] eth0: renamed from veth{p}\n",
    "[{t:12.6f}] IPv6: ADDRCONF(NETDEV_CHANGE): veth{p}: link becomes ready\n",
    "[{t:12.6f}] cni0: port 3(veth{p}) entered forwarding state\n",
    "[{t:12.6f}] audit: type=1400 audit({t}:{p}): apparmor=\"STATUS\" operation=\"profile_load\" name=\"x{p}\"\n",
    "[{t:12.6f}] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.\n",
]


def make_file(path: str, lines: int, density: float) -> None:
    rng = random.Random(6)
    with open(path, "w") as fh:
        for i in range(lines):
            t = i / 1000
            if rng.random() < density:
                fh.write(CT.format(t=t, b=rng.randrange(1 << 32), h=rng.randrange(2, 250),
                                   p=rng.randrange(1024, 65535), s=rng.randrange(1 << 32)))
            else:
                fh.write(rng.choice(OTHER).format(t=t, p=rng.randrange(100000)))


# The CLI may write .pyc files (as an installed tool has them): with PYTHONDONTWRITEBYTECODE set,
# every run would compile changed modules from source again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best(fn, runs: int):  # type: ignore[no-untyped-def]
    """(best wall seconds, best CPU seconds) of `runs` calls; CPU counts this process and its children."""
    times, cpus = [], []
    for _ in range(runs):
        r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(sum(b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime for a, b in ((r0, r1), (c0, c1))))
    return min(times), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--density", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cli = [os.path.join(os.path.dirname(sys.executable), "sysctl-doctor")]
    with tempfile.TemporaryDirectory() as tmp:
        for density in args.density:
            path = os.path.join(tmp, f"kern-{density}.log")
            make_file(path, args.lines, density)
            size = os.path.getsize(path)
            grep_out = subprocess.run(["grep", "-c", "nf_ct_proto", path], capture_output=True, text=True)
            t_grep, c_grep = best(lambda: subprocess.run(["grep", "-c", "nf_ct_proto", path], capture_output=True),
                                  args.runs)

            def lib() -> None:
                with open(path, "rb") as fh:
                    report = parse_kernel_log(fh.read(), path)
                assert len(report.records) == int(grep_out.stdout)

            rows = [("parse_kernel_log", best(lib, args.runs))]
            for label, extra in (("CLI --format json", ["--format", "json"]), ("CLI text (default)", [])):
                argv = cli + ["conntrack", "logs", path] + extra
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)  # warm-up
                rows.append((label, best(lambda: subprocess.run(argv, stdout=subprocess.DEVNULL,
                                                                stderr=subprocess.DEVNULL, env=ENV), args.runs)))
            print(f"density {density:>5}: {args.lines} lines, {size / 1e6:.0f} MB, {grep_out.stdout.strip()} "
                  f"conntrack lines (best of {args.runs}; load average {os.getloadavg()[0]:.2f})")
            print(f"  {'grep -c nf_ct_proto':20s}: {t_grep:7.3f} s  {args.lines / t_grep / 1e6:7.2f} M lines/s  "
                  f"          cpu {c_grep:6.3f} s")
            for label, (t, c) in rows:
                print(f"  {label:20s}: {t:7.3f} s  {args.lines / t / 1e6:7.2f} M lines/s  {t / t_grep:5.2f}x grep"
                      f"  cpu {c:6.3f} s {c / c_grep:5.2f}x grep")


if __name__ == "__main__":
    main()
