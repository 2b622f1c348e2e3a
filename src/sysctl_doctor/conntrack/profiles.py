"""Kernel profiles for the conntrack TCP model: what differs between kernel versions.

The TCP tracker (net/netfilter/nf_conntrack_proto_tcp.c) changed in ways that
decide whether a packet is INVALID or what it logs. Two profiles cover the
versions operators run (``modern`` has a 6.1–6.6 and a ≥ 6.7 variant); each
names the commits that make the difference.

``legacy`` — Linux ≤ 6.0 (read from v5.10):
  * every out-of-window case of ``tcp_in_window()`` is INVALID, logged as
    "SEQ is under the lower bound (already ACKed data retransmitted)",
    "SEQ is over the upper bound (over the window of the receiver)",
    "ACK is under the lower bound (possible overly delayed ACK)",
    "ACK is over the upper bound (ACKed data not seen yet)";
  * packets the state table ignores log "invalid packet ignored in state S",
    invalid transitions log "invalid state"; an invalid new packet is not logged;
  * ``tcp_options()`` clears every flag (also BE_LIBERAL) when options are present;
  * a SYN_SENT/ORIGINAL or SYN_RECV/REPLY packet ending beyond td_end re-inits
    the sender, SYN flag or not; the window scale is dropped in either direction;
  * the RST check has no early-drop shortcut and no SYN/challenge-ACK exceptions.
  ``nf_conntrack_tcp_ignore_invalid_rst`` exists from 5.14 (commit "netfilter:
  conntrack: add new sysctl to disable RST check").

``modern`` — Linux ≥ 6.1 (read from Debian's 6.1.192 and 6.12.95 sources and a 6.16+ tree; validated
packet by packet on 6.18 in network namespaces):
  * d9a6f0d0df18 "netfilter: conntrack: prepare tcp_in_window for ternary return value"
  * 6e250dcbff1d "netfilter: conntrack: ignore overly delayed tcp packets": "SEQ is
    under lower bound N" and "ignored ACK under lower bound N" return IGNORE — the
    packet keeps its conntrack entry (NAT still applies) but changes no state;
    "SEQ is over upper bound N" and "ACK is over upper bound N" stay INVALID;
  * 09a59001b0d6 "netfilter: conntrack: remove unneeded indent level"
  * "netfilter: conntrack: reduce timeout when receiving out-of-window fin or rst"
    (``nf_tcp_handle_invalid``);
  * the exceeded-receive-window work-around ("N bytes more than expected"):
    a SEQ-over packet that is otherwise in window moves td_end and is IGNOREd;
  * log texts carry the bound: "SEQ is over upper bound %u (...)"; the state table
    logs "packet (index I) in dir D ignored|invalid, state S"; "invalid new".
  * 6ac9c51eebe8 "netfilter: conntrack: prefer tcp_error_log to pr_debug" (v6.7): a packet
    that cannot make a new entry (RST, FIN, SYN/ACK or a bare flag set with no entry — also
    the NAT box's own RST for a reply it found INVALID) is logged as "invalid new". 6.1–6.6
    only pr_debug it: nothing in the log (the 6.1 label, read from 6.1.192).
  ``be_liberal`` turns every window verdict into ACCEPT (without updating the
  window) in both profiles, but not the state table, tcp_error() or "invalid rst".

Common to every modelled version (v5.10, 6.1.192, 6.12.95, 6.18):
  * tcp_error(): "truncated packet", then — with ``nf_conntrack_checksum=1``, in the
    PRE_ROUTING hook only — "bad checksum" (nf_checksum(); CHECKSUM_UNNECESSARY and
    CHECKSUM_PARTIAL skbs are not recomputed), then "invalid tcp flag combination";
  * tcp_new() with ``nf_conntrack_tcp_loose=0`` refuses to pick up a non-SYN packet
    without logging anything (and so for every later packet of that flow: none makes an
    entry; a RST, FIN or SYN/ACK among them is "invalid new" from 6.7); with loose=1 the
    picked-up entry starts with BE_LIBERAL in both directions and the first packet's
    sender — the server's, if its packet comes first — is ORIGINAL;
  * a SYN/ACK that acknowledges a SYN conntrack ignored resynchronises the entry from
    that SYN (the server may answer a retransmitted SYN with a new ISN).
Not found in 6.18 (checked in the netns): the proposed "ignored SYN with SEQ before the
previous one" / IP_CT_TCP_REINIT change (netfilter-devel, Feb 2025): a SYN with a lower
sequence in SYN_SENT is still judged by the window checks, with no such line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.kernel_version import KernelVersion


@dataclass(frozen=True)
class KernelProfile:
    """How one range of kernel versions tracks TCP."""

    name: str  # "legacy" or "modern"
    label: str  # "≤ 6.0", "≥ 6.1"
    version: Tuple[int, int]  # the version asked for (or the profile's reference)
    window_lower_ignore: bool  # SEQ/ACK under lower bound → IGNORE (6.1+)
    exceed_window_workaround: bool  # "N bytes more than expected"
    has_ignore_invalid_rst: bool  # 5.14+
    options_keep_liberal: bool  # tcp_options() keeps BE_LIBERAL (6.x)
    modern_syn_reinit: bool  # SYN-only re-init of the sender, REPLY-only scale reset
    modern_rst_checks: bool  # early-drop shortcut, SYN/challenge-ACK exceptions
    handle_invalid_timeout: bool  # nf_tcp_handle_invalid
    messages: Dict[str, Optional[str]] = field(default_factory=dict)
    commits: Tuple[str, ...] = ()

    def message(self, key: str, **values: object) -> Optional[str]:
        template = self.messages.get(key)
        if template is None:
            return None
        return template.format(**values)


_LEGACY_MESSAGES: Dict[str, Optional[str]] = {
    "seq_over": "SEQ is over the upper bound (over the window of the receiver)",
    "seq_under": "SEQ is under the lower bound (already ACKed data retransmitted)",
    "ack_over": "ACK is over the upper bound (ACKed data not seen yet)",
    "ack_under": "ACK is under the lower bound (possible overly delayed ACK)",
    "overshot": None,
    "ignored": "invalid packet ignored in state {state}",
    "invalid_state": "invalid state",
    "invalid_rst": "invalid rst",
    "challenge_ack": "challenge-ack ignored",
    "truncated": "truncated packet",
    "bad_checksum": "bad checksum",
    "bad_flags": "invalid tcp flag combination",
    "invalid_new": None,
    "no_pickup": None,
}

_MODERN_MESSAGES: Dict[str, Optional[str]] = {
    "seq_over": "SEQ is over upper bound {bound} (over the window of the receiver)",
    "seq_under": "SEQ is under lower bound {bound} (already ACKed data retransmitted)",
    "ack_over": "ACK is over upper bound {bound} (ACKed data not seen yet)",
    "ack_under": "ignored ACK under lower bound {bound} (possible overly delayed)",
    "overshot": "{bound} bytes more than expected",
    "ignored": "packet (index {index}) in dir {dir} ignored, state {state}",
    "invalid_state": "packet (index {index}) in dir {dir} invalid, state {state}",
    "invalid_rst": "invalid rst",
    "challenge_ack": "challenge-ack ignored",
    "truncated": "truncated packet",
    "bad_checksum": "bad checksum",
    "bad_flags": "invalid tcp flag combination",
    "invalid_new": "invalid new",
    "no_pickup": None,
}


def legacy_profile(version: Tuple[int, int] = (5, 10)) -> KernelProfile:
    return KernelProfile(
        name="legacy",
        label="≤ 6.0",
        version=version,
        window_lower_ignore=False,
        exceed_window_workaround=False,
        has_ignore_invalid_rst=version >= (5, 14),
        options_keep_liberal=False,
        modern_syn_reinit=False,
        modern_rst_checks=False,
        handle_invalid_timeout=False,
        messages=dict(_LEGACY_MESSAGES),
        commits=(),
    )


def modern_profile(version: Tuple[int, int] = (6, 18)) -> KernelProfile:
    messages = dict(_MODERN_MESSAGES)
    if version < (6, 7):
        messages["invalid_new"] = None  # pr_debug only until 6ac9c51eebe8
    return KernelProfile(
        name="modern",
        label="≥ 6.7" if version >= (6, 7) else "6.1–6.6",
        version=version,
        window_lower_ignore=True,
        exceed_window_workaround=True,
        has_ignore_invalid_rst=True,
        options_keep_liberal=True,
        modern_syn_reinit=True,
        modern_rst_checks=True,
        handle_invalid_timeout=True,
        messages=messages,
        commits=(
            "d9a6f0d0df18 netfilter: conntrack: prepare tcp_in_window for ternary return value",
            "6e250dcbff1d netfilter: conntrack: ignore overly delayed tcp packets",
            "09a59001b0d6 netfilter: conntrack: remove unneeded indent level",
            "netfilter: conntrack: reduce timeout when receiving out-of-window fin or rst",
        ) + (("6ac9c51eebe8 netfilter: conntrack: prefer tcp_error_log to pr_debug",)
             if version >= (6, 7) else ()),
    )


def parse_kernel_version(text: str) -> Tuple[int, int]:
    """(major, minor) of "6.18", "5.10.0-28-amd64", "6.18.44-fc-v657"; an error for anything else."""
    version = KernelVersion.parse(text)
    if version is None:
        raise DoctorError(f"not a kernel version: {text!r} (expected e.g. 5.10 or 6.18)")
    return version


def profile_for(kernel: str) -> KernelProfile:
    """The profile for a kernel version or release string."""
    version = parse_kernel_version(kernel)
    if version >= (6, 1):
        return modern_profile(version)
    if version < (3, 0):
        raise DoctorError(f"kernel {kernel}: versions before 3.0 are not modelled")
    return legacy_profile(version)
