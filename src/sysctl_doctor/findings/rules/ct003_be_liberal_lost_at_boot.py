"""CT003: be_liberal is on now (by hand) but the configuration will not re-apply it after a reboot."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.findings.model import ERROR, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings

RULE = Rule(
    code="CT003",
    name="be-liberal-lost-at-boot",
    severity=ERROR,
    title="be_liberal is on now but will be off after the next boot",
    rationale=(
        "On a host that does NAT, net.netfilter.nf_conntrack_tcp_be_liberal=1 is set now (typically by hand, "
        "`sysctl -w`, after an incident), so the resets stopped. But the configuration does not make it hold "
        "after a reboot: the key exists only once nf_conntrack is loaded, and at boot the module is loaded "
        "after (or racing) the sysctl step, or the key is not configured at all. The resets come back after "
        "the next reboot, which is exactly the seed incident. The key's own finding (SD101, SD102, SD103, "
        "SD114) names the cause."
    ),
    fix=(
        "Configure the key in /etc/sysctl.d/ and load nf_conntrack from /etc/modules-load.d/ (or add a udev "
        "rule that re-runs systemd-sysctl --prefix=/net/netfilter when it loads): `sysctl-doctor fix` writes "
        "either."
    ),
    example=Example(
        "The incident node with be_liberal=1 set by hand on the running system (live value 1).",
        live_values={"net/netfilter/nf_conntrack_tcp_be_liberal": "1"},
    ),
    passing=Example(
        "The same node with nf_conntrack listed for systemd-modules-load.",
        files={"/etc/modules-load.d/conntrack.conf": "nf_conntrack\n"},
        live_values={"net/netfilter/nf_conntrack_tcp_be_liberal": "1"},
    ),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if not (facts.snat_to_node or facts.dnat):
        return None
    if not facts.be_liberal or facts.liberal_after_boot is not False or facts.kube_liberal:
        return None
    why = (f" It is {facts.be_liberal_void}." if facts.be_liberal_void else "")
    return Recommendation(
        RULE.code, ERROR,
        "be_liberal is on now but will be off after the next boot",
        "net.netfilter.nf_conntrack_tcp_be_liberal=1 is set, but the configuration does not re-apply it "
        "after nf_conntrack loads at boot: the resets come back after a reboot." + why,
        "load nf_conntrack from /etc/modules-load.d/ (or add a udev rule that re-runs systemd-sysctl "
        "--prefix=/net/netfilter); `sysctl-doctor check` shows the exact fix",
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
