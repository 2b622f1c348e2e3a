"""Replay a capture through the TCP model: a verdict for every TCP packet.

    for v in replay_capture("trace.pcap", profile_for("6.18"), {"nf_conntrack_tcp_be_liberal": "0"}):
        print(v.frame, v.verdict, v.message)

Flows are tracked by their tuples the way conntrack does: the first packet
makes an entry with its tuple as ORIGINAL; packets on the reversed tuple are
REPLY. Memory grows with the number of flows, not packets: `Replay.packets()`
is a generator and each flow keeps at most `EXAMPLES_PER_FLOW` non-accepted
packets for the report.

Captures taken on a NAT box with ``tcpdump -i any`` (Linux cooked v1/v2, or
pcapng with a direction flag) hold a forwarded packet twice: as it came in and
as it went out. Conntrack saw it once, in PREROUTING. An outgoing packet that
matches a recently seen incoming one (same IP ID, sequence and ack numbers,
flags, window and payload length — what NAT does not rewrite) is such a copy:
it gets the original's verdict with ``copy_of`` naming the original's frame and
is not tracked again; the addresses it went out with teach the replay the NAT
binding, so the replies (addressed to the NAT box) find the entry. An outgoing
packet with no such match was made by the box itself (its own RST, say) and is
tracked as conntrack's OUTPUT hook would.

Non-TCP packets (UDP, ICMP, ARP, IP fragments, …) are counted in the summary
and get no entry in the packet list; TCP packets the capture cut before the end
of their options (snap length) cannot be judged and are counted likewise.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

from sysctl_doctor.compiled import load_accelerator
from sysctl_doctor.conntrack import pcap
from sysctl_doctor.conntrack.checksum import tcp_checksum_bad, tcp_checksum_state
from sysctl_doctor.conntrack.profiles import KernelProfile
from sysctl_doctor.conntrack.tcp_flags import REPLAY_ORDER
from sysctl_doctor.conntrack.tcp_model import (
    ACCEPT, ESTABLISHED, IGNORE, INVALID, ORIGINAL, REPLY, STATE_NAMES, VALID_FLAG_BYTE, Connection,
    TcpSettings, TcpTracker,
    settings_from_sysctls,
)
from sysctl_doctor.errors import Diagnostic

EXAMPLES_PER_FLOW = 20
# Where the capture was taken (replay --capture-point): "any" reads the direction from the capture
# (Linux cooked / pcapng flags; without them every packet is taken as arriving); "nat-outside" /
# "nat-inside": one link of the NAT box, no direction flags needed; "endpoint": on a host at one end.
CAPTURE_POINTS = ("any", "nat-outside", "nat-inside", "endpoint")
_ASSURED = ("ASSURED",)
_UNREPLIED = ("UNREPLIED",)
_NOSTATUS: Tuple[str, ...] = ()
_RECENT_INCOMING = 512
_GC_EVERY = 100_000
_FLAG_NAMES = tuple((int(flag), flag.name) for flag in REPLAY_ORDER)
# The compiled fast path (conntrack/_replayfast.c; compiled.py says when it is used): pcap and pcapng
# records of a link type without direction flags (no forwarded copies to pair), assured ESTABLISHED
# entries only; see _FastPath and the C file's header for what it takes and what it leaves to the model.
_FAST_MODULE = "sysctl_doctor.conntrack._replayfast"
_FAST_LINKTYPES = frozenset({pcap.LINKTYPE_NULL, pcap.LINKTYPE_ETHERNET, 101, 12, 14, 228, 229})
_FAST_RECORD = struct.Struct("<QdIIIII")  # FastTable.run()'s per accepted packet in _VERDICTS mode
_COUNTS, _JSON_LINES, _VERDICTS = 0, 1, 2  # what a pass hands out for the packets the fast path accepted
_ESTABLISHED_NAME = STATE_NAMES[ESTABLISHED]


_FLAG_TEXT = tuple(",".join(name for bit, name in _FLAG_NAMES if flags & bit) or "none" for flags in range(256))
_ADDR_TEXT: Dict[bytes, str] = {}


def flag_names(flags: int) -> str:
    return _FLAG_TEXT[flags & 0xFF]


def _addr(raw: bytes) -> str:
    text = _ADDR_TEXT.get(raw)
    if text is None:
        import ipaddress

        text = str(ipaddress.ip_address(raw))
        if len(_ADDR_TEXT) < 65536:
            _ADDR_TEXT[raw] = text
    return text


_JSON_LINE = ('{"frame": %d, "verdict": "%s", "message": %s, "flow": %d, "direction": "%s", "time": %.6f, '
              '"src": "%s", "dst": "%s", "sport": %d, "dport": %d, "seq": %d, "ack": %d, "flags": "%s", '
              '"len": %d, "state": "%s", "copy_of": %s}')
_JSON_ACCEPT = '{"frame": %d, "verdict": "accept", "message": null, "flow": %d}'
_JSON_ACCEPT_COPY = '{"frame": %d, "verdict": "accept", "message": null, "flow": %d, "copy_of": %d}'
_JSON_TEXT: Dict[str, str] = {}


def _json_text(text: str) -> str:
    out = _JSON_TEXT.get(text)
    if out is None:
        import json

        out = json.dumps(text)
        if len(_JSON_TEXT) < 4096:
            _JSON_TEXT[text] = out
    return out


class PacketVerdict:
    """The model's verdict on one TCP packet of the capture.

    frame (1-based index in the file), time, verdict ("accept" | "ignore" |
    "invalid"), message (the kernel's log text for this profile, None when it
    logs nothing), flow (index into ReplaySummary.flows), direction
    ("original" | "reply"), src, dst, sport, dport, seq, ack, flags ("ACK,PSH"),
    length (TCP payload bytes), state (conntrack's TCP state after the packet,
    "NONE" without an entry), copy_of (for a forwarded copy: its original's frame).
    """

    __slots__ = ("frame", "time", "verdict", "message", "flow", "_dir", "_pkt", "state", "copy_of")

    def __init__(self, frame: int, time: float, verdict: str, message: Optional[str], flow: int,
                 direction: int, pkt: pcap.TcpPacket, state: str, copy_of: Optional[int] = None) -> None:
        self.frame = frame
        self.time = time
        self.verdict = verdict
        self.message = message
        self.flow = flow
        self._dir = direction
        self._pkt = pkt
        self.state = state
        self.copy_of = copy_of

    direction = property(lambda self: "reply" if self._dir == REPLY else "original")
    src = property(lambda self: _addr(self._pkt.src))
    dst = property(lambda self: _addr(self._pkt.dst))
    sport = property(lambda self: self._pkt.sport)
    dport = property(lambda self: self._pkt.dport)
    seq = property(lambda self: self._pkt.seq)
    ack = property(lambda self: self._pkt.ack)
    flags = property(lambda self: _FLAG_TEXT[self._pkt.flags & 0xFF])
    length = property(lambda self: self._pkt.datalen)

    def __repr__(self) -> str:
        return (f"PacketVerdict(frame={self.frame}, verdict={self.verdict!r}, message={self.message!r}, "
                f"{self.src}:{self.sport} > {self.dst}:{self.dport} [{self.flags}] seq={self.seq} ack={self.ack})")

    def json_line(self) -> str:
        """The packet's line in `replay --format json`: json.dumps(self.to_json()), faster; an accepted
        packet (most of any capture) carries only frame, verdict, message, flow (and copy_of)."""
        if self.verdict == ACCEPT and self.message is None:
            if self.copy_of is None:
                return _JSON_ACCEPT % (self.frame, self.flow)
            return _JSON_ACCEPT_COPY % (self.frame, self.flow, self.copy_of)
        pkt = self._pkt
        message = self.message
        return _JSON_LINE % (
            self.frame, self.verdict, "null" if message is None else _json_text(message), self.flow,
            "reply" if self._dir == REPLY else "original", self.time, _addr(pkt.src), _addr(pkt.dst),
            pkt.sport, pkt.dport, pkt.seq, pkt.ack, _FLAG_TEXT[pkt.flags & 0xFF], pkt.datalen, self.state,
            "null" if self.copy_of is None else self.copy_of)

    def to_json(self) -> dict:
        pkt = self._pkt
        return {
            "frame": self.frame, "verdict": self.verdict, "message": self.message,
            "flow": self.flow, "direction": self.direction, "time": round(self.time, 6),
            "src": _addr(pkt.src), "dst": _addr(pkt.dst), "sport": pkt.sport, "dport": pkt.dport,
            "seq": pkt.seq, "ack": pkt.ack, "flags": _FLAG_TEXT[pkt.flags & 0xFF], "len": pkt.datalen,
            "state": self.state, "copy_of": self.copy_of,
        }


@dataclass
class FlowSummary:
    """One flow (a pair of tuples, possibly several conntrack entries over time)."""

    index: int
    src: str
    dst: str
    sport: int
    dport: int
    first_frame: int
    last_frame: int = 0
    packets: int = 0
    accept: int = 0
    ignore: int = 0
    invalid: int = 0
    entries: int = 0  # conntrack entries made for this flow
    state: str = "NONE"
    examples: List[PacketVerdict] = field(default_factory=list)  # the first non-accepted packets
    nat: Optional[str] = None  # "src:port -> dst:port" as it left the NAT box, when learnt
    status: Tuple[str, ...] = ()  # "ASSURED" / "UNREPLIED" of the live entry
    live: Optional["_Entry"] = field(default=None, repr=False, compare=False)  # the flow's current entry

    def to_json(self) -> dict:
        return {
            "flow": self.index, "src": self.src, "dst": self.dst, "sport": self.sport,
            "dport": self.dport, "first_frame": self.first_frame, "last_frame": self.last_frame,
            "packets": self.packets, "accept": self.accept, "ignore": self.ignore,
            "invalid": self.invalid, "entries": self.entries, "state": self.state,
            "nat": self.nat, "status": self.status,
        }


@dataclass
class ReplaySummary:
    path: str
    format: str = ""
    profile: str = ""
    kernel: str = ""
    frames: int = 0
    tcp_packets: int = 0
    copies: int = 0
    verdicts: Dict[str, int] = field(default_factory=lambda: {ACCEPT: 0, IGNORE: 0, INVALID: 0})
    skipped: Dict[str, int] = field(default_factory=dict)  # reason -> count (non-TCP, cut, …)
    bad_checksums: int = 0  # packets judged INVALID for their TCP checksum ("bad checksum")
    flows: List[FlowSummary] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)


class _Entry:
    """A live conntrack entry: the model's state and the table keys that lead to it."""

    __slots__ = ("ct", "keys", "flow", "owned", "misses", "cooldown")

    def __init__(self, ct: Connection, flow: FlowSummary) -> None:
        self.ct = ct
        self.keys: List[tuple] = []
        self.flow = flow
        self.owned = False  # held by the compiled fast path: ct is stale until it is taken back
        # hand-overs in a row that came back without one packet accepted, and how many of the model's
        # packets to wait before the next (a storm of packets the fast path cannot judge: no ping-pong)
        self.misses = 0
        self.cooldown = 0


class Replay:
    """One pass over a capture with one profile and one set of sysctls."""

    def __init__(self, path: str, profile: KernelProfile, settings: TcpSettings,
                 progress: Optional[pcap.ProgressCallback] = None, display: str = "",
                 explain: Optional[int] = None, capture_point: str = "any") -> None:
        if capture_point not in CAPTURE_POINTS:
            raise ValueError(f"capture point {capture_point!r}: one of {', '.join(CAPTURE_POINTS)}")
        self.path = path
        self.display = display or path  # how messages name the capture (the spool of stdin is "-")
        self.capture_point = capture_point
        # addresses that sent a SYN on this link: the inside of the NAT box as the link shows it
        self._syn_senders: set = set()
        # nat-outside: a RST the box's own stack will send, keyed by its tuple -> (seq, ack or None)
        self._box_answers: Dict[tuple, Tuple[int, Optional[int]]] = {}
        self.explain = explain  # a frame number: its steps are kept in self.explanation
        self.explanation: Optional[dict] = None
        self.profile = profile
        self.settings = settings
        self.tracker = TcpTracker(profile, settings)
        self.progress = progress
        self.summary = ReplaySummary(path=self.display, profile=profile.name,
                                     kernel="%d.%d" % profile.version)
        self._table: Dict[tuple, Tuple[_Entry, int]] = {}
        self._flow_of: Dict[tuple, FlowSummary] = {}
        self._dedup = False  # only captures that can tell outgoing packets hold forwarded copies
        self._recent: "OrderedDict[tuple, Tuple[PacketVerdict, _Entry, int, tuple]]" = OrderedDict()
        # tcp_error(): truncated header, then the checksum (PRE_ROUTING: packets arriving at the box), then flags
        self._check_sums = settings.checksum and capture_point != "endpoint"
        self._any_point = capture_point == "any"
        self._truncated = profile.message("truncated") or "truncated packet"
        self._bad_checksum = profile.message("bad_checksum") or "bad checksum"
        self._fast = None  # the compiled FastTable of this pass, when one runs

    # -- the conntrack table ------------------------------------------------------
    def _flow(self, key: tuple, pkt: pcap.TcpPacket, frame: int) -> FlowSummary:
        flow = self._flow_of.get(key)
        if flow is None:
            rkey = (key[1], key[0], key[3], key[2])
            flow = self._flow_of.get(rkey)
        if flow is None:
            flow = FlowSummary(index=len(self.summary.flows), src=_addr(pkt.src), dst=_addr(pkt.dst),
                               sport=pkt.sport, dport=pkt.dport, first_frame=frame)
            self.summary.flows.append(flow)
            self._flow_of[key] = flow
        return flow

    def _drop(self, entry: _Entry) -> None:
        for key in entry.keys:
            if self._table.get(key, (None,))[0] is entry:
                del self._table[key]
        entry.keys = []

    def _register(self, entry: _Entry, key: tuple, direction: int) -> None:
        if key not in self._table:
            self._table[key] = (entry, direction)
            entry.keys.append(key)
            if key not in self._flow_of:
                self._flow_of[key] = entry.flow

    def _gc(self, now: float) -> None:
        fast = self._fast
        if fast is not None and len(fast):
            for item in fast.evict_expired(now):
                self._take_back(item)
        for entry in {e for e, _ in self._table.values() if not e.owned and e.ct.expires < now}:
            self._drop(entry)

    # -- the compiled fast path's entries -------------------------------------------
    def _hand_over(self, key: tuple) -> None:
        """After the model judged a packet on `key`: an assured ESTABLISHED entry goes to the fast path."""
        found = self._table.get(key)
        if found is None:
            return
        entry = found[0]
        ct = entry.ct
        if entry.owned or ct.state != ESTABLISHED or not ct.assured or not ct.seen_reply or not entry.keys:
            return
        if entry.cooldown:
            entry.cooldown -= 1
            return
        s0, s1 = ct.seen
        state = (s0.td_end, s0.td_maxend, s0.td_maxwin, s0.td_maxack, s0.td_scale, s0.flags,
                 s1.td_end, s1.td_maxend, s1.td_maxwin, s1.td_maxack, s1.td_scale, s1.flags,
                 ct.last_dir, ct.last_seq, ct.last_ack, ct.last_end, ct.last_win, ct.retrans,
                 ct.last_index, ct.expires)
        table = self._table
        if self._fast.adopt(entry, [(k, table[k][1]) for k in entry.keys], state, entry.flow.index):  # type: ignore[union-attr]
            entry.owned = True

    def _take_back(self, item: Optional[tuple]) -> None:
        """An entry back from the fast path: its state, and the packets it accepted counted as _record() does."""
        if item is None:
            return
        entry, state, packets, last_frame = item
        ct = entry.ct
        s0, s1 = ct.seen
        (s0.td_end, s0.td_maxend, s0.td_maxwin, s0.td_maxack, s0.td_scale, s0.flags,
         s1.td_end, s1.td_maxend, s1.td_maxwin, s1.td_maxack, s1.td_scale, s1.flags,
         ct.last_dir, ct.last_seq, ct.last_ack, ct.last_end, ct.last_win, ct.retrans,
         ct.last_index, ct.expires) = state
        entry.owned = False
        if not packets:
            entry.misses += 1
            entry.cooldown = 1 << min(entry.misses, 6)
        else:
            entry.misses = 0
            summary = self.summary
            summary.tcp_packets += packets
            summary.verdicts[ACCEPT] += packets
            flow = entry.flow
            flow.packets += packets
            flow.accept += packets
            if last_frame > flow.last_frame:
                flow.last_frame = last_frame
            flow.status = _ASSURED
            flow.state = _ESTABLISHED_NAME
            flow.live = entry

    def _accelerator(self, mode: int, pending: list, last: List[int]) -> Optional["_FastPath"]:
        """The reader's fast path for this pass, or None (not built, SYSCTL_DOCTOR_PURE_PYTHON=1)."""
        accel = load_accelerator(_FAST_MODULE)
        return None if accel is None else _FastPath(self, accel, mode, pending, last)

    def _stop_fast_path(self) -> None:
        """Every entry back from the fast path, which stops for this pass (forwarded copies from here on)."""
        fast = self._fast
        if fast is not None:
            self._fast = None
            for item in fast.drain():
                self._take_back(item)

    # -- the pass -------------------------------------------------------------------
    def packets(self) -> Iterator[PacketVerdict]:
        """Every TCP packet's verdict, in file order."""
        return self._pass(_VERDICTS)  # type: ignore[return-value]

    def verdict_stream(self, json_lines: bool = False) -> Iterator[Union[PacketVerdict, str]]:
        """The pass for a whole-capture report, in file order: a PacketVerdict for each packet the Python
        model judged; for the runs of packets the compiled fast path accepted, with `json_lines` their
        `replay --format json` lines as one str (each line after ",\n  "), else nothing (the summary
        counts them). Without the accelerator: every packet's PacketVerdict, as packets()."""
        return self._pass(_JSON_LINES if json_lines else _COUNTS)

    def _pass(self, mode: int) -> Iterator[Union[PacketVerdict, str]]:
        f, info = pcap.open_capture(self.path, self.display)
        summary = self.summary
        summary.format = info.format
        skipped = summary.skipped
        decode = pcap.decode
        progress = self.progress
        last_linktype = -1
        next_gc = _GC_EVERY
        frame = 0
        pending: list = []  # what the fast path accepted before the next record
        fast_frame = [0]
        accelerate = self._accelerator(mode, pending, fast_frame)
        try:
            for frame, ts, linktype, data, _origlen, hint in pcap.read_records(f, info, summary.diagnostics,
                                                                               accelerate):
                if pending:
                    yield from pending
                    pending.clear()
                if not frame & 0x3FFF:
                    summary.frames = frame
                    if progress is not None:
                        progress(f.tell(), info.size)
                    if frame >= next_gc:
                        next_gc = frame + _GC_EVERY
                        self._gc(ts)
                if linktype != last_linktype:
                    last_linktype = linktype
                    if linktype in (pcap.LINKTYPE_LINUX_SLL, pcap.LINKTYPE_LINUX_SLL2):
                        self._dedup = True
                        self._stop_fast_path()
                if hint >= 0:
                    self._dedup = True
                    self._stop_fast_path()
                pkt = decode(linktype, data, hint)
                if pkt.__class__ is str:
                    skipped[pkt] = skipped.get(pkt, 0) + 1  # type: ignore[index]
                    continue
                fast = self._fast
                if fast is not None:
                    key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)  # type: ignore[union-attr]
                    if len(fast):
                        self._take_back(fast.evict(*key))
                if frame == self.explain:
                    v = self._explain_one(frame, ts, pkt)  # type: ignore[arg-type]
                elif self.capture_point == "nat-outside":
                    v = self._one_outside(frame, ts, pkt)  # type: ignore[arg-type]
                else:
                    v = self._one(frame, ts, pkt)  # type: ignore[arg-type]
                if fast is not None:
                    self._hand_over(key)
                yield v
            if pending:
                yield from pending
                pending.clear()
        finally:
            self._stop_fast_path()
            summary.frames = max(summary.frames, frame, fast_frame[0])
            f.close()
            if progress is not None:
                progress(info.size, info.size)

    def _one(self, frame: int, ts: float, pkt: pcap.TcpPacket) -> PacketVerdict:
        summary = self.summary
        summary.tcp_packets += 1
        key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)
        if pkt.outgoing:
            copy = self._copy(frame, ts, pkt, key)
            if copy is not None:
                return copy
        seg = pkt
        tracker = self.tracker
        found = self._table.get(key)
        entry: Optional[_Entry] = None
        direction = ORIGINAL
        if found is not None:
            entry, direction = found
            if entry.ct.expires < ts:
                self._drop(entry)
                entry = None
        error = None
        if pkt.doff < 20 or pkt.tcplen < pkt.doff or not VALID_FLAG_BYTE[pkt.flags]:
            error = tracker.error(seg)
        if (self._check_sums and error != self._truncated
                and (not pkt.outgoing if self._any_point else self.arriving(pkt))
                and tcp_checksum_bad(pkt.src, pkt.dst, pkt.raw, pkt.l4, pkt.tcplen)):
            error = self._bad_checksum
            self.summary.bad_checksums += 1
        if error is not None:
            flow = entry.flow if entry is not None else self._flow(key, pkt, frame)
            return self._record(frame, ts, pkt, flow, direction, INVALID, error, entry)
        if entry is not None:
            outcome = tracker.packet(entry.ct, direction, seg, ts)
            if outcome.reopen:
                flow = entry.flow
                self._drop(entry)
                entry = None
                direction = ORIGINAL
            else:
                if outcome.kill:
                    self._drop(entry)
                elif direction == REPLY and outcome.verdict != INVALID:
                    entry.ct.seen_reply = True
                return self._record(frame, ts, pkt, entry.flow, direction, outcome.verdict, outcome.message, entry)
        # no entry: tcp_new()
        flow = self._flow(key, pkt, frame)
        ct, message = tracker.new(seg)
        if ct is None:
            return self._record(frame, ts, pkt, flow, ORIGINAL, INVALID, message, None)
        outcome = tracker.packet(ct, ORIGINAL, seg, ts)
        entry = _Entry(ct, flow)
        if outcome.verdict == ACCEPT and not outcome.kill:
            flow.entries += 1
            self._register(entry, key, ORIGINAL)
            self._register(entry, (key[1], key[0], key[3], key[2]), REPLY)
        return self._record(frame, ts, pkt, flow, ORIGINAL, outcome.verdict, outcome.message, entry)

    def arriving(self, pkt: pcap.TcpPacket) -> bool:
        """Did the box receive this packet (PRE_ROUTING, where conntrack checks checksums) rather than
        send it? From the capture's direction flag, or from the capture point the operator gave."""
        point = self.capture_point
        if point == "any":
            return not pkt.outgoing
        if pkt.flags & 0x12 == 0x02:  # a SYN: its sender is on the inside of what the link shows
            self._syn_senders.add(pkt.src)
        if point == "nat-outside":  # sent by the box (the inside's packets, NATed): not checked here
            return pkt.src not in self._syn_senders
        if point == "nat-inside":  # replies going back in were checked when they arrived outside
            return pkt.dst not in self._syn_senders
        return False  # endpoint: the sender's NIC filled the checksums; what arrived passed the box

    def _one_outside(self, frame: int, ts: float, pkt: pcap.TcpPacket) -> PacketVerdict:
        """A capture on the NAT box's outside link, without direction flags. A reply the box finds
        INVALID is not de-NATed: it is addressed to the box, whose stack answers with a RST from the
        box's address. That RST has no entry (its tuple is neither of the entry's tuples), so conntrack's
        OUTPUT hook finds it "invalid new" — on this link it looks like the inside's own packet."""
        key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)
        if pkt.flags & 0x12 == 0x02:
            self._syn_senders.add(pkt.src)
        if pkt.flags & 0x04 and self._box_answers:
            expected = self._box_answers.pop(key, None)
            if expected is not None:
                seq, ack = expected
                if (ack is None and not pkt.flags & 0x10 and pkt.seq == seq) or (
                        ack is not None and pkt.flags & 0x10 and pkt.ack == ack):
                    self.summary.tcp_packets += 1
                    self.arriving(pkt)
                    flow = self._flow(key, pkt, frame)
                    _ct, message = self.tracker.new(pkt)
                    return self._record(frame, ts, pkt, flow, ORIGINAL, INVALID, message, None)
        v = self._one(frame, ts, pkt)
        if v.verdict == INVALID and not pkt.flags & 0x04 and pkt.dst in self._syn_senders:
            # the box's stack will answer it (tcp_v4_send_reset: seq = its ack, or ACK of its end)
            self._box_answers[(pkt.dst, pkt.src, pkt.dport, pkt.sport)] = (
                (pkt.ack, None) if pkt.flags & 0x10 else (0, pkt.end()))
            if len(self._box_answers) > _RECENT_INCOMING:
                self._box_answers.pop(next(iter(self._box_answers)))
        return v

    def _explain_one(self, frame: int, ts: float, pkt: pcap.TcpPacket) -> PacketVerdict:
        """_one() for the frame asked about, with the tracker's steps recorded (replay --explain)."""
        key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)
        found = self._table.get(key)
        live = found is not None and found[0].ct.expires >= ts
        trace: dict = {}
        self.tracker.trace = trace
        try:
            v = self._one_outside(frame, ts, pkt) if self.capture_point == "nat-outside" else self._one(frame, ts, pkt)
        finally:
            self.tracker.trace = None
        checked = self._check_sums and self.arriving(pkt)
        self.explanation = {
            "verdict": v, "trace": trace, "had_entry": live,
            "entry_direction": ("reply" if found[1] == REPLY else "original") if live and found else None,
            "checksum": (tcp_checksum_state(pkt.family, pkt.src, pkt.dst, pkt.raw, pkt.l4, pkt.tcplen)
                         if checked else None),
            "outgoing": pkt.outgoing, "window_raw": pkt.window, "datalen": pkt.datalen,
        }
        return v

    def _record(self, frame: int, ts: float, pkt: pcap.TcpPacket, flow: FlowSummary, direction: int,
                verdict: str, message: Optional[str], entry: Optional[_Entry]) -> PacketVerdict:
        self.summary.verdicts[verdict] += 1
        flow.packets += 1
        flow.last_frame = frame
        if verdict == ACCEPT:
            flow.accept += 1
        elif verdict == IGNORE:
            flow.ignore += 1
        else:
            flow.invalid += 1
        if entry is not None and entry.keys:
            ct = entry.ct
            state = STATE_NAMES[ct.state]
            flow.status = _ASSURED if ct.assured else _UNREPLIED if not ct.seen_reply else _NOSTATUS
            flow.state = state
            flow.live = entry
        else:
            state = "NONE"
            live = flow.live
            if live is None or not live.keys:  # else: a packet without an entry leaves the flow's entry alone
                flow.status = _NOSTATUS
                flow.state = state
                flow.live = None
        v = PacketVerdict(frame, ts, verdict, message, flow.index, direction, pkt, state)
        if verdict != ACCEPT and len(flow.examples) < EXAMPLES_PER_FLOW:
            flow.examples.append(v)
        if self._dedup and not pkt.outgoing:
            recent = self._recent
            recent[(pkt.ip_id, pkt.seq, pkt.ack, pkt.flags, pkt.window, pkt.datalen)] = (
                v, entry, direction if (verdict != INVALID and entry is not None) else -1,
                (pkt.src, pkt.dst, pkt.sport, pkt.dport))
            if len(recent) > _RECENT_INCOMING:
                recent.popitem(last=False)
        return v

    def _copy(self, frame: int, ts: float, pkt: pcap.TcpPacket, key: tuple) -> Optional[PacketVerdict]:
        """The forwarded copy of a recent incoming packet, or None."""
        match = self._recent.pop((pkt.ip_id, pkt.seq, pkt.ack, pkt.flags, pkt.window, pkt.datalen), None)
        if match is None:
            return None
        original, entry, direction, okey = match
        summary = self.summary
        summary.copies += 1
        if entry is not None and direction >= 0 and key != okey and entry.keys:
            # NAT rewrote it: replies come back on the reverse of what left
            self._register(entry, (key[1], key[0], key[3], key[2]), 1 - direction)
            if direction == ORIGINAL and entry.flow.nat is None:
                entry.flow.nat = "%s:%d -> %s:%d" % (_addr(pkt.src), pkt.sport, _addr(pkt.dst), pkt.dport)
        return PacketVerdict(frame, ts, original.verdict, original.message, original.flow, original._dir, pkt,
                             original.state, copy_of=original.frame)


