"""Replay on built captures: the incident under both profiles, the kernel's published vector,
every link type, and damaged input."""

from __future__ import annotations

import json
import struct

import pytest
import subprocess
import sys
from sysctl_doctor.conntrack.frames import PcapWriter, ethernet_frame, ip_tcp_packet
from sysctl_doctor.conntrack.profiles import legacy_profile, modern_profile, profile_for
from sysctl_doctor.conntrack.replay import Replay, replay_capture
from sysctl_doctor.conntrack.tcp_model import (
    F_ACK, TcpSettings, normalize_sysctl_name, settings_from_sysctls,
)
from sysctl_doctor.errors import DoctorError

from . import captures

SEED_LEGACY = "SEQ is under the lower bound (already ACKed data retransmitted)"


def _not_accepted(verdicts):
    return [(v.frame, v.verdict, v.message) for v in verdicts if v.verdict != "accept"]


@pytest.fixture
def seed_pcap(tmp_path):
    path = str(tmp_path / "seed.pcap")
    captures.write_ethernet_pcap(path, captures.seed_packets())
    return path


def test_seed_incident_is_invalid_up_to_6_0(seed_pcap) -> None:
    verdicts = replay_capture(seed_pcap, profile_for("5.10"))
    assert len(verdicts) == 206
    assert _not_accepted(verdicts) == [(204, "invalid", SEED_LEGACY)]
    bad = verdicts[203]
    assert (bad.src, bad.sport, bad.seq, bad.length) == ("10.231.2.2", 6379, 2_000_000 + 140_000 - 80_000, 1234)


def test_seed_incident_is_ignored_from_6_1(seed_pcap) -> None:
    verdicts = replay_capture(seed_pcap, profile_for("6.18.44-fc-v657"))
    (frame, verdict, message), = _not_accepted(verdicts)
    assert (frame, verdict) == (204, "ignore")
    assert message.startswith("SEQ is under lower bound ") and message.endswith("(already ACKed data retransmitted)")


def test_replay_capture_takes_a_version_string(seed_pcap) -> None:
    assert _not_accepted(replay_capture(seed_pcap, "5.10")) == [(204, "invalid", SEED_LEGACY)]


def test_seed_incident_be_liberal_accepts(seed_pcap) -> None:
    verdicts = replay_capture(seed_pcap, profile_for("5.10"), {"net.netfilter.nf_conntrack_tcp_be_liberal": "1"})
    assert _not_accepted(verdicts) == []


def test_kernel_selftest_ack_loss_stall(tmp_path) -> None:
    """The kernel's own vector: INVALID with the quoted message before 6.1, let through after."""
    path = str(tmp_path / "stall.pcap")
    captures.write_ethernet_pcap(path, captures.ack_loss_stall_packets())
    old = replay_capture(path, legacy_profile())
    last = old[-1]
    assert _not_accepted(old) == [(last.frame, "invalid", SEED_LEGACY)]
    assert (last.src, last.dst, last.sport, last.dport, last.seq, last.ack) == (
        "192.0.2.1", "192.168.24.72", 34375, 8080, 1, 4162510439)
    new = replay_capture(path, modern_profile())
    assert [v for _, v, _ in _not_accepted(new)] == ["ignore"]


