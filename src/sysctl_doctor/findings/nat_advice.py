"""The CT rules inside `check`: the host's NAT facts (gathered by the engine) through the rule's `advise`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List

from sysctl_doctor.findings.model import Finding, Rule


@dataclass
class HostNat:
    """What `check` knows about the host's NAT: the facts the CT rules read, and where they come from."""

    facts: object  # sysctl_doctor.conntrack.nat_facts.NatFacts
    source: str  # "the running rules (nft, iptables-save)" or the ruleset files of the root
    snat: List[str] = field(default_factory=list)  # "file:line `rule`" of masquerade/snat rules
    dnat: List[str] = field(default_factory=list)
    invalid_dropped: dict = field(default_factory=dict)  # hook -> what drops INVALID there


    @property
    def does_nat(self) -> bool:
        return bool(self.snat or self.dnat)

    def summary(self) -> str:
        """One line: what NAT the host does and where INVALID is dropped, with the rules behind it."""
        return _evidence(self).strip(" []")


def _evidence(nat: HostNat) -> str:
    parts = []
    if nat.snat:
        parts.append("SNAT: " + "; ".join(nat.snat[:2]) + (" …" if len(nat.snat) > 2 else ""))
    if nat.dnat:
        parts.append("DNAT: " + "; ".join(nat.dnat[:2]) + (" …" if len(nat.dnat) > 2 else ""))
    for hook, why in sorted(nat.invalid_dropped.items()):
        parts.append(f"INVALID dropped in {hook} by {why}")
    return f" [{nat.source}: " + ", ".join(parts) + "]" if parts else f" [{nat.source}]"


def nat_findings(analysis, rule: Rule, advise) -> Iterator[Finding]:  # type: ignore[no-untyped-def]
    nat = getattr(analysis, "nat", None)
    if nat is None:
        return
    rec = advise(nat.facts)
    if rec is None:
        return
    yield Finding(rule.code, rec.severity, None, f"{rec.title}: {rec.text}{_evidence(nat)}", rec.fix or rule.fix)
