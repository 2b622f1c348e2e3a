"""What to do about conntrack INVALID resets on a NAT host: facts in, recommendations out.

A pure function (`recommend`) for `check` on hosts that do NAT and for the
conntrack commands; the rules themselves (text, severity, documentation) live
in `sysctl_doctor.findings.rules` as CT001-CT006. The reasoning, verified in `sysctl-doctor lab` on 6.18:

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
    be_liberal_void: Optional[str] = None  # why a configured be_liberal=1 will not hold after boot (from `check`)

    @property
    def kernel_known(self) -> bool:
        return self.kernel != (0, 0)

    @property
    def modern(self) -> bool:
        """6.1+: under-lower-bound segments are IGNOREd, not INVALID (unknown kernel: assumed)."""
        return self.kernel >= (6, 1) or not self.kernel_known

    @property
    def kube_liberal(self) -> bool:
        return bool(self.kube_proxy and self.kube_proxy >= (1, 29) and self.kube_proxy_be_liberal_flag)

    @property
    def liberal_now(self) -> bool:
        return bool(self.be_liberal) or self.kube_liberal

    @property
    def liberal(self) -> bool:
        """be_liberal holds: now (live), or after boot when the current value is unknown (an offline root)."""
        return self.liberal_now or (self.be_liberal is None and self.be_liberal_after_boot is True)

    @property
    def liberal_after_boot(self) -> bool:
        return self.be_liberal_after_boot if self.be_liberal_after_boot is not None else self.liberal_now


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


def version_text(v: Tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def recommend(facts: NatFacts) -> List[Recommendation]:
    """Recommendations for a host with the given NAT facts, most severe first.

    Each code is a finding rule (`sysctl_doctor.findings.rules.ct00N_*`: its documentation and its
    `advise(facts)`); `sysctl-doctor check` reports them on hosts that do NAT, `explain CT001` documents them.
    """
    from sysctl_doctor.findings.registry import CT_RULE_MODULES

    out = [r for r in (module.advise(facts) for module in CT_RULE_MODULES) if r is not None]
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(out, key=lambda r: (order[r.severity], r.code))
