"""CT004: be_liberal holds, so out-of-window segments are accepted (what it does and does not cover)."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.findings.model import INFO, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings

RULE = Rule(
    code="CT004",
    name="be-liberal-mitigates",
    severity=INFO,
    title="be_liberal accepts out-of-window segments",
    rationale=(
        "On a host that does NAT, net.netfilter.nf_conntrack_tcp_be_liberal=1 holds (now, and after boot as "
        "`check` predicts it), or kube-proxy 1.29+ runs with --conntrack-tcp-be-liberal: conntrack accepts TCP "
        "segments outside the window instead of marking them INVALID, so the NAT reset cannot happen that way. "
        "It does not cover \"invalid rst\", malformed packets (tcp_error) or state-table INVALIDs. kube-proxy "
        "with that flag installs no INVALID DROP rule in FORWARD."
    ),
    fix="Nothing to do for window INVALIDs; keep the key applied at boot (see the key's findings in `check`).",
    example=Example(
        "The incident node with nf_conntrack listed for systemd-modules-load (be_liberal=1 applied at boot).",
        files={"/etc/modules-load.d/conntrack.conf": "nf_conntrack\n"},
    ),
    passing=Example("The incident node as it is: be_liberal lost to the nftables.service race."),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if not (facts.snat_to_node or facts.dnat) or not facts.liberal:
        return None
    who = "kube-proxy's --conntrack-tcp-be-liberal" if facts.kube_liberal else "nf_conntrack_tcp_be_liberal=1"
    skipped = " kube-proxy then installs no INVALID DROP rule in FORWARD." if facts.kube_liberal else ""
    return Recommendation(
        RULE.code, INFO,
        "be_liberal accepts out-of-window segments",
        f"With {who} conntrack accepts segments outside the TCP window instead of marking them INVALID, "
        "so the reset cannot happen that way. It does not cover \"invalid rst\", malformed packets "
        "(tcp_error) or state-table INVALIDs." + skipped,
        None,
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
