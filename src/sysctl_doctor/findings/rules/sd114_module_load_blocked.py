"""SD114: a boot load of the key's module does nothing (modprobe.d install/blacklist, module_blacklist=)."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule

RULE = Rule(
    code="SD114",
    name="module-load-blocked",
    severity=ERROR,
    title="The module is listed for loading at boot, but the load is blocked",
    rationale=(
        "A module named in modules-load.d, /etc/modules, the initramfs list or loaded by a service can still "
        "stay out of the kernel: `install <module> /bin/true` (or /bin/false) in modprobe.d makes modprobe run "
        "that command instead (hardening baselines do this for sctp, dccp, rds, tipc ...); "
        "systemd-modules-load applies modprobe.d `blacklist` lines to the modules it loads (libkmod's "
        "KMOD_PROBE_APPLY_BLACKLIST: \"Module ... is deny-listed\"); and `module_blacklist=` on the kernel "
        "command line makes the kernel refuse the module outright. Keys of a blocked module never exist."
    ),
    fix=(
        "Remove the install/blacklist line (or the module_blacklist= entry) if the module's keys are meant to "
        "apply, or drop the settings for a module that is deliberately disabled."
    ),
    example=Example(
        "nf_conntrack listed in /etc/modules, but a hardening file deny-lists it for systemd-modules-load.",
        files={"/etc/modules": "nf_conntrack\n",
               "/etc/modprobe.d/hardening.conf": "blacklist nf_conntrack\n"},
        removed=("/etc/systemd/system/sysinit.target.wants/nftables.service",),
    ),
    passing=Example(
        "The blacklist line only stops alias autoloads when modprobe is run by hand: no such line here.",
        files={"/etc/modules": "nf_conntrack\n"},
        removed=("/etc/systemd/system/sysinit.target.wants/nftables.service",),
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        grouped = {}
        for blocked in p.blocked:
            grouped.setdefault((blocked.load.by, blocked.why), []).append(blocked.load)
        for (by, why), loads in grouped.items():
            modules = ", ".join(dict.fromkeys(load.module for load in loads))
            message = (f"{by} would load {modules} ({loads[0].evidence}) for {p.key} = {p.configured} "
                       f"({p.file}:{p.line}), but {why}")
            yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