@pytest.mark.parametrize("kind", ["ethernet", "vlan", "raw", "sll", "sll2", "pcapng", "pcapng-us", "ipv6"])
def test_link_types_and_formats_agree(tmp_path, kind: str) -> None:
    path = str(tmp_path / f"{kind}.cap")
    if kind == "ipv6":
        packets = captures.seed_packets("fd31::2", "fd31:1::2")
        captures.write_ethernet_pcap(path, packets)
    else:
        packets = captures.seed_packets()
        if kind == "ethernet":
            captures.write_ethernet_pcap(path, packets)
        elif kind == "vlan":
            captures.write_ethernet_pcap(path, packets, vlan=42)
        elif kind == "raw":
            captures.write_raw_pcap(path, packets)
        elif kind in ("sll", "sll2"):
            with open(path, "wb") as f:
                w = PcapWriter(f, linktype=113 if kind == "sll" else 276)
                for t, pkt in packets:
                    head = captures.sll_header(pkt) if kind == "sll" else captures.sll2_header(pkt)
                    w.write(head + pkt, t)
        else:
            captures.write_pcapng(path, packets, nanos=kind == "pcapng")
    replay = Replay(path, legacy_profile(), TcpSettings())
    verdicts = list(replay.packets())
    assert len(verdicts) == 206
    assert _not_accepted(verdicts) == [(204, "invalid", SEED_LEGACY)]
    assert replay.summary.diagnostics == [] and replay.summary.skipped == {}
    assert abs(verdicts[0].time - packets[0][0]) < 1e-5


def test_nat_box_any_capture_copies_and_binding(tmp_path) -> None:
    """A cooked capture on a NAT box: each forwarded packet in and out; replies go to the NAT address."""
    path = str(tmp_path / "any.pcap")
    inner = captures.seed_packets("10.231.1.2", "10.231.2.2", segments=5)
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=113)
        for t, pkt in inner:
            src = pkt[12:16]
            if src == bytes([10, 231, 1, 2]):  # client -> server: in on n0, out on n1 masqueraded
                out = ip_tcp_packet("10.231.2.1", "10.231.2.2", *_ports_seq(pkt), ip_id=_ip_id(pkt))
                w.write(captures.sll_header(pkt, 0) + pkt, t)
                w.write(captures.sll_header(out, 4) + out, t + 1e-6)
            else:  # server -> NAT address, in on n1, out on n0 de-NATed
                back = ip_tcp_packet("10.231.2.2", "10.231.2.1", *_ports_seq(pkt), ip_id=_ip_id(pkt))
                w.write(captures.sll_header(back, 0) + back, t)
                w.write(captures.sll_header(pkt, 4) + pkt, t + 1e-6)
    replay = Replay(path, legacy_profile(), TcpSettings())
    verdicts = list(replay.packets())
    originals = [v for v in verdicts if v.copy_of is None]
    copies = [v for v in verdicts if v.copy_of is not None]
    assert len(originals) == len(copies) == len(inner)
    assert all(c.verdict == verdicts[c.copy_of - 1].verdict for c in copies)
    assert [v.verdict for v in originals].count("invalid") == 1
    assert len(replay.summary.flows) == 1 and replay.summary.flows[0].nat == "10.231.2.1:26110 -> 10.231.2.2:6379"
    assert replay.summary.flows[0].invalid == 1  # flows count what conntrack processed: not the copy
    assert replay.summary.copies == len(inner)


def _ports_seq(pkt: bytes):
    ihl = (pkt[0] & 0x0F) * 4
    sport, dport, seq, ack, off, flags, win = struct.unpack_from("!HHIIBBH", pkt, ihl)
    doff = (off >> 4) * 4
    return sport, dport, seq, ack, flags, win, pkt[ihl + doff:], pkt[ihl + 20:ihl + doff]


def _ip_id(pkt: bytes) -> int:
    return struct.unpack_from("!H", pkt, 4)[0]


# -- damaged input -----------------------------------------------------------------

def test_truncated_file_is_reported_not_raised(tmp_path, seed_pcap) -> None:
    data = open(seed_pcap, "rb").read()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) - 700])
    replay = Replay(str(path), legacy_profile(), TcpSettings())
    verdicts = list(replay.packets())
    assert 0 < len(verdicts) < 206
    assert any("cut short" in d.message for d in replay.summary.diagnostics)


