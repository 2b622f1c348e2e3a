"""CT005: kube-proxy before 1.29 drops INVALID only in FORWARD; SNAT-to-node traffic needs INPUT."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.kernel_version import version_text
from sysctl_doctor.findings.model import INFO, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings
from sysctl_doctor.findings.rules.ct001_snat_reply_reset import ACCEPTING_NFTABLES_CONF

RULE = Rule(
    code="CT005",
    name="kube-proxy-forward-only",
    severity=INFO,
    title="kube-proxy before 1.29 drops INVALID only in FORWARD",
    rationale=(
        "kube-proxy (iptables mode) has installed a `--ctstate INVALID -j DROP` rule in FORWARD since 1.15. "
        "Traffic SNATed to the node itself (pod to outside, masquerade) needs the rule in INPUT: the INVALID "
        "reply is addressed to the node. kube-proxy 1.29 adds --conntrack-tcp-be-liberal. No command detects "
        "the kube-proxy version yet (it runs in a pod): `check` reports this rule only when a caller of "
        "`advise_all()` / `run_check(nat_facts=...)` supplies the version."
    ),
    fix=(
        "Add the INPUT rule yourself (`-A INPUT -m conntrack --ctstate INVALID -j DROP`), or upgrade "
        "kube-proxy to 1.29+ and run it with --conntrack-tcp-be-liberal."
    ),
    example=Example(
        "The CT001 node (input accepts everything, masquerade) running kube-proxy 1.28.",
        files={"/etc/nftables.conf": ACCEPTING_NFTABLES_CONF},
        nat_facts={"kube_proxy": (1, 28)},
    ),
    passing=Example(
        "The same node running kube-proxy 1.29 with --conntrack-tcp-be-liberal.",
        files={"/etc/nftables.conf": ACCEPTING_NFTABLES_CONF},
        nat_facts={"kube_proxy": (1, 29), "kube_proxy_be_liberal_flag": True},
    ),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if facts.kube_proxy is None or facts.kube_proxy >= (1, 29) or facts.liberal or not facts.snat_to_node:
        return None
    return Recommendation(
        RULE.code, INFO,
        f"kube-proxy {version_text(facts.kube_proxy)} drops INVALID only in FORWARD",
        "kube-proxy's INVALID DROP rule (since 1.15) is in FORWARD; traffic SNATed to the node itself "
        "needs the rule in INPUT. kube-proxy 1.29 adds --conntrack-tcp-be-liberal.",
        "add the INPUT rule yourself, or upgrade kube-proxy to 1.29+ and run it with "
        "--conntrack-tcp-be-liberal",
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
