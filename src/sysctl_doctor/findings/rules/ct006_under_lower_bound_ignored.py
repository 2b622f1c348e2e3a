"""CT006: logged "under lower bound" segments were only IGNOREd on 6.1+ (no mitigation needed)."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.kernel_version import version_text
from sysctl_doctor.findings.model import INFO, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings

RULE = Rule(
    code="CT006",
    name="under-lower-bound-ignored",
    severity=INFO,
    title="Logged \"under lower bound\" segments were only ignored (6.1+)",
    rationale=(
        "The kernel log has conntrack lines \"SEQ is under the lower bound\" / \"ACK is under the lower bound\" "
        "(the seed incident's line). From 6.1 these segments are IGNOREd, not INVALID: the connection keeps "
        "its conntrack entry and its NAT, and no RST follows. They need no mitigation on this kernel (before "
        "6.1 they are INVALID and CT001 applies). The counts are what `sysctl-doctor conntrack logs` reports "
        "per reason; `check` does not read the kernel log, so it reports this rule only when a caller of "
        "`advise_all()` / `run_check(nat_facts=...)` supplies them."
    ),
    fix="Nothing to do for these lines; look for \"over upper bound\" lines instead (CT001).",
    example=Example(
        "The incident node (kernel 6.1) whose kernel log showed 3 \"SEQ is under the lower bound\" lines.",
        nat_facts={"logged_reasons": {"seq-under-lower-bound": 3}},
    ),
    passing=Example(
        "The same node whose log showed only \"SEQ is over upper bound\" lines (INVALID on every kernel).",
        nat_facts={"logged_reasons": {"seq-over-upper-bound": 2}},
    ),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if not (facts.snat_to_node or facts.dnat) or not facts.kernel_known or not facts.modern:
        return None
    count = facts.logged_reasons.get("seq-under-lower-bound", 0) + facts.logged_reasons.get(
        "ack-under-lower-bound", 0)
    if not count:
        return None
    return Recommendation(
        RULE.code, INFO,
        f"{count} logged \"under lower bound\" segments were only ignored",
        f"On {version_text(facts.kernel)} (6.1+) retransmitted or delayed segments under the window's lower "
        "bound are IGNOREd: the connection keeps its entry and NAT, no RST. They need no mitigation.",
        None,
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