def test_garbage_record_length_stops_with_a_diagnostic(tmp_path, seed_pcap) -> None:
    data = bytearray(open(seed_pcap, "rb").read())
    # frame 3's header sits after the global header and two records; make its length absurd
    first = 24 + 16 + struct.unpack_from("<I", data, 24 + 8)[0]
    second = first + 16 + struct.unpack_from("<I", data, first + 8)[0]
    struct.pack_into("<I", data, second + 8, 0x7FFFFFFF)
    path = tmp_path / "garbage.pcap"
    path.write_bytes(bytes(data))
    replay = Replay(str(path), legacy_profile(), TcpSettings())
    assert len(list(replay.packets())) == 2
    assert any("makes no sense" in d.message for d in replay.summary.diagnostics)


def test_snaplen_cut_and_non_tcp_are_counted(tmp_path) -> None:
    path = str(tmp_path / "mixed.pcap")
    tcp = ip_tcp_packet("10.231.1.2", "10.231.2.2", 1000, 80, 1, 0, 0x02, 1000,
                        options=bytes([2, 4, 5, 180]))
    udp = bytes([0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 231, 1, 2, 10, 231, 2, 2]) + bytes(8)
    arp = bytes(28)
    with open(path, "wb") as f:
        w = PcapWriter(f)
        w.write(ethernet_frame(captures.MAC_A, captures.MAC_B, tcp), 1.0)
        w.write(ethernet_frame(captures.MAC_A, captures.MAC_B, tcp)[:14 + 20 + 22], 2.0, orig_len=14 + len(tcp))
        w.write(ethernet_frame(captures.MAC_A, captures.MAC_B, udp), 3.0)
        w.write(captures.MAC_A + captures.MAC_B + b"\x08\x06" + arp, 4.0)
        w.write(b"\x01\x02", 5.0)
    replay = Replay(path, modern_profile(), TcpSettings())
    verdicts = list(replay.packets())
    assert [v.frame for v in verdicts] == [1]
    assert replay.summary.skipped == {"cut by the snap length": 2, "not TCP": 1, "not IP": 1}


def test_truncated_tcp_header_is_the_kernels_truncated_packet(tmp_path) -> None:
    path = str(tmp_path / "short.pcap")
    good = ip_tcp_packet("10.231.1.2", "10.231.2.2", 1000, 80, 1, 0, 0x02, 1000)
    short = bytearray(good[:20 + 12])
    struct.pack_into("!H", short, 2, 32)  # IP total length says: 12 bytes of TCP
    short[10:12] = b"\0\0"
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=101)
        w.write(bytes(short), 1.0)
    (v,) = replay_capture(path, modern_profile())
    assert (v.verdict, v.message) == ("invalid", "truncated packet")


def test_not_a_capture_is_a_doctor_error(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a capture\n")
    with pytest.raises(DoctorError, match="not a pcap or pcapng"):
        replay_capture(str(path), modern_profile())


# -- sysctls and profiles -------------------------------------------------------------

def test_sysctl_spellings() -> None:
    for name in ("nf_conntrack_tcp_be_liberal", "net.netfilter.nf_conntrack_tcp_be_liberal",
                 "net/netfilter/nf_conntrack_tcp_be_liberal"):
        assert normalize_sysctl_name(name) == "nf_conntrack_tcp_be_liberal"
    s = settings_from_sysctls({"nf_conntrack_tcp_loose": "0", "nf_conntrack_tcp_timeout_established": "60"})
    assert s.loose is False and s.timeouts["established"] == 60 and s.be_liberal is False
    with pytest.raises(DoctorError):
        normalize_sysctl_name("nf_conntrack_tcp_be_liberally")
    with pytest.raises(DoctorError):
        settings_from_sysctls({"nf_conntrack_tcp_loose": "yes"})


def test_profiles_by_version() -> None:
    assert profile_for("6.0.12").name == "legacy" and profile_for("6.1").name == "modern"
    assert profile_for("5.10.0-28-amd64").has_ignore_invalid_rst is False
    assert profile_for("5.15").has_ignore_invalid_rst is True
    with pytest.raises(DoctorError):
        profile_for("linux")


# -- the command line ---------------------------------------------------------------------

class _Run:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.exit_code = proc.returncode
        self.stdout = proc.stdout
        self.output = proc.stdout + proc.stderr


def _cli(args):
    return _Run(subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True))


