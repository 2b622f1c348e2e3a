"""Kernel profiles for the conntrack TCP model: what differs between kernel versions.

The TCP tracker (net/netfilter/nf_conntrack_proto_tcp.c) changed in ways that
decide whether a packet is INVALID. Two profiles cover the versions operators
run; each names the commits that make the difference.

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

``modern`` — Linux ≥ 6.1 (read from 6.1.y and a 6.16+ tree; validated on 6.18):
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
  ``be_liberal`` turns every window verdict into ACCEPT (without updating the
  window) in both profiles, but not the state table, tcp_error() or "invalid rst".
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
    return KernelProfile(
        name="modern",
        label="≥ 6.1",
        version=version,
        window_lower_ignore=True,
        exceed_window_workaround=True,
        has_ignore_invalid_rst=True,
        options_keep_liberal=True,
        modern_syn_reinit=True,
        modern_rst_checks=True,
        handle_invalid_timeout=True,
        messages=dict(_MODERN_MESSAGES),
        commits=(
            "d9a6f0d0df18 netfilter: conntrack: prepare tcp_in_window for ternary return value",
            "6e250dcbff1d netfilter: conntrack: ignore overly delayed tcp packets",
            "09a59001b0d6 netfilter: conntrack: remove unneeded indent level",
            "netfilter: conntrack: reduce timeout when receiving out-of-window fin or rst",
        ),
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
