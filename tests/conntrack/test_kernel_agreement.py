"""The model against the real kernel: a NAT box in network namespaces, packet by packet.

Crafted segments (scenarios.py) go through a masquerading nat namespace while
tcpdump -i any captures there. For every injected segment the kernel's verdict
is read from the nat namespace's invalid counter and its nf_log line; then the
capture is replayed with the running kernel's profile and the same sysctls, and
every packet must get the same verdict and the same message.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict, deque
from typing import Dict, List

import pytest

from sysctl_doctor.conntrack.profiles import profile_for
from sysctl_doctor.conntrack.replay import Replay, flag_names
from sysctl_doctor.conntrack.tcp_model import settings_from_sysctls
from sysctl_doctor.live import HostSysctlChange

from . import agreement, scenarios
from .test_replay_accel import _same_cli
from .natbox import CLIENT_IP, NAT_OUT_IP, Capture, Kmsg, NatBox, inject

pytestmark = pytest.mark.root


def _needs() -> None:
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: network namespaces, raw sockets and /dev/kmsg")
    for tool in ("ip", "nft", "tcpdump", "conntrack", "sysctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"NEEDS {tool}: apt-get install the package that provides it (scripts/test.sh does)")
    if not os.path.exists("/proc/sys/net/netfilter/nf_log_all_netns"):
        pytest.skip("NEEDS nf_log built into the kernel (net.netfilter.nf_log_all_netns is missing)")


@pytest.fixture(scope="module")
def natbox():
    _needs()
    box = NatBox(str(os.getpid()))
    try:
        with HostSysctlChange({"net/netfilter/nf_log_all_netns": "1"}):
            box.up()
            kmsg = Kmsg()
            try:
                yield box, kmsg
            finally:
                kmsg.close()
    finally:
        box.down()


RUNS = agreement.RUNS


def _accelerated_agrees(path: str, point: str, sysctls: Dict[str, str]) -> None:
    """The kernel's own capture: the compiled fast path and the pure-Python replay print the same
    report (each modelled kernel; a no-op check without the accelerator)."""
    args = [a for k, v in sorted(sysctls.items()) for a in ("--sysctl", f"{k}={v}")]
    for kernel in ("5.10", "6.1", "6.12"):
        _same_cli([path, "--kernel", kernel, "--capture-point", point, "--format", "json", *args])
_DEFAULTS = agreement.DEFAULTS
_kernel_result = agreement.kernel_result


@pytest.mark.parametrize("run", sorted(RUNS))
def test_model_agrees_with_kernel(natbox, tmp_path, run: str) -> None:
    box, kmsg = natbox
    record = agreement.record_run(box, kmsg, run, str(tmp_path / f"{run}.pcap"))
    profile = profile_for(os.uname().release)
    mismatches, facts = agreement.compare_run(record, profile)
    kernel_results = facts["kernel_results"]
    if os.environ.get("SDTCP_VERBOSE"):
        print(run, facts["seen"], sorted(set(kernel_results), key=str), record["entries"],
              "rewritten:", box.rewritten)
    assert not mismatches, "\n".join(mismatches)

    # replay --explain shows, for each packet the kernel logged with a bound, that very number
    settings = settings_from_sysctls(record["sysctls"])
    for frame, logged in sorted(facts["bounded"].items()):
        mismatches += _explain_disagrees(record["capture"], profile, settings, frame, logged)
    assert not mismatches, "\n".join(mismatches)

    # the scenarios must reach the branches they are about, or agreement proves little
    reached = {(verdict, (message or "").split(" ")[0] + " " + " ".join((message or "").split(" ")[1:3]))
               for verdict, message in kernel_results}
    for want in COVERAGE[run]:
        assert any(v == want[0] and (m or "").find(want[1]) >= 0 for v, m in kernel_results), (
            f"no kernel verdict {want} in run {run}: {sorted(reached)}")
    _accelerated_agrees(record["capture"], "any", record["sysctls"])


def _explain_disagrees(path: str, profile, settings, frame: int, logged: int) -> List[str]:
    from sysctl_doctor.conntrack.explain_frame import bounds

    replay = Replay(path, profile, settings, explain=frame)
    for v in replay.packets():
        if v.frame >= frame:
            break
    window = replay.explanation["trace"].get("window") if replay.explanation else None
    if window is None:
        return [f"frame {frame}: --explain shows no window arithmetic"]
    checks = bounds(window, profile)
    crossed = [c for c in checks if not c["ok"]]
    if not crossed:
        return [f"frame {frame}: --explain crosses no bound"]
    if logged >= 0 and crossed[0]["logged_bound"] != logged:
        return [f"frame {frame}: --explain bound {crossed[0]['name']} = {crossed[0]['logged_bound']}, "
                f"kernel logged {logged}"]
    return []


COVERAGE = {
    "defaults": [
        ("invalid", "SEQ is over upper bound"), ("ignore", "SEQ is under lower bound"),
        ("invalid", "ACK is over upper bound"), ("ignore", "ignored ACK under lower bound"),
        ("ignore", "bytes more than expected"), ("invalid", "invalid rst"),
        ("invalid", "invalid tcp flag combination"), ("ignore", "ignored, state ESTABLISHED"),
        ("accept", ""),
    ],
    "loose0": [("invalid", ""), ("accept", "")],
    "be_liberal": [("accept", ""), ("invalid", "invalid rst"), ("invalid", "invalid tcp flag combination")],
    "ignore_invalid_rst": [("accept", "")],
    "ipv6": [("invalid", "SEQ is over upper bound"), ("ignore", "SEQ is under lower bound"),
             ("invalid", "invalid rst"), ("accept", "")],
    "checksum": [("invalid", "bad checksum"), ("accept", "")],
    "checksum_off": [("accept", ""), ("invalid", "invalid tcp flag combination")],
    "pickup_loose1": [("accept", ""), ("invalid", "invalid new")],
    "pickup_loose0": [("invalid", ""), ("invalid", "invalid new")],
    "syn": [("accept", ""), ("ignore", "ignored, state ESTABLISHED"), ("ignore", "ignored, state SYN_RECV")],
    "rst": [("accept", ""), ("invalid", "invalid rst"), ("invalid", "invalid new")],
    "box_rst": [("invalid", "SEQ is over upper bound"), ("invalid", "invalid new")],
}


def test_capture_on_the_nat_box_outside_link(natbox, tmp_path) -> None:
    """`--capture-point nat-outside`: a capture of n1 alone (Ethernet, no direction flags). The box's own
    RSTs (answering replies it found INVALID) leave n1 from the box's address like the client's NATed
    packets; the kernel finds them "invalid new" in OUTPUT. With nat-outside the replay must give every
    server packet and every box RST the kernel's verdict and message, and every NATed client packet its
    original's verdict; read as "any" (every packet arriving, same tuple as the client's) it cannot."""
    box, kmsg = natbox
    box.flush()
    for key, value in _DEFAULTS.items():
        box.sysctl(box.nat, "net.netfilter." + key, value)
    kmsg.read()
    path = str(tmp_path / "n1.pcap")
    capture = Capture(box.nat, path, iface="n1")
    expected: Dict[tuple, deque] = defaultdict(deque)
    box_keys = set()
    try:
        for i, (name, steps) in enumerate(sorted(scenarios.box_rst_cases().items())):
            box_sent: List[tuple] = []
            for key, kv in inject(box, kmsg, steps, cport=46100 + i, box_packets=box_sent):
                if key[0] == CLIENT_IP and not kv.invalid:
                    key = (NAT_OUT_IP,) + key[1:]  # masqueraded (the port is kept: no clash here)
                expected[key[:6] + (flag_names(key[6]),)].append(_kernel_result(kv))
            for key, kv in box_sent:
                if key is None:  # an unlogged answer of the box (kernels before 6.7)
                    continue
                key = key[:6] + (flag_names(key[6]),)
                expected[key].append(_kernel_result(kv))
                box_keys.add(key)
    finally:
        capture.stop()
    assert box_keys, "the nat box sent no RST of its own: the scenario proves nothing"

    def compare(point: str) -> List[str]:
        queues = {k: deque(q) for k, q in expected.items()}
        out = []
        replay = Replay(path, profile_for(os.uname().release), settings_from_sysctls(_DEFAULTS),
                        capture_point=point)
        for v in replay.packets():
            key = (v.src, v.dst, v.sport, v.dport, v.seq, v.ack, v.flags)
            if v.src == CLIENT_IP:
                # INVALID on the inside, so not NATed: it leaves n1 with the client's address; what the
                # kernel found wrong with it was decided on n0, which this capture does not show
                continue
            queue = queues.get(key)
            if not queue:
                out.append(f"frame {v.frame}: not expected on n1: {key}")
                continue
            kernel = queue.popleft()
            if (v.verdict, v.message) != kernel:
                out.append(f"frame {v.frame} {key}: model {v.verdict} {v.message!r} != kernel {kernel}")
        out += [f"not on n1: {k}" for k, q in queues.items() for _ in q
                if k[0] != CLIENT_IP]  # an INVALID client packet leaves n1 un-NATed or not at all
        return out

    mismatches = compare("nat-outside")
    assert not mismatches, "\n".join(mismatches)
    assert any("invalid new" in m for m in compare("any")), "read as 'any' the box's RSTs should disagree"
    _accelerated_agrees(path, "nat-outside", _DEFAULTS)


def test_capture_on_the_nat_box_inside_link(natbox, tmp_path) -> None:
    """`--capture-point nat-inside`: a capture of n0 alone (Ethernet, no direction flags). The client's
    packets arrive there (their checksums count: a wrong one is "bad checksum"); the server's show up
    de-NATed, after the outside link judged them — those the kernel found INVALID never do. Every packet
    on n0 must get the kernel's verdict and message."""
    box, kmsg = natbox
    box.flush()
    for key, value in _DEFAULTS.items():
        box.sysctl(box.nat, "net.netfilter." + key, value)
    kmsg.read()
    path = str(tmp_path / "n0.pcap")
    capture = Capture(box.nat, path, iface="n0")
    expected: Dict[tuple, deque] = defaultdict(deque)
    invalid_replies = 0
    try:
        for i, (name, steps) in enumerate(sorted(scenarios.checksum_cases().items())):
            if "by_the_box" in name:
                continue  # the box's own connection never crosses n0
            for key, kv in inject(box, kmsg, steps, cport=46200 + i):
                result = _kernel_result(kv)
                if key[1] == NAT_OUT_IP:  # a reply: de-NATed to the client, unless INVALID
                    if result[0] == "invalid":
                        invalid_replies += 1
                        continue
                    key = (key[0], CLIENT_IP) + key[2:]
                expected[key[:6] + (flag_names(key[6]),)].append(result)
    finally:
        capture.stop()
    assert invalid_replies, "no INVALID reply: the scenario proves nothing about what n0 misses"
    replay = Replay(path, profile_for(os.uname().release), settings_from_sysctls(_DEFAULTS),
                    capture_point="nat-inside")
    mismatches = []
    for v in replay.packets():
        key = (v.src, v.dst, v.sport, v.dport, v.seq, v.ack, v.flags)
        queue = expected.get(key)
        if not queue:
            mismatches.append(f"frame {v.frame}: not expected on n0: {key}")
            continue
        kernel = queue.popleft()
        if (v.verdict, v.message) != kernel:
            mismatches.append(f"frame {v.frame} {key}: model {v.verdict} {v.message!r} != kernel {kernel}")
    mismatches += [f"not on n0: {k}" for k, q in expected.items() for _ in q]
    assert not mismatches, "\n".join(mismatches)
    assert replay.summary.bad_checksums >= 2, "the client's wrong checksums on n0 were not judged"
    _accelerated_agrees(path, "nat-inside", _DEFAULTS)