def test_cli_json_contract(seed_pcap) -> None:
    result = _cli(["conntrack", "replay", seed_pcap, "--kernel", "5.10", "--format", "json",
                                      "--what-if", "nf_conntrack_tcp_be_liberal=1", "--what-if", "kernel=6.18"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert len(doc["packets"]) == 206 and doc["flows"][0]["invalid"] == 1
    assert doc["packets"][0]["frame"] == 1
    assert all(set(p) >= {"frame", "verdict", "message"} for p in doc["packets"])
    assert doc["packets"][203]["verdict"] == "invalid" and doc["packets"][203]["message"] == SEED_LEGACY
    assert doc["packets"][0] == {"frame": 1, "verdict": "accept", "message": None, "flow": 0}
    assert doc["packets"][203]["src"] == "10.231.2.2" and doc["packets"][203]["seq"] == 2_060_000
    liberal, newer = doc["what_if"]
    assert liberal["invalid"] == 0 and liberal["packets"] == [
        {"frame": 204, "from": "invalid", "to": "accept", "message": None}]
    assert newer["packets"][0]["to"] == "ignore"


def test_cli_text_and_exit_codes(seed_pcap, tmp_path) -> None:
    result = _cli(["conntrack", "replay", seed_pcap, "--kernel", "5.10"])
    assert result.exit_code == 1
    assert "frame     204  INVALID" in result.stdout and SEED_LEGACY in result.stdout
    result = _cli(["conntrack", "replay", seed_pcap, "--kernel", "6.18",
                                 "--sysctl", "net.netfilter.nf_conntrack_tcp_be_liberal=0"])
    assert result.exit_code == 0 and "1 ignore" in result.stdout
    bad = tmp_path / "x.txt"
    bad.write_text("not a capture")
    result = _cli(["conntrack", "replay", str(bad)])
    assert result.exit_code == 2 and "not a pcap or pcapng" in result.output
    result = _cli(["conntrack", "replay", seed_pcap, "--sysctl", "nf_conntrack_tcp_nope=1"])
    assert result.exit_code == 2


def test_ack_flag_constant() -> None:
    assert F_ACK == 0x10


def test_fast_path_equals_general_path(tmp_path, monkeypatch) -> None:
    """The inlined ESTABLISHED fast path must decide and update exactly like the general code."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(
        "bench_replay", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "replay.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = str(tmp_path / "mix.pcap")
    bench.generate(path, 30_000, 40)
    settings = settings_from_sysctls({"nf_conntrack_tcp_timeout_established": "100",
                                      "nf_conntrack_tcp_max_retrans": "1"})

    def run():
        r = Replay(path, legacy_profile(), settings)
        out = [(v.frame, v.verdict, v.message, v.state) for v in r.packets()]
        return out, [(f.state, f.status, f.invalid) for f in r.summary.flows]

    fast = run()
    from sysctl_doctor.conntrack import tcp_model

    monkeypatch.setattr(tcp_model.TcpTracker, "_established_ack", lambda self, *a: None)
    general = run()
    assert fast == general
    assert any(v == "invalid" for _, v, _, _ in fast[0])  # the stale segments are there


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "sll2"])
def test_mutated_captures_never_crash(tmp_path, kind: str) -> None:
    """Random byte flips, cuts and garbage: every outcome is verdicts plus diagnostics, never an exception."""
    import random

    base = str(tmp_path / "base")
    packets = captures.seed_packets(segments=8)
    if kind == "pcap":
        captures.write_ethernet_pcap(base, packets)
    elif kind == "pcapng":
        captures.write_pcapng(base, packets)
    else:
        with open(base, "wb") as f:
            w = PcapWriter(f, linktype=276)
            for t, pkt in packets:
                w.write(captures.sll2_header(pkt) + pkt, t)
    data = open(base, "rb").read()
    rng = random.Random(4242)
    path = tmp_path / "mutant"
    for _ in range(300):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(4, len(mutant))  # keep the magic: we want the reader to work on it
            mutant[i] = rng.randrange(256)
        if rng.random() < 0.3:
            mutant = mutant[: rng.randrange(4, len(mutant))]
        if rng.random() < 0.2:
            mutant += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        path.write_bytes(bytes(mutant))
        for profile in (legacy_profile(), modern_profile()):
            try:
                replay = Replay(str(path), profile, TcpSettings())
                for v in replay.packets():
                    assert v.verdict in ("accept", "ignore", "invalid")
                    v.to_json()
            except DoctorError:
                pass  # e.g. a pcap header cut below 24 bytes: a clear error, fine


def test_out_of_range_sysctls_are_refused_like_the_kernel(seed_pcap) -> None:
    """Regression: be_liberal=7 was accepted; the kernel refuses it (u8 with min 0, max 1)."""
    from sysctl_doctor.conntrack.tcp_model import KNOWN_SYSCTLS, TIMEOUT_MAX, sysctl_value_limit

    assert sysctl_value_limit("nf_conntrack_tcp_be_liberal") == 1
    assert sysctl_value_limit("nf_conntrack_tcp_max_retrans") == 255
    assert sysctl_value_limit("nf_conntrack_tcp_timeout_close") == TIMEOUT_MAX
    for key in KNOWN_SYSCTLS:
        limit = sysctl_value_limit(key)
        assert settings_from_sysctls({key: str(limit)}) is not None
        with pytest.raises(DoctorError, match=rf"out of range, the kernel accepts 0\.\.{limit}"):
            settings_from_sysctls({key: str(limit + 1)})
    for option in ("--sysctl", "--what-if"):
        result = _cli(["conntrack", "replay", seed_pcap, option, "nf_conntrack_tcp_be_liberal=7"])
        assert result.exit_code == 2, result.output
        assert "nf_conntrack_tcp_be_liberal=7: out of range, the kernel accepts 0..1" in result.output
        assert "Traceback" not in result.output
    result = _cli(["conntrack", "replay", seed_pcap, "--what-if", "nf_conntrack_tcp_max_retrans=256"])
    assert result.exit_code == 2 and "accepts 0..255" in result.output


def test_sysctl_limits_match_the_running_kernel() -> None:
    """The limits of the booleans and max_retrans are what this kernel's proc handlers enforce (in a new netns)."""
    import os
    import shutil

    from sysctl_doctor.conntrack.tcp_model import sysctl_value_limit

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("NEEDS root and unshare(1): the check writes sysctls in a private network namespace")
    keys = ["nf_conntrack_tcp_be_liberal", "nf_conntrack_tcp_loose", "nf_conntrack_tcp_max_retrans"]
    if os.path.exists("/proc/sys/net/netfilter/nf_conntrack_tcp_ignore_invalid_rst"):
        keys.append("nf_conntrack_tcp_ignore_invalid_rst")
    script = "; ".join(
        f"(echo {sysctl_value_limit(k)} > /proc/sys/net/netfilter/{k}) 2>/dev/null && echo {k}=ok || echo {k}=no; "
        f"(echo {sysctl_value_limit(k) + 1} > /proc/sys/net/netfilter/{k}) 2>/dev/null && echo {k}+=ok || echo {k}+=no"
        for k in keys)
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True)
    if proc.returncode != 0 or "=" not in proc.stdout:
        pytest.skip(f"NEEDS a network namespace with conntrack sysctls: {proc.stderr.strip()}")
    got = dict(line.split("=") for line in proc.stdout.split())
    assert got == {**{k: "ok" for k in keys}, **{k + "+": "no" for k in keys}}
