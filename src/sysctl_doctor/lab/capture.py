"""A packet capture on one interface of a namespace, written as pcap.

An AF_PACKET socket bound to the NAT box's outside link sees what conntrack
sees there: the server's segments before NAT, the client's after it, and the
box's own RSTs. The frames are kept in memory and written as a classic pcap
(Ethernet link type) for `conntrack replay`.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from sysctl_doctor.conntrack.tcp_flags import ALL as TCP_FLAGS

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class TcpSegment:
    """The fields of one captured IPv4/TCP frame the lab needs."""

    time: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: str  # "SYN", "ACK", "RST", … joined by "|"
    payload: int
    outgoing: bool

    def has(self, flag: str) -> bool:
        return flag in self.flags.split("|")


_FLAG_BITS = tuple((flag.name, int(flag)) for flag in TCP_FLAGS if flag <= 0x20)  # the 6 bits read below


def parse_ethernet_tcp(frame: bytes, stamp: float, outgoing: bool) -> Optional[TcpSegment]:
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 6 or len(ip) < ihl + 20:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:]
    sport, dport, seq, ack, off_flags = struct.unpack("!HHIIH", tcp[:14])
    doff = (off_flags >> 12) * 4
    bits = off_flags & 0x3F
    flags = "|".join(name for name, bit in _FLAG_BITS if bits & bit)
    return TcpSegment(stamp, socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), sport, dport,
                      seq, ack, flags, max(0, total - ihl - doff), outgoing)


class InterfaceCapture:
    """Capture every frame of one interface in a background thread.

    Create it while the calling thread is inside the namespace (the socket
    stays bound there); `start()`, then `stop()`.
    """

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.frames: List[Tuple[float, bytes, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdlab-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            try:
                frame, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            with self._lock:
                self.frames.append((time.time(), frame, addr[2] == PACKET_OUTGOING))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()

    def segments(self) -> List[TcpSegment]:
        with self._lock:
            frames = list(self.frames)
        out = []
        for stamp, frame, outgoing in frames:
            seg = parse_ethernet_tcp(frame, stamp, outgoing)
            if seg is not None:
                out.append(seg)
        return out

    def write_pcap(self, path: str) -> int:
        """Write the frames as a pcap file (link type 1, Ethernet); returns the frame count."""
        with self._lock:
            frames = list(self.frames)
        with open(path, "wb") as fh:
            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for stamp, frame, _ in frames:
                sec = int(stamp)
                usec = int((stamp - sec) * 1_000_000)
                fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
                fh.write(frame)
        return len(frames)


def build_tcp_segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
                      payload: bytes, window: int = 509) -> bytes:
    """An IPv4 packet carrying one TCP segment with ACK|PSH (checksums filled in)."""
    from sysctl_doctor.conntrack.frames import F_ACK, F_PSH, ip_tcp_packet

    return ip_tcp_packet(src, dst, sport, dport, seq, ack, F_ACK | F_PSH, window, payload, ip_id=0x5EED, ttl=61)
