"""SD102: nothing loads the key's module at boot."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.kernel_defaults import UNKNOWN_DEFAULT, default_text
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule
from sysctl_doctor.findings.remedies import load_early_fix

RULE = Rule(
    code="SD102",
    name="module-never-loaded",
    severity=WARNING,
    title="The key's module is not loaded at boot",
    rationale=(
        "Nothing in the boot (initramfs, modules-load.d, the kernel command line, a service's ruleset) "
        "loads the module that provides the key, so the sysctl step cannot write it. If anything loads "
        "the module later (a container runtime, an `nft` or `iptables` command, a Kubernetes agent), the "
        "key appears with the kernel default, not the configured value."
    ),
    fix=(
        "If the setting matters, load the module at boot: list it in /etc/modules-load.d/ "
        "(`sysctl-doctor fix`). If the module is never needed, drop the setting."
    ),
    example=Example(
        "The incident node with nftables.service disabled: nothing loads nf_conntrack.",
        removed=("/etc/systemd/system/sysinit.target.wants/nftables.service",),
    ),
    passing=Example(
        "nf_conntrack listed in /etc/modules (read through /etc/modules-load.d/modules.conf).",
        files={"/etc/modules": "nf_conntrack\n"},
        removed=("/etc/systemd/system/sysinit.target.wants/nftables.service",),
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.NEVER_LOADED:
            continue
        message = (
            f"{p.key} = {p.configured} ({p.file}:{p.line}) is not applied at boot: nothing loads {p.module}; "
            f"when something loads it later the key will be "
            f"{default_text(p.path, analysis.kernel) if p.after_late_load == UNKNOWN_DEFAULT else p.after_late_load}"
        )
        yield Finding(RULE.code, RULE.severity, p.key, message,
                      load_early_fix(analysis.init_system, p.module, [p.path.rsplit('/', 1)[0]]), p.file, p.line)
