"""CT002: INVALID packets of DNATed connections are forwarded with their original addresses."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.findings.model import WARNING, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings

PORT_FORWARD_NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state invalid drop
\t\tct state established,related accept
\t\ttcp dport 22 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority filter;
\t}
}

table ip nat {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat;
\t\tiifname "eth0" tcp dport 8080 dnat to 10.233.1.2:80
\t}
}
"""

RULE = Rule(
    code="CT002",
    name="dnat-invalid-forwarded",
    severity=WARNING,
    title="INVALID packets of DNATed connections are forwarded un-NATed",
    rationale=(
        "This node DNATs (port forwards, Kubernetes services) to addresses behind it. A packet conntrack marks "
        "INVALID has no conntrack entry, so it keeps its original addresses and is forwarded as it is: the "
        "backend or the client receives a segment for a connection it does not know and may answer with a "
        "RST. Here the packet is forwarded, so the `ct state invalid drop` rule belongs in FORWARD; "
        "kube-proxy (iptables mode, 1.15+) installs exactly that rule for this reason. be_liberal=1 also "
        "avoids the window verdicts."
    ),
    fix=(
        "`nft add rule inet filter forward ct state invalid drop` (iptables: `-A FORWARD -m conntrack "
        "--ctstate INVALID -j DROP`), persisted in the ruleset loaded at boot."
    ),
    example=Example(
        "The incident node (be_liberal lost to the race) with a port forward (dnat) and a forward chain that "
        "accepts everything.",
        files={"/etc/nftables.conf": PORT_FORWARD_NFTABLES_CONF},
    ),
    passing=Example(
        "The same node with `ct state invalid drop` in its forward chain.",
        files={"/etc/nftables.conf": PORT_FORWARD_NFTABLES_CONF.replace(
            "hook forward priority filter;\n", "hook forward priority filter;\n\t\tct state invalid drop\n")},
    ),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if not facts.dnat or facts.liberal or "forward" in facts.invalid_drop_chains:
        return None
    return Recommendation(
        RULE.code, WARNING,
        "INVALID packets of DNATed connections are forwarded un-NATed",
        "Packets conntrack marks INVALID on DNATed connections keep their original addresses and are "
        "forwarded as they are; kube-proxy (iptables mode, 1.15+) drops them in FORWARD for this reason.",
        "`nft add rule inet filter forward ct state invalid drop` "
        "(iptables: `-A FORWARD -m conntrack --ctstate INVALID -j DROP`)",
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
