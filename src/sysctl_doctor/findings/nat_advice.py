"""The CT rules inside `check`: the host's NAT facts (gathered by the analysis) through the rule's `advise`."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.conntrack.nat_facts import nat_evidence
from sysctl_doctor.findings.model import Finding, Rule


def nat_findings(analysis, rule: Rule, advise) -> Iterator[Finding]:  # type: ignore[no-untyped-def]
    nat = getattr(analysis, "nat", None)
    if nat is None:
        return
    rec = advise(nat.facts)
    if rec is None:
        return
    yield Finding(rule.code, rec.severity, None, f"{rec.title}: {rec.text}{nat_evidence(nat)}", rec.fix or rule.fix)
