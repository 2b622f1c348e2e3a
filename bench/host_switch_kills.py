#!/usr/bin/env python3
"""Kill loop: `sysctl-doctor lab` interrupted at random points must leave the host as it was.

    sudo .venv/bin/python bench/host_switch_kills.py [--runs 20] [--max-delay 1.5]

Each round starts a one-scenario lab, sends SIGINT, SIGTERM or SIGKILL after a random delay
(0..--max-delay s, covering start-up, the host-switch take, set-up, traffic and teardown), then:
- SIGINT/SIGTERM: the exit must be 130 (or 0 when it had finished, or death by that signal while
  Python is still starting: the shell shows 130/143 too), the host's nf_log_all_netns at its resting
  value and no holder left for that pid (a traceback while Python imports is counted, not failed);
- SIGKILL: `sysctl-doctor conntrack debug status` (any entry point) must put it back.
Prints one line per failure and a summary (rounds, failures, seconds). Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sysctl_doctor import host_switches  # noqa: E402

KEY = "net/netfilter/nf_log_all_netns"
SDOC = [sys.executable, "-m", "sysctl_doctor"]
LAB = SDOC + ["lab", "--scenario", "seq-under-lower-bound", "--mitigation", "none", "--format", "json"]


def _value() -> str:
    with open(f"/proc/sys/{KEY}") as fh:
        return fh.read().strip()


STARTUP_TRACEBACKS = 0


def one_round(sig: int, delay: float, resting: str) -> str:
    """'' when the host is as it was, else what is wrong."""
    global STARTUP_TRACEBACKS
    proc = subprocess.Popen(LAB, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "did not exit within 60 s"
    if sig == signal.SIGKILL:
        subprocess.run(SDOC + ["conntrack", "debug", "status"], capture_output=True, timeout=60)
    elif "Traceback" in err and "sysctl_doctor/lab" not in err and "host_switches" not in err:
        STARTUP_TRACEBACKS += 1  # KeyboardInterrupt while Python imports, before any code of ours runs
    elif proc.returncode not in (0, 130, -sig) or "Traceback" in err:
        return f"exit {proc.returncode}: {err.strip()[-300:]}"
    if any(h.pid == proc.pid for h in host_switches.holders(KEY)):
        return f"holder pid {proc.pid} still recorded"
    now = host_switches.resting_value(KEY)
    if now != resting or (not host_switches.holders(KEY) and _value() != resting):
        return f"nf_log_all_netns is {_value()}, resting {now}, was {resting}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-delay", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    resting = host_switches.resting_value(KEY)
    failures = 0
    started = time.monotonic()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
    for i in range(args.runs):
        sig, delay = signals[i % 3], rng.uniform(0, args.max_delay)
        problem = one_round(sig, delay, resting or "0")
        if problem:
            failures += 1
            print(f"round {i}: {signal.Signals(sig).name} after {delay:.3f} s: {problem}")
    print(f"{args.runs} rounds (SIGINT/SIGTERM/SIGKILL in turn, 0-{args.max_delay} s), {failures} failures, "
          f"{STARTUP_TRACEBACKS} start-up tracebacks, {time.monotonic() - started:.1f} s; "
          f"nf_log_all_netns resting {resting}, now {_value()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
