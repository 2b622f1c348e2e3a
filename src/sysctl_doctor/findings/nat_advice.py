"""The CT rules inside `check`: the host's NAT facts (gathered by the analysis) through the rule's `advise`."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts, nat_evidence
from sysctl_doctor.findings.model import Finding, Recommendation, Rule


def nat_findings(analysis: Analysis, rule: Rule, advise: Callable[[NatFacts], Optional[Recommendation]]
                 ) -> Iterator[Finding]:
    nat = analysis.nat
    if nat is None:
        return
    rec = advise(nat.facts)
    if rec is None:
        return
    yield Finding(rule.code, rec.severity, None, f"{rec.title}: {rec.text}{nat_evidence(nat)}", rec.fix or rule.fix)
