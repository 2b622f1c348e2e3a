"""SD108: the running value differs from the configured one (live host only)."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

RULE = Rule(
    code="SD108",
    name="drift",
    severity=WARNING,
    title="The live value differs from the configured value",
    rationale=(
        "On a running host the value in /proc/sys is not what the configuration says: it was changed by "
        "hand (sysctl -w), by a daemon (container runtimes and Kubernetes agents set some keys), or the "
        "configuration changed since boot. The next boot will change it back, or the configuration does "
        "not describe the host you are running."
    ),
    fix="Decide which value is right: apply the configuration (`sysctl --system`), or put the live value in /etc/sysctl.d/.",
    example=Example(
        "ip_forward configured 1 but 0 on the running host.",
        live_values={"net/ipv4/ip_forward": "0", "net/netfilter/nf_conntrack_tcp_be_liberal": "1"},
    ),
    passing=Example(
        "The running host matches.",
        live_values={"net/ipv4/ip_forward": "1", "net/netfilter/nf_conntrack_tcp_be_liberal": "1"},
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    if not analysis.live:
        return
    for p in analysis.fates:
        if p.live is None or p.verdict == "glob":
            continue
        if p.live.split() != p.configured.split():
            message = f"{p.key} is {p.live} on this host, configured {p.configured} ({p.file}:{p.line})"
            yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
