"""SD101: a module's key is set before its module is loaded (the incident)."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.kernel_defaults import UNKNOWN_DEFAULT
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule
from sysctl_doctor.findings.remedies import load_early_fix

RULE = Rule(
    code="SD101",
    name="module-loaded-after-sysctl",
    severity=ERROR,
    title="A module's key is applied before the module is loaded",
    rationale=(
        "The key exists only once its kernel module is loaded. At boot the sysctl step "
        "(systemd-sysctl.service, procps or OpenRC's sysctl) writes every configured key once; a key "
        "that does not exist yet is skipped with \"Couldn't write ..., ignoring\". When the module is "
        "loaded later, on demand, by a service whose unit files do not order it before the sysctl step "
        "(nftables.service has DefaultDependencies=no, WantedBy=sysinit.target and no ordering against "
        "systemd-sysctl), the key appears with the kernel default and nothing writes it again. An "
        "unordered loader is a race: the value is not guaranteed, and was seen lost on real boots."
    ),
    fix=(
        "Make the module load before the sysctl step, the first way sysctl.d(5) recommends: list it in "
        "/etc/modules-load.d/*.conf (systemd-modules-load runs before systemd-sysctl). Or re-apply the "
        "keys whenever the module appears, the second way: a udev rule "
        "ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"<module>\", "
        "RUN+=\"/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter\". "
        "`sysctl-doctor fix [--method modules-load|udev]` writes either."
    ),
    example=Example(
        "Debian 12 node: be_liberal in /etc/sysctl.conf, nftables.service enabled with a `ct state` rule, "
        "nothing in /etc/modules."
    ),
    passing=Example(
        "The same node with nf_conntrack listed for systemd-modules-load.",
        files={"/etc/modules-load.d/conntrack.conf": "nf_conntrack\n"},
    ),
)


def _default_text(value, path: str, kernel) -> str:
    from sysctl_doctor.boot.kernel_defaults import default_text

    return default_text(path, kernel) if value == UNKNOWN_DEFAULT else f"kernel default {value}"


def check(analysis: Analysis) -> Iterator[Finding]:
    step = analysis.timeline.sysctl_step
    for p in analysis.fates:
        if p.verdict not in (Verdict.RACE_LOST, Verdict.LOADED_LATE):
            continue
        load = (p.racing or p.late)[0]
        if p.verdict == Verdict.RACE_LOST:
            how = f"which has no ordering against {step}: a race, the value is not guaranteed"
        else:
            how = f"which runs after {step}"
        message = (
            f"{p.key} = {p.configured} ({p.file}:{p.line}) is not applied at boot: {p.module} is loaded by "
            f"{load.by} ({load.evidence}), {how}; the key stays at {_default_text(p.boot_value, p.path, analysis.kernel)}"
        )
        prefix = p.path.rsplit("/", 1)[0]
        yield Finding(RULE.code, RULE.severity, p.key, message,
                      load_early_fix(analysis.init_system, p.module, [prefix]), p.file, p.line)
