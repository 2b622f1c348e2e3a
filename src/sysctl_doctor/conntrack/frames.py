"""Building exact TCP frames and writing them to pcap files.

Used to push crafted segments into a kernel (raw AF_PACKET sockets in the
validation tests), to write scenario captures (the seed incident, the bench's
1 M-packet file) and by anyone who wants a reproducible trace. Checksums are
computed, so the kernel accepts what is written.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import BinaryIO, Optional, Union

from sysctl_doctor.conntrack.tcp_model import F_ACK, F_FIN, F_PSH, F_RST, F_SYN  # noqa: F401 (re-export)

__all__ = ["F_ACK", "F_FIN", "F_PSH", "F_RST", "F_SYN", "PcapWriter", "ethernet_frame", "ip_tcp_packet",
           "tcp_options"]

Address = Union[str, bytes]


def _raw(addr: Address) -> bytes:
    return addr if isinstance(addr, bytes) else ipaddress.ip_address(addr).packed


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_options(mss: Optional[int] = None, wscale: Optional[int] = None, sack_perm: bool = False,
                sack_blocks: tuple = (), timestamp: Optional[tuple] = None) -> bytes:
    """TCP options, NOP-padded to a multiple of 4 bytes."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_perm:
        out += b"\x01\x01\x04\x02"
    if timestamp is not None:
        out += b"\x01\x01" + struct.pack("!BBII", 8, 10, timestamp[0], timestamp[1])
    if wscale is not None:
        out += b"\x01" + struct.pack("!BBB", 3, 3, wscale)
    if sack_blocks:
        out += b"\x01\x01" + struct.pack("!BB", 5, 2 + 8 * len(sack_blocks))
        for left, right in sack_blocks:
            out += struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF)
    while len(out) % 4:
        out += b"\x01"
    return out


def ip_tcp_packet(src: Address, dst: Address, sport: int, dport: int, seq: int, ack: int, flags: int,
                  window: int = 65535, payload: bytes = b"", options: bytes = b"", ip_id: int = 0,
                  ttl: int = 64) -> bytes:
    """An IPv4 or IPv6 packet carrying one TCP segment, checksums filled in."""
    s, d = _raw(src), _raw(dst)
    doff = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (doff // 4) << 4, flags, window, 0, 0) + options + payload
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = s + d + struct.pack("!IxxxB", len(tcp), 6)
    csum = _checksum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    if len(s) == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id & 0xFFFF, 0x4000, ttl, 6, 0, s, d)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        return hdr + tcp
    return struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, ttl, s, d) + tcp


def ethernet_frame(dst_mac: bytes, src_mac: bytes, packet: bytes, vlan: Optional[int] = None) -> bytes:
    ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    if vlan is not None:
        return dst_mac + src_mac + struct.pack("!HHH", 0x8100, vlan & 0x0FFF, ethertype) + packet
    return dst_mac + src_mac + struct.pack("!H", ethertype) + packet


class PcapWriter:
    """A classic pcap file (microsecond timestamps)."""

    def __init__(self, f: BinaryIO, linktype: int = 1, snaplen: int = 262144) -> None:
        self.f = f
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))

    def write(self, data: bytes, ts: float, orig_len: Optional[int] = None) -> None:
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        self.f.write(struct.pack("<IIII", sec, usec, len(data), len(data) if orig_len is None else orig_len))
        self.f.write(data)
