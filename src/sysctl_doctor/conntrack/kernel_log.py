"""Conntrack lines of the kernel log: sources, verdicts, flows, timeline.

Input is any text holding kernel messages — ``dmesg`` output, ``journalctl -k``
(short or ``-o json``), syslog files (rotated ``.gz`` too), raw ``/dev/kmsg``
records — or the seed write-up's wrapped paste. Every line is either a
conntrack nf_log record, a continuation of the record above it (a message
wrapped by a mail client or a terminal), or skipped and counted.

A record's verdict comes from the kernel's own wording, which changed in 6.1
(net/netfilter/nf_conntrack_proto_tcp.c, ``tcp_in_window`` and ``nf_tcp_log_invalid``):

===============================================  ==========  ===============
message (new wording, 6.1+)                      verdict     before 6.1
===============================================  ==========  ===============
SEQ is over upper bound N (over the window …)    INVALID     INVALID ("SEQ is over the upper bound")
ACK is over upper bound N (ACKed data not seen)  INVALID     INVALID ("ACK is over the upper bound")
SEQ is under lower bound N (already ACKed …)     IGNORE      INVALID ("SEQ is under the lower bound")
ignored ACK under lower bound N (possible …)     IGNORE      INVALID ("ACK is under the lower bound")
N bytes more than expected                       ACCEPT      —
invalid rst / invalid new / invalid state        INVALID     INVALID
truncated packet / bad checksum / invalid tcp
flag combination                                 INVALID     INVALID
packet … ignored / invalid packet ignored in
state S / challenge-ack ignored                  IGNORE      IGNORE
===============================================  ==========  ===============

INVALID: the packet leaves conntrack without an entry (no NAT reversal; a
``ct state invalid`` rule matches it). IGNORE: conntrack keeps the entry and
NAT still applies, only the TCP state is not advanced. The wording tells the
kernel generation, so the verdict is that of the kernel that wrote the line.

Nothing here prints; `read_kernel_log` returns a `KernelLogReport`.
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import IO, Dict, Iterator, List, Optional, Tuple

from sysctl_doctor.conntrack.nflog import NfLogRecord, parse_nflog_line
from sysctl_doctor.conntrack.tcp_flags import ALL as TCP_FLAGS
from sysctl_doctor.errors import DoctorError


class _Lazy:
    """A regular expression compiled when first used: `conntrack logs` start-up is benchmarked, and the
    compiled scanner needs none of these on a clean log. Once compiled, the module global named `name`
    is the pattern itself."""

    __slots__ = ("_name", "_make", "_compiled")

    def __init__(self, name: str, make) -> None:  # type: ignore[no-untyped-def]
        self._name, self._make, self._compiled = name, make, None

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = self._make()
            if self._name:
                globals()[self._name] = compiled
        return getattr(compiled, attr)


def _lazy(name: str, *args) -> "re.Pattern":  # type: ignore[no-untyped-def, type-arg]
    return _Lazy(name, lambda: re.compile(*args))  # type: ignore[return-value]


INVALID = "INVALID"
IGNORE = "IGNORE"
ACCEPT = "ACCEPT"
UNKNOWN = "UNKNOWN"

# The bytes every conntrack logger name starts with; lines without it are
# skipped before any parsing (the fast pre-filter).
LOGGER_TOKEN = b"nf_ct_"

_TCP_FLAG_WORDS = "|".join(flag.name for flag in reversed(TCP_FLAGS))  # type: ignore[misc]  # CWR|…|FIN

JSON_SCHEMA = "sysctl-doctor/conntrack-logs/2"  # /2: records only with --events (JSON Lines)


@dataclass(frozen=True)
class Reason:
    """What a conntrack log message means."""

    code: str  # stable id: "seq-over-upper-bound", "invalid-rst", …
    verdict: str  # INVALID | IGNORE | ACCEPT | UNKNOWN
    wording: str  # "6.1+", "<6.1" or "any": which kernels print this text
    explanation: str


_REASONS: List[Tuple["re.Pattern[str]", Reason]] = [
    (_lazy("", r"^SEQ is over upper bound"), Reason(
        "seq-over-upper-bound", INVALID, "6.1+",
        "segment starts beyond what the receiver's window allows; INVALID on every kernel")),
    (_lazy("", r"^SEQ is over the upper bound"), Reason(
        "seq-over-upper-bound", INVALID, "<6.1",
        "segment starts beyond what the receiver's window allows")),
    (_lazy("", r"^ACK is over upper bound"), Reason(
        "ack-over-upper-bound", INVALID, "6.1+", "acknowledges data conntrack has not seen yet")),
    (_lazy("", r"^ACK is over the upper bound"), Reason(
        "ack-over-upper-bound", INVALID, "<6.1", "acknowledges data conntrack has not seen yet")),
    (_lazy("", r"^SEQ is under lower bound"), Reason(
        "seq-under-lower-bound", IGNORE, "6.1+",
        "already-ACKed data retransmitted; since 6.1 ignored: the entry and NAT stay, no RST")),
    (_lazy("", r"^SEQ is under the lower bound"), Reason(
        "seq-under-lower-bound", INVALID, "<6.1",
        "already-ACKed data retransmitted; before 6.1 INVALID: not de-NATed, the NAT box may answer RST")),
    (_lazy("", r"^ignored ACK under lower bound"), Reason(
        "ack-under-lower-bound", IGNORE, "6.1+", "overly delayed ACK; since 6.1 ignored")),
    (_lazy("", r"^ACK is under the lower bound"), Reason(
        "ack-under-lower-bound", INVALID, "<6.1", "overly delayed ACK; INVALID before 6.1")),
    (_lazy("", r"^\d+ bytes more than expected"), Reason(
        "bytes-more-than-expected", ACCEPT, "6.1+", "segment overshoots the window a little; accepted")),
    (_lazy("", r"^invalid rst"), Reason(
        "invalid-rst", INVALID, "any", "RST whose sequence number is before the last ACK seen")),
    (_lazy("", r"^invalid new"), Reason(
        "invalid-new", INVALID, "any",
        "a packet that cannot open a connection (e.g. a RST or ACK) had no conntrack entry")),
    (_lazy("", r"^(invalid state|packet \(index \d+\) in dir \d+ invalid)"), Reason(
        "invalid-state", INVALID, "any", "flags impossible in the connection's state")),
    (_lazy("", r"^truncated packet"), Reason("truncated-packet", INVALID, "any", "header cut short")),
    (_lazy("", r"^bad checksum"), Reason("bad-checksum", INVALID, "any", "checksum wrong")),
    (_lazy("", r"^invalid tcp flag combination"), Reason(
        "invalid-tcp-flags", INVALID, "any", "flag combination no TCP sends")),
    (_lazy("", r"^(invalid packet ignored in state|packet \(index \d+\) in dir \d+ ignored)"), Reason(
        "ignored-in-state", IGNORE, "any", "packet out of the state machine's order; let through, state kept")),
    (_lazy("", r"^challenge-ack ignored"), Reason(
        "challenge-ack-ignored", IGNORE, "any", "RFC 5961 challenge ACK; let through")),
    (_lazy("", r"^ignored SYN"), Reason("ignored-syn", IGNORE, "6.1+", "SYN older than the previous one")),
    (_lazy("", r"^packet \(index \d+, dir \d+\) response for index"), Reason(
        "lower-timeout", ACCEPT, "any", "accepted; the entry's timeout is shortened")),
]

_UNKNOWN_REASON = Reason("other", UNKNOWN, "any", "message not in sysctl-doctor's table")


_CLASSIFIED: Dict[str, Reason] = {}
_NO_DIGITS = str.maketrans("", "", "0123456789")


def classify(message: str) -> Reason:
    """The meaning of a conntrack log message (the text between logger and IN=)."""
    key = message.translate(_NO_DIGITS)  # the wording without its numbers
    found = _CLASSIFIED.get(key)
    if found is None:
        found = _CLASSIFIED[key] = _classify(message)
        if len(_CLASSIFIED) > 4096:
            _CLASSIFIED.clear()
    return found


def _classify(message: str) -> Reason:
    for pattern, reason in _REASONS:
        if pattern.match(message):
            return reason
    return _UNKNOWN_REASON


@dataclass
class ConntrackLogLine:
    """One conntrack record of the log, with where it came from and what it means."""

    line: int  # 1-based line number of the record's first line
    time: Optional[str]  # the source's own time stamp text, if any
    timestamp: Optional[float]  # seconds: Unix time (journal, syslog, ISO) or since boot (dmesg, kmsg)
    clock: Optional[str]  # "realtime" | "boot" | None
    record: NfLogRecord
    reason: Reason
    continued: int = 0  # how many wrapped lines were joined into it

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        # Records of the fast path are built without `record`: it is parsed from the
        # line's bytes the first time it is asked for (most records are only counted).
        lazy = self.__dict__.pop("_lazy", None) if name == "record" else None
        if lazy is None:
            raise AttributeError(name)
        raw, at = lazy
        text = raw.decode("ascii")
        record = self.__dict__["record"] = _parse_fast(text, at) or parse_nflog_line(text)
        return record

    @cached_property
    def flow(self) -> str:
        """Direction-free flow key: ``tcp 10.0.0.1:80 <-> 10.0.0.2:4000``."""
        f = self.record.fields
        proto = (f.get("PROTO") or str(self.record.protocol or "?")).lower()
        a = _endpoint(f.get("SRC"), f.get("SPT"))
        b = _endpoint(f.get("DST"), f.get("DPT"))
        lo, hi = sorted((a, b))
        return f"{proto} {lo} <-> {hi}"

    def to_json(self) -> dict:
        lazy = self.__dict__.get("_lazy")
        if lazy is not None:  # a fast-path line not parsed yet: its JSON straight from one match
            m = _FAST_TCP4.match(lazy[0].decode("ascii"), lazy[1])
            if m is not None:
                logger, proto, message, src, dst, spt, dpt, seq, ack, window, length, in_, out, tcpflags = m.group(
                    "logger", "proto", "message", "SRC", "DST", "SPT", "DPT", "SEQ", "ACK", "WINDOW", "LEN", "IN",
                    "OUT", "tcpflags")
                reason = self.reason
                return {
                    "line": self.line, "time": self.time, "timestamp": self.timestamp, "clock": self.clock,
                    "logger": logger, "protocol": int(proto) if proto is not None else 6,
                    "message": message.strip(), "reason": reason.code, "verdict": reason.verdict,
                    "wording": reason.wording, "flow": self.flow, "src": src, "dst": dst,
                    "sport": int(spt), "dport": int(dpt), "seq": int(seq), "ack": int(ack), "window": int(window),
                    "len": int(length), "in": in_, "out": out, "tcp_flags": sorted(set(tcpflags.split())),
                    "continued_lines": self.continued,
                }
        rec = self.record
        return {
            "line": self.line,
            "time": self.time,
            "timestamp": self.timestamp,
            "clock": self.clock,
            "logger": rec.logger,
            "protocol": rec.protocol,
            "message": rec.message,
            "reason": self.reason.code,
            "verdict": self.reason.verdict,
            "wording": self.reason.wording,
            "flow": self.flow,
            "src": rec.fields.get("SRC"),
            "dst": rec.fields.get("DST"),
            "sport": rec.int_field("SPT"),
            "dport": rec.int_field("DPT"),
            "seq": rec.int_field("SEQ"),
            "ack": rec.int_field("ACK"),
            "window": rec.int_field("WINDOW"),
            "len": rec.int_field("LEN"),
            "in": rec.fields.get("IN"),
            "out": rec.fields.get("OUT"),
            "tcp_flags": sorted(rec.tcp_flags),
            "continued_lines": self.continued,
        }


def _endpoint(addr: Optional[str], port: Optional[str]) -> str:
    addr = addr or "?"
    if ":" in addr:
        addr = f"[{addr}]"
    return f"{addr}:{port}" if port else addr


@dataclass
class FlowSummary:
    flow: str
    records: int = 0
    verdicts: Dict[str, int] = field(default_factory=dict)
    reasons: Dict[str, int] = field(default_factory=dict)
    first_line: int = 0
    last_line: int = 0
    first_time: Optional[str] = None
    last_time: Optional[str] = None

    def to_json(self) -> dict:
        return {
            "flow": self.flow,
            "records": self.records,
            "verdicts": dict(sorted(self.verdicts.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "first_line": self.first_line,
            "last_line": self.last_line,
            "first_time": self.first_time,
            "last_time": self.last_time,
        }


MAX_FLOWS = 100_000  # flows summarised one by one (~1 KiB each); records of later new flows are only counted


class FlowTable:
    """Per-flow summaries, verdict counts and reasons, fed one record at a time (O(flows) memory)."""

    def __init__(self) -> None:
        self.by_flow: Dict[str, FlowSummary] = {}
        self.verdicts: Dict[str, int] = {INVALID: 0, IGNORE: 0, ACCEPT: 0, UNKNOWN: 0}
        self.reasons: Dict[Tuple[str, str], Reason] = {}
        self.untracked = 0  # records of flows beyond MAX_FLOWS: counted, not summarised per flow
        self._last_stamps: Dict[str, Tuple[bool, bytes]] = {}  # last_time still to work out: (journal, stamp)
        self._names: Dict[Tuple[bytes, bytes], str] = {}  # add_block's flow names of directed flows

    def add(self, rec: "ConntrackLogLine") -> None:
        summary = self.by_flow.get(rec.flow)
        verdict, code = rec.reason.verdict, rec.reason.code
        if summary is None:
            if len(self.by_flow) >= MAX_FLOWS:  # memory stays bounded whatever the log holds
                self.untracked += 1
                self.verdicts[verdict] += 1
                self.reasons[(code, rec.reason.wording)] = rec.reason
                return
            summary = self.by_flow[rec.flow] = FlowSummary(rec.flow, first_line=rec.line, first_time=rec.time)
        summary.records += 1
        summary.verdicts[verdict] = summary.verdicts.get(verdict, 0) + 1
        summary.reasons[code] = summary.reasons.get(code, 0) + 1
        summary.last_line = rec.line
        summary.last_time = rec.time
        if self._last_stamps:
            self._last_stamps.pop(rec.flow, None)
        self.verdicts[verdict] += 1
        self.reasons[(code, rec.reason.wording)] = rec.reason

    def add_block(self, block: "BlockSummary", first_line: int) -> None:
        """Add a block the summary path read (its first line is number `first_line`): the same
        result as `add` on each of its records in turn."""
        names = self._names  # directed flow -> flow name, kept across blocks (bounded)
        if len(names) > 2 * MAX_FLOWS:
            names.clear()
        meanings: Dict[bytes, Reason] = {}
        by_flow, verdicts, reasons = self.by_flow, self.verdicts, self.reasons
        for (wording, sd, ports), n in block.counts.items():
            directed = (sd, ports)
            reason = meanings.get(wording)
            if reason is None:
                reason = meanings[wording] = _summary_reason(wording, block.samples[wording])
            verdict, code = reason.verdict, reason.code
            name = names.get(directed)
            if name is None:
                name = names[directed] = _summary_flow(sd, ports)
            summary = by_flow.get(name)
            if summary is None:
                if len(by_flow) >= MAX_FLOWS:  # as `add`: records of flows past the cap are only counted
                    self.untracked += n
                    verdicts[verdict] += n
                    reasons[(code, reason.wording)] = reason
                    continue
                at, stamp = block.first[directed]
                summary = by_flow[name] = FlowSummary(name, first_line=at + first_line,
                                                      first_time=block.time_text(stamp))
            summary.records += n
            summary.verdicts[verdict] = summary.verdicts.get(verdict, 0) + n
            summary.reasons[code] = summary.reasons.get(code, 0) + n
            at, stamp = block.last[directed]
            if at + first_line > summary.last_line:
                summary.last_line = at + first_line
                self._last_stamps[name] = (block.journal, stamp)  # its text is worked out once, at the end
            verdicts[verdict] += n
            reasons[(code, reason.wording)] = reason

    def summaries(self) -> List[FlowSummary]:
        for name, (journal, stamp) in self._last_stamps.items():
            self.by_flow[name].last_time = _stamp_text(journal, stamp)
        self._last_stamps.clear()
        return list(self.by_flow.values())

    def reasons_json(self) -> dict:
        return {
            f"{r.code}/{r.wording}": {"reason": r.code, "verdict": r.verdict, "wording": r.wording,
                                      "explanation": r.explanation}
            for r in self.reasons.values()
        }


@dataclass
class SkippedLines:
    other: int = 0  # not a conntrack line (other kernel messages, prose, garbage)
    partial: int = 0  # a conntrack logger with no packet fields and no continuation
    filtered: int = 0  # conntrack lines outside --since
    too_long: int = 0  # lines over MAX_LINE bytes: cut, not read
    bad_time: int = 0  # journal records whose time stamp is not a time (absurd __REALTIME_TIMESTAMP)

    @property
    def total(self) -> int:
        return self.other + self.partial + self.filtered + self.too_long + self.bad_time


@dataclass
class KernelLogReport:
    source: str
    lines_total: int = 0
    records: List[ConntrackLogLine] = field(default_factory=list)
    conntrack_lines: int = 0  # lines with a conntrack logger: records + partial + filtered
    continuation_lines: int = 0
    skipped: SkippedLines = field(default_factory=SkippedLines)
    first_too_long: Optional[int] = None  # line number of the first line cut for its length

    def flows(self) -> List[FlowSummary]:
        table = FlowTable()
        for rec in self.records:
            table.add(rec)
        return table.summaries()


    def lines_json(self) -> dict:
        return {
            "total": self.lines_total,
            "conntrack": self.conntrack_lines - self.skipped.partial - self.skipped.filtered
            - self.skipped.bad_time,
            "continuation": self.continuation_lines,
            "skipped": {
                "other": self.skipped.other,
                "partial": self.skipped.partial,
                "filtered": self.skipped.filtered,
                "too_long": self.skipped.too_long,
                "bad_time": self.skipped.bad_time,
                "total": self.skipped.total,
            },
        }

    def to_json(self) -> dict:
        table = FlowTable()
        for rec in self.records:
            table.add(rec)
        return {
            "schema": JSON_SCHEMA,
            "source": self.source,
            "lines": self.lines_json(),
            "counts": table.verdicts,
            "reasons": table.reasons_json(),
            "records": [r.to_json() for r in self.records],
            "flows": [f.to_json() for f in table.summaries()],
            "flows_untracked_records": table.untracked,
        }


# --- time stamps of the different sources ------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DMESG_TS = _lazy("_DMESG_TS", r"\[\s*(\d+\.\d+)\]")
_KMSG = _lazy("_KMSG", r"^\d+,\d+,(\d+),[^;]*;")
_SYSLOG_TS = _lazy("_SYSLOG_TS", r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)")
_ISO_TS = _lazy("_ISO_TS", r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)")


def _line_time(prefix: str, year: int) -> Tuple[Optional[str], Optional[float], Optional[str]]:
    """Time stamp text, seconds and clock from the text before the logger name."""
    if prefix.startswith("[") and prefix.endswith("]"):  # dmesg, the common case
        text = prefix[1:-1].strip()
        try:
            return text, float(text), "boot"
        except ValueError:
            pass
    m = _ISO_TS.match(prefix)
    if m:
        text = m.group(1)
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=timezone.utc)
            return text, stamp.timestamp(), "realtime"
        except ValueError:
            return text, None, None
    m = _SYSLOG_TS.match(prefix)
    if m and m.group(1) in _MONTHS:
        text = m.group(0)
        try:
            stamp = datetime(year, _MONTHS[m.group(1)], int(m.group(2)), int(m.group(3)),
                             int(m.group(4)), int(m.group(5))).astimezone()
            return text, stamp.timestamp(), "realtime"
        except ValueError:
            return text, None, None
    m = _KMSG.match(prefix)
    if m:
        usec = int(m.group(1))
        return f"{usec / 1e6:.6f}", usec / 1e6, "boot"
    m = _DMESG_TS.search(prefix)
    if m:
        return m.group(1), float(m.group(1)), "boot"
    return None, None, None


def _line_time_text(prefix: str) -> Optional[str]:
    """`_line_time(prefix, year)[0]` without working out the seconds."""
    if prefix.startswith("[") and prefix.endswith("]"):
        text = prefix[1:-1].strip()
        try:
            float(text)
            return text
        except ValueError:
            pass
    m = _ISO_TS.match(prefix)
    if m:
        return m.group(1)
    m = _SYSLOG_TS.match(prefix)
    if m and m.group(1) in _MONTHS:
        return m.group(0)
    m = _KMSG.match(prefix)
    if m:
        return f"{int(m.group(1)) / 1e6:.6f}"
    m = _DMESG_TS.search(prefix)
    return m.group(1) if m else None


# --- continuation of wrapped records -----------------------------------------

_CONTINUATION_START = _lazy(
    "_CONTINUATION_START",
    r"^(?:[A-Z][A-Z0-9]*=\S*|CE|DF|MF|" + _TCP_FLAG_WORDS + r"|OPT \()(?:\s|$)"
)


def _is_continuation(text: str) -> bool:
    if LOGGER_TOKEN.decode() in text:
        return False
    return _CONTINUATION_START.match(text.lstrip()) is not None


def _needs_more(record_text: str) -> bool:
    """Whether a record's text stops short of its packet fields (it was wrapped).

    Complete means: it has IN= and PROTO=, and a TCP record reaches URGP=.
    """
    if "IN=" not in record_text or "PROTO=" not in record_text:
        return True
    return "PROTO=TCP" in record_text and "URGP=" not in record_text


# --- journal JSON --------------------------------------------------------------

def _journal_json_line(text: str) -> Optional[Tuple[str, Optional[str], Optional[float]]]:
    """(message, time text, unix seconds) of one `journalctl -o json` line."""
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # non-UTF-8 messages are arrays of bytes
        try:
            message = bytes(message).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    stamp = entry.get("__REALTIME_TIMESTAMP")
    if stamp is None:
        return message, None, None
    try:
        seconds = int(stamp) / 1e6
    except (TypeError, ValueError, OverflowError):  # not a number: the record is kept without a time
        return message, None, None
    try:
        when = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")
    except (ValueError, OverflowError, OSError):  # a number no date reaches (year > 9999)
        return message, None, BAD_TIME
    return message, when, seconds


# The seconds `_journal_json_line` gives a record whose __REALTIME_TIMESTAMP is out of any
# date's range: such a record is skipped and counted (skipped.bad_time), the run goes on.
BAD_TIME = float("nan")


# journald writes a MESSAGE that is not valid UTF-8 as an array of byte values; the
# logger token is then not in the line's bytes and the pre-filter would pass over it.
_BYTE_ARRAY_MESSAGE = _lazy("_BYTE_ARRAY_MESSAGE", rb'"MESSAGE"\s*:\s*\[')


def _journal_byte_messages_as_text(data: bytes) -> bytes:
    """`data` with each journal JSON line whose MESSAGE is an array of bytes rewritten with MESSAGE as text
    (invalid UTF-8 replaced by U+FFFD), one line for one line, so the reader below sees every record."""
    search = _BYTE_ARRAY_MESSAGE.search
    m = search(data)
    if m is None:
        return data
    out = []
    done = 0
    while m is not None:
        start = data.rfind(b"\n", 0, m.start()) + 1
        end = data.find(b"\n", m.end())
        if end < 0:
            end = len(data)
        line = data[start:end]
        try:
            entry = json.loads(line)
            message = entry.get("MESSAGE") if isinstance(entry, dict) else None
            if isinstance(message, list):
                entry["MESSAGE"] = bytes(message).decode("utf-8", "replace")
                out += [data[done:start], json.dumps(entry).encode("ascii")]
                done = end
        except (ValueError, TypeError):  # not JSON, or not a list of 0..255: left as it was
            pass
        m = search(data, end)
    out.append(data[done:])
    return b"".join(out)


# --- fast path: the usual IPv4/TCP line in one regex ---------------------------

# nf_log_syslog prints IPv4/TCP fields in a fixed order; one match replaces the
# token-by-token parse for them (a line it does not fit goes to parse_nflog_line,
# and both give equal records — tests hold them to it).
# The message stops at the first whitespace + "IN=", where parse_nflog_line stops it.
_FAST_TCP4 = _lazy(
    "_FAST_TCP4",
    r"(?P<logger>nf_ct_(?:proto_(?P<proto>\d+)|tcp)):\s*(?P<message>(?!IN=)\S*(?:\s(?!IN=)\S*)*) IN=(?P<IN>\S*) OUT=(?P<OUT>\S*) "
    r"(?:MAC=(?P<MAC>\S*) )?SRC=(?P<SRC>\S+) DST=(?P<DST>\S+) LEN=(?P<LEN>\d+) TOS=(?P<TOS>\S+) "
    r"PREC=(?P<PREC>\S+) TTL=(?P<TTL>\d+) ID=(?P<ID>\d+) (?P<ipflags>(?:(?:CE|DF|MF) )*)"
    r"PROTO=(?P<PROTO>TCP) SPT=(?P<SPT>\d+) DPT=(?P<DPT>\d+) SEQ=(?P<SEQ>\d+) ACK=(?P<ACK>\d+) "
    r"WINDOW=(?P<WINDOW>\d+) RES=(?P<RES>\S+) (?P<tcpflags>(?:(?:" + _TCP_FLAG_WORDS + r") )*)"
    r"URGP=(?P<URGP>\d+)(?: OPT \((?P<opt>[0-9A-Fa-f]*)\))?[ \r]*$"
)


def _parse_fast(text: str, at: int = 0) -> Optional[NfLogRecord]:
    """`parse_nflog_line` for the usual IPv4/TCP line; `at` is where the logger name starts."""
    m = _FAST_TCP4.match(text, at) if at else _FAST_TCP4.search(text)
    if m is None:
        return None
    fields = m.groupdict()
    pop = fields.pop
    logger, proto, message = pop("logger"), pop("proto"), pop("message")
    flags = (pop("ipflags") + pop("tcpflags")).split()
    options = pop("opt")
    if fields["MAC"] is None:
        del fields["MAC"]
    # Same object parse_nflog_line builds, without the frozen dataclass's per-field
    # object.__setattr__ calls (a third of the cost here); tests compare both.
    record = _new_record(NfLogRecord)
    record.__dict__.update(
        logger=logger, protocol=int(proto) if proto is not None else 6, message=message.strip(), fields=fields,
        flags=frozenset(flags), options=options, prefix=text[: m.start()].strip(),
    )
    return record


_new_record = object.__new__


def _grouping_pattern(pattern: str) -> "re.Pattern[bytes]":
    """`_FAST_TCP4` for ASCII bytes, capturing only what grouping needs.

    Same structure, so it matches exactly the lines `_FAST_TCP4` matches (on ASCII
    text, where str ``\\s`` also means ``\\x1c``-``\\x1f``); groups: message, SRC,
    DST, SPT, DPT.
    """
    keep = ("message", "SRC", "DST", "SPT", "DPT")
    out = re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) in keep else "(?:", pattern)
    out = re.sub(r"\\[sS]", lambda m: r"[\s\x1c-\x1f]" if m.group(0) == r"\s" else r"[^\s\x1c-\x1f]", out)
    compiled = re.compile(out.encode("ascii"))
    assert tuple(compiled.groupindex) == keep, compiled.groupindex
    return compiled


_GROUP_TCP4 = _Lazy("_GROUP_TCP4", lambda: _grouping_pattern(_FAST_TCP4.pattern))
# Digits to "0": the message's wording, with where its numbers are, as a cache key.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_REASON_BY_WORDING: Dict[bytes, Reason] = {}
_FLOW_NAMES: Dict[Tuple[bytes, ...], str] = {}


def _flow_name(src: bytes, dst: bytes, spt: bytes, dpt: bytes) -> str:
    """`ConntrackLogLine.flow` of a line the fast path matched (PROTO=TCP, all four fields)."""
    a = src + b":" + spt if b":" not in src else b"[" + src + b"]:" + spt  # as _endpoint writes them
    b = dst + b":" + dpt if b":" not in dst else b"[" + dst + b"]:" + dpt
    return (b"tcp " + a + b" <-> " + b if a <= b else b"tcp " + b + b" <-> " + a).decode("ascii")


# --- the reader ----------------------------------------------------------------

def parse_kernel_log(data: bytes, source: str = "-", since: Optional[float] = None,
                     year: Optional[int] = None, boot_time: Optional[float] = None) -> KernelLogReport:
    """All conntrack records of a kernel log given as bytes.

    ``since``: Unix seconds; records stamped earlier are counted as filtered.
    Realtime stamps (journal, syslog, ISO) are compared directly; boot-clock
    stamps (dmesg, kmsg) only when ``boot_time`` (Unix seconds of this boot)
    is given — i.e. for the live ring buffer, not for a saved dmesg file.
    Records without a usable stamp are kept.
    ``year``: year for syslog's year-less stamps (default: this year).
    """
    if year is None:
        year = datetime.now().year
    report = KernelLogReport(source=source)
    if not data:
        return report
    # The records hold no reference cycles; the cyclic collector would only
    # rescan them again and again as they pile up (2x the time at 100k records).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        report.records.extend(iter_kernel_log(data, report, since, year, boot_time))
    finally:
        if gc_was_enabled:
            gc.enable()
    return report


def iter_kernel_log(data: bytes, report: KernelLogReport, since: Optional[float] = None,
                    year: Optional[int] = None, boot_time: Optional[float] = None) -> Iterator[ConntrackLogLine]:
    """The conntrack records of `data`, one at a time, without keeping them.

    `report` receives the line counts (complete once the iterator is
    exhausted); its `records` list is left alone. For logs too large to hold.
    """
    return iter_kernel_log_stream(io.BytesIO(data), report, since, year, boot_time)


def iter_kernel_log_stream(stream: IO[bytes], report: KernelLogReport, since: Optional[float] = None,
                           year: Optional[int] = None,
                           boot_time: Optional[float] = None) -> Iterator[ConntrackLogLine]:
    """`iter_kernel_log` over a binary stream read in blocks: memory stays bounded whatever the
    input (a line over MAX_LINE bytes is cut, counted in `report.skipped.too_long`, not kept)."""
    if year is None:
        year = datetime.now().year
    for first_line, block in line_blocks(stream, report):
        yield from _iter_block(block, report, first_line, since, year, boot_time)
    report.skipped.other = (report.lines_total - report.conntrack_lines - report.continuation_lines
                            - report.skipped.too_long)


MAX_LINE = 64 * 1024  # kernel log lines are under 1 KiB; longer ones are cut, not read
BLOCK = 1 << 20  # bytes read at a time
HOLD_BACK = 8192  # a record this near a block's end starts the next block (its wrapped lines may follow)


def line_blocks(stream: IO[bytes], report: KernelLogReport, block: Optional[int] = None,
                max_line: Optional[int] = None) -> Iterator[Tuple[int, bytes]]:
    """(number of the first line, bytes of whole lines) from `stream`, about `block` bytes at a
    time. A line longer than `max_line` bytes becomes an empty line (so line numbers stay
    right), is counted in ``report.skipped.too_long`` and is dropped as it is read, never held:
    memory stays under a few blocks whatever the input."""
    block = block or BLOCK
    max_line = max_line or MAX_LINE
    buf = b""
    line = 1  # number of buf's first line
    skipping = False  # inside a cut line: drop bytes up to and including its newline
    while True:
        chunk = stream.read(block)
        eof = not chunk
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0 and not eof:
                continue
            chunk = chunk[nl + 1:] if nl >= 0 else b""
            skipping = False
        buf, skipping = _cut_long_lines(buf + chunk, line, report, max_line, eof)
        if eof:
            if buf:
                yield line, buf
            return
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            continue
        # A record near the end may have wrapped continuation lines in the next read: keep it.
        tok = buf.rfind(LOGGER_TOKEN, max(0, cut - HOLD_BACK), cut)
        if tok >= 0:
            cut = buf.rfind(b"\n", 0, tok) + 1
            if cut == 0:  # buf is that record and what follows it (under 8 KiB + a line): read on
                continue
        piece, buf = buf[:cut], buf[cut:]
        yield line, piece
        line += piece.count(b"\n")


def _cut_long_lines(buf: bytes, line: int, report: KernelLogReport, max_line: int,
                    eof: bool) -> Tuple[bytes, bool]:
    """`buf` with each line over `max_line` bytes replaced by an empty line, and whether the last
    one is still open (its newline not read yet: the caller drops bytes up to it)."""
    out: List[bytes] = []
    pos = kept = 0
    size = len(buf)
    while size - pos > max_line:
        nl = buf.rfind(b"\n", pos, pos + max_line + 1)  # jump to the last line start in reach
        if nl >= 0:
            pos = nl + 1
            continue
        report.skipped.too_long += 1  # the line at `pos` is too long
        if report.first_too_long is None:
            report.first_too_long = line + buf.count(b"\n", 0, pos)
        out += [buf[kept:pos], b"\n"]
        nl = buf.find(b"\n", pos + max_line + 1)
        if nl < 0:
            return b"".join(out), not eof
        pos = kept = nl + 1
    out.append(buf[kept:])
    return b"".join(out), False


def _iter_block(data: bytes, report: KernelLogReport, first_line: int, since: Optional[float], year: int,
                boot_time: Optional[float]) -> Iterator[ConntrackLogLine]:
    """The records of one block of whole lines whose first line is number `first_line`."""
    if not data:
        return
    data = _journal_byte_messages_as_text(data)
    conntrack_lines = 0
    consumed_to = -1  # last line index consumed as a continuation
    # Walk from one logger token to the next with bytes.find (C speed); line
    # numbers are counted only between hits, so the file is scanned once.
    find, rfind, count = data.find, data.rfind, data.count
    group_match, digits_to_zero, line_time, new_line = _GROUP_TCP4.match, _DIGITS_TO_ZERO, _line_time, object.__new__
    reasons, flow_names = _REASON_BY_WORDING, _FLOW_NAMES
    pos = line_no = counted_to = 0
    while True:
        hit = find(LOGGER_TOKEN, pos)
        if hit < 0:
            break
        start = rfind(b"\n", 0, hit) + 1
        end = find(b"\n", hit)
        if end < 0:
            end = len(data)
        line_no += count(b"\n", counted_to, start)
        counted_to = start
        pos = end + 1
        if line_no <= consumed_to:
            continue
        raw = data[start:end]
        if raw.isascii() and raw[0] != 123:  # ASCII, and not journal JSON ("{")
            at = hit - start  # where the logger name starts
            m = group_match(raw, at)
            if m is not None:
                # The usual IPv4/TCP line: flow, reason and time from one match; the
                # full record is parsed only if someone asks for it.
                conntrack_lines += 1
                ends = m.group(2, 3, 4, 5)  # SRC, DST, SPT, DPT
                flow = flow_names.get(ends)
                if flow is None:
                    if len(flow_names) > 65536:
                        flow_names.clear()
                    flow = flow_names[ends] = _flow_name(*ends)
                msg = m.group(1)
                wording = msg.translate(digits_to_zero)
                reason = reasons.get(wording)
                if reason is None:
                    if len(reasons) > 4096:  # odd logs with endless wordings: keep memory bounded
                        reasons.clear()
                    reason = reasons[wording] = classify(msg.decode("ascii").strip())
                prefix = raw[:at].strip()
                if prefix[:1] == b"[" and prefix[-1:] == b"]":  # dmesg: _line_time's first case, inline
                    when_text = prefix[1:-1].decode("ascii").strip()
                    try:
                        seconds, clock = float(when_text), "boot"
                    except ValueError:
                        when_text, seconds, clock = line_time(raw[:at].decode("ascii").strip(), year)
                else:
                    when_text, seconds, clock = line_time(raw[:at].decode("ascii").strip(), year)
                if since is not None and seconds is not None and (
                        (clock == "realtime" and seconds < since)
                        or (clock == "boot" and boot_time is not None and boot_time + seconds < since)):
                    report.skipped.filtered += 1
                    continue
                rec = new_line(ConntrackLogLine)
                rec.__dict__ = {"line": line_no + first_line, "time": when_text, "timestamp": seconds, "clock": clock,
                                "reason": reason, "continued": 0, "flow": flow, "_lazy": (raw, at)}
                yield rec
                continue
        text = raw.decode("utf-8", "replace").rstrip("\r")
        when_text: Optional[str] = None
        seconds: Optional[float] = None
        clock: Optional[str] = None
        at = hit - start if raw.isascii() else 0  # where the logger name starts in `text`
        if text.startswith("{"):
            entry = _journal_json_line(text)
            if entry is None:
                continue
            text, when_text, seconds = entry
            if seconds is BAD_TIME:
                if parse_nflog_line(text) is not None:  # a conntrack record: skipped, counted
                    conntrack_lines += 1
                    report.skipped.bad_time += 1
                continue
            clock = "realtime" if seconds is not None else None
            at = 0
        record = _parse_fast(text, at)
        fast = record is not None
        if record is None:
            record = parse_nflog_line(text)
            if record is None:
                continue
        conntrack_lines += 1
        joined = 0
        if not fast and _needs_more(text):
            # A wrapped record: pull in the continuation lines below it.
            pieces = [text]
            nxt = end + 1
            idx = line_no
            while nxt < len(data) and _needs_more(" ".join(pieces)):
                nend = data.find(b"\n", nxt)
                if nend < 0:
                    nend = len(data)
                ntext = data[nxt:nend].decode("utf-8", "replace").rstrip("\r")
                if not _is_continuation(ntext):
                    break
                pieces.append(ntext.strip())
                joined += 1
                idx += 1
                nxt = nend + 1
            if joined:
                consumed_to = idx
                record = parse_nflog_line(" ".join(pieces)) or record
        report.continuation_lines += joined
        if not record.fields.get("SRC"):
            report.skipped.partial += 1
            continue
        if when_text is None:
            when_text, seconds, clock = _line_time(record.prefix, year)
        if since is not None and seconds is not None and (
                (clock == "realtime" and seconds < since)
                or (clock == "boot" and boot_time is not None and boot_time + seconds < since)):
            report.skipped.filtered += 1
            continue
        yield ConntrackLogLine(
            line=line_no + first_line, time=when_text, timestamp=seconds, clock=clock,
            record=record, reason=classify(record.message), continued=joined,
        )
    report.lines_total += line_no + count(b"\n", counted_to) + (0 if data.endswith(b"\n") else 1)
    report.conntrack_lines += conntrack_lines


class LogInput:
    """A log to read in blocks: a file (``.gz`` decompressed as it is read) or a stream. Read errors
    (a corrupt or truncated ``.gz``, an I/O error) become a `DoctorError` that names the source."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self.name = name
        self._file = raw
        self._raw: IO[bytes] = _Prefixed(self._guard(lambda: raw.read(2)), raw)  # type: ignore[assignment]
        if self._raw.peek() == b"\x1f\x8b":  # type: ignore[attr-defined]
            self._raw = gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[assignment]

    def read(self, size: int = -1) -> bytes:
        return self._guard(lambda: self._raw.read(size))

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        """Read into `buffer` (a writable memoryview); 0 at the end."""
        return self._guard(lambda: self._raw.readinto(buffer)) or 0

    def regular_size(self) -> Optional[int]:
        """The size of the input when it is a regular uncompressed file read from its start, nothing of it read
        yet but the peeked head (then `read_at` may read any part of it); else None (read it with readinto)."""
        import os
        import stat

        if not isinstance(self._raw, _Prefixed):
            return None
        try:
            info = os.fstat(self._file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0 or self._file.tell() != len(self._raw.peek()):
                return None
            return info.st_size
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None

    def read_at(self, buffer, offset: int) -> int:  # type: ignore[no-untyped-def]
        """pread into `buffer` (a writable memoryview) from `offset` of a regular file: 0 past its end (a file
        truncated meanwhile reads short; nothing is mapped, so nothing faults)."""
        import os

        return self._guard(lambda: os.preadv(self._file.fileno(), [buffer], offset))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "LogInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, read):  # type: ignore[no-untyped-def]
        try:
            return read()
        except (OSError, EOFError, zlib.error) as exc:  # click would turn a bare EOFError into "interrupted"
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
                detail = f"not a valid gzip stream ({detail})"
            raise DoctorError(f"{self.name}: cannot read: {detail}") from exc


class _Prefixed:
    """`raw` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head, self._raw, self.mode = head, raw, "rb"

    def peek(self) -> bytes:
        return self._head

    def read(self, size: int = -1) -> bytes:
        head, self._head = self._head, b""
        if size is None or size < 0:
            return head + self._raw.read()
        if len(head) >= size:
            self._head = head[size:]
            return head[:size]
        return head + self._raw.read(size - len(head))

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        head = self._head
        if not head:
            return self._raw.readinto(buffer) or 0
        n = min(len(head), len(buffer))
        buffer[:n] = head[:n]
        self._head = head[n:]
        return n


def open_log_file(path: str) -> LogInput:
    """A log file to read in blocks (see `LogInput`)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return LogInput(raw, path)


def read_log_file(path: str) -> bytes:
    """The bytes of a log file; ``.gz`` files (rotated syslog) are decompressed (whole: for small files)."""
    with open_log_file(path) as log:
        return log.read()


def read_kmsg_records(fd_path: str = "/dev/kmsg", start_at_end: bool = False,
                      handle: Optional[int] = None) -> bytes:
    """What /dev/kmsg holds now (or since `handle` was opened), one record per line.

    kmsg records are ``prio,seq,usec,flags;message`` followed by
    `` KEY=value`` lines; only the first line is kept.
    """
    import os

    own = handle is None
    fd = os.open(fd_path, os.O_RDONLY | os.O_NONBLOCK) if own else handle
    out: List[bytes] = []
    try:
        if own and start_at_end:
            os.lseek(fd, 0, os.SEEK_END)
        while True:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten while reading: go on
                continue
            if not chunk:
                break
            out.append(chunk.split(b"\n", 1)[0])
    finally:
        if own:
            os.close(fd)
    return b"\n".join(out) + (b"\n" if out else b"")


# --- summary path: whole blocks at once, for counts and flows --------------------
#
# A report of flows and reasons needs, per conntrack line, only its flow, its
# reason, its line number and (for a flow's first and last line) its time. The
# summary path gets them for a whole block of lines with one `findall` and
# aggregates with C-level counting, no Python per line. It takes a block only
# when every logger token of the block sits on a line it reads fully (ASCII, one
# token per line, the kernel's IPv4 or IPv6 TCP layout, reaching URGP=; or a plain
# journal JSON record holding such a line); any other block — wrapped records, UDP,
# odd spacing, escapes, non-ASCII, --since — goes through `_iter_block`, the
# reference reader. On the lines it takes, it reads what the reference reads (tests
# hold the two to it, block by block: tests/conntrack_live/test_kernel_log_summary.py).
#
# One match per line: conntrack lines fill the groups, every other line matches
# the empty alternative (so a match's index in the block is its line's index).
# Groups: prefix (time stamp text), message (up to the first " IN="),
# "SRC DST=DST", "SPT DPT=DPT". Blocks holding control characters are left to the
# reference reader, so \S here is what str.split() keeps in one token.
_SUMMARY_BODY = (
    rb"nf_ct_(?:proto_\d+|tcp): ([^I\n]*(?:I(?!N=)[^I\n]*)*)(?<= )"
    rb"IN=\S* OUT=\S* (?:MAC=\S* )?SRC=(\S+ DST=\S+) "
    rb"(?:LEN=\d+ TOS=\S+ PREC=\S+ TTL=\d+ ID=\d+ (?:(?:CE|DF|MF) )*|LEN=\d+ TC=\d+ HOPLIMIT=\d+ FLOWLBL=\d+ )"
    # SEQ= next (so no " OPT (…)" that parse_nflog_line cuts out can glue a token to DPT's value), then
    # URGP= anywhere after: the record is complete (no continuation lines to join)
    rb"PROTO=TCP SPT=(\d+ DPT=\d+) SEQ=[^\n]*URGP=[^\n]*"
)
# The logger must not follow a word character (parse_nflog_line's \b): checked per line (a lookbehind
# at every step of the prefix), or once per block on the prefixes the faster scan found.
_SUMMARY_LINE = _lazy("_SUMMARY_LINE", rb"^(?:(?!\{)([^\n]*?)(?<![A-Za-z0-9_])" + _SUMMARY_BODY + rb"|[^\n]*)$", re.M)
_SUMMARY_LINE_SPACED = _lazy("_SUMMARY_LINE_SPACED", rb"^(?:(?!\{)([^\n]*?)" + _SUMMARY_BODY + rb"|[^\n]*)$", re.M)
# Journal JSON (`journalctl -o json`): a line is read when it is a flat object of string values without
# escapes (so json.loads reads exactly these bytes), __REALTIME_TIMESTAMP (digits) comes before MESSAGE,
# neither key repeats, and MESSAGE is the logger's line; its groups are those of _SUMMARY_LINE with the
# time stamp's digits first. The body is _SUMMARY_BODY kept inside the string (no '"' crossed).
_JSON_KEY = rb'"(?!MESSAGE"|__REALTIME_TIMESTAMP")[^"\\\x00-\x1f]*" ?: ?"[^"\\\x00-\x1f]*"'
# (no backslash either: an escape such as \t means something else once json.loads has decoded it; and no
# control character: json.loads refuses a raw tab or form feed inside a string, so the reference skips the line)
_SUMMARY_JSON_BODY = (_SUMMARY_BODY.replace(rb"[^I\n]", rb'[^I"\\\x00-\x1f]').replace(rb"\S", rb'[^\s"\\]')
                      .replace(rb"[^\n]", rb'[^"\\\x00-\x1f]'))
_SUMMARY_JSON = _lazy("_SUMMARY_JSON", 
    rb'^(?:\{ ?(?:' + _JSON_KEY + rb', ?)*"__REALTIME_TIMESTAMP" ?: ?"(\d{1,16})"(?:, ?' + _JSON_KEY
    + rb')*, ?"MESSAGE" ?: ?"' + _SUMMARY_JSON_BODY + rb'"(?:, ?' + _JSON_KEY + rb')* ?\}\r?|[^\n]*)$',
    re.M,
)


def _journal_time_text(digits: bytes) -> str:
    """`_journal_json_line`'s time text for a __REALTIME_TIMESTAMP of at most 16 digits (a real date).

    Below 2**33 seconds (the year 2242) the float it divides into is within half a microsecond of the
    stamp, so its microseconds are the stamp's: the text is the second's (worked out once) and them."""
    n = int(digits)
    if n >= _EXACT_MICROSECONDS:
        return datetime.fromtimestamp(n / 1e6, timezone.utc).isoformat(timespec="microseconds")
    second, micro = divmod(n, 1_000_000)
    text = _SECOND_TEXTS.get(second)
    if text is None:
        if len(_SECOND_TEXTS) > 4096:
            _SECOND_TEXTS.clear()
        text = _SECOND_TEXTS[second] = datetime.fromtimestamp(second, timezone.utc).isoformat()[:-6]  # (no +00:00)
    return f"{text}.{micro:06d}+00:00"


_EXACT_MICROSECONDS = (1 << 33) * 1_000_000
_SECOND_TEXTS: Dict[int, str] = {}


SUMMARY_BLOCK = 8 << 20  # bytes per block on the summary path (fewer, larger blocks: less per-block work)
_NOT_CONNTRACK = (b"", b"", b"")
# Bytes a block may hold for the summary path: printable ASCII and the whitespace str.split() and
# bytes \s agree on (\x1c-\x1f split str but not bytes; other controls are no whitespace to either).
_SUMMARY_BYTES = bytes(range(0x20, 0x7f)) + b"\t\n\r\x0b\x0c"


def _summary_reason(wording: bytes, message: bytes) -> Reason:
    """The reason of the messages whose digit-free text is `wording`, `message` one of them
    (`classify` tells messages apart by their digit-free text)."""
    reason = _REASON_BY_WORDING_BYTES.get(wording)
    if reason is None:
        if len(_REASON_BY_WORDING_BYTES) > 4096:
            _REASON_BY_WORDING_BYTES.clear()
        reason = _REASON_BY_WORDING_BYTES[wording] = classify(message.decode("ascii"))
    return reason


_REASON_BY_WORDING_BYTES: Dict[bytes, Reason] = {}


def _summary_flow(sd: bytes, ports: bytes) -> str:
    """The direction-free flow name from the "SRC DST=DST" and "SPT DPT=DPT" groups."""
    src, _, dst = sd.partition(b" DST=")
    spt, _, dpt = ports.partition(b" DPT=")
    return _flow_name(src, dst, spt, dpt)


@dataclass
class BlockSummary:
    """What the summary path read from one block of whole lines (a pure function of its bytes:
    computed in a worker process when there is one)."""

    lines: int
    records: int
    # (message without digits, "SRC DST=DST", "SPT DPT=DPT") -> records, in the order first seen
    counts: Dict[Tuple[bytes, bytes, bytes], int]
    first: Dict[Tuple[bytes, bytes], Tuple[int, bytes]]  # directed flow -> (index, time stamp bytes)
    last: Dict[Tuple[bytes, bytes], Tuple[int, bytes]]
    samples: Dict[bytes, bytes]  # message without digits -> one message with it (for classify)
    journal: bool = False  # stamps are __REALTIME_TIMESTAMP digits (else the text before the logger)

    def time_text(self, stamp: bytes) -> Optional[str]:
        return _stamp_text(self.journal, stamp)


def _stamp_text(journal: bool, stamp: bytes) -> Optional[str]:
    """The time text the reference reader gives a line with this stamp (flows' first and last lines
    share stamps: a second's lines have one)."""
    key = (journal, stamp)
    text = _STAMP_TEXTS.get(key, _NO_TEXT)
    if text is _NO_TEXT:
        if len(_STAMP_TEXTS) > 4096:
            _STAMP_TEXTS.clear()
        text = _STAMP_TEXTS[key] = (_journal_time_text(stamp) if journal
                                    else _line_time_text(stamp.decode("ascii").strip()))
    return text  # type: ignore[return-value]


_STAMP_TEXTS: Dict[Tuple[bool, bytes], Optional[str]] = {}
_NO_TEXT = object()


def summarise_block(data: bytes) -> Optional[BlockSummary]:
    """The summary of a block of whole lines, or None if the summary path cannot read every
    conntrack line of it (the reference reader then reads the block)."""
    if not data or not data.isascii() or data.translate(None, _SUMMARY_BYTES):
        return None
    tokens = data.count(LOGGER_TOKEN)
    journal = b'"MESSAGE"' in data
    if journal:  # every conntrack line a journal JSON record (else the reference reads the block)
        if _BYTE_ARRAY_MESSAGE.search(data):  # a MESSAGE as an array of bytes: the reference rewrites it
            return None
        # (compact as systemd >= 240 prints it, ", "/": " as json.dumps does, " : " as older journalctl did)
        if sum(data.count(b'"MESSAGE"' + colon + LOGGER_TOKEN) for colon in (b':"', b': "', b' : "')) != tokens:
            return None
        rows = _SUMMARY_JSON.findall(data)
    else:
        rows = _SUMMARY_LINE_SPACED.findall(data)
        # The logger must not follow a word character (parse_nflog_line's \b): the byte before each
        # logger the scan took, checked at once (single bytes are shared objects: no allocation).
        if _WORD_BYTES.intersection(map(_LAST_BYTE, map(_PREFIX_OF_ROW, rows))):
            rows = _SUMMARY_LINE.findall(data)
    # The wording is classify()'s own key: the stripped message without its digits (the block holds no
    # byte that str.strip() strips and bytes.strip() keeps).
    messages = list(map(bytes.strip, map(_MESSAGE_OF_ROW, rows)))
    wordings = list(map(bytes.translate, messages, repeat(None), repeat(b"0123456789")))
    counts = Counter(zip(wordings, map(_SD_OF_ROW, rows), map(_PORTS_OF_ROW, rows)))
    records = len(rows) - counts.pop(_NOT_CONNTRACK, 0)
    if records != tokens:
        return None  # a logger token on a line the summary path does not read
    lines = len(rows) - data.endswith(b"\n")  # one row per line, and an empty one after a last newline
    if not records:
        return BlockSummary(lines, 0, {}, {}, {}, {})
    flows = list(zip(map(_SD_OF_ROW, rows), map(_PORTS_OF_ROW, rows)))
    last = dict(zip(flows, range(len(flows))))
    first = dict(zip(reversed(flows), range(len(flows) - 1, -1, -1)))
    first.pop((b"", b""), None)  # the lines that are no conntrack line
    last.pop((b"", b""), None)
    samples = {w: messages[wordings.index(w)] for w in {key[0] for key in counts}}
    return BlockSummary(lines, records, dict(counts), {f: (i, rows[i][0]) for f, i in first.items()},
                        {f: (i, rows[i][0]) for f, i in last.items()}, samples, journal)


_PREFIX_OF_ROW, _MESSAGE_OF_ROW, _SD_OF_ROW, _PORTS_OF_ROW = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_LAST_BYTE = itemgetter(slice(-1, None))
_WORD_BYTES = frozenset(bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def summarise_kernel_log_stream(stream: IO[bytes], report: "KernelLogReport", table: "FlowTable",
                                since: Optional[float] = None, year: Optional[int] = None,
                                boot_time: Optional[float] = None, keep: int = 0,
                                workers: int = 1) -> List[ConntrackLogLine]:
    """Read `stream` into `report`'s counts and `table`'s flows; return the first `keep` records.

    Gives what feeding every record of `iter_kernel_log_stream` to `table.add` gives, block by
    block: the first records (while fewer than `keep`), every block under --since and the blocks
    the summary path cannot read go through the reference reader. `workers` > 1: blocks are
    summarised in that many processes (results are merged in order). Memory: a few blocks per
    process and the table, whatever the input."""
    if year is None:
        year = datetime.now().year
    if since is None and hasattr(stream, "readinto"):
        scanner = _accelerator()
        if scanner is not None:
            return _summarise_accelerated(stream, report, table, scanner, year, boot_time, keep, scan_threads())
    kept: List[ConntrackLogLine] = []
    # Smaller blocks with more processes: memory stays about the same (each holds a block and its rows).
    blocks = line_blocks(stream, report, block=SUMMARY_BLOCK // max(1, workers))
    with _summaries(blocks, workers if since is None else 0, lambda: len(kept) >= keep) as summarised:
        for first_line, block, summary in summarised:
            _read_block(block, first_line, summary, report, table, kept, keep, since, year, boot_time)
    report.skipped.other = (report.lines_total - report.conntrack_lines - report.continuation_lines
                            - report.skipped.too_long)
    return kept


def _read_block(data: bytes, first_line: int, summary: "Optional[BlockSummary]", report: "KernelLogReport",
                table: "FlowTable", kept: List[ConntrackLogLine], keep: int, since: Optional[float], year: int,
                boot_time: Optional[float]) -> None:
    """A block of whole lines into the table: its summary's counts when it has one, else record by record
    through the reference reader (the first `keep` records also kept)."""
    if summary is not None:
        report.lines_total += summary.lines
        report.conntrack_lines += summary.records
        table.add_block(summary, first_line)
        return
    for rec in _iter_block(data, report, first_line, since, year, boot_time):
        table.add(rec)
        if len(kept) < keep:
            kept.append(rec)


class _summaries:
    """(first line, block, its summary or None) for each block, in order. `workers` 0: no summaries;
    1: summarised here; more: in a pool of that many processes, a few blocks ahead. Blocks are
    only summarised once `ready()` (before, the caller wants their records)."""

    def __init__(self, blocks: Iterator[Tuple[int, bytes]], workers: int, ready) -> None:  # type: ignore[no-untyped-def]
        self.blocks, self.workers, self.ready = blocks, workers, ready
        self.pool = None

    def __enter__(self) -> Iterator[Tuple[int, bytes, Optional[BlockSummary]]]:
        return self._run()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> Iterator[Tuple[int, bytes, Optional[BlockSummary]]]:
        from collections import deque

        pending: "deque" = deque()
        for first_line, block in self.blocks:
            if self.workers <= 1 or not self.ready():
                while pending:
                    line, data, future = pending.popleft()
                    yield line, data, future.result()
                summary = summarise_block(block) if self.workers and self.ready() else None
                yield first_line, block, summary
                continue
            if self.pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
            pending.append((first_line, block, self.pool.submit(summarise_block, block)))
            while len(pending) > self.workers:
                line, data, future = pending.popleft()
                yield line, data, future.result()
        while pending:
            line, data, future = pending.popleft()
            yield line, data, future.result()


# --- the compiled twin: sysctl_doctor.conntrack._logscan --------------------------
#
# The same summary, faster: one reused buffer filled with readinto (no block copies), the C scanner
# counting the lines it is certain to read as the reference reads them (its grammar is _SUMMARY_LINE /
# _SUMMARY_JSON's, stricter) per (wording, directed flow) across buffers, and handing back every other
# line (with the lines after it, up to the next line it reads) as an "odd region" that goes through
# `summarise_block` or the reference reader, as a block of line_blocks would. Its counts reach the
# FlowTable through `add_block` (one BlockSummary of absolute line numbers) before anything else is
# added, so the table sees the records in the order of the log. Regions follow line_blocks' rules:
# whole lines, a line over MAX_LINE cut and counted, a record near a region's end held back with the
# lines that may continue it.

ACCEL_BUFFER = 1 << 20  # bytes the compiled path reads at a time
KEEP_REGION = 1 << 16  # while records are kept (the text timeline), the reference reads this much at a time


def _accelerator():  # type: ignore[no-untyped-def]
    """A fresh `_logscan.Scanner`, or None (not built, or SYSCTL_DOCTOR_PURE_PYTHON)."""
    from sysctl_doctor.compiled import load_accelerator

    module = load_accelerator("sysctl_doctor.conntrack._logscan")
    return module.Scanner() if module is not None else None


SCAN_AHEAD_MIN = 64 << 20  # a regular log file at least this large is scanned by two threads (one from its middle)


def workers_asked() -> Optional[int]:
    """SYSCTL_DOCTOR_WORKERS as a number (at least 1); None when it is unset or not a number."""
    import os

    env = os.environ.get("SYSCTL_DOCTOR_WORKERS", "")
    return max(1, int(env)) if env.isdigit() else None


def scan_threads() -> int:
    """Threads for the compiled scanner on a regular log file: 2 when two CPUs are ours, else 1;
    SYSCTL_DOCTOR_WORKERS=1 keeps it to one."""
    import os

    asked = workers_asked()
    if asked is not None:
        return 2 if asked >= 2 else 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


class _FileRange:
    """Bytes [start, stop) of a regular log file (stop None: to its end), for a readinto loop."""

    def __init__(self, log: "LogInput", start: int, stop: Optional[int]) -> None:
        self.log, self.pos, self.stop = log, start, stop

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        want = len(buffer) if self.stop is None else min(len(buffer), self.stop - self.pos)
        if want <= 0:
            return 0
        got = self.log.read_at(buffer[:want], self.pos)
        self.pos += got
        return got


def _fill(readinto, view, filled: int) -> Tuple[int, bool]:  # type: ignore[no-untyped-def]
    """One read into view[filled:]: (bytes now in the buffer, whether the input has ended)."""
    n = readinto(view[filled:])
    return (filled + n, False) if n else (filled, True)


class _ScanAhead:
    """The compiled scanner over the second half of a regular log file, in a thread (its reads and the C scan
    run without the GIL) while the main thread reads the first half, up to the line where this one starts: the
    first line after the middle that holds a conntrack logger, which is never a continuation of the line above
    (`_is_continuation`), so the first half ends there as at the end of the input. It counts only lines it is
    certain of and stops at the first line it would hand to the reference reader; the caller adds its counts
    after the first half's (the table takes them in log order, as it takes the counts of any flush) and reads
    on from where it stopped. While records are still being kept (the text view's first records) its counts
    are dropped and the caller reads the second half itself: the result is always the one-thread result."""

    def __init__(self, log: "LogInput", cap: int, max_line: int, scanner, start_at: int) -> None:  # type: ignore[no-untyped-def]
        import threading

        self.log, self.cap, self.max_line = log, cap, max_line
        self.scanner = type(scanner)()  # its own tables: a scanner is never shared between threads
        self.start_at = self.stopped_at = start_at
        self.lines = self.records = 0
        self.flushes: list = []
        self.error: Optional[BaseException] = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="logscan-ahead", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, log: "LogInput", size: int, cap: int, max_line: int, scanner):  # type: ignore[no-untyped-def]
        """A scan of the second half, or None when the log is small or has no record soon after its middle."""
        if size < SCAN_AHEAD_MIN:
            return None
        mid = size // 2
        for want in (64 << 10, 4 << 20):  # most logs have a record in the first 64 KiB after the middle
            probe = bytearray(min(size - mid, want))
            chunk = bytes(memoryview(probe)[:log.read_at(memoryview(probe), mid)])
            first = chunk.find(b"\n") + 1  # the first whole line after the middle
            tok = chunk.find(LOGGER_TOKEN, first) if first else -1
            if tok >= 0:
                return cls(log, cap, max_line, scanner, mid + chunk.rfind(b"\n", 0, tok) + 1)
            if len(chunk) < want:
                break
        return None

    def _run(self) -> None:
        try:
            scan, flush = self.scanner.scan, self.scanner.flush
            buf = bytearray(self.cap)
            view = memoryview(buf)
            readinto = _FileRange(self.log, self.start_at, None).readinto
            pos, filled, eof, stopped = self.start_at, 0, False, None  # pos: the file offset of buf[0]
            while not self.stop.is_set():
                if not eof:
                    filled, eof = _fill(readinto, view, filled)
                if eof:
                    end = filled
                    if end == 0:
                        break
                else:
                    end = buf.rfind(b"\n", 0, filled) + 1
                    if end == 0:
                        if filled < self.cap:
                            continue
                        stopped = pos  # a line longer than the buffer: the main thread cuts it
                        break
                at = 0
                while at < end:
                    status, at, lines, records, _, _ = scan(buf, at, end, self.lines + 1, self.max_line)
                    self.lines += lines
                    self.records += records
                    if status == 2:  # a table full: its counts kept for later, in order
                        self.flushes.append(flush())
                    elif status != 0:
                        stopped = pos + at  # a line for the reference reader: the main thread reads on from it
                        break
                if stopped is not None:
                    break
                pos += end
                filled -= end
                if filled:
                    buf[:filled] = buf[end:end + filled]
                elif eof:
                    break
            self.stopped_at = pos if stopped is None else stopped
            got = flush()
            if got is not None:
                self.flushes.append(got)
        except BaseException as exc:  # MemoryError, a read error: raised again in the main thread
            self.error = exc

    def join(self) -> "_ScanAhead":
        """Wait for the whole second half."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self

    def abandon(self) -> None:
        """Stop after the read or scan under way (the main thread failed or was interrupted), so nothing reads
        the file once it is closed. A second Ctrl-C does not cut the wait (one buffer's scan)."""
        self.stop.set()
        interrupted = None
        while self.thread.is_alive():
            try:
                self.thread.join()
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted


def _lines_of(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _held_back(buf: bytearray, start: int, end: int) -> int:
    """Where a region [start, end) of whole lines cut before the end of the input may end: before the
    last record within HOLD_BACK bytes of `end` (its continuation lines may follow; line_blocks' rule)."""
    tok = buf.rfind(LOGGER_TOKEN, max(start, end - HOLD_BACK), end)
    return end if tok < 0 else buf.rfind(b"\n", 0, tok) + 1


def _summarise_accelerated(stream: IO[bytes], report: "KernelLogReport", table: "FlowTable", scanner,  # type: ignore[no-untyped-def]
                           year: int, boot_time: Optional[float], keep: int, threads: int = 1) -> List[ConntrackLogLine]:
    """`summarise_kernel_log_stream` (without --since) with the compiled scanner, through one reused buffer
    filled with readinto; a regular uncompressed file of SCAN_AHEAD_MIN or more with two threads (`threads`),
    each reading its half with pread."""
    kept: List[ConntrackLogLine] = []
    max_line = MAX_LINE
    # Room for a few held-back records and long lines: a buffer (window) is never full of one unfinished
    # region unless its last line is over MAX_LINE (cut, so no record's continuation).
    cap = max(ACCEL_BUFFER, 4 * (max_line + HOLD_BACK))
    scan, flush = scanner.scan, scanner.flush
    line = 1

    def take() -> None:  # the scanner's counts into the table, before anything else goes in
        got = flush()
        if got is not None:
            journal, counts, first, last, samples = got
            table.add_block(BlockSummary(0, 0, counts, first, last, samples, journal), 0)

    def python_region(data: bytes, first_line: int) -> None:  # whole lines: the Python summary or the reference
        data, _ = _cut_long_lines(data, first_line, report, max_line, True)
        take()
        summary = summarise_block(data) if len(kept) >= keep else None
        _read_block(data, first_line, summary, report, table, kept, keep, None, year, boot_time)

    def cut_line() -> None:  # a line longer than the buffer (so over MAX_LINE): cut and counted
        report.skipped.too_long += 1
        if report.first_too_long is None:
            report.first_too_long = line

    def process(src, view, start: int, end: int, eof: bool, full: bool) -> int:  # type: ignore[no-untyped-def]
        """Read the whole lines of src[start:end]; where reading stopped (held back: read on). `full`: no
        more can be read into src[start:] (then a region is never held back to the start: no progress)."""
        nonlocal line
        pos = start
        while pos < end:
            if len(kept) < keep:  # the first records one by one, through the reference reader
                z = src.find(b"\n", min(pos + KEEP_REGION, end - 1), end) + 1 or end
                if z < end or not eof:
                    z = _held_back(src, pos, z)
                    if z <= pos:
                        z = end if eof or (full and pos == start) else _held_back(src, pos, end)
                        if z <= pos:
                            break  # read on: the record's continuation may follow
                data = bytes(view[pos:z])
                python_region(data, line)
                line += _lines_of(data)
                pos = z
                continue
            status, stop, lines, records, odd_end, _ = scan(src, pos, end, line, max_line)
            report.lines_total += lines
            report.conntrack_lines += records
            line += lines
            pos = stop
            if status == 0:
                break
            if status == 2:  # a table full, or journal and text lines meet: the counts go in first
                if not scanner.pending:  # (cannot happen: an empty scanner takes any line it reads)
                    raise AssertionError("logscan: flush asked with nothing counted")
                take()
                continue
            if odd_end == end and not eof:
                odd_end = _held_back(src, pos, end)  # a record near the end keeps its continuation lines
                if odd_end <= pos:
                    if not (full and pos == start):
                        break  # read on: the record's continuation may follow
                    odd_end = end  # nothing more fits in: read what there is (no progress otherwise)
            data = bytes(view[pos:odd_end])
            python_region(data, line)
            line += _lines_of(data)
            pos = odd_end
        return pos

    def read_through(readinto) -> None:  # type: ignore[no-untyped-def]
        """Everything `readinto` gives, through one reused buffer, as whole lines."""
        buf = bytearray(cap)
        view = memoryview(buf)
        filled, eof = 0, False
        while True:
            if not eof:
                filled, eof = _fill(readinto, view, filled)
            if eof:
                end = filled
            else:
                end = buf.rfind(b"\n", 0, filled) + 1
                if end == 0:
                    if filled < cap:
                        continue
                    # A line longer than the buffer (so over MAX_LINE): cut and counted, its bytes dropped up
                    # to its newline, which stays as the empty line it becomes.
                    cut_line()
                    while True:
                        n = readinto(view)
                        if not n:
                            eof, buf[0], filled = True, 10, 1
                            break
                        nl = buf.find(b"\n", 0, n)
                        if nl >= 0:
                            filled = n - nl
                            buf[:filled] = buf[nl:n]
                            break
                    continue
            pos = process(buf, view, 0, end, eof, filled == cap)
            if eof and pos >= filled:
                break
            rest = filled - pos
            if pos:
                buf[:rest] = buf[pos:filled]
            filled = rest

    size = getattr(stream, "regular_size", lambda: None)() if threads > 1 else None
    ahead = _ScanAhead.start(stream, size, cap, max_line, scanner) if size else None
    if ahead is None:
        read_through(stream.readinto)
    else:
        try:
            read_through(_FileRange(stream, 0, ahead.start_at).readinto)  # the first half, to where it starts
            if len(kept) >= keep:
                take()  # the first half's counts into the table while the second half is still being read
            done = ahead.join()
        finally:
            ahead.abandon()  # (a no-op once joined) nothing reads the file after it is closed
        base = ahead.start_at
        if len(kept) >= keep:  # the second half's counts after the first's, in the order of the log
            for got in done.flushes:
                journal, counts, first, last, samples = got
                table.add_block(BlockSummary(0, 0, counts, first, last, samples, journal), line - 1)
            report.lines_total += done.lines
            report.conntrack_lines += done.records
            line += done.lines
            base = done.stopped_at
        read_through(_FileRange(stream, base, None).readinto)  # from the line it stopped at, to the end
    take()
    report.skipped.other = (report.lines_total - report.conntrack_lines - report.continuation_lines
                            - report.skipped.too_long)
    return kept
