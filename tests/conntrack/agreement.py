"""The kernel-agreement runs, shared by the netns test (this machine's kernel) and the qemu matrix
(tests/slow/test_kernel_matrix.py: the same runs inside Debian's 5.10, 6.1 and 6.12 kernels).

record_run() pushes one run's scenarios through a NatBox and returns what the kernel did, as plain
JSON-able data (the capture's path, every packet's key and kernel verdict/message, the entries'
final states); compare_run() replays the capture with a profile and lists every disagreement.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.conntrack.replay import Replay, flag_names
from sysctl_doctor.conntrack.tcp_model import settings_from_sysctls

from . import scenarios
from .natbox import NAT_OUT_IP, NAT_OUT_IP6, Capture, Kmsg, NatBox, inject

RUNS = {
    "defaults": ({}, scenarios.window_cases, None),
    "ipv6": ({}, scenarios.ipv6_cases, None),
    "loose0": ({"nf_conntrack_tcp_loose": "0"}, scenarios.loose_off_cases, "LINUX_SLL2"),
    "be_liberal": ({"net.netfilter.nf_conntrack_tcp_be_liberal": "1"}, scenarios.liberal_cases, None),
    "ignore_invalid_rst": ({"nf_conntrack_tcp_ignore_invalid_rst": "1"}, scenarios.ignore_rst_cases, None),
    "checksum": ({}, scenarios.checksum_cases, None),
    "checksum_off": ({"nf_conntrack_checksum": "0"}, scenarios.checksum_cases, None),
    "pickup_loose1": ({}, scenarios.pickup_cases, None),
    "pickup_loose0": ({"nf_conntrack_tcp_loose": "0"}, scenarios.pickup_cases, None),
    "syn": ({}, scenarios.syn_cases, None),
    "rst": ({}, scenarios.rst_cases, None),
    "box_rst": ({}, scenarios.box_rst_cases, None),
}
# client ports: 42000 + i, except the runs whose nat box answers for itself (its input is open there)
PORT_BASE = {"box_rst": 46000}
DEFAULTS = {"nf_conntrack_tcp_loose": "1", "nf_conntrack_tcp_be_liberal": "0",
            "nf_conntrack_tcp_ignore_invalid_rst": "0", "nf_conntrack_checksum": "1"}


def kernel_result(kv) -> Tuple[str, Optional[str]]:  # type: ignore[no-untyped-def]
    if kv.invalid:
        return "invalid", kv.logs[0].message if kv.logs else None
    if kv.logs:
        return "ignore", kv.logs[0].message
    return "accept", None


def settings_map(run: str) -> Dict[str, str]:
    out = dict(DEFAULTS)
    out.update({k.replace("net.netfilter.", ""): v for k, v in RUNS[run][0].items()})
    return out


def record_run(box: NatBox, kmsg: Kmsg, run: str, capture_path: str,
               skip_sysctls: Tuple[str, ...] = ()) -> dict:
    """Push run `run` through the kernel; what it did, as JSON-able data."""
    _sysctls, cases, linktype = RUNS[run]
    family = 6 if run == "ipv6" else 4
    sysctls = settings_map(run)
    skipped: List[str] = []
    box.flush()
    for key, value in sysctls.items():
        if key in skip_sysctls:
            continue
        try:
            box.sysctl(box.nat, "net.netfilter." + key, value)
        except RuntimeError as exc:
            if "No such file" not in str(exc):
                raise
            skipped.append(key)  # a key this kernel lacks (ignore_invalid_rst before 5.14): its default holds
    kmsg.read()
    capture = Capture(box.nat, capture_path, linktype)
    packets: List[list] = []  # [src, dst, sport, dport, seq, ack, flags, verdict, message, scenario]
    entries: Dict[int, list] = {}
    unlogged_box_invalid = 0
    base = PORT_BASE.get(run, 42000)
    try:
        for i, (name, steps) in enumerate(sorted(cases().items())):
            box_sent: List[tuple] = []
            for key, kv in inject(box, kmsg, steps, cport=base + i, family=family, box_packets=box_sent):
                packets.append(list(key[:6]) + [flag_names(key[6]), *kernel_result(kv), name])
            for key, kv in box_sent:
                if key is None:
                    unlogged_box_invalid += 1
                    continue
                packets.append(list(key[:6]) + [flag_names(key[6]), *kernel_result(kv),
                                                name + " (the nat box's own packet)"])
            entries[base + i] = list(box.entry_state(base + i, family))
    finally:
        capture.stop()
    return {"run": run, "capture": capture_path, "sysctls": sysctls, "packets": packets,
            "entries": {str(k): [v[0], list(v[1])] for k, v in entries.items()},
            "unlogged_box_invalid": unlogged_box_invalid, "sysctls_missing": skipped}


def compare_run(record: dict, profile, capture_path: Optional[str] = None) -> Tuple[List[str], dict]:  # type: ignore[no-untyped-def]
    """Every disagreement between the replay (with `profile`) and what the kernel did; and facts:
    {"seen", "injected", "bounded": {frame: bound the kernel logged}, "kernel_results": [...]}."""
    expected: Dict[tuple, deque] = defaultdict(deque)
    names: Dict[tuple, str] = {}
    for row in record["packets"]:
        key = tuple(row[:7])
        expected[key].append((row[7], row[8]))
        names[key] = row[9]
    injected = len(record["packets"])
    unlogged_box = record.get("unlogged_box_invalid", 0)
    path = capture_path or record["capture"]
    replay = Replay(path, profile, settings_from_sysctls(record["sysctls"]))
    mismatches: List[str] = []
    seen = 0
    bounded: Dict[int, int] = {}
    for v in replay.packets():
        if v.copy_of is not None:
            continue
        key = (v.src, v.dst, v.sport, v.dport, v.seq, v.ack, v.flags)
        queue = expected.get(key)
        if not queue:
            if v.src in (NAT_OUT_IP, NAT_OUT_IP6) and v.direction == "original":
                # the nat box's own packet that the kernel did not log: INVALID if the counter said so
                verdict = ("invalid", None) if unlogged_box > 0 else ("accept", None)
                unlogged_box -= verdict[0] == "invalid"
                queue = expected[key] = deque([verdict])
                names[key] = "the nat box's own packet"
                injected += 1
            else:
                mismatches.append(f"frame {v.frame}: not injected by the test: {key}")
                continue
        kernel = queue.popleft()
        seen += 1
        number = re.search(r"bound (\d+) ", kernel[1] or "")
        if number:
            bounded[v.frame] = int(number.group(1))
        elif (kernel[1] or "").endswith("bytes more than expected"):
            bounded[v.frame] = -1  # the overshoot, not a bound: --explain must still show bound I crossed
        if (v.verdict, v.message) != kernel:
            mismatches.append(f"[{names[key]}] frame {v.frame} {v.flags} seq={v.seq} ack={v.ack}: "
                              f"model {v.verdict} {v.message!r} != kernel {kernel[0]} {kernel[1]!r}")
    for flow in replay.summary.flows:
        want = record["entries"].get(str(flow.sport))
        if want is not None and flow.src.startswith(("10.231.1.", "fd31:1:")):
            model = [flow.state, sorted(flow.status)]
            if model != [want[0], sorted(want[1])]:
                mismatches.append(f"flow from port {flow.sport}: model entry {model} != kernel {want}")
    if replay.summary.diagnostics:
        mismatches.append(f"capture diagnostics: {replay.summary.diagnostics}")
    if seen != injected:
        mismatches.append(f"capture holds {seen} of the {injected} injected segments; missing: "
                          + "; ".join(f"[{names[k]}] {k}" for k, q in expected.items() for _ in q))
    return mismatches, {"seen": seen, "injected": injected, "bounded": bounded,
                        "kernel_results": [(row[7], row[8]) for row in record["packets"]]}
