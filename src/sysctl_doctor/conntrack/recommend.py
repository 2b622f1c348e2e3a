"""What to do about conntrack INVALID resets on a NAT host: facts in, recommendations out.

A pure function (`recommend`) for `check` on hosts that do NAT and for the
conntrack commands. The reasoning, verified in `sysctl-doctor lab` on 6.18:

- Kernels before 6.1 mark every out-of-window TCP segment INVALID, including a
  retransmission of already-ACKed data ("SEQ is under the lower bound") — the
  seed incident. From 6.1 "SEQ/ACK under lower bound" is IGNOREd (entry and NAT
  kept, no RST); "SEQ/ACK over upper bound" is still INVALID on every kernel.
- An INVALID packet has no conntrack entry, so NAT is not reversed. When the
  node itself is the SNAT address (masquerade: pod → outside), the reply is
  addressed to the node, goes up its INPUT path, and the node's stack answers
  with a RST that kills the connection at both ends. A ``ct state invalid
  drop`` rule must sit in INPUT for that; a FORWARD rule never sees it. For
  DNAT (service → pod) the packet is forwarded, so FORWARD is the right chain.
- ``nf_conntrack_tcp_be_liberal=1`` turns the window verdicts into ACCEPT
  (it does not cover "invalid rst", tcp_error() checks or state-table
  INVALIDs); it must survive reboots (the nf_conntrack module-load race that
  `check` explains).
- kube-proxy (iptables mode) drops ``ctstate INVALID`` in FORWARD since 1.15;
  1.29 added ``--conntrack-tcp-be-liberal``, which sets be_liberal and then
  skips that DROP rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet, List, Mapping, Optional, Tuple

INFO = "info"
WARNING = "warning"
ERROR = "error"


@dataclass(frozen=True)
class NatFacts:
    kernel: Tuple[int, int]  # (major, minor) of the running or target kernel
    snat_to_node: bool = False  # the node masquerades/SNATs to its own address
    dnat: bool = False  # the node DNATs (services, port forwards) to addresses behind it
    be_liberal: Optional[bool] = None  # net.netfilter.nf_conntrack_tcp_be_liberal now (None: unknown)
    be_liberal_after_boot: Optional[bool] = None  # what `check` predicts after the next boot
    invalid_drop_chains: FrozenSet[str] = frozenset()  # "input", "forward": where ct state invalid is dropped
    kube_proxy: Optional[Tuple[int, int]] = None  # kube-proxy version, iptables mode
    kube_proxy_be_liberal_flag: bool = False  # kube-proxy runs with --conntrack-tcp-be-liberal
    logged_reasons: Mapping[str, int] = field(default_factory=dict)  # reason code -> count (conntrack logs)


@dataclass(frozen=True)
class Recommendation:
    code: str
    severity: str  # info | warning | error
    title: str
    text: str
    fix: Optional[str] = None


def kernel_version(release: str) -> Tuple[int, int]:
    """(major, minor) of a release string like ``6.18.44-fc-v657``."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _version(v: Tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def recommend(facts: NatFacts) -> List[Recommendation]:
    """Recommendations for a host with the given NAT facts, most severe first."""
    out: List[Recommendation] = []
    modern = facts.kernel >= (6, 1)
    if not (facts.snat_to_node or facts.dnat):
        return out
    kube_liberal = bool(facts.kube_proxy and facts.kube_proxy >= (1, 29) and facts.kube_proxy_be_liberal_flag)
    liberal_now = bool(facts.be_liberal) or kube_liberal
    liberal_after_boot = facts.be_liberal_after_boot if facts.be_liberal_after_boot is not None else liberal_now
    input_drop = "input" in facts.invalid_drop_chains
    forward_drop = "forward" in facts.invalid_drop_chains

    if facts.snat_to_node and not liberal_now and not input_drop:
        under = "" if modern else (
            f" On {_version(facts.kernel)} this includes retransmissions of already-ACKed data "
            "(\"SEQ is under the lower bound\", the seed incident); 6.1 and later ignore those.")
        forward_note = (" The INVALID drop rule in FORWARD does not help: the segment is addressed to "
                        "this node and never forwarded.") if forward_drop else ""
        out.append(Recommendation(
            "CT001", ERROR if not modern else WARNING,
            "out-of-window replies to SNATed connections reset them",
            "This node is the SNAT address: a reply conntrack marks INVALID is not de-NATed, reaches the "
            "node's own stack and is answered with a RST, which resets the connection at both ends. "
            "Segments over the receiver's window (\"SEQ is over upper bound\") are INVALID on every kernel."
            + under + forward_note,
            "drop them before the stack sees them: `nft add rule inet filter input ct state invalid drop` "
            "(iptables: `-A INPUT -m conntrack --ctstate INVALID -j DROP`), or set "
            "net.netfilter.nf_conntrack_tcp_be_liberal=1 so that it survives reboot "
            "(see `sysctl-doctor check`)",
        ))
    if facts.dnat and not liberal_now and not forward_drop:
        out.append(Recommendation(
            "CT002", WARNING,
            "INVALID packets of DNATed connections are forwarded un-NATed",
            "Packets conntrack marks INVALID on DNATed connections keep their original addresses and are "
            "forwarded as they are; kube-proxy (iptables mode, 1.15+) drops them in FORWARD for this reason.",
            "`nft add rule inet filter forward ct state invalid drop` "
            "(iptables: `-A FORWARD -m conntrack --ctstate INVALID -j DROP`)",
        ))
    if facts.be_liberal and liberal_after_boot is False and not kube_liberal:
        out.append(Recommendation(
            "CT003", ERROR,
            "be_liberal is on now but will be off after the next boot",
            "net.netfilter.nf_conntrack_tcp_be_liberal=1 is set, but the configuration does not re-apply it "
            "after nf_conntrack loads at boot: the resets come back after a reboot.",
            "load nf_conntrack from /etc/modules-load.d/ (or add a udev rule that re-runs systemd-sysctl "
            "--prefix=/net/netfilter); `sysctl-doctor check` shows the exact fix",
        ))
    if liberal_now:
        who = "kube-proxy's --conntrack-tcp-be-liberal" if kube_liberal else "nf_conntrack_tcp_be_liberal=1"
        skipped = (" kube-proxy then installs no INVALID DROP rule in FORWARD." if kube_liberal else "")
        out.append(Recommendation(
            "CT004", INFO,
            "be_liberal accepts out-of-window segments",
            f"With {who} conntrack accepts segments outside the TCP window instead of marking them INVALID, "
            "so the reset cannot happen that way. It does not cover \"invalid rst\", malformed packets "
            "(tcp_error) or state-table INVALIDs." + skipped,
            None,
        ))
    if facts.kube_proxy is not None and facts.kube_proxy < (1, 29) and not liberal_now and facts.snat_to_node:
        out.append(Recommendation(
            "CT005", INFO,
            f"kube-proxy {_version(facts.kube_proxy)} drops INVALID only in FORWARD",
            "kube-proxy's INVALID DROP rule (since 1.15) is in FORWARD; traffic SNATed to the node itself "
            "needs the rule in INPUT. kube-proxy 1.29 adds --conntrack-tcp-be-liberal.",
            "add the INPUT rule yourself, or upgrade kube-proxy to 1.29+ and run it with "
            "--conntrack-tcp-be-liberal",
        ))
    under_count = facts.logged_reasons.get("seq-under-lower-bound", 0) + facts.logged_reasons.get(
        "ack-under-lower-bound", 0)
    if modern and under_count:
        out.append(Recommendation(
            "CT006", INFO,
            f"{under_count} logged \"under lower bound\" segments were only ignored",
            f"On {_version(facts.kernel)} (6.1+) retransmitted or delayed segments under the window's lower "
            "bound are IGNOREd: the connection keeps its entry and NAT, no RST. They need no mitigation.",
            None,
        ))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(out, key=lambda r: (order[r.severity], r.code))
