"""Conntrack's per-namespace counters: invalid, insert_failed, drop, early_drop, …

Two sources give the same numbers:

- ``/proc/net/stat/nf_conntrack`` (always there): a header line of names,
  then one row of 8-digit hex numbers per possible CPU. Every column is a
  per-CPU counter to be summed except ``entries``, which is the namespace's
  global count repeated on every row.
- ctnetlink (``IPCTNL_MSG_CT_GET_STATS_CPU`` through pyroute2, the
  `conntrack` extra): the same per-CPU counters as netlink attributes.

bench/stats.py compares them; /proc is the default (no dependency, one read).
The counters are those of the reader's network namespace: `read_netns_stats`
enters a named namespace (``ip netns``) for the read.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from sysctl_doctor.errors import DoctorError

PROC_STAT = "/proc/thread-self/net/stat/nf_conntrack"
NOT_SUMMED = frozenset({"entries"})
# Counters an operator should watch, in display order.
INTERESTING = ("entries", "invalid", "ignore", "insert_failed", "drop", "early_drop", "clashres",
               "search_restart", "found", "new", "insert", "delete", "icmp_error", "expect_new")


@dataclass(frozen=True)
class ConntrackStats:
    counters: Dict[str, int]
    cpus: int
    source: str  # "proc" | "netlink"
    netns: Optional[str] = None
    taken_at: float = field(default_factory=time.monotonic)

    def rates(self, earlier: "ConntrackStats") -> Dict[str, float]:
        """Per-second change of every summed counter since `earlier`."""
        elapsed = self.taken_at - earlier.taken_at
        if elapsed <= 0:
            return {}
        return {
            name: (value - earlier.counters.get(name, 0)) / elapsed
            for name, value in self.counters.items() if name not in NOT_SUMMED
        }

    def to_json(self) -> dict:
        return {"netns": self.netns, "source": self.source, "cpus": self.cpus, "counters": self.counters}


def parse_proc_stat(text: str, where: str = PROC_STAT) -> ConntrackStats:
    """Sum the per-CPU hex rows of /proc/net/stat/nf_conntrack."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DoctorError(f"{where}: empty")
    names = lines[0].split()
    totals = {name: 0 for name in names}
    rows = 0
    for number, line in enumerate(lines[1:], 2):
        cells = line.split()
        if len(cells) != len(names):
            raise DoctorError(f"{where}:{number}: {len(cells)} columns, header has {len(names)}")
        try:
            values = [int(cell, 16) for cell in cells]
        except ValueError as exc:
            raise DoctorError(f"{where}:{number}: not a hex counter row ({exc})") from exc
        rows += 1
        for name, value in zip(names, values):
            if name in NOT_SUMMED:
                totals[name] = value
            else:
                totals[name] += value
    return ConntrackStats(counters=totals, cpus=rows, source="proc")


def read_proc_stats(path: str = PROC_STAT) -> ConntrackStats:
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise DoctorError(f"{path}: missing (kernel without conntrack?)") from exc
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read: {exc}") from exc
    return parse_proc_stat(text, path)


# ctnetlink attribute names that /proc spells differently.
_NETLINK_NAMES = {"error": "icmp_error", "clash_resolve": "clashres", "chain_toolong": "chaintoolong"}


def read_netlink_stats() -> ConntrackStats:
    """The same counters over ctnetlink (pyroute2), in the calling thread's namespace."""
    try:
        from pyroute2 import Conntrack
    except ImportError as exc:
        raise DoctorError(
            "ctnetlink needs pyroute2: pip install 'sysctl-doctor[conntrack]'"
        ) from exc
    ct = Conntrack()
    try:
        per_cpu = ct.stat()
    finally:
        ct.close()
    totals: Dict[str, int] = {}
    for msg in per_cpu:
        # pyroute2 ≥ 0.9 gives a dict per CPU; older versions netlink messages with CTA_STATS_* attrs.
        items = msg.items() if isinstance(msg, dict) else (
            (name[len("CTA_STATS_"):].lower(), value)
            for name, value in msg.get("attrs", []) if name.startswith("CTA_STATS_"))
        for key, value in items:
            if key == "cpu" or not isinstance(value, int):
                continue
            key = _NETLINK_NAMES.get(key, key)
            totals[key] = totals.get(key, 0) + value
    try:
        entries = read_proc_stats().counters.get("entries")
    except DoctorError:
        entries = None
    if entries is not None:
        totals["entries"] = entries
    return ConntrackStats(counters=totals, cpus=len(per_cpu), source="netlink")


@contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """This thread inside the named netns (``ip netns`` name) for the block; None = stay."""
    if name is None:
        yield
        return
    path = os.path.join("/run/netns", name)
    if not os.path.exists(path):
        raise DoctorError(f"network namespace {name!r} not found (no {path}; see `ip netns list`)")
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(target, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise DoctorError(f"cannot enter network namespace {name!r}: {os.strerror(err)}")
        try:
            yield
        finally:
            libc.setns(home, 0x40000000)
    finally:
        os.close(target)
        os.close(home)


def read_netns_stats(netns: Optional[str] = None, source: str = "proc") -> ConntrackStats:
    with in_netns(netns):
        stats = read_netlink_stats() if source == "netlink" else read_proc_stats()
    return ConntrackStats(stats.counters, stats.cpus, stats.source, netns, stats.taken_at)


def list_netns() -> List[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []
