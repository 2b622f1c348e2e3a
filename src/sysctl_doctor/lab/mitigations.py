"""The mitigations the lab tries on the NAT box, as plain data.

Each is applied inside the fresh NAT namespace only (per-netns sysctl or an
nft chain), so nothing on the host changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass(frozen=True)
class Mitigation:
    name: str
    title: str
    netns_sysctls: Dict[str, str] = field(default_factory=dict)  # slash path -> value, NAT netns only
    nft_chains: Dict[str, str] = field(default_factory=dict)  # hook -> rule, added to the NAT table


MITIGATIONS: List[Mitigation] = [
    Mitigation("none", "no mitigation"),
    Mitigation(
        "be-liberal", "net.netfilter.nf_conntrack_tcp_be_liberal=1",
        netns_sysctls={"net/netfilter/nf_conntrack_tcp_be_liberal": "1"},
    ),
    Mitigation(
        "drop-invalid-input", "ct state invalid drop in the INPUT hook",
        nft_chains={"input": "ct state invalid counter drop"},
    ),
    Mitigation(
        "drop-invalid-forward", "ct state invalid drop in the FORWARD hook (kube-proxy's rule)",
        nft_chains={"forward": "ct state invalid counter drop"},
    ),
]

BY_NAME: Dict[str, Mitigation] = {m.name: m for m in MITIGATIONS}


def select_mitigations(name: str) -> List[Mitigation]:
    """`all` → every mitigation (none first); otherwise the one named."""
    if name == "all":
        return list(MITIGATIONS)
    return [BY_NAME[name]]
