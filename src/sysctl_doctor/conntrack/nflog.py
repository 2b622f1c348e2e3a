"""One conntrack line of the kernel's nf_log, parsed.

Conntrack logs a packet it finds invalid (or ignores) as

    nf_ct_proto_6: SEQ is under lower bound (already ACKed data retransmitted) IN=eth0 OUT=
    MAC=… SRC=10.0.0.2 DST=10.0.0.1 LEN=1480 TOS=0x00 PREC=0x00 TTL=61 ID=53534 DF PROTO=TCP
    SPT=6379 DPT=26110 SEQ=4213094653 ACK=3402842193 WINDOW=509 RES=0x00 ACK PSH URGP=0 OPT (…)

(`nf_ct_tcp: ` on older kernels), behind whatever prefix the log source adds
(dmesg's ``[  12.345678]``, syslog's date and host, ``kernel:``). This module
only turns one such line into a record; grouping, sources and verdicts live
elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional

from sysctl_doctor.conntrack.tcp_flags import IP_FLAG_WORDS
from sysctl_doctor.conntrack.tcp_flags import NAMES as TCP_FLAG_NAMES

_PREFIX = re.compile(r"\b(nf_ct_proto_(\d+)|nf_ct_tcp|nf_ct_udp|nf_ct_icmp|nf_ct_icmpv6|nf_ct_\w+):\s*")
_FIELDS_START = re.compile(r"(?:^|\s)IN=")
_OPT = re.compile(r"\sOPT \(([0-9A-Fa-f]*)\)")

# Bare words nf_log prints between KEY=VALUE fields: the IP header's and the TCP flags.
_TCP_FLAGS = TCP_FLAG_NAMES
_FLAG_WORDS = IP_FLAG_WORDS | TCP_FLAG_NAMES


@dataclass(frozen=True)
class NfLogRecord:
    """A conntrack nf_log line: who logged it, the kernel's message, the packet's fields."""

    logger: str  # "nf_ct_proto_6", "nf_ct_tcp", …
    protocol: Optional[int]  # 6 for TCP, from nf_ct_proto_N; 6 for nf_ct_tcp
    message: str  # the kernel's own text, e.g. "SEQ is over upper bound (over the window of the receiver)"
    fields: Dict[str, str]  # IN, OUT, MAC, SRC, DST, LEN, TTL, ID, PROTO, SPT, DPT, SEQ, ACK, WINDOW, …
    flags: FrozenSet[str] = field(default_factory=frozenset)  # DF, SYN, ACK, RST, … as printed
    options: Optional[str] = None  # hex of OPT ( … )
    prefix: str = ""  # what came before the logger (timestamp, host, "kernel:")

    @property
    def tcp_flags(self) -> FrozenSet[str]:
        return self.flags & _TCP_FLAGS

    def int_field(self, name: str) -> Optional[int]:
        value = self.fields.get(name)
        if value is None:
            return None
        try:
            return int(value, 0) if value.startswith("0x") else int(value)
        except ValueError:
            return None


def parse_nflog_line(line: str) -> Optional[NfLogRecord]:
    """The record of one log line, or None if the line is no conntrack nf_log line."""
    match = _PREFIX.search(line)
    if match is None:
        return None
    logger = match.group(1)
    if match.group(2) is not None:
        protocol: Optional[int] = int(match.group(2))
    elif logger == "nf_ct_tcp":
        protocol = 6
    elif logger == "nf_ct_udp":
        protocol = 17
    else:
        protocol = None
    rest = line[match.end():].rstrip("\r\n")
    start = _FIELDS_START.search(rest)
    if start is None:
        # Message only (a wrapped line, or a logger without packet fields).
        return NfLogRecord(logger, protocol, rest.strip(), {}, frozenset(), None, line[: match.start()].strip())
    message = rest[: start.start()].strip()
    body = rest[start.start():]
    options = None
    opt = _OPT.search(body)
    if opt is not None:
        options = opt.group(1)
        body = body[: opt.start()] + body[opt.end():]
    fields: Dict[str, str] = {}
    flags = set()
    for token in body.split():
        key, sep, value = token.partition("=")
        if sep:
            if key not in fields:  # the outer header wins over an ICMP-embedded one
                fields[key] = value
        elif token in _FLAG_WORDS:
            flags.add(token)
    return NfLogRecord(
        logger=logger,
        protocol=protocol,
        message=message,
        fields=fields,
        flags=frozenset(flags),
        options=options,
        prefix=line[: match.start()].strip(),
    )
