"""Reading pcap and pcapng captures, and decoding the TCP packets in them.

A hand-rolled `struct` reader: it reads the file in large chunks and hands out
one record at a time, so memory does not grow with the file. (dpkt was
measured against it in bench/replay.py; see the README.)

Link types: Ethernet (1, with 802.1Q/802.1ad tags), Linux cooked v1 (113) and
v2 (276) — what ``tcpdump -i any`` writes —, raw IP (101, 12, 14, 228, 229) and
BSD loopback (0). IPv4 and IPv6 (extension headers skipped; fragments are
counted, not decoded: conntrack reassembles them first).

Damaged input never raises: a cut final record or a record whose length makes
no sense ends the reading with a `Diagnostic`; packets cut by the snap length
are decoded as far as they go. Only a file that is no capture at all raises
`DoctorError`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, List, Optional, Protocol, Tuple, Union

from sysctl_doctor.conntrack.tcp_model import Segment
from sysctl_doctor.errors import Diagnostic, DoctorError

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_TYPES = frozenset({101, 12, 14, 228, 229})

PACKET_OUTGOING = 4  # sll_pkttype of a packet this host sent
MAX_RECORD = 1 << 18  # a record larger than 256 KiB is corruption, not a packet

_CHUNK = 1 << 20


@dataclass
class CaptureInfo:
    path: str
    format: str  # "pcap" or "pcapng"
    size: int


class _Buffer:
    """Chunked reading with an offset: `take(n)` returns n bytes or fewer at EOF."""

    __slots__ = ("f", "buf", "pos", "consumed")

    def __init__(self, f: BinaryIO, start: bytes = b"") -> None:
        self.f = f
        self.buf = start
        self.pos = 0
        self.consumed = 0  # bytes of the file before buf

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            rest = self.buf[self.pos:]
            more = self.f.read(max(_CHUNK, n))
            self.consumed += self.pos
            self.buf = rest + more
            self.pos = 0
            end = n
        out = self.buf[self.pos:end]
        self.pos = end if end <= len(self.buf) else len(self.buf)
        return out

    def offset(self) -> int:
        return self.consumed + self.pos


Record = Tuple[int, float, int, bytes, int, int]  # frame, time, linktype, data, orig_len, pkttype_hint


GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def capture_file(path: str) -> Iterator[str]:
    """A regular file to replay from (read as often as the replay needs): `path` itself when it is one.

    Standard input (`-`), /dev/stdin, a FIFO or a process substitution can be read only once, and a
    gzip-compressed capture (`x.pcap.gz`, told by its magic bytes) not in place: both are copied
    (decompressed) into a temporary file that is removed at the end."""
    try:
        source = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:
        if source is not sys.stdin.buffer:
            stack.enter_context(source)
        try:
            regular = path != "-" and stat.S_ISREG(os.fstat(source.fileno()).st_mode)
            head = source.peek(2)[:2] if hasattr(source, "peek") else b""
            spool = None
            if not regular or head == GZIP_MAGIC:
                spool = stack.enter_context(tempfile.NamedTemporaryFile(prefix="sysctl-doctor-capture-",
                                                                        suffix=".pcap"))
                _copy_capture(source, spool, path, gzipped=head == GZIP_MAGIC)
                spool.flush()
        except OSError as exc:
            raise DoctorError(f"{path}: cannot read: {exc.strerror or exc}") from None
        yield path if spool is None else spool.name  # what the caller does with it is not ours to catch


def _copy_capture(source: BinaryIO, spool: BinaryIO, path: str, gzipped: bool) -> None:
    reader: BinaryIO = gzip.GzipFile(fileobj=source, mode="rb") if gzipped else source  # type: ignore[assignment]
    try:
        shutil.copyfileobj(reader, spool, _CHUNK)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DoctorError(f"{path}: not a valid gzip file ({exc or 'cut short'})") from None


def open_capture(path: str, display: str = "") -> Tuple[BinaryIO, CaptureInfo]:
    """The open capture and its format; `display` names it in messages (default: `path`)."""
    shown = display or path
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DoctorError(f"{shown}: cannot read: {exc.strerror or exc}") from None

    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(4)
    except OSError as exc:
        f.close()
        raise DoctorError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    f.seek(0)
    if head in PCAP_MAGICS:
        return f, CaptureInfo(shown, "pcap", size)
    if head == PCAPNG_SHB:
        return f, CaptureInfo(shown, "pcapng", size)
    f.close()
    if len(head) < 4:
        raise DoctorError(f"{shown}: not a capture file (only {size} bytes)")
    raise DoctorError(f"{shown}: not a pcap or pcapng capture file (starts with {head.hex()})")


# A classic pcap's fast path (replay's compiled accelerator): called with (buf, pos, frame) before a
# record is read, it consumes the records it judges itself and returns the new (pos, frame).
SkipAhead = Callable[[bytes, int, int], Tuple[int, int]]
# pcapng's: (buf, pos, frame, the section's [(linktype, seconds per tick)], byte order) -> (pos, frame)
SkipAheadNg = Callable[[bytes, int, int, List[Tuple[int, float]], str], Tuple[int, int]]


class Accelerate(Protocol):
    """What read_records() asks a fast path for, once it knows the format."""

    def for_pcap(self, linktype: int, order: str, scale: float) -> Optional[SkipAhead]: ...

    def for_pcapng(self) -> Optional[SkipAheadNg]: ...


def read_records(f: BinaryIO, info: CaptureInfo, diagnostics: List[Diagnostic],
                 accelerate: Optional[Accelerate] = None) -> Iterator[Record]:
    """(frame, time, linktype, captured bytes, original length, outgoing-hint) per packet.

    `accelerate` (classic pcap only): records a fast path consumed are not handed out (their frame
    numbers are skipped); every other record is, as without it."""
    if info.format == "pcap":
        return _read_pcap(f, info, diagnostics, accelerate)
    return _read_pcapng(f, info, diagnostics, accelerate)


def _read_pcap(f: BinaryIO, info: CaptureInfo, diagnostics: List[Diagnostic],
               accelerate: Optional[Accelerate] = None) -> Iterator[Record]:
    header = f.read(24)
    if len(header) < 24:
        raise DoctorError(f"{info.path}: pcap header cut short ({len(header)} of 24 bytes)")
    order, scale = PCAP_MAGICS[header[:4]]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
    unpack = struct.Struct(order + "IIII").unpack_from
    skip = accelerate.for_pcap(linktype, order, scale) if accelerate is not None else None
    frame = 0
    buf = b""
    blen = pos = 0
    consumed = 24
    read = f.read
    while True:
        if pos + 16 > blen:
            consumed += pos
            buf = buf[pos:] + read(_CHUNK)
            blen = len(buf)
            pos = 0
            if not buf:
                return
            if blen < 16:
                diagnostics.append(Diagnostic(
                    f"file cut short inside the header of frame {frame + 1} (byte {consumed})", info.path))
                return
        if skip is not None:
            pos, frame = skip(buf, pos, frame)
            if pos + 16 > blen:
                continue
        sec, frac, caplen, origlen = unpack(buf, pos)
        frame += 1
        end = pos + 16 + caplen
        if end > blen:
            if caplen > MAX_RECORD:
                diagnostics.append(Diagnostic(
                    f"frame {frame}: record length {caplen} makes no sense; the rest of the file is not read "
                    f"(byte {consumed + pos})", info.path))
                return
            consumed += pos
            buf = buf[pos:] + read(max(_CHUNK, caplen))
            blen = len(buf)
            pos = 0
            end = 16 + caplen
            if end > blen:
                diagnostics.append(Diagnostic(
                    f"file cut short inside frame {frame} ({blen - 16} of {caplen} bytes)", info.path))
                return
        yield frame, sec + frac * scale, linktype, buf[pos + 16:end], origlen, -1
        pos = end


def _read_pcapng(f: BinaryIO, info: CaptureInfo, diagnostics: List[Diagnostic],
                 accelerate: Optional[Accelerate] = None) -> Iterator[Record]:
    buf = _Buffer(f)
    order = "<"
    interfaces: List[Tuple[int, float]] = []  # (linktype, seconds per tick)
    frame = 0
    skip = accelerate.for_pcapng() if accelerate is not None else None
    while True:
        if skip is not None and interfaces:
            buf.pos, frame = skip(buf.buf, buf.pos, frame, interfaces, order)
        start = buf.offset()
        head = buf.take(8)
        if not head:
            return
        if len(head) < 8:
            diagnostics.append(Diagnostic(f"file cut short inside a block header (byte {start})", info.path))
            return
        btype_raw = head[:4]
        if btype_raw == PCAPNG_SHB:
            magic = buf.take(4)
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                diagnostics.append(Diagnostic(f"bad section header at byte {start}", info.path))
                return
            blen = struct.unpack(order + "I", head[4:8])[0]
            if blen < 28 or blen > MAX_RECORD or blen % 4:
                diagnostics.append(Diagnostic(f"bad section header length {blen} at byte {start}", info.path))
                return
            rest = buf.take(blen - 12)
            if len(rest) < blen - 12:
                diagnostics.append(Diagnostic(f"file cut short inside the section header (byte {start})", info.path))
                return
            interfaces = []
            continue
        btype, blen = struct.unpack(order + "II", head)
        if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
            diagnostics.append(Diagnostic(
                f"block at byte {start} has length {blen}, which makes no sense; the rest of the file is not read",
                info.path))
            return
        body = buf.take(blen - 8)
        if len(body) < blen - 8:
            diagnostics.append(Diagnostic(
                f"file cut short inside a block (byte {start}, frame {frame + 1})" if btype in (2, 3, 6)
                else f"file cut short inside a block (byte {start})", info.path))
            return
        body = body[:-4]
        if btype == 1:  # interface description
            if len(body) < 8:
                diagnostics.append(Diagnostic(f"short interface block at byte {start}", info.path))
                return
            linktype = struct.unpack_from(order + "H", body, 0)[0]
            interfaces.append((linktype, _tsresol(body[8:], order)))
        elif btype == 6:  # enhanced packet
            frame += 1
            if len(body) < 20:
                diagnostics.append(Diagnostic(f"frame {frame}: short packet block", info.path))
                continue
            ifid, hi, lo, caplen, origlen = struct.unpack_from(order + "IIIII", body, 0)
            if ifid >= len(interfaces) or 20 + caplen > len(body):
                diagnostics.append(Diagnostic(
                    f"frame {frame}: packet block names interface {ifid} or length {caplen} that does not exist",
                    info.path))
                continue
            linktype, tick = interfaces[ifid]
            hint = -1
            padded = 20 + ((caplen + 3) & ~3)
            if len(body) > padded + 4:
                hint = _epb_direction(body[padded:], order)
            yield frame, ((hi << 32) | lo) * tick, linktype, body[20:20 + caplen], origlen, hint
        elif btype == 3:  # simple packet
            frame += 1
            if not interfaces or len(body) < 4:
                diagnostics.append(Diagnostic(f"frame {frame}: simple packet block without interface", info.path))
                continue
            origlen = struct.unpack_from(order + "I", body, 0)[0]
            data = body[4:4 + origlen]
            yield frame, 0.0, interfaces[0][0], data, origlen, -1
        elif btype == 2:  # obsolete packet block
            frame += 1
            if len(body) < 20:
                diagnostics.append(Diagnostic(f"frame {frame}: short packet block", info.path))
                continue
            ifid, _drops, hi, lo, caplen, origlen = struct.unpack_from(order + "HHIIII", body, 0)
            if ifid >= len(interfaces) or 20 + caplen > len(body):
                diagnostics.append(Diagnostic(f"frame {frame}: bad packet block", info.path))
                continue
            linktype, tick = interfaces[ifid]
            yield frame, ((hi << 32) | lo) * tick, linktype, body[20:20 + caplen], origlen, -1
        # other blocks (name resolution, statistics, custom) carry no packets


def _iter_options(data: bytes, order: str) -> Iterator[Tuple[int, bytes]]:
    i = 0
    while i + 4 <= len(data):
        code, length = struct.unpack_from(order + "HH", data, i)
        if code == 0:
            return
        yield code, data[i + 4:i + 4 + length]
        i += 4 + ((length + 3) & ~3)


def _tsresol(options: bytes, order: str) -> float:
    for code, value in _iter_options(options, order):
        if code == 9 and value:
            v = value[0]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
    return 1e-6


def _epb_direction(options: bytes, order: str) -> int:
    for code, value in _iter_options(options, order):
        if code == 2 and len(value) >= 4:
            direction = struct.unpack(order + "I", value[:4])[0] & 0x3
            if direction == 2:
                return PACKET_OUTGOING
            if direction == 1:
                return 0
    return -1


# ---------------------------------------------------------------------------
# decoding

class TcpPacket(Segment):
    """One decoded TCP packet: addresses, ports and the header fields the tracker reads."""

    __slots__ = ("src", "dst", "sport", "dport", "ip_id", "outgoing", "family", "raw", "l4")

    def __init__(self, family: int, src: bytes, dst: bytes, sport: int, dport: int, ip_id: int,
                 seq: int, ack: int, flags: int, window: int, doff: int, datalen: int,
                 options: bytes, tcplen: int, outgoing: bool, raw: bytes = b"", l4: int = -1) -> None:
        self.family = family
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.ip_id = ip_id
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.doff = doff
        self.datalen = datalen
        self.options = options
        self.tcplen = tcplen
        self.outgoing = outgoing
        self.raw = raw  # the captured frame, for the checksum (conntrack/checksum.py)
        self.l4 = l4  # where the TCP header starts in it (-1: unknown)


# Reasons a record gives no TCP packet; the keys of ReplaySummary.skipped.
NOT_IP = "not IP"
NOT_TCP = "not TCP"
FRAGMENT = "IP fragment"
CUT = "cut by the snap length"
MALFORMED = "malformed"
UNKNOWN_LINK = "unknown link type"

_ETH_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
_V6_EXT = frozenset({0, 43, 60})
_HDR = struct.Struct("!HHIIBBH")
_unpack_tcp = _HDR.unpack_from
_unpack_v4tcp = struct.Struct("!BBHHHBBH4s4sHHIIBBH").unpack_from


def decode(linktype: int, data: bytes, hint: int = -1) -> Union[TcpPacket, str]:
    """The TCP packet in one captured frame, or the reason there is none."""
    outgoing = hint == PACKET_OUTGOING
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return CUT
        etype = (data[12] << 8) | data[13]
        off = 14
        while etype in _ETH_VLAN:
            if len(data) < off + 4:
                return CUT
            etype = (data[off + 2] << 8) | data[off + 3]
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return CUT
        outgoing = ((data[0] << 8) | data[1]) == PACKET_OUTGOING
        etype = (data[14] << 8) | data[15]
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return CUT
        outgoing = data[10] == PACKET_OUTGOING
        etype = (data[0] << 8) | data[1]
        off = 20
    elif linktype in _RAW_TYPES:
        if not data:
            return CUT
        version = data[0] >> 4
        etype = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
        off = 0
    elif linktype == LINKTYPE_NULL:
        if len(data) < 4:
            return CUT
        family = int.from_bytes(data[:4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(data[:4], "big")
        etype = 0x0800 if family == 2 else 0x86DD if family in (10, 24, 28, 30) else 0
        off = 4
    else:
        return UNKNOWN_LINK
    if etype == 0x0800 and data[off:off + 1] == b"\x45" and len(data) >= off + 40:
        # the common case in one unpack: a 20-byte IPv4 header and a TCP header
        (_v, _tos, total, ip_id, frag, _ttl, proto, _sum, src, dst,
         sport, dport, seq, ack, offb, flags, window) = _unpack_v4tcp(data, off)
        if proto == 6 and not frag & 0x3FFF and total >= 40:
            doff = (offb >> 4) * 4
            l4len = total - 20
            if doff == 20:
                return TcpPacket(4, src, dst, sport, dport, ip_id, seq, ack, flags, window, 20,
                                 l4len - 20, b"", l4len, outgoing, data, off + 20)
            if 20 < doff <= l4len and len(data) >= off + 20 + doff:
                return TcpPacket(4, src, dst, sport, dport, ip_id, seq, ack, flags, window, doff,
                                 l4len - doff, data[off + 40:off + 20 + doff], l4len, outgoing, data, off + 20)
        # anything else: the general path below
    if etype == 0x0800:
        if len(data) < off + 20:
            return CUT
        vihl = data[off]
        if vihl >> 4 != 4:
            return MALFORMED
        ihl = (vihl & 0x0F) * 4
        total = (data[off + 2] << 8) | data[off + 3]
        if ihl < 20 or total < ihl:
            return MALFORMED
        if data[off + 9] != 6:
            return NOT_TCP
        if ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF:
            return FRAGMENT
        ip_id = (data[off + 4] << 8) | data[off + 5]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        l4 = off + ihl
        l4len = total - ihl
        family = 4
    elif etype == 0x86DD:
        if len(data) < off + 40:
            return CUT
        if data[off] >> 4 != 6:
            return MALFORMED
        plen = (data[off + 4] << 8) | data[off + 5]
        nxt = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        l4 = off + 40
        l4len = plen
        while nxt in _V6_EXT or nxt == 51 or nxt == 44:
            if nxt == 44:
                return FRAGMENT
            if len(data) < l4 + 2:
                return CUT
            hlen = (data[l4 + 1] + 2) * 4 if nxt == 51 else (data[l4 + 1] + 1) * 8
            nxt = data[l4]
            l4 += hlen
            l4len -= hlen
        if nxt != 6:
            return NOT_TCP
        if l4len < 0:
            return MALFORMED
        ip_id = 0
        family = 6
    else:
        return NOT_IP
    if l4len < 20:
        # the IP length itself says the TCP header is incomplete: conntrack's "truncated packet"
        if l4len < 8 or len(data) < l4 + 8:
            return MALFORMED
        sport = (data[l4] << 8) | data[l4 + 1]
        dport = (data[l4 + 2] << 8) | data[l4 + 3]
        return TcpPacket(family, src, dst, sport, dport, ip_id, 0, 0, 0, 0, 0, 0, b"", l4len, outgoing)
    if len(data) < l4 + 20:
        return CUT
    sport, dport, seq, ack, offb, flags, window = _unpack_tcp(data, l4)
    doff = (offb >> 4) * 4
    if doff > 20 and len(data) < l4 + doff and l4len >= doff:
        return CUT  # options cut by the snap length: cannot be judged
    options = data[l4 + 20:l4 + doff] if doff > 20 else b""
    datalen = l4len - doff if l4len >= doff else 0
    return TcpPacket(family, src, dst, sport, dport, ip_id, seq, ack, flags, window, doff,
                     datalen, options, l4len, outgoing, data, l4)


ProgressCallback = Callable[[int, int], None]
