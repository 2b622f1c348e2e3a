"""SD112: an interface's key with no udev rule to apply it when the interface appears."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

RULE = Rule(
    code="SD112",
    name="interface-key-not-reapplied",
    severity=WARNING,
    title="An interface's key is not re-applied when the interface appears",
    rationale=(
        "Keys under net.ipv4.conf.<if>, net.ipv6.conf.<if> and the neigh trees exist only once the "
        "interface exists. udev's 99-systemd.rules re-runs systemd-sysctl --prefix=/net/ipv4/conf/$name ... "
        "for every new interface; without that rule (masked, removed, or a non-systemd udev) the value is "
        "applied only if the interface already exists when the sysctl step runs."
    ),
    fix=(
        "Restore udev's 99-systemd.rules (or its RUN line for SUBSYSTEM==\"net\"), or set the value "
        "through the network configuration (systemd-networkd, ifupdown post-up)."
    ),
    example=Example(
        "rp_filter for eth0 with 99-systemd.rules masked.",
        files={"/etc/sysctl.d/60-eth0.conf": "net.ipv4.conf.eth0.rp_filter = 2\n",
               "/etc/udev/rules.d/99-systemd.rules": ("link", "/dev/null")},
    ),
    passing=Example(
        "The same key with udev's rule in place.",
        files={"/etc/sysctl.d/60-eth0.conf": "net.ipv4.conf.eth0.rp_filter = 2\n"},
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.NO_HOTPLUG:
            continue
        iface = p.provider.interface or "the interface"
        message = (f"{p.key} = {p.configured} ({p.file}:{p.line}) is applied only if {iface} exists when "
                   f"{analysis.timeline.sysctl_step} runs: no udev rule re-runs systemd-sysctl for new interfaces")
        yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
