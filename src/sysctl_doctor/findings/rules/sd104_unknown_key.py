"""SD104: no part of the kernel provides the key."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule

RULE = Rule(
    code="SD104",
    name="unknown-key",
    severity=ERROR,
    title="No built-in code, module or interface provides this key",
    rationale=(
        "The key is not registered by the kernel, by any module of the kernel build, nor by a network "
        "interface: most often a typo, or a key removed or renamed in this kernel. The sysctl step skips "
        "it (systemd-sysctl logs \"Couldn't write\", procps under --system stays silent)."
    ),
    fix="Correct the key's spelling (the finding suggests the nearest known key) or remove the line.",
    example=Example(
        "A typo in a drop-in (netfliter for netfilter).",
        files={"/etc/sysctl.d/60-conntrack.conf": "net.netfliter.nf_conntrack_tcp_be_liberal = 1\n"},
    ),
    passing=Example("The incident node: every key is known."),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.UNKNOWN_KEY:
            continue
        suggestion = p.provider.suggestion
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        message = f"{p.key} ({p.file}:{p.line}) is not provided by kernel {analysis.kernel}{hint}"
        fix = f"Replace it with {suggestion} or remove the line." if suggestion else RULE.fix
        yield Finding(RULE.code, RULE.severity, p.key, message, fix, p.file, p.line)
