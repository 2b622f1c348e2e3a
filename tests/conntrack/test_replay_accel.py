"""The compiled fast path of `conntrack replay` (conntrack/_replayfast.c) against the pure-Python replay.

Both must print byte-identical reports (text and JSON, every profile, sysctl and capture point) and give
identical per-packet verdicts through Replay.packets(): on the captures the other tests use, on random
captures (hypothesis: handshakes, data, retransmissions, reordering, stale and future segments, RSTs,
FINs, SACK, window changes, zero windows, IPv6, VLAN/raw/loopback link types, cut records, bad checksums,
time jumps past the timeouts) and on a capture long enough for the GC and the progress checkpoints.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysctl_doctor.cli import cli
from sysctl_doctor.compiled import PURE_PYTHON_ENV, load_accelerator
from sysctl_doctor.conntrack.frames import ethernet_frame, ip_tcp_packet, tcp_options
from sysctl_doctor.conntrack.profiles import profile_for
from sysctl_doctor.conntrack.replay import Replay
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_FIN, F_PSH, F_RST, F_SYN, settings_from_sysctls

from . import captures

MODULE = "sysctl_doctor.conntrack._replayfast"
needs_accel = pytest.mark.skipif(load_accelerator(MODULE) is None,
                                 reason="the replay accelerator is not built (no C compiler) or is turned off")


# -- running both -------------------------------------------------------------------------------

def _cli(args: List[str], pure: bool) -> Tuple[int, str]:
    result = CliRunner().invoke(cli, ["conntrack", "replay", *args], env={PURE_PYTHON_ENV: "1" if pure else "0"},
                                catch_exceptions=False)
    return result.exit_code, result.stdout


def _same_cli(args: List[str]) -> str:
    pure = _cli(args, pure=True)
    fast = _cli(args, pure=False)
    assert fast == pure, f"replay {' '.join(args)}: the accelerated output differs from the pure-Python one"
    return pure[1]


class _Counting(Replay):
    """Counts the packets the fast path accepted (they come back with each entry it held)."""

    fast_accepted = 0

    def _take_back(self, item):  # type: ignore[no-untyped-def]
        if item is not None:
            self.fast_accepted += item[2]
        super()._take_back(item)


def _verdicts(path: str, kernel: str, sysctls: dict, point: str, pure: bool, monkeypatch) -> tuple:
    monkeypatch.setenv(PURE_PYTHON_ENV, "1" if pure else "0")
    replay = _Counting(path, profile_for(kernel), settings_from_sysctls(sysctls), capture_point=point)
    rows = [(v.to_json(), v.direction, v.length) for v in replay.packets()]
    s = replay.summary
    flows = [(f.to_json(), [e.to_json() for e in f.examples]) for f in s.flows]
    return (rows, flows, s.frames, s.tcp_packets, s.verdicts, s.skipped, s.bad_checksums,
            [str(d) for d in s.diagnostics]), replay.fast_accepted


def _same_verdicts(path: str, kernel: str, sysctls: dict, point: str, monkeypatch) -> int:
    pure, none = _verdicts(path, kernel, sysctls, point, True, monkeypatch)
    fast, accepted = _verdicts(path, kernel, sysctls, point, False, monkeypatch)
    assert none == 0
    assert fast == pure
    return accepted


SYSCTL_SETS = [
    [],
    ["nf_conntrack_tcp_be_liberal=1"],
    ["nf_conntrack_tcp_loose=0"],
    ["nf_conntrack_checksum=0"],
    ["nf_conntrack_tcp_ignore_invalid_rst=1"],
    ["nf_conntrack_tcp_max_retrans=0", "nf_conntrack_tcp_timeout_max_retrans=1"],
    ["nf_conntrack_tcp_max_retrans=1", "nf_conntrack_tcp_timeout_max_retrans=3"],
    ["nf_conntrack_tcp_timeout_established=1", "nf_conntrack_tcp_timeout_unacknowledged=1"],
    ["nf_conntrack_tcp_timeout_established=0"],
]


def _sysctl_args(values: List[str]) -> List[str]:
    return [arg for v in values for arg in ("--sysctl", v)]


# -- the existing captures ----------------------------------------------------------------------

def _bench():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_replay", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "replay.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    return bench


@pytest.fixture(scope="module")
def known_captures(tmp_path_factory) -> List[str]:
    d = tmp_path_factory.mktemp("known")
    out = []
    for name, packets, kw in [
        ("seed", captures.seed_packets(), {}),
        ("seed-vlan", captures.seed_packets(), {"vlan": 7}),
        ("seed6", captures.seed_packets("fd31::2", "fd31:1::2"), {}),
        ("stall", captures.ack_loss_stall_packets(), {}),
    ]:
        path = str(d / f"{name}.pcap")
        captures.write_ethernet_pcap(path, packets, **kw)
        out.append(path)
    raw = str(d / "seed-raw.pcap")
    captures.write_raw_pcap(raw, captures.seed_packets())
    out.append(raw)
    bench = str(d / "bench.pcap")
    _bench().generate(bench, 20_000, 50)
    out.append(bench)
    return out


@needs_accel
@pytest.mark.parametrize("kernel", ["5.10", "6.1", "6.12"])
def test_known_captures_agree(known_captures, kernel: str) -> None:
    for path in known_captures:
        for values in SYSCTL_SETS:
            for fmt in ("text", "json"):
                _same_cli([path, "--kernel", kernel, "--format", fmt, *_sysctl_args(values)])
        for point in ("nat-outside", "nat-inside", "endpoint"):
            _same_cli([path, "--kernel", kernel, "--format", "json", "--capture-point", point])
        _same_cli([path, "--kernel", kernel, "--format", "json", "--what-if", "nf_conntrack_tcp_be_liberal=1",
                   "--what-if", "kernel=6.18"])
        _same_cli([path, "--kernel", kernel, "--what-if", "nf_conntrack_tcp_timeout_established=0"])


@needs_accel
def test_explain_agrees(known_captures) -> None:
    seed = known_captures[0]
    for frame in (3, 4, 100, 204, 205):
        for fmt in ("text", "json"):
            _same_cli([seed, "--kernel", "5.10", "--explain", str(frame), "--format", fmt])


@needs_accel
def test_the_fast_path_does_the_bulk(known_captures, monkeypatch) -> None:
    """Not a vacuous agreement: on the bench capture the compiled code accepts nearly every packet."""
    bench = known_captures[-1]
    accepted = _same_verdicts(bench, "5.10", {}, "any", monkeypatch)
    assert accepted > 18_000
    assert _same_verdicts(known_captures[0], "6.12", {}, "any", monkeypatch) > 150


# -- the GC and the checkpoints (frames 16384·k, GC every 100,000 frames) ------------------------

@needs_accel
def test_long_capture_with_expiry_agrees(tmp_path, monkeypatch) -> None:
    """120,000 frames; half the flows go quiet, time jumps past the established timeout before frame
    100,000 (the GC drops the quiet ones, the fast path held them), then every flow talks again."""
    path = str(tmp_path / "long.pcap")
    rec = struct.Struct("<IIII")
    eth = bytes(12) + b"\x08\x00"
    flows = 64
    state = [[1000 * i + 7, 5_000_000 * i + 11] for i in range(flows)]
    t = 1000.0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

        def put(i: int, reply: bool, flags: int, payload: bytes) -> None:
            nonlocal t
            t += 0.001
            c, s = f"10.9.{i // 200}.{i % 200 + 1}", "10.8.0.1"
            cseq, sseq = state[i]
            if reply:
                pkt = ip_tcp_packet(s, c, 80, 20000 + i, sseq, cseq, flags, 8192, payload)
                state[i][1] = sseq + len(payload) + (1 if flags & F_SYN else 0)
            else:
                pkt = ip_tcp_packet(c, s, 20000 + i, 80, cseq, sseq if flags & F_ACK else 0, flags, 8192, payload)
                state[i][0] = cseq + len(payload) + (1 if flags & F_SYN else 0)
            frame = eth + pkt
            f.write(rec.pack(int(t), int(round((t % 1) * 1e6)) % 1000000, len(frame), len(frame)) + frame)

        for i in range(flows):
            put(i, False, F_SYN, b"")
            put(i, True, F_SYN | F_ACK, b"")
            put(i, False, F_ACK, b"")
        n = 3 * flows
        while n < 90_000:
            for i in range(flows):
                put(i, True, F_ACK | F_PSH, b"d" * (n % 7))
                put(i, False, F_ACK, b"")
                n += 2
        t += 50.0  # past the established timeout of the run below for the quiet flows
        while n < 105_000:
            for i in range(0, flows, 2):
                put(i, True, F_ACK | F_PSH, b"e")
                put(i, False, F_ACK, b"")
                n += 2
        while n < 120_000:
            for i in range(flows):
                put(i, False, F_ACK | F_PSH, b"f")
                put(i, True, F_ACK, b"")
                n += 2
    sysctls = {"nf_conntrack_tcp_timeout_established": "30", "nf_conntrack_tcp_timeout_unacknowledged": "30"}
    assert _same_verdicts(path, "5.10", sysctls, "any", monkeypatch) > 100_000
    assert _same_verdicts(path, "6.12", {}, "any", monkeypatch) > 100_000
    _same_cli([path, "--kernel", "6.1", "--format", "json", *_sysctl_args([f"{k}={v}" for k, v in sysctls.items()])])
    text = _same_cli([path, "--kernel", "5.10", *_sysctl_args(["nf_conntrack_tcp_timeout_established=30"])])
    assert "120" in text.splitlines()[0]


# -- random captures ----------------------------------------------------------------------------

ARP = bytes.fromhex("0001080006040001") + bytes(20)  # an ARP request: "not IP"
OPS = ["data", "data", "data", "data", "ack", "ack", "ack", "retrans", "stale", "future", "bad_ack",
       "rst", "fin", "syn", "sack", "zero_win", "bad_sum", "jump", "back", "reorder", "cut", "udp", "urg",
       "short_hdr", "opts", "winupd", "winupd", "arp", "udp6", "udp", "udp_bad", "sack_hole", "sack_hole", "sack_hole"]


@st.composite
def capture_program(draw):  # type: ignore[no-untyped-def]
    nflows = draw(st.integers(1, 3))
    flows = []
    for i in range(nflows):
        v6 = draw(st.booleans())
        flows.append({
            "c": f"fd31::{i + 2}" if v6 else f"10.7.0.{i + 2}",
            "s": "fd31:1::2" if v6 else "10.7.1.2",
            "cp": 30000 + i, "sp": 6379 if draw(st.booleans()) else 80,
            "cseq": draw(st.sampled_from([1000, 0xFFFFFF00, 0x7FFFFFF0, draw(st.integers(0, 0xFFFFFFFF))])),
            "sseq": draw(st.integers(0, 0xFFFFFFFF)),
            "wscale": draw(st.sampled_from([None, 0, 2, 7, 14])),
            "sack": draw(st.booleans()),
            "ts": draw(st.booleans()),
            "handshake": draw(st.integers(0, 5)) != 0,
        })
    ops = draw(st.lists(st.tuples(st.integers(0, nflows - 1), st.sampled_from(OPS), st.booleans(),
                                  st.integers(0, 3000)), min_size=5, max_size=160))
    link = draw(st.sampled_from(["eth", "eth", "vlan", "raw", "null", "big", "nanos", "pcapng", "pcapng-flags",
                                 "pcapng-big"]))
    return flows, ops, link


def _write_program(path: str, program) -> None:  # type: ignore[no-untyped-def]
    flows, ops, link = program
    frames: List[Tuple[float, bytes, Optional[int]]] = []  # time, IP packet, captured length (None: whole)
    t = 5000.0

    def opts(fl, syn: bool, sack_blocks=()):  # type: ignore[no-untyped-def]
        return tcp_options(mss=1460 if syn else None, wscale=fl["wscale"] if syn else None,
                           sack_perm=fl["sack"] and syn, sack_blocks=sack_blocks,
                           timestamp=(int(t * 1000) & 0xFFFFFFFF, 1) if fl["ts"] else None)

    def seg(fl, reply: bool, seq: int, ack: int, flags: int, win: int, payload: bytes, options: bytes) -> bytes:
        if reply:
            return ip_tcp_packet(fl["s"], fl["c"], fl["sp"], fl["cp"], seq, ack, flags, win, payload, options)
        return ip_tcp_packet(fl["c"], fl["s"], fl["cp"], fl["sp"], seq, ack, flags, win, payload, options)

    for fl in flows:
        if fl["handshake"]:
            t += 0.001
            frames.append((t, seg(fl, False, fl["cseq"], 0, F_SYN, 64240, b"", opts(fl, True)), None))
            fl["cseq"] += 1
            t += 0.001
            frames.append((t, seg(fl, True, fl["sseq"], fl["cseq"], F_SYN | F_ACK, 65160, b"", opts(fl, True)), None))
            fl["sseq"] += 1
            t += 0.001
            frames.append((t, seg(fl, False, fl["cseq"], fl["sseq"], F_ACK, 502, b"", opts(fl, False)), None))
    last: List[Tuple[float, bytes, Optional[int]]] = []
    for index, op, reply, n in ops:
        fl = flows[index]
        me, peer = ("sseq", "cseq") if reply else ("cseq", "sseq")
        seq, ack = fl[me], fl[peer]
        win = 200 + n * 20
        flags = F_ACK
        payload = b""
        options = opts(fl, False)
        cut = None
        t += 0.0005 * (1 + n % 4)
        if op == "data":
            payload = b"x" * (n % 1400)
            flags |= F_PSH
            fl[me] = seq + len(payload)
        elif op == "retrans" and last:
            frames.append((t, last[-1][1], None))
            continue
        elif op == "stale":
            seq -= 70_000 + n
            payload = b"s" * 100
        elif op == "future":
            seq += 200_000 + n * 100
            payload = b"f" * 10
        elif op == "bad_ack":
            ack += 300_000 + n
        elif op == "rst":
            flags = F_RST | (F_ACK if n % 2 else 0)
        elif op == "fin":
            flags |= F_FIN
            fl[me] = seq + 1
        elif op == "syn":
            flags = F_SYN
            options = opts(fl, True)
        elif op == "sack_hole":  # a hole below data the peer sent: ack at its start, SACK above it
            ack = fl[peer] - (n % 2000 + 1)
            options = tcp_options(sack_blocks=((ack + 1 + n % 50, fl[peer] - n % 3),),
                                  timestamp=(1, 2) if fl["ts"] else None)
        elif op == "sack":
            options = tcp_options(sack_blocks=((ack + 10, ack + 100 + n),), timestamp=(1, 2) if fl["ts"] else None)
        elif op == "zero_win":
            win = 0
        elif op == "urg":
            flags |= 0x20 | (0x40 if n % 2 else 0x80)
        elif op == "opts":
            options = tcp_options(mss=1200) if n % 2 else b"\x01\x01\x01\x01"
        elif op == "jump":
            t += 1 + n % 40  # past short timeouts, below the default ones
        elif op == "winupd":  # the same segment again with another window: not a retransmission
            if last and len(last[-1][1]) > 40:
                prev = last[-1][1]
                ihl = 20 if prev[0] >> 4 == 4 else 40
                sp, dp, pseq, pack, off, pflags, pwin = struct.unpack_from("!HHIIBBH", prev, ihl)
                if pflags & 0x17 == F_ACK:
                    src, dst = (prev[12:16], prev[16:20]) if ihl == 20 else (prev[8:24], prev[24:40])
                    frames.append((t, ip_tcp_packet(src, dst, sp, dp, pseq, pack, pflags, (pwin + 1 + n) & 0xFFFF,
                                                    prev[ihl + (off >> 4) * 4:], prev[ihl + 20:ihl + (off >> 4) * 4]),
                                   None))
                    last.append(frames[-1])
                    continue
        elif op == "back":
            t -= 3 + n % 50
        elif op == "cut":
            cut = 20 + 20 + n % 30
        elif op == "udp":
            frames.append((t, bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 7, 0, 2, 10, 7, 1, 2]) + bytes(8), None))
            continue
        elif op == "udp_bad":  # a header length under 20 or a total under it: "malformed", not "not TCP"
            head = [0x44, 0, 0, 28] if n % 2 else [0x46, 0, 0, 20]
            frames.append((t, bytes(head + [0, 0, 0, 0, 64, 17, 0, 0, 10, 7, 0, 2, 10, 7, 1, 2]) + bytes(8), None))
            continue
        elif op == "udp6":
            frames.append((t, bytes([0x60, 0, 0, 0, 0, 8, 17 if n % 2 else 58, 64]) + bytes(32) + bytes(8), None))
            continue
        elif op == "arp":
            frames.append((t, ARP, None))
            continue
        packet = seg(fl, reply, seq, ack, flags, win, payload, options)
        if op == "bad_sum":
            ihl = 20 if packet[0] >> 4 == 4 else 40
            packet = packet[:ihl + 16] + bytes([packet[ihl + 16] ^ 0x5A, packet[ihl + 17]]) + packet[ihl + 18:]
        elif op == "short_hdr":
            ihl = 20 if packet[0] >> 4 == 4 else 40
            packet = packet[:ihl + 12] + bytes([(n % 5) << 4]) + packet[ihl + 13:]
        frames.append((t, packet, cut))
        last.append(frames[-1])
        if op == "reorder" and len(frames) > 2:
            frames[-1], frames[-2] = frames[-2], frames[-1]
    linktype = {"raw": 101, "null": 0}.get(link, 1)
    for i, (ts, packet, cut) in enumerate(frames):
        if packet is ARP and link in ("raw", "null"):
            frames[i] = (ts, b"\x00" * 28, cut)  # version 0 / family 0 below: "not IP"
    if link.startswith("pcapng"):
        _write_pcapng(path, frames, link)
        return
    with open(path, "wb") as f:
        big = link == "big"
        magic = 0xA1B23C4D if link == "nanos" else 0xA1B2C3D4
        f.write(struct.pack((">" if big else "<") + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for ts, packet, cut in frames:
            if packet is ARP:
                data = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x06" + packet
            elif link in ("eth", "big", "nanos"):
                data = ethernet_frame(b"\x02" * 6, b"\x04" * 6, packet)
            elif link == "vlan":
                data = ethernet_frame(b"\x02" * 6, b"\x04" * 6, packet, vlan=5)
            elif link == "null":
                data = struct.pack("<I", 2 if packet[0] >> 4 == 4 else 10 if packet[0] else 99) + packet
            else:
                data = packet
            caplen = len(data) if cut is None else min(len(data), cut + (len(data) - len(packet)))
            sec = int(ts)
            frac = int((ts - sec) * (1e9 if link == "nanos" else 1e6))
            f.write(struct.pack((">" if big else "<") + "IIII", sec, frac, caplen, len(data)) + data[:caplen])


def _write_pcapng(path: str, frames, link: str) -> None:  # type: ignore[no-untyped-def]
    """pcapng: two sections (the second in the other byte order for pcapng-big), Ethernet and raw-IP
    interfaces with µs and ns ticks; pcapng-flags marks some packets inbound (a direction flag)."""
    def block(order: str, btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(order + "II", btype, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)

    with open(path, "wb") as f:
        half = len(frames) // 2
        for part, order in ((frames[:half], "<"), (frames[half:], ">" if link == "pcapng-big" else "<")):
            f.write(block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
            f.write(block(order, 1, struct.pack(order + "HHI", 1, 0, 262144)
                          + struct.pack(order + "HHB3x", 9, 1, 9) + struct.pack(order + "HH", 0, 0)))  # Ethernet, ns
            f.write(block(order, 1, struct.pack(order + "HHI", 101, 0, 262144)))  # raw IP, µs
            for i, (ts, packet, cut) in enumerate(part):
                raw = i % 3 == 2 and packet is not ARP
                data = (packet if raw else b"\x02" * 6 + b"\x04" * 6 + b"\x08\x06" + packet if packet is ARP
                        else ethernet_frame(b"\x02" * 6, b"\x04" * 6, packet))
                caplen = len(data) if cut is None else min(len(data), cut + (len(data) - len(packet)))
                ticks = int(ts * (1e6 if raw else 1e9))
                body = struct.pack(order + "IIIII", 1 if raw else 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen,
                                   len(data)) + data[:caplen] + b"\0" * (-caplen % 4)
                flagged = link == "pcapng-flags" and i % 7 == 6
                if flagged:  # in, then out again (a forwarded copy): the copies' pairing needs the flags
                    f.write(block(order, 6, body + struct.pack(order + "HHI", 2, 4, 1) + struct.pack(order + "HH", 0, 0)))
                    body += struct.pack(order + "HHI", 2, 4, 2) + struct.pack(order + "HH", 0, 0)
                f.write(block(order, 6, body))
                if i % 50 == 49:
                    f.write(block(order, 5, b"\0" * 8))  # a statistics block: no packet


@needs_accel
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=capture_program(), kernel=st.sampled_from(["5.10", "6.1", "6.12"]),
       sysctls=st.sampled_from(SYSCTL_SETS),
       point=st.sampled_from(["any", "any", "nat-outside", "nat-inside", "endpoint"]))
def test_random_captures_agree(tmp_path, monkeypatch, program, kernel, sysctls, point) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "random.pcap")
    _write_program(path, program)
    _same_verdicts(path, kernel, dict(v.split("=") for v in sysctls), point, monkeypatch)
    args = [path, "--kernel", kernel, "--capture-point", point, *_sysctl_args(sysctls)]
    _same_cli(args + ["--format", "json"])
    _same_cli(args)


@needs_accel
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_captures_agree(tmp_path, monkeypatch, data) -> None:  # type: ignore[no-untyped-def]
    """Byte flips, inserted and deleted ranges, absurd length fields and cuts of well-formed pcap and
    pcapng captures: the same verdicts, frame counts and diagnostics, never a crash."""
    path = str(tmp_path / "damaged.cap")
    kind = data.draw(st.sampled_from(["pcap", "pcapng", "raw6"]))
    if kind == "pcap":
        captures.write_ethernet_pcap(path, captures.seed_packets(segments=30))
    elif kind == "pcapng":
        captures.write_pcapng(path, captures.seed_packets(segments=30))
    else:
        captures.write_raw_pcap(path, captures.seed_packets("fd31::2", "fd31:1::2", segments=30))
    raw = bytearray(open(path, "rb").read())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(24, len(raw) - 1))
        how = data.draw(st.sampled_from(["byte", "byte", "insert", "delete", "length"]))
        if how == "byte":
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del raw[at:at + data.draw(st.integers(1, 40))]
        else:
            raw[at:at + 4] = struct.pack("<I", data.draw(st.sampled_from(
                [0, 0xFFFFFFFF, 1 << 18, (1 << 18) + 1, 65535, 28, 32])))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(24, len(raw)))]
    with open(path, "wb") as f:
        f.write(bytes(raw))
    _same_verdicts(path, data.draw(st.sampled_from(["5.10", "6.12"])),
                   data.draw(st.sampled_from([{}, {"nf_conntrack_checksum": "0"}])), "any", monkeypatch)
    _same_cli([path, "--kernel", "6.1", "--format", "json"])


# -- SACK: the edges count in the window (tcp_sack()), only with SACK-permitted ---------------------

def _sack_capture(path: str, sack_perm: bool) -> None:
    """Small windows (no scaling) so the SACK edge decides the bounds. Flow 1: the client sends 20
    segments, the server ACKs one behind with a 1400-byte window, then up to a hole with a SACK block to
    the client's end; the client then sends past the cumulative ACK's window but inside the SACK edge's
    (frame -3). Flow 2: every segment ACKed in full, then an ACK 20,000 bytes back with a SACK block to
    the end (the receiver's max window grows by the SACKed span), then a retransmission 10,000 bytes
    back, inside that window only (the last frame)."""
    s, sp = "10.6.1.2", 443
    frames = []
    t = 10.0

    def add(src, dst, sport, dport, seq, ack, flags, win, payload=b"", opts=b""):  # type: ignore[no-untyped-def]
        nonlocal t
        t += 0.001
        frames.append((t, ip_tcp_packet(src, dst, sport, dport, seq, ack, flags, win, payload, opts)))

    for c, cp, lag in (("10.6.0.2", 40000, 1000), ("10.6.0.3", 40001, 0)):
        ci, si = 100_000, 9_000_000
        add(c, s, cp, sp, ci, 0, F_SYN, 1400, opts=tcp_options(mss=1400, sack_perm=sack_perm))
        add(s, c, sp, cp, si, ci + 1, F_SYN | F_ACK, 1400, opts=tcp_options(mss=1400, sack_perm=sack_perm))
        add(c, s, cp, sp, ci + 1, si + 1, F_ACK, 1400)
        seq = ci + 1
        for _ in range(25):
            add(c, s, cp, sp, seq, si + 1, F_ACK | F_PSH, 1400, b"d" * 1000)
            seq += 1000
            add(s, c, sp, cp, si + 1, seq - lag, F_ACK, 1400)
        hole = seq - (1000 if lag else 20_000)
        add(s, c, sp, cp, si + 1, hole, F_ACK, 1400, opts=tcp_options(sack_blocks=((hole + 100, seq),)))
        if lag:
            add(c, s, cp, sp, seq + 1000, si + 1, F_ACK | F_PSH, 1400, b"e" * 100)  # beyond hole + 1400
            add(c, s, cp, sp, seq - 2200, si + 1, F_ACK | F_PSH, 1400, b"r" * 100)
        else:
            add(c, s, cp, sp, seq - 10_000, si + 1, F_ACK | F_PSH, 1400, b"r" * 100)
    captures.write_ethernet_pcap(path, frames)


@needs_accel
@pytest.mark.parametrize("sack_perm", [True, False])
@pytest.mark.parametrize("kernel", ["5.10", "6.12"])
def test_sack_edges_agree(tmp_path, monkeypatch, sack_perm: bool, kernel: str) -> None:
    path = str(tmp_path / "sack.pcap")
    _sack_capture(path, sack_perm)
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    pure = [v.verdict for v in Replay(path, profile_for(kernel), settings_from_sysctls({})).packets()]
    # the scenarios reach the branches: with SACK-permitted the SACK edge lets each through; without it
    # they are over the upper bound (6.1+: "bytes more than expected") and under the lower one
    assert (pure[3 + 50 + 1] == "accept") is sack_perm  # flow 1's segment past the cumulative ACK's window
    assert (pure[-1] == "accept") is sack_perm
    assert _same_verdicts(path, kernel, {}, "any", monkeypatch) > 40
    _same_cli([path, "--kernel", kernel, "--format", "json"])


@needs_accel
def test_a_table_made_without_init_or_initialised_twice_is_safe() -> None:
    """FastTable.__new__ without __init__ used to leave its free list at entry 0 of no entries: adopt()
    crashed the interpreter (found in review). Run in a child so a crash fails this test, not the run."""
    import subprocess
    import sys

    code = ("from sysctl_doctor.conntrack._replayfast import FastTable\n"
            "t = FastTable.__new__(FastTable)\n"
            "t.adopt(object(), [((b'\\1\\2\\3\\4', b'\\5\\6\\7\\10', 1, 2), 0)], (0,) * 19 + (0.0,), 0)\n"
            "try:\n"
            "    t.__init__(1, 2, 3, 4, True, 1, False, 1.0)\n"
            "except RuntimeError as exc:\n"
            "    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "refused: FastTable: already holds entries\n"