class _FastPath:
    """pcap.Accelerate for one pass: makes the FastTable when the reader knows the format, and turns
    what FastTable.run() accepted into what the pass hands out (see Replay._pass)."""

    def __init__(self, replay: Replay, accel, mode: int, pending: list, last: List[int]) -> None:  # type: ignore[no-untyped-def]
        self.replay = replay
        self.accel = accel
        self.mode = mode
        self.pending = pending
        self.last = last

    def _table(self, linktype: int, big: bool, scale: float):  # type: ignore[no-untyped-def]
        replay = self.replay
        est, unack, retrans = replay.tracker._est_timeouts
        fast = self.accel.FastTable(est, -1 if unack is None else unack, -1 if retrans is None else retrans,
                                    replay.settings.max_retrans, replay._check_sums, linktype, big, scale)
        replay._fast = fast
        return fast

    def _limit(self, frame: int) -> int:
        # stop before every 16384th frame (progress, GC: the Python loop's) and the one to explain
        limit = ((frame >> 14) + 1) << 14
        explain = self.replay.explain
        if explain is not None and frame < explain < limit:
            limit = explain
        return limit

    def _known(self) -> int:
        """FastTable.run()'s `known`: the reasons without TCP the summary lists already."""
        skipped = self.replay.summary.skipped
        return (4 if pcap.NOT_IP in skipped else 0) | (8 if pcap.NOT_TCP in skipped else 0)

    def _hand_out(self, buf: bytes, out, not_ip: int, not_tcp: int, before: int, done: int) -> None:  # type: ignore[no-untyped-def]
        if done > before:  # the last frame read (a damaged pcapng block counted by the reader is not one)
            self.last[0] = done
        if not_ip or not_tcp:
            skipped = self.replay.summary.skipped
            if not_ip:
                skipped[pcap.NOT_IP] += not_ip
            if not_tcp:
                skipped[pcap.NOT_TCP] += not_tcp
        if out is None:
            return
        if self.mode != _VERDICTS:
            self.pending.append(out)
            return
        decode = pcap.decode
        append = self.pending.append
        for number, ts, at, caplen, flow, direction, linktype in _FAST_RECORD.iter_unpack(out):
            append(PacketVerdict(number, ts, ACCEPT, None, flow, direction,
                                 decode(linktype, buf[at:at + caplen]),  # type: ignore[arg-type]
                                 _ESTABLISHED_NAME))

    def for_pcap(self, linktype: int, order: str, scale: float) -> Optional[pcap.SkipAhead]:
        if linktype not in _FAST_LINKTYPES:
            return None
        fast = self._table(linktype, order == ">", scale)
        run = fast.run
        replay = self.replay
        mode = self.mode

        def skip(buf: bytes, pos: int, frame: int) -> Tuple[int, int]:
            if replay._fast is not fast:
                return pos, frame
            pos, done, out, not_ip, not_tcp = run(buf, pos, frame, self._limit(frame), mode, self._known())
            self._hand_out(buf, out, not_ip, not_tcp, frame, done)
            return pos, done

        return skip

    def for_pcapng(self) -> Optional[pcap.SkipAheadNg]:
        fast = self._table(0, False, 0.0)
        run = fast.run_pcapng
        replay = self.replay
        mode = self.mode

        def skip(buf: bytes, pos: int, frame: int, interfaces: List[Tuple[int, float]],
                 order: str) -> Tuple[int, int]:
            if replay._fast is not fast:
                return pos, frame
            pos, done, out, not_ip, not_tcp = run(buf, pos, frame, self._limit(frame), mode, self._known(),
                                                  interfaces, order == ">")
            self._hand_out(buf, out, not_ip, not_tcp, frame, done)
            return pos, done

        return skip


def replay_capture(path: str, profile: Union[KernelProfile, str], sysctls: Optional[Mapping[str, str]] = None,
                   settings: Optional[TcpSettings] = None) -> List[PacketVerdict]:
    """Every TCP packet's verdict (a list; use `Replay(...).packets()` to stream).

    `profile` is a KernelProfile or a kernel version ("5.10", "6.18", a uname release);
    `sysctls` maps conntrack TCP sysctls (any spelling) to values; unset ones are the kernel defaults.
    """
    if isinstance(profile, str):
        from sysctl_doctor.conntrack.profiles import profile_for

        profile = profile_for(profile)
    if settings is None:
        settings = settings_from_sysctls(sysctls or {})
    elif sysctls:
        settings = settings_from_sysctls(sysctls, settings)
    return list(Replay(path, profile, settings).packets())
