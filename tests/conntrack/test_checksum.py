"""Checksums as conntrack's tcp_error() judges them: bad ones arriving are INVALID ("bad checksum"),
offloaded ones (the sender's pseudo-header sum) and outgoing ones are not; nf_conntrack_checksum=0
turns the check off. The real kernel's side of this is in test_kernel_agreement.py (runs "checksum",
"checksum_off", "box_rst") and tests/lab/test_three_way.py (offloaded checksums from real sockets)."""

from __future__ import annotations

import struct

from sysctl_doctor.conntrack.checksum import BAD, OK, PARTIAL, UNKNOWN, tcp_checksum_state
from sysctl_doctor.conntrack.frames import PcapWriter, ip_tcp_packet
from sysctl_doctor.conntrack.replay import replay_capture
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_PSH, F_SYN

from . import captures
from .natbox import corrupt_tcp_checksum

A, B = "10.9.0.1", "10.9.0.2"


def _partial(packet: bytes) -> bytes:
    """What a sender with checksum offload hands its NIC (and its own capture shows): the folded
    pseudo-header sum in the checksum field."""
    v6 = packet[0] >> 4 == 6
    l4 = 40 if v6 else (packet[0] & 0x0F) * 4
    tcplen = len(packet) - l4
    src, dst = (packet[8:24], packet[24:40]) if v6 else (packet[12:16], packet[16:20])
    words = src + dst
    total = sum(struct.unpack("!%dH" % (len(words) // 2), words)) + 6 + tcplen
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return packet[:l4 + 16] + struct.pack("!H", total) + packet[l4 + 18:]


def _state(packet: bytes, cut: int = 0) -> str:
    v6 = packet[0] >> 4 == 6
    l4 = 40 if v6 else 20
    src, dst = (packet[8:24], packet[24:40]) if v6 else (packet[12:16], packet[16:20])
    raw = packet[:len(packet) - cut]
    return tcp_checksum_state(6 if v6 else 4, src, dst, raw, l4, len(packet) - l4)


def test_checksum_states_v4_and_v6() -> None:
    for a, b in ((A, B), ("fd00::1", "fd00::2")):
        for payload in (b"", b"x", b"xy" * 700 + b"z"):
            good = ip_tcp_packet(a, b, 1234, 80, 77, 99, F_ACK | F_PSH, 500, payload)
            assert _state(good) == OK
            assert _state(corrupt_tcp_checksum(good)) == BAD
            assert _state(_partial(good)) == PARTIAL
            if payload:
                assert _state(good, cut=1) == UNKNOWN


def _connection(mangle_frame: int, mangle) -> list:
    out = []
    t = 10.0
    steps = [(A, B, 1000, 80, 100, 0, F_SYN), (B, A, 80, 1000, 500, 101, F_SYN | F_ACK),
             (A, B, 1000, 80, 101, 501, F_ACK), (A, B, 1000, 80, 101, 501, F_ACK | F_PSH),
             (B, A, 80, 1000, 501, 111, F_ACK)]
    for i, (s, d, sp, dp, seq, ack, flags) in enumerate(steps, 1):
        pkt = ip_tcp_packet(s, d, sp, dp, seq, ack, flags, 8000, b"p" * 10 if i == 4 else b"", ip_id=i)
        if i == mangle_frame:
            pkt = mangle(pkt)
        t += 0.001
        out.append((t, pkt))
    return out


def _verdicts(path, packets, sysctls=None, outgoing_frames=()):
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=113)  # Linux cooked v1: carries the direction
        for i, (t, pkt) in enumerate(packets, 1):
            w.write(captures.sll_header(pkt, pkttype=4 if i in outgoing_frames else 0) + pkt, t)
    return [(v.frame, v.verdict, v.message) for v in replay_capture(path, "6.18", sysctls)
            if v.verdict != "accept"]


def test_a_bad_checksum_arriving_is_invalid_and_changes_nothing(tmp_path) -> None:
    path = str(tmp_path / "c.pcap")
    packets = _connection(4, corrupt_tcp_checksum)
    assert _verdicts(path, packets) == [(4, "invalid", "bad checksum"),
                                        (5, "invalid", "ACK is over upper bound 102 (ACKed data not seen yet)")]
    assert _verdicts(path, packets, {"net.netfilter.nf_conntrack_checksum": "0"}) == []
    # a bad SYN makes no entry: the SYN/ACK after it finds none
    assert _verdicts(path, _connection(1, corrupt_tcp_checksum))[:2] == [
        (1, "invalid", "bad checksum"), (2, "invalid", "invalid new")]


def test_offloaded_and_outgoing_checksums_are_not_checked(tmp_path) -> None:
    path = str(tmp_path / "c.pcap")
    assert _verdicts(path, _connection(4, _partial)) == []
    # sent by the capturing host (OUTPUT/POSTROUTING): the kernel never checks those
    assert _verdicts(path, _connection(4, corrupt_tcp_checksum), outgoing_frames=(4,)) == []


def _ethernet(path, packets):
    from sysctl_doctor.conntrack.frames import ethernet_frame

    with open(path, "wb") as f:
        w = PcapWriter(f)
        for t, pkt in packets:
            w.write(ethernet_frame(captures.MAC_A, captures.MAC_B, pkt), t)


def test_capture_points_decide_which_checksums_count(tmp_path) -> None:
    """No direction flags (Ethernet): where the capture was taken says who received what."""
    path = str(tmp_path / "e.pcap")
    client_bad = _connection(4, corrupt_tcp_checksum)  # A (the SYN sender) -> B, wrong sum
    server_bad = _connection(5, corrupt_tcp_checksum)  # B -> A
    _ethernet(path, client_bad)

    def bad(point: str):
        return [v.frame for v in replay_capture_at(path, point) if v.message == "bad checksum"]

    assert bad("any") == [4]          # every packet taken as arriving
    assert bad("nat-inside") == [4]   # the client's packets arrive at the box on the inside
    assert bad("nat-outside") == []   # the SYN sender's packets leave the box: checked on the inside
    assert bad("endpoint") == []      # the sender's NIC fills the sum in on the wire
    _ethernet(path, server_bad)
    assert bad("nat-outside") == [5] and bad("nat-inside") == [] and bad("endpoint") == []


def replay_capture_at(path: str, point: str):
    from sysctl_doctor.conntrack.profiles import profile_for
    from sysctl_doctor.conntrack.replay import Replay
    from sysctl_doctor.conntrack.tcp_model import TcpSettings

    return list(Replay(path, profile_for("6.18"), TcpSettings(), capture_point=point).packets())


def test_cli_capture_point_and_explain(tmp_path) -> None:
    import json
    import subprocess
    import sys

    path = str(tmp_path / "e.pcap")
    _ethernet(path, _connection(4, corrupt_tcp_checksum))
    sdoc = [sys.executable, "-m", "sysctl_doctor", "conntrack", "replay", path, "--kernel", "6.18"]
    run = subprocess.run(sdoc + ["--format", "json"], capture_output=True, text=True)
    assert run.returncode == 1 and '"capture_point": "any"' in run.stdout
    assert '"bad_checksums": 1' in run.stdout
    run = subprocess.run(sdoc, capture_output=True, text=True)
    assert run.returncode == 1 and "1 packets arrived with a wrong TCP checksum" in run.stdout
    assert "--capture-point endpoint" in run.stdout
    run = subprocess.run(sdoc + ["--capture-point", "endpoint"], capture_output=True, text=True)
    assert run.returncode == 0 and "wrong TCP checksum" not in run.stdout, run.stdout + run.stderr
    run = subprocess.run(sdoc + ["--explain", "4"], capture_output=True, text=True)
    assert run.returncode == 1 and "checksum wrong" in run.stdout and 'verdict: INVALID — "bad checksum"' in run.stdout
    run = subprocess.run(sdoc + ["--explain", "5", "--format", "json"], capture_output=True, text=True)
    data = json.loads(run.stdout)
    assert run.returncode == 1 and data["verdict"] == "invalid"
    crossed = [b for b in data["window"]["bounds"] if not b["ok"]]
    assert crossed[0]["name"] == "III" and crossed[0]["logged_bound"] == 102
    run = subprocess.run(sdoc + ["--explain", "99"], capture_output=True, text=True)
    assert run.returncode == 2 and "frame 99" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(sdoc + ["--capture-point", "moon"], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
