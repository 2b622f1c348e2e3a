"""What each kernel profile says about the issue-11 families, offline (the 6.18 side is proven in
the netns by test_kernel_agreement.py; the others follow their sources, see conntrack/profiles.py)."""

from __future__ import annotations

from sysctl_doctor.conntrack.frames import PcapWriter, ip_tcp_packet
from sysctl_doctor.conntrack.profiles import profile_for
from sysctl_doctor.conntrack.replay import replay_capture
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_FIN, F_RST, F_SYN

from . import captures

C, S = "10.9.0.1", "10.9.0.2"


def _write(path: str, steps) -> str:
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=101)
        for i, (src, flags, seq, ack) in enumerate(steps, 1):
            s, d, sp, dp = (C, S, 40000, 80) if src == "c" else (S, C, 80, 40000)
            w.write(ip_tcp_packet(s, d, sp, dp, seq, ack, flags, 8000, ip_id=i), 1.0 + i / 1000)
    return path


def _results(path: str, kernel: str, sysctls=None):
    return [(v.frame, v.verdict, v.message) for v in replay_capture(path, kernel, sysctls)]


def test_invalid_new_is_logged_from_6_7_only(tmp_path) -> None:
    # a stray RST and a FIN with no entry (the NAT box's own RST looks like the first)
    path = _write(str(tmp_path / "t.pcap"), [("c", F_RST, 100, 0), ("s", F_FIN | F_ACK, 500, 100)])
    assert _results(path, "6.18") == [(1, "invalid", "invalid new"), (2, "invalid", "invalid new")]
    assert _results(path, "6.7") == _results(path, "6.12") == _results(path, "6.18")
    for older in ("5.10", "6.1", "6.6"):
        assert _results(path, older) == [(1, "invalid", None), (2, "invalid", None)], older
    assert profile_for("6.6").label == "6.1–6.6" and profile_for("6.12").label == "≥ 6.7"
    assert any(c.startswith("6ac9c51eebe8") for c in profile_for("6.12").commits)


def test_loose0_pickup_every_packet_of_the_flow(tmp_path) -> None:
    path = _write(str(tmp_path / "t.pcap"), [
        ("s", F_ACK, 500, 100), ("c", F_ACK, 100, 500), ("c", F_FIN | F_ACK, 100, 500), ("s", F_RST, 500, 0)])
    loose0 = {"nf_conntrack_tcp_loose": "0"}
    assert _results(path, "6.18", loose0) == [
        (1, "invalid", None), (2, "invalid", None), (3, "invalid", "invalid new"), (4, "invalid", "invalid new")]
    assert _results(path, "6.1", loose0) == [(i, "invalid", None) for i in range(1, 5)]
    # loose=1: the server's packet makes the entry, the client is the REPLY direction
    verdicts = replay_capture(path, "6.18")
    assert [(v.verdict, v.direction) for v in verdicts[:3]] == [
        ("accept", "original"), ("accept", "reply"), ("accept", "reply")]


def test_synack_with_a_new_isn_after_a_retransmitted_syn(tmp_path) -> None:
    path = _write(str(tmp_path / "t.pcap"), [
        ("c", F_SYN, 1000, 0), ("s", F_SYN | F_ACK, 5000, 1001), ("c", F_SYN, 1000, 0),
        ("s", F_SYN | F_ACK, 9_000_000, 1001), ("c", F_ACK, 1001, 9_000_001), ("s", F_ACK, 9_000_001, 1001)])
    for kernel, ignored in (("6.18", "packet (index 0) in dir 0 ignored, state SYN_RECV"),
                            ("5.10", "invalid packet ignored in state SYN_RECV")):
        assert _results(path, kernel) == [
            (1, "accept", None), (2, "accept", None), (3, "ignore", ignored),
            (4, "accept", None), (5, "accept", None), (6, "accept", None)], kernel


def test_seed_capture_profiles_unchanged(tmp_path) -> None:
    path = str(tmp_path / "seed.pcap")
    captures.write_ethernet_pcap(path, captures.seed_packets())
    assert [v.verdict for v in replay_capture(path, "6.1") if v.verdict != "accept"] == ["ignore"]
    assert [v.verdict for v in replay_capture(path, "5.10") if v.verdict != "accept"] == ["invalid"]
