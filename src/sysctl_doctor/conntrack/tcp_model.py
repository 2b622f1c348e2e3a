"""A model of nf_conntrack's TCP tracking: one verdict per packet, with the kernel's words.

Written from reading net/netfilter/nf_conntrack_proto_tcp.c (v5.10 for the
``legacy`` profile, 6.1.y and a 6.16+ tree for ``modern``) and the parts of
nf_conntrack_core.c that decide what happens around it (new entries, SEEN_REPLY,
expiry, the reopen of a closed connection). Nothing here does I/O.

Verdicts:
  ``accept``  — the tracker updated its state (NF_ACCEPT after tcp_in_window).
  ``ignore``  — NF_ACCEPT without a state change: the packet keeps its entry
                (NAT still applies), ``ct state invalid`` does not match.
  ``invalid`` — -NF_ACCEPT: the packet has no conntrack entry, so NAT is not
                reversed and ``ct state invalid`` rules match.

Checksums (tcp_error()'s "bad checksum", nf_conntrack_checksum, PRE_ROUTING only)
are judged by the replay, which sees the captured bytes (conntrack/checksum.py).
Not modelled: NAT sequence adjustment (helpers), SYN proxy, per-connection
timeout policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from sysctl_doctor.conntrack import tcp_flags as _tcp_flags
from sysctl_doctor.conntrack.profiles import KernelProfile
from sysctl_doctor.errors import DoctorError

ACCEPT = "accept"
IGNORE = "ignore"
INVALID = "invalid"

# enum tcp_conntrack
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2 = range(10)
sIV = 10  # TCP_CONNTRACK_MAX
sIG = 11  # TCP_CONNTRACK_IGNORE
STATE_NAMES = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
    "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
)

# enum tcp_bit_set
SYN_SET, SYNACK_SET, FIN_SET, ACK_SET, RST_SET, NONE_SET = range(6)

# TCP header flag bits (plain ints for the hot paths; declared in tcp_flags)
F_FIN, F_SYN, F_RST, F_PSH, F_ACK, F_URG, F_ECE, F_CWR = (int(flag) for flag in _tcp_flags.ALL)

# ip_ct_tcp_state.flags
WINDOW_SCALE = 0x01
SACK_PERM = 0x02
CLOSE_INIT = 0x04
BE_LIBERAL = 0x08
DATA_UNACKNOWLEDGED = 0x10
MAXACK_SET = 0x20
EXP_CHALLENGE_ACK = 0x40
SIMULTANEOUS_OPEN = 0x80

ORIGINAL, REPLY = 0, 1

_sNO, _sSS, _sSR, _sES, _sFW, _sCW, _sLA, _sTW, _sCL, _sS2 = range(10)
# tcp_conntracks[dir][index][old_state]; identical in v5.10 and 6.x
STATE_TABLE = (
    (  # ORIGINAL
        (_sSS, _sSS, sIG, sIG, sIG, sIG, sIG, _sSS, _sSS, _sS2),  # syn
        (sIV, sIV, _sSR, sIV, sIV, sIV, sIV, sIV, sIV, _sSR),  # synack
        (sIV, sIV, _sFW, _sFW, _sLA, _sLA, _sLA, _sTW, _sCL, sIV),  # fin
        (_sES, sIV, _sES, _sES, _sCW, _sCW, _sTW, _sTW, _sCL, sIV),  # ack
        (sIV, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL),  # rst
        (sIV,) * 10,  # none
    ),
    (  # REPLY
        (sIV, _sS2, sIV, sIV, sIV, sIV, sIV, _sSS, sIV, _sS2),  # syn
        (sIV, _sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, _sSR),  # synack
        (sIV, sIV, _sFW, _sFW, _sLA, _sLA, _sLA, _sTW, _sCL, sIV),  # fin
        (sIV, sIG, _sSR, _sES, _sCW, _sCW, _sTW, _sTW, _sCL, sIG),  # ack
        (sIV, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL, _sCL),  # rst
        (sIV,) * 10,  # none
    ),
)

# tcp_valid_flags[] over FIN|SYN|RST|ACK|URG (PSH, ECE, CWR always valid)
_VALID_FLAGS = frozenset({
    F_SYN, F_SYN | F_URG, F_SYN | F_ACK, F_RST, F_RST | F_ACK,
    F_FIN | F_ACK, F_FIN | F_ACK | F_URG, F_ACK, F_ACK | F_URG,
})

# flag bytes that pass tcp_error()'s flag check, indexed by the header's flag byte
VALID_FLAG_BYTE = tuple((b & ~(F_ECE | F_CWR | F_PSH) & 0xFF) in _VALID_FLAGS for b in range(256))

MAXACKWINCONST = 66000
TCP_MAX_WSCALE = 14
MASK = 0xFFFFFFFF


def before(a: int, b: int) -> bool:
    """(s32)(a - b) < 0"""
    return ((a - b) & MASK) > 0x7FFFFFFF


def after(a: int, b: int) -> bool:
    return ((b - a) & MASK) > 0x7FFFFFFF


# Timeouts in seconds (the kernel's defaults), keyed by the sysctl's suffix.
DEFAULT_TIMEOUTS: Dict[str, int] = {
    "syn_sent": 120, "syn_recv": 60, "established": 432000, "fin_wait": 120,
    "close_wait": 60, "last_ack": 30, "time_wait": 120, "close": 10,
    "max_retrans": 300, "unacknowledged": 300,
}
_STATE_TIMEOUT_KEY = (
    "syn_sent", "syn_sent", "syn_recv", "established", "fin_wait",
    "close_wait", "last_ack", "time_wait", "close", "syn_sent",
)


@dataclass(frozen=True)
class TcpSettings:
    """The per-netns sysctls the tracker reads (kernel defaults unless given)."""

    be_liberal: bool = False
    loose: bool = True
    max_retrans: int = 3
    ignore_invalid_rst: bool = False
    checksum: bool = True  # net.netfilter.nf_conntrack_checksum (not TCP-specific; tcp_error() reads it)
    timeouts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))

    def timeout(self, state: int) -> int:
        return self.timeouts[_STATE_TIMEOUT_KEY[state]]


_SYSCTL_PREFIX = "net.netfilter."
_BOOL_KEYS = {
    "nf_conntrack_tcp_be_liberal": "be_liberal",
    "nf_conntrack_tcp_loose": "loose",
    "nf_conntrack_tcp_ignore_invalid_rst": "ignore_invalid_rst",
    "nf_conntrack_checksum": "checksum",
}
# What the kernel's proc handlers accept (nf_conntrack_standalone.c; checked against kernel 6.18 in a netns):
# the booleans are u8 with min 0 / max 1, max_retrans is a u8 (0..255), the timeouts are seconds written with
# proc_dointvec_jiffies: seconds * HZ must fit in an int, so no kernel (HZ >= 100) takes more than INT_MAX // 100.
# The kernel takes a negative timeout; replay does not (it means nothing to the tracker).
TIMEOUT_MAX = 0x7FFFFFFF // 100
MAX_RETRANS_MAX = 255
KNOWN_SYSCTLS = (
    tuple(_BOOL_KEYS)
    + ("nf_conntrack_tcp_max_retrans",)
    + tuple("nf_conntrack_tcp_timeout_" + k for k in DEFAULT_TIMEOUTS)
)


def normalize_sysctl_name(name: str) -> str:
    """'nf_conntrack_tcp_be_liberal', 'net.netfilter.…' or 'net/netfilter/…' → the last part."""
    key = name.strip().replace("/", ".")
    if key.startswith(_SYSCTL_PREFIX):
        key = key[len(_SYSCTL_PREFIX):]
    if key not in KNOWN_SYSCTLS:
        raise DoctorError(
            f"unknown conntrack TCP sysctl {name!r} (known: "
            + ", ".join(_SYSCTL_PREFIX + k for k in KNOWN_SYSCTLS) + ")"
        )
    return key


def sysctl_value_limit(key: str) -> int:
    """The largest value the kernel accepts for `key` (a KNOWN_SYSCTLS name); the smallest is 0."""
    if key in _BOOL_KEYS:
        return 1
    if key == "nf_conntrack_tcp_max_retrans":
        return MAX_RETRANS_MAX
    return TIMEOUT_MAX


def settings_from_sysctls(values: Mapping[str, str], base: Optional[TcpSettings] = None) -> TcpSettings:
    """Apply NAME=VALUE pairs (any accepted spelling of NAME) to `base`."""
    base = base or TcpSettings()
    fields = {
        "be_liberal": base.be_liberal, "loose": base.loose,
        "max_retrans": base.max_retrans, "ignore_invalid_rst": base.ignore_invalid_rst,
        "checksum": base.checksum,
    }
    timeouts = dict(base.timeouts)
    for raw_name, raw_value in values.items():
        key = normalize_sysctl_name(raw_name)
        try:
            value = int(str(raw_value).strip())
        except ValueError:
            raise DoctorError(f"{raw_name}={raw_value}: the value must be an integer") from None
        if value < 0:
            raise DoctorError(f"{raw_name}={raw_value}: the value must not be negative")
        limit = sysctl_value_limit(key)
        if value > limit:
            raise DoctorError(f"{raw_name}={raw_value}: out of range, the kernel accepts 0..{limit} "
                              f"for {_SYSCTL_PREFIX}{key}")
        if key in _BOOL_KEYS:
            fields[_BOOL_KEYS[key]] = value != 0
        elif key == "nf_conntrack_tcp_max_retrans":
            fields["max_retrans"] = value
        else:
            timeouts[key[len("nf_conntrack_tcp_timeout_"):]] = value
    return TcpSettings(timeouts=timeouts, **fields)  # type: ignore[arg-type]


class Segment:
    """The parts of one TCP packet the tracker reads."""

    __slots__ = ("seq", "ack", "flags", "window", "doff", "datalen", "options", "tcplen")

    def __init__(self, seq: int, ack: int, flags: int, window: int, doff: int,
                 datalen: int, options: bytes = b"", tcplen: Optional[int] = None) -> None:
        self.seq = seq
        self.ack = ack
        self.flags = flags  # the 8 flag bits of the header
        self.window = window
        self.doff = doff  # header length in bytes (data offset * 4)
        self.datalen = datalen  # payload bytes, from the IP length
        self.options = options  # doff - 20 bytes of options
        self.tcplen = doff + datalen if tcplen is None else tcplen  # L4 length from the IP header

    def end(self) -> int:
        """segment_seq_plus_len(): seq + payload + SYN + FIN."""
        return (self.seq + self.datalen + (1 if self.flags & F_SYN else 0)
                + (1 if self.flags & F_FIN else 0)) & MASK


def conntrack_index(flags: int) -> int:
    if flags & F_RST:
        return RST_SET
    if flags & F_SYN:
        return SYNACK_SET if flags & F_ACK else SYN_SET
    if flags & F_FIN:
        return FIN_SET
    if flags & F_ACK:
        return ACK_SET
    return NONE_SET


class PeerState:
    """struct ip_ct_tcp_state: what conntrack knows of one side."""

    __slots__ = ("td_end", "td_maxend", "td_maxwin", "td_maxack", "td_scale", "flags")

    def __init__(self) -> None:
        self.td_end = 0
        self.td_maxend = 0
        self.td_maxwin = 0
        self.td_maxack = 0
        self.td_scale = 0
        self.flags = 0

    def reset(self) -> None:
        """nf_ct_tcp_state_reset(): everything but BE_LIBERAL."""
        self.td_end = self.td_maxend = self.td_maxwin = self.td_maxack = self.td_scale = 0
        self.flags &= BE_LIBERAL


def _peer_dict(peer: PeerState) -> dict:
    return {"td_end": peer.td_end, "td_maxend": peer.td_maxend, "td_maxwin": peer.td_maxwin,
            "td_maxack": peer.td_maxack, "td_scale": peer.td_scale, "flags": peer.flags}


def parse_options(options: bytes, state: PeerState, keep_liberal: bool) -> None:
    """tcp_options(): window scale and SACK-permitted of a SYN."""
    if not options:
        return
    state.td_scale = 0
    state.flags = state.flags & BE_LIBERAL if keep_liberal else 0
    i, length = 0, len(options)
    while length > 0:
        opcode = options[i]
        i += 1
        if opcode == 0:  # EOL
            return
        if opcode == 1:  # NOP
            length -= 1
            continue
        if length < 2:
            return
        opsize = options[i]
        i += 1
        if opsize < 2 or opsize > length:
            return
        if opcode == 4 and opsize == 2:
            state.flags |= SACK_PERM
        elif opcode == 3 and opsize == 3:
            state.td_scale = min(options[i], TCP_MAX_WSCALE)
            state.flags |= WINDOW_SCALE
        i += opsize - 2
        length -= opsize


_TS_ONLY = b"\x01\x01\x08\x0a"


def highest_sack(options: bytes, sack: int) -> int:
    """tcp_sack(): the highest right edge of the first SACK option, if above `sack`."""
    if not options:
        return sack
    if len(options) == 12 and options[:4] == _TS_ONLY:
        return sack
    i, length = 0, len(options)
    while length > 0:
        opcode = options[i]
        i += 1
        if opcode == 0:
            return sack
        if opcode == 1:
            length -= 1
            continue
        if length < 2:
            return sack
        opsize = options[i]
        i += 1
        if opsize < 2 or opsize > length:
            return sack
        if opcode == 5 and opsize >= 10 and (opsize - 2) % 8 == 0:
            for j in range(0, opsize - 2, 8):
                edge = int.from_bytes(options[i + j + 4:i + j + 8], "big")
                if after(edge, sack):
                    sack = edge
            return sack
        i += opsize - 2
        length -= opsize
    return sack


class Connection:
    """struct ip_ct_tcp plus the nf_conn bits the tracker reads."""

    __slots__ = (
        "state", "seen", "last_dir", "last_index", "last_seq", "last_ack", "last_end",
        "last_win", "last_wscale", "last_flags", "retrans", "seen_reply", "assured",
        "expires",
    )

    def __init__(self) -> None:
        self.state = NONE
        self.seen = (PeerState(), PeerState())
        self.last_dir = 0
        self.last_index = NONE_SET
        self.last_seq = 0
        self.last_ack = 0
        self.last_end = 0
        self.last_win = 0
        self.last_wscale = 0
        self.last_flags = 0
        self.retrans = 0
        self.seen_reply = False
        self.assured = False
        self.expires = 0.0


    def established(self) -> bool:
        return self.state == ESTABLISHED and self.assured


@dataclass
class Outcome:
    """What the tracker did with one packet."""

    verdict: str
    message: Optional[str]
    kill: bool = False  # the entry is gone after this packet
    reopen: bool = False  # entry killed; the packet starts a new one (-NF_REPEAT)


_ACCEPTED = Outcome(ACCEPT, None)
_ACCEPTED_KILL = Outcome(ACCEPT, None, kill=True)
_REOPEN = Outcome(ACCEPT, None, kill=True, reopen=True)


class TcpTracker:
    """The TCP tracker of one network namespace: a profile and its sysctls."""

    def __init__(self, profile: KernelProfile, settings: TcpSettings) -> None:
        self.profile = profile
        self.settings = settings
        t = settings.timeouts
        # for the ESTABLISHED fast path: (established, unacknowledged or None, max_retrans or None),
        # None where the shorter timeout does not apply because it is not shorter
        est, unack, retrans = t["established"], t["unacknowledged"], t["max_retrans"]
        self._est_timeouts = (est, unack if est > unack else None, retrans if est > retrans else None)
        # When a dict, the next packet() records its steps and window arithmetic in it (replay --explain).
        self.trace: Optional[dict] = None

    # -- tcp_error() -------------------------------------------------------
    def error(self, seg: Segment) -> Optional[str]:
        """The tcp_error() message, or None if the header passes."""
        if seg.doff < 20 or seg.tcplen < seg.doff:
            return self.profile.message("truncated") or "truncated packet"
        if (seg.flags & ~(F_ECE | F_CWR | F_PSH) & 0xFF) not in _VALID_FLAGS:
            return self.profile.message("bad_flags") or "invalid tcp flag combination"
        return None

    # -- tcp_new() ---------------------------------------------------------
    def new(self, seg: Segment) -> Tuple[Optional[Connection], Optional[str]]:
        """A fresh entry for a packet without one, or (None, message) if it is invalid."""
        prof = self.profile
        new_state = STATE_TABLE[0][conntrack_index(seg.flags)][NONE]
        if new_state >= sIV:
            return None, prof.message("invalid_new")
        ct = Connection()
        s0 = ct.seen[0]
        end = seg.end()
        s0.td_end = end
        s0.td_maxwin = seg.window or 1
        if new_state == SYN_SENT:
            s0.td_maxend = end
            parse_options(seg.options, s0, prof.options_keep_liberal)
        elif not self.settings.loose:
            return None, prof.message("no_pickup")
        else:
            s0.td_maxend = (end + s0.td_maxwin) & MASK
            s0.flags = ct.seen[1].flags = SACK_PERM | BE_LIBERAL
        ct.last_index = NONE_SET
        return ct, None

    # -- tcp_in_window() -----------------------------------------------------
    def _log_window(self, sender: PeerState, verdict: str, key: str, **values: object) -> Tuple[str, Optional[str]]:
        """nf_tcp_log_invalid() (6.1+) / the else branch (≤ 6.0): liberal → accept silently."""
        if sender.flags & BE_LIBERAL or self.settings.be_liberal:
            return ACCEPT, None
        return verdict, self.profile.message(key, **values)

    def _init_sender(self, sender: PeerState, receiver: PeerState, seg: Segment,
                     end: int, win: int, direction: int) -> None:
        sender.td_end = sender.td_maxend = end
        sender.td_maxwin = win or 1
        parse_options(seg.options, sender, self.profile.options_keep_liberal)
        if self.profile.modern_syn_reinit and direction != REPLY:
            return
        if not (sender.flags & WINDOW_SCALE and receiver.flags & WINDOW_SCALE):
            sender.td_scale = receiver.td_scale = 0

    def in_window(self, ct: Connection, direction: int, index: int, seg: Segment) -> Tuple[str, Optional[str]]:
        prof = self.profile
        sender = ct.seen[direction]
        receiver = ct.seen[1 - direction]
        seq = seg.seq
        ack = sack = seg.ack
        win_raw = seg.window
        win = win_raw
        end = seg.end()
        flags = seg.flags

        if receiver.flags & SACK_PERM:
            sack = highest_sack(seg.options, sack)

        if sender.td_maxwin == 0:
            if flags & F_SYN:
                self._init_sender(sender, receiver, seg, end, win, direction)
                if not flags & F_ACK:
                    return ACCEPT, None  # simultaneous open
            else:
                # mid-connection: history lost, take what the packet says
                sender.td_end = end
                swin = (win << sender.td_scale) & MASK
                sender.td_maxwin = swin or 1
                sender.td_maxend = (end + sender.td_maxwin) & MASK
                if receiver.td_maxwin == 0:
                    receiver.td_end = receiver.td_maxend = sack
                elif sack == (receiver.td_end + 1) & MASK:
                    receiver.td_end = (receiver.td_end + 1) & MASK  # keepalive reply
        elif prof.modern_syn_reinit:
            if flags & F_SYN and after(end, sender.td_end) and ct.state in (SYN_SENT, SYN_RECV):
                self._init_sender(sender, receiver, seg, end, win, direction)
                if direction == REPLY and not flags & F_ACK:
                    return ACCEPT, None
        elif ((ct.state == SYN_SENT and direction == ORIGINAL)
              or (ct.state == SYN_RECV and direction == REPLY)) and after(end, sender.td_end):
            sender.td_end = sender.td_maxend = end
            sender.td_maxwin = win or 1
            parse_options(seg.options, sender, prof.options_keep_liberal)

        if not flags & F_ACK:
            ack = sack = receiver.td_end
        elif flags & F_RST and ack == 0:
            ack = sack = receiver.td_end  # broken stacks: RST|ACK with ack 0

        if flags & F_RST and seq == 0 and ct.state == SYN_SENT:
            seq = end = sender.td_end  # RST answering a SYN

        maxackwin = sender.td_maxwin if sender.td_maxwin > MAXACKWINCONST else MAXACKWINCONST
        seq_ok = before(seq, (sender.td_maxend + 1) & MASK)
        ack_over_ok = before(sack, (receiver.td_end + 1) & MASK)
        ack_under_ok = after(sack, (receiver.td_end - maxackwin - 1) & MASK)
        if self.trace is not None:
            self.trace["window"] = {
                "seq": seq, "end": end, "ack": ack, "sack": sack, "win": win_raw,
                "scaled_win": (win_raw << sender.td_scale) & MASK if not flags & F_SYN else win_raw,
                "sender": _peer_dict(sender), "receiver": _peer_dict(receiver), "maxackwindow": maxackwin,
                "liberal": bool(sender.flags & BE_LIBERAL or self.settings.be_liberal),
            }

        if prof.window_lower_ignore:
            if not seq_ok:
                overshot = (end - sender.td_maxend + 1) & MASK
                in_recv_win = bool(receiver.td_maxwin) and after(end, (sender.td_end - receiver.td_maxwin - 1) & MASK)
                if (prof.exceed_window_workaround and in_recv_win and ack_under_ok
                        and overshot <= receiver.td_maxwin and ack_over_ok):
                    sender.td_end = end
                    sender.flags |= DATA_UNACKNOWLEDGED
                    return self._log_window(sender, IGNORE, "overshot", bound=overshot)
                return self._log_window(sender, INVALID, "seq_over", bound=(sender.td_maxend + 1) & MASK)
            if not ack_over_ok:
                return self._log_window(sender, INVALID, "ack_over", bound=(receiver.td_end + 1) & MASK)
            in_recv_win = not receiver.td_maxwin or after(end, (sender.td_end - receiver.td_maxwin - 1) & MASK)
            if not in_recv_win:
                return self._log_window(sender, IGNORE, "seq_under",
                                        bound=(sender.td_end - receiver.td_maxwin - 1) & MASK)
            if not ack_under_ok:
                return self._log_window(sender, IGNORE, "ack_under",
                                        bound=(receiver.td_end - maxackwin - 1) & MASK)
        else:
            in_recv_win = not receiver.td_maxwin or after(end, (sender.td_end - receiver.td_maxwin - 1) & MASK)
            if not (seq_ok and in_recv_win and ack_over_ok and ack_under_ok):
                if not seq_ok:
                    key = "seq_over"
                elif not in_recv_win:
                    key = "seq_under"
                elif not ack_over_ok:
                    key = "ack_over"
                else:
                    key = "ack_under"
                return self._log_window(sender, INVALID, key)

        # in window: update what we know
        if not flags & F_SYN:
            win = (win << sender.td_scale) & MASK
        swin = (win + ((sack - ack) & MASK)) & MASK
        if sender.td_maxwin < swin:
            sender.td_maxwin = swin
        if after(end, sender.td_end):
            sender.td_end = end
            sender.flags |= DATA_UNACKNOWLEDGED
        if flags & F_ACK:
            if not sender.flags & MAXACK_SET:
                sender.td_maxack = ack
                sender.flags |= MAXACK_SET
            elif after(ack, sender.td_maxack):
                sender.td_maxack = ack
        if receiver.td_maxwin != 0 and after(end, sender.td_maxend):
            receiver.td_maxwin = (receiver.td_maxwin + ((end - sender.td_maxend) & MASK)) & MASK
        if after((sack + win) & MASK, (receiver.td_maxend - 1) & MASK):
            receiver.td_maxend = (sack + win) & MASK
            if win == 0:
                receiver.td_maxend = (receiver.td_maxend + 1) & MASK
        if ack == receiver.td_end:
            receiver.flags &= ~DATA_UNACKNOWLEDGED
        if index == ACK_SET:
            if (ct.last_dir == direction and ct.last_seq == seq and ct.last_ack == ack
                    and ct.last_end == end and ct.last_win == win_raw):
                ct.retrans += 1
            else:
                ct.last_dir = direction
                ct.last_seq = seq
                ct.last_ack = ack
                ct.last_end = end
                ct.last_win = win_raw
                ct.retrans = 0
        return ACCEPT, None

    # -- nf_tcp_handle_invalid() (6.1+) ------------------------------------------
    def _handle_invalid(self, ct: Connection, direction: int, index: int, now: float) -> None:
        if not ct.assured or index not in (RST_SET, FIN_SET):
            return
        if ct.last_dir != direction and ct.last_index in (FIN_SET, RST_SET):
            expires = ct.expires - now
            if expires < 120:
                return
            timeout = self.settings.timeouts["unacknowledged"]
            if expires > timeout:
                ct.expires = now + timeout
        else:
            ct.last_index = index
            ct.last_dir = direction

    # -- nf_conntrack_tcp_packet() ---------------------------------------------
    def packet(self, ct: Connection, direction: int, seg: Segment, now: float) -> Outcome:
        """The verdict for `seg` on an existing (or just created) entry; updates `ct`."""
        options = seg.options
        trace = self.trace
        if trace is not None:
            trace["old_state"] = ct.state
            trace["index"] = conntrack_index(seg.flags)
            trace["new_state"] = STATE_TABLE[direction][trace["index"]][ct.state]
        elif (ct.state == ESTABLISHED and seg.flags & 0x17 == F_ACK and ct.assured
                and (not options or (len(options) == 12 and options[:4] == _TS_ONLY))):
            fast = self._established_ack(ct, direction, seg, now)
            if fast is not None:
                return fast
        prof = self.profile
        index = conntrack_index(seg.flags)
        old_state = ct.state
        new_state = STATE_TABLE[direction][index][old_state]
        skip_window = False

        if new_state == SYN_SENT and old_state >= TIME_WAIT:
            if ((ct.seen[direction].flags | ct.seen[1 - direction].flags) & CLOSE_INIT
                    or (ct.last_dir == direction and ct.last_index == RST_SET)):
                return _REOPEN
            new_state = sIG  # fallthrough to the ignore case
        if new_state == sIG:
            if (index == SYNACK_SET and ct.last_index == SYN_SET and ct.last_dir != direction
                    and seg.ack == ct.last_end):
                # a SYN/ACK answering a SYN we ignored: resync from what we noted
                old_state = SYN_SENT
                new_state = SYN_RECV
                ld = ct.seen[ct.last_dir]
                ld.td_end = ld.td_maxend = ct.last_end
                ld.td_maxwin = ct.last_win or 1
                ld.td_scale = ct.last_wscale
                ct.last_flags &= ~EXP_CHALLENGE_ACK
                ld.flags = ct.last_flags
                if prof.options_keep_liberal:
                    ct.seen[direction].reset()
                else:
                    ct.seen[direction].__init__()
            else:
                ct.last_index = index
                ct.last_dir = direction
                ct.last_seq = seg.seq
                ct.last_end = seg.end()
                ct.last_win = seg.window
                if index == SYN_SET and direction == ORIGINAL:
                    seen = PeerState()
                    ct.last_flags = ct.last_wscale = 0
                    parse_options(seg.options, seen, True)
                    if seen.flags & WINDOW_SCALE:
                        ct.last_flags |= WINDOW_SCALE
                        ct.last_wscale = seen.td_scale
                    if seen.flags & SACK_PERM:
                        ct.last_flags |= SACK_PERM
                    if old_state == LAST_ACK:
                        ct.last_flags |= EXP_CHALLENGE_ACK
                if prof.modern_rst_checks and old_state == SYN_SENT and index == ACK_SET and direction == REPLY:
                    ct.last_ack = seg.ack
                return Outcome(IGNORE, prof.message("ignored", index=index, dir=direction,
                                                    state=STATE_NAMES[old_state]))
        elif new_state == sIV:
            return Outcome(INVALID, prof.message("invalid_state", index=index, dir=direction,
                                                 state=STATE_NAMES[old_state]))
        elif new_state == TIME_WAIT:
            if (old_state == LAST_ACK and index == ACK_SET and ct.last_dir != direction
                    and ct.last_index == SYN_SET and ct.last_flags & EXP_CHALLENGE_ACK):
                ct.last_flags &= ~EXP_CHALLENGE_ACK
                return Outcome(IGNORE, prof.message("challenge_ack"))
        elif new_state == SYN_SENT2:
            ct.last_flags |= SIMULTANEOUS_OPEN
        elif new_state == SYN_RECV:
            if direction == REPLY and index == ACK_SET and ct.last_flags & SIMULTANEOUS_OPEN:
                new_state = ESTABLISHED
        elif new_state == CLOSE and index == RST_SET:
            rst, keep = self._rst_check(ct, direction, seg, old_state)
            if trace is not None:
                trace["rst_check"] = (rst, keep)
            if rst == INVALID:
                return Outcome(INVALID, prof.message("invalid_rst"))
            if keep:
                new_state = old_state
            skip_window = rst == "in_window"

        if not skip_window:
            verdict, message = self.in_window(ct, direction, index, seg)
            if verdict == IGNORE:
                return Outcome(IGNORE, message)
            if verdict == INVALID:
                if prof.handle_invalid_timeout:
                    self._handle_invalid(ct, direction, index, now)
                return Outcome(INVALID, message)

        # in window
        ct.last_index = index
        ct.last_dir = direction
        ct.state = new_state
        if old_state != new_state and new_state == FIN_WAIT:
            ct.seen[direction].flags |= CLOSE_INIT

        settings = self.settings
        state_timeout = settings.timeout(new_state)
        if ct.retrans >= settings.max_retrans and state_timeout > settings.timeouts["max_retrans"]:
            timeout = settings.timeouts["max_retrans"]
        elif index == RST_SET:
            timeout = settings.timeouts["close"]
        elif ((ct.seen[0].flags | ct.seen[1].flags) & DATA_UNACKNOWLEDGED
              and state_timeout > settings.timeouts["unacknowledged"]):
            timeout = settings.timeouts["unacknowledged"]
        elif ct.last_win == 0 and state_timeout > settings.timeouts["max_retrans"]:
            timeout = settings.timeouts["max_retrans"]
        else:
            timeout = state_timeout

        if not ct.seen_reply:
            if seg.flags & F_RST:
                return _ACCEPTED_KILL
            if prof.modern_rst_checks and index == SYN_SET and old_state == SYN_SENT:
                return _ACCEPTED  # no timeout renewal on SYN retransmit
            if new_state == ESTABLISHED and timeout > settings.timeouts["unacknowledged"]:
                timeout = settings.timeouts["unacknowledged"]
        elif not ct.assured and old_state in (SYN_RECV, ESTABLISHED) and new_state == ESTABLISHED:
            ct.assured = True
        ct.expires = now + timeout
        return _ACCEPTED

    def _established_ack(self, ct: Connection, direction: int, seg: Segment, now: float) -> Optional[Outcome]:
        """The common case — a plain ACK/data segment without options but timestamps, in window, on an
        assured ESTABLISHED entry — done inline; exactly what packet() and in_window() do for it (no SACK
        block: sack == ack). None: take the general path."""
        sender = ct.seen[direction]
        receiver = ct.seen[1 - direction]
        if sender.td_maxwin == 0:
            return None
        seq = seg.seq
        ack = seg.ack
        end = (seq + seg.datalen) & MASK
        r_end = receiver.td_end
        maxwin = sender.td_maxwin
        maxackwin = maxwin if maxwin > MAXACKWINCONST else MAXACKWINCONST
        # I. seq <= td_maxend   II. end > td_end - receiver maxwin - 1   III. ack <= r_end   IV. ack > r_end - maxackwin - 1
        if (((seq - sender.td_maxend - 1) & MASK) < 0x80000000
                or ((ack - r_end - 1) & MASK) < 0x80000000
                or (receiver.td_maxwin and ((sender.td_end - receiver.td_maxwin - 1 - end) & MASK) < 0x80000000)
                or ((r_end - maxackwin - 1 - ack) & MASK) < 0x80000000):
            return None
        win_raw = seg.window
        win = (win_raw << sender.td_scale) & MASK
        if maxwin < win:
            sender.td_maxwin = win
        flags = sender.flags
        if ((sender.td_end - end) & MASK) > 0x7FFFFFFF:
            sender.td_end = end
            flags |= DATA_UNACKNOWLEDGED
        if not flags & MAXACK_SET:
            sender.td_maxack = ack
            flags |= MAXACK_SET
        elif ((sender.td_maxack - ack) & MASK) > 0x7FFFFFFF:
            sender.td_maxack = ack
        sender.flags = flags
        if receiver.td_maxwin != 0 and ((sender.td_maxend - end) & MASK) > 0x7FFFFFFF:
            receiver.td_maxwin = (receiver.td_maxwin + ((end - sender.td_maxend) & MASK)) & MASK
        top = (ack + win) & MASK
        if ((receiver.td_maxend - 1 - top) & MASK) > 0x7FFFFFFF:
            receiver.td_maxend = top if win else (top + 1) & MASK
        if ack == r_end:
            receiver.flags &= ~DATA_UNACKNOWLEDGED
        if (ct.last_dir == direction and ct.last_seq == seq and ct.last_ack == ack
                and ct.last_end == end and ct.last_win == win_raw):
            ct.retrans += 1
        else:
            ct.last_dir = direction
            ct.last_seq = seq
            ct.last_ack = ack
            ct.last_end = end
            ct.last_win = win_raw
            ct.retrans = 0
        ct.last_index = ACK_SET
        est, est_unack, est_retrans = self._est_timeouts
        if est_retrans is not None and ct.retrans >= self.settings.max_retrans:
            timeout = est_retrans
        elif est_unack is not None and (ct.seen[0].flags | ct.seen[1].flags) & DATA_UNACKNOWLEDGED:
            timeout = est_unack
        elif est_retrans is not None and win_raw == 0:
            timeout = est_retrans
        else:
            timeout = est
        ct.expires = now + timeout
        return _ACCEPTED

    def _rst_check(self, ct: Connection, direction: int, seg: Segment, old_state: int) -> Tuple[str, bool]:
        """The TCP_CONNTRACK_CLOSE case for a RST: ('invalid'|'window'|'in_window', keep_old_state)."""
        modern = self.profile.modern_rst_checks
        if modern and ct.state in (FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE, CLOSE_WAIT):
            return "in_window", False  # tcp_can_early_drop(): tuple may be reused, skip checks
        other = ct.seen[1 - direction]
        keep = False
        if other.flags & MAXACK_SET and (not modern or ct.last_index != SYN_SET):
            seq = seg.seq
            if modern and seq == 0 and not ct.established():
                return "window", False
            ignore_rst = self.settings.ignore_invalid_rst and self.profile.has_ignore_invalid_rst
            if before(seq, other.td_maxack) and not ignore_rst:
                return INVALID, False
            if not ct.established() or seq == other.td_maxack:
                return "window", False
            if ct.last_index == ACK_SET and ct.last_dir == direction and seq == ct.last_end:
                return "window", False
            keep = True  # RST seq not exact: keep the state, a challenge ACK may follow
        if (((ct.seen_reply and ct.last_index == SYN_SET)
             or (not ct.assured and ct.last_index == ACK_SET))
                and seg.ack == ct.last_end):
            return "in_window", keep
        if (modern and old_state == SYN_SENT and ct.last_index == ACK_SET
                and ct.last_dir == REPLY and seg.seq == ct.last_ack):
            return "in_window", keep
        return "window", keep
