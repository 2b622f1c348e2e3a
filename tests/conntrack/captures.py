"""Captures built for the tests: the seed incident, the kernel's ack-loss vector, other link types."""

from __future__ import annotations

import struct
from typing import Iterable, List, Tuple

from sysctl_doctor.conntrack.frames import (
    PcapWriter, ethernet_frame, ip_tcp_packet, tcp_options,
)
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_PSH, F_SYN

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

Packet = Tuple[float, bytes]  # time, IP packet


def seed_packets(client: str = "10.231.1.2", server: str = "10.231.2.2", segments: int = 100) -> List[Packet]:
    """The incident: a connection, server data, then a segment 80 KB below the window, then more data.

    The seed's table: <-- seq 2000000 … <-- seq 1200000 (way off) … <-- seq 2001400.
    """
    ci, si = 5555 - 1, 2_000_000 - 1
    out: List[Packet] = []
    t = 1_700_000_000.0

    def add(src, dst, sp, dp, seq, ack, flags, win, length=0, opts=b""):
        nonlocal t
        t += 0.0005
        out.append((t, ip_tcp_packet(src, dst, sp, dp, seq, ack, flags, win, b"x" * length, opts,
                                     ip_id=len(out) + 1)))

    add(client, server, 26110, 6379, ci, 0, F_SYN, 64240, 0, tcp_options(mss=1460, wscale=7, sack_perm=True))
    add(server, client, 6379, 26110, si, ci + 1, F_SYN | F_ACK, 65160, 0,
        tcp_options(mss=1460, wscale=7, sack_perm=True))
    add(client, server, 26110, 6379, ci + 1, si + 1, F_ACK, 502)
    seq = si + 1
    for _ in range(segments):
        add(server, client, 6379, 26110, seq, ci + 1, F_ACK | F_PSH, 509, 1400)
        seq += 1400
        add(client, server, 26110, 6379, ci + 1, seq, F_ACK, 502)
    add(server, client, 6379, 26110, seq - 80_000, ci + 1, F_ACK | F_PSH, 509, 1234)  # the spurious one
    add(server, client, 6379, 26110, seq, ci + 1, F_ACK | F_PSH, 509, 1000)
    add(client, server, 26110, 6379, ci + 1, seq + 1000, F_ACK, 502)
    return out


def ack_loss_stall_packets() -> List[Packet]:
    """tools/testing/selftests/net/netfilter/packetdrill/conntrack_ack_loss_stall.pkt, as the host saw it.

    A remote peer (192.0.2.1:34375) connects to 192.168.24.72:8080, sends 46
    segments of 1460 bytes, each ACKed, then retransmits the first one. The
    test's comment quotes the kernel's log for it: "nf_ct_proto_6: SEQ is under
    the lower bound (already ACKed data retransmitted) ... SEQ=1 ACK=4162510439";
    since 6.1 it must pass (the test waits for the host's answering ACK).
    """
    remote, local = "192.0.2.1", "192.168.24.72"
    li = 4162510439 - 1  # the local ISN, from the ACK of the quoted log line
    out: List[Packet] = []
    t = 100.0

    def add(src, dst, sp, dp, seq, ack, flags, win, length=0, opts=b""):
        nonlocal t
        t += 0.0001
        out.append((t, ip_tcp_packet(src, dst, sp, dp, seq, ack, flags, win, b"p" * length, opts, ttl=255)))

    add(remote, local, 34375, 8080, 0, 0, F_SYN, 32792, 0, tcp_options(mss=1000))
    add(local, remote, 8080, 34375, li, 1, F_SYN | F_ACK, 65535, 0, tcp_options(mss=1460))
    add(remote, local, 34375, 8080, 1, li + 1, F_ACK, 65535)
    seq = 1
    while seq < 67161:
        add(remote, local, 34375, 8080, seq, li + 1, F_ACK | F_PSH, 257, 1460)
        seq += 1460
        add(local, remote, 8080, 34375, li + 1, seq, F_ACK, 65535)
    add(remote, local, 34375, 8080, 1, li + 1, F_ACK | F_PSH, 257, 1460)  # the stale retransmission
    return out


def write_ethernet_pcap(path: str, packets: Iterable[Packet], vlan=None) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f)
        for t, pkt in packets:
            w.write(ethernet_frame(MAC_A, MAC_B, pkt, vlan=vlan), t)


def write_raw_pcap(path: str, packets: Iterable[Packet]) -> None:
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype=101)
        for t, pkt in packets:
            w.write(pkt, t)


def sll_header(pkt: bytes, pkttype: int = 0) -> bytes:
    proto = 0x0800 if pkt[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHH8sH", pkttype, 1, 6, MAC_A + b"\0\0", proto)


def sll2_header(pkt: bytes, pkttype: int = 0, ifindex: int = 2) -> bytes:
    proto = 0x0800 if pkt[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, 1, pkttype, 6, MAC_A + b"\0\0")


def write_pcapng(path: str, packets: Iterable[Packet], linktype: int = 1, nanos: bool = True) -> None:
    """A pcapng file: section header, one interface (ns timestamps), enhanced packet blocks."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0) if nanos else b""
        f.write(block(1, struct.pack("<HHI", linktype, 0, 262144) + opts))
        f.write(block(5, b"\0" * 8))  # an interface statistics block: no packets in it
        for t, pkt in packets:
            data = ethernet_frame(MAC_A, MAC_B, pkt) if linktype == 1 else pkt
            ticks = int(round(t * (1e9 if nanos else 1e6)))
            f.write(block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data))
