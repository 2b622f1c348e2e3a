"""The TCP header's flag bits, declared once: the window model tests them as ints, replay and the lab
name them, nf_log prints them as words. Each output keeps its own order (below), so outputs are as before."""

from __future__ import annotations

from enum import IntFlag
from typing import FrozenSet, Tuple


class TcpFlag(IntFlag):
    """RFC 9293 (and RFC 3168's ECE/CWR) flag bits of the TCP header's 13th byte; names as nf_log prints them."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


ALL: Tuple[TcpFlag, ...] = tuple(TcpFlag)  # header bit order, FIN first
# replay's flag text ("SYN,ACK"): the handshake's reading order
REPLAY_ORDER: Tuple[TcpFlag, ...] = (TcpFlag.SYN, TcpFlag.ACK, TcpFlag.FIN, TcpFlag.RST, TcpFlag.PSH, TcpFlag.URG,
                                     TcpFlag.ECE, TcpFlag.CWR)
NAMES: FrozenSet[str] = frozenset(flag.name for flag in ALL)  # type: ignore[misc]
# nf_log's IPv4 header flag words, printed among the TCP ones (nf_log_syslog.c: "CE ", "DF ", "MF ")
IP_FLAG_WORDS: FrozenSet[str] = frozenset({"CE", "DF", "MF"})
