"""SD111: a line in a sysctl.d file that is not an assignment."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

RULE = Rule(
    code="SD111",
    name="not-an-assignment",
    severity=WARNING,
    title="A line is not an assignment",
    rationale=(
        "Every non-comment line of a sysctl.d file must be `key = value`, `-key = value` or (systemd) "
        "`-key`. systemd-sysctl warns \"Line is not an assignment, ignoring\" and carries on; procps "
        "reports a syntax error. Whatever was meant by the line is not applied."
    ),
    fix="Rewrite the line as key = value, or comment it out with # or ;.",
    example=Example(
        "A line without '='.",
        files={"/etc/sysctl.d/60-local.conf": "net.ipv4.ip_forward 1\n"},
    ),
    passing=Example("The incident node: every line parses."),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    from sysctl_doctor.config.sysctl_lines import INVALID_LINE

    # Only lines that are not assignments: the reader's other remarks (a file read twice by procps, bytes
    # that are not UTF-8, a cut file, ...) are notes of `check`, not this finding with its fix.
    for diagnostic in analysis.config.diagnostics:
        if diagnostic.kind != INVALID_LINE:
            continue
        yield Finding(RULE.code, RULE.severity, None, diagnostic.message, RULE.fix, diagnostic.file, diagnostic.line)
