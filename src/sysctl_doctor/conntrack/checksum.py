"""The TCP checksum of a captured packet, judged the way conntrack's tcp_error() needs it.

With ``net.netfilter.nf_conntrack_checksum=1`` (the default) conntrack verifies the
TCP checksum of packets in the PRE_ROUTING hook only (packets arriving at the box;
nothing it sends itself, nothing in OUTPUT or POSTROUTING) and marks a bad one
INVALID with "bad checksum", before the flag check and before any state is looked at.
A packet whose checksum the receiving NIC already verified (CHECKSUM_UNNECESSARY)
or that still carries only the partial sum of a local sender (CHECKSUM_PARTIAL, as
veth and every offloading NIC hand it on) is not recomputed.

A capture cannot show the skb's ip_summed, but it shows the field: a packet
captured on the host that sent it with checksum offload carries the folded
pseudo-header sum instead of the checksum (tcpdump's "cksum incorrect"). That
is what the sender's stack wrote before handing the rest to the NIC; it is
``PARTIAL`` here, never ``BAD``: on the wire the NIC filled in the real sum.

The sum is the ones' complement sum of 16-bit words; it is computed as one big
integer modulo 0xFFFF (the same residue as the end-around-carry sum, 0xFFFF and 0
being the same class), which keeps a million-packet replay cheap.
"""

from __future__ import annotations

OK = "ok"
BAD = "bad"
PARTIAL = "partial"  # the sender's pseudo-header sum: offloaded, filled in by its NIC
UNKNOWN = "unknown"  # cut by the snap length, or no TCP offset known

_PROTO_TCP = 6


def tcp_checksum_state(family: int, src: bytes, dst: bytes, raw: bytes, l4: int, tcplen: int) -> str:
    """OK, BAD, PARTIAL or UNKNOWN for the TCP segment of `tcplen` bytes at raw[l4:]."""
    if l4 < 0 or len(raw) < l4 + tcplen or tcplen < 20:
        return UNKNOWN
    words = int.from_bytes(memoryview(raw)[l4:l4 + tcplen], "big")
    if tcplen & 1:
        words <<= 8  # pad to a whole 16-bit word
    pseudo = (int.from_bytes(src + dst, "big") + _PROTO_TCP + tcplen) % 0xFFFF
    if (words + pseudo) % 0xFFFF == 0:
        return OK
    if ((raw[l4 + 16] << 8) | raw[l4 + 17]) % 0xFFFF == pseudo:
        return PARTIAL
    return BAD


_PSEUDO: dict = {}  # src + dst -> their part of the pseudo-header sum (bounded)


def tcp_checksum_bad(src: bytes, dst: bytes, raw: bytes, l4: int, tcplen: int) -> bool:
    """tcp_checksum_state(...) == BAD, for the replay's hot path."""
    if l4 < 0 or len(raw) < l4 + tcplen or tcplen < 20:
        return False
    pair = src + dst
    base = _PSEUDO.get(pair)
    if base is None:
        base = int.from_bytes(pair, "big") % 0xFFFF + _PROTO_TCP
        if len(_PSEUDO) < 65536:
            _PSEUDO[pair] = base
    words = int.from_bytes(raw[l4:l4 + tcplen], "big")
    if tcplen & 1:
        words <<= 8  # pad to a whole 16-bit word
    if (words + base + tcplen) % 0xFFFF == 0:
        return False
    return ((raw[l4 + 16] << 8) | raw[l4 + 17]) % 0xFFFF != (base + tcplen) % 0xFFFF
