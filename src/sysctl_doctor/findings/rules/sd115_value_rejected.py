"""SD115: the kernel refuses the configured value, so the write fails."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule

RULE = Rule(
    code="SD115",
    name="value-rejected",
    severity=ERROR,
    title="The kernel refuses the configured value: the write fails",
    rationale=(
        "Keys such as net.ipv4.tcp_congestion_control and net.core.default_qdisc take a name, and writing a "
        "name the kernel does not know makes it try to load a module (tcp_<name>, sch_<name>); when no such "
        "module exists the write fails with ENOENT and the key keeps its previous value. systemd-sysctl and "
        "`sysctl --system` write the value exactly as it is in the file, quotes included, so `\"fq\"` is not "
        "`fq`."
    ),
    fix="Write a name this kernel provides (without quotes), or remove the line.",
    example=Example(
        "A congestion control that no module of the kernel provides.",
        files={"/etc/sysctl.d/60-tcp.conf": "net.ipv4.tcp_congestion_control = nosuchcc\n"},
    ),
    passing=Example(
        "bbr: module tcp_bbr, loaded when the value is written.",
        files={"/etc/sysctl.d/60-tcp.conf": "net.ipv4.tcp_congestion_control = bbr\n"},
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.VALUE_REJECTED:
            continue
        why = p.provider.value_rejected or "no module provides it"
        message = f"{p.key} = {p.configured} ({p.file}:{p.line}) is not applied at boot: the write fails: {why}"
        yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
