"""Every rule in one place: the ordered list, lookup by code, running them, their documentation."""

from __future__ import annotations

from types import ModuleType
from typing import Dict, List

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.findings.model import SEVERITIES, Finding, Recommendation, Rule
from sysctl_doctor.findings.rules import (  # the rules, in the order their findings and docs are listed
    sd101_module_loaded_after_sysctl,
    sd102_module_never_loaded,
    sd103_udev_rule_before_5_11,
    sd104_unknown_key,
    sd105_file_never_read,
    sd106_overridden_by_later_file,
    sd107_glob_shadowed,
    sd108_drift,
    sd109_per_netns,
    sd110_broken_ordering,
    sd111_not_an_assignment,
    sd112_interface_not_reapplied,
    sd113_initramfs_image_stale,
    sd114_module_load_blocked,
    sd115_value_rejected,
    sd116_setting_never_applied,
    sd117_service_overrides,
    ct001_snat_reply_reset,
    ct002_dnat_invalid_forwarded,
    ct003_be_liberal_lost_at_boot,
    ct004_be_liberal_mitigates,
    ct005_kube_proxy_forward_only,
    ct006_under_lower_bound_ignored,
)

# Conntrack/NAT rules: run by `check` on hosts that do NAT; each also has `advise(NatFacts)` (advise_all).
CT_RULE_MODULES: List[ModuleType] = [
    ct001_snat_reply_reset,
    ct002_dnat_invalid_forwarded,
    ct003_be_liberal_lost_at_boot,
    ct004_be_liberal_mitigates,
    ct005_kube_proxy_forward_only,
    ct006_under_lower_bound_ignored,
]
RULE_MODULES: List[ModuleType] = [
    sd101_module_loaded_after_sysctl,
    sd102_module_never_loaded,
    sd103_udev_rule_before_5_11,
    sd104_unknown_key,
    sd105_file_never_read,
    sd106_overridden_by_later_file,
    sd107_glob_shadowed,
    sd108_drift,
    sd109_per_netns,
    sd110_broken_ordering,
    sd111_not_an_assignment,
    sd112_interface_not_reapplied,
    sd113_initramfs_image_stale,
    sd114_module_load_blocked,
    sd115_value_rejected,
    sd116_setting_never_applied,
    sd117_service_overrides,
] + CT_RULE_MODULES
RULES: Dict[str, Rule] = {m.RULE.code: m.RULE for m in RULE_MODULES}
# The findings that say a configured value is lost (or not guaranteed) at the next boot: the fleet outputs
# (Prometheus key_lost_at_boot, the NPD line) report exactly these.
LOST_AT_BOOT_CODES = ("SD101", "SD102", "SD103", "SD110", "SD112", "SD114", "CT003")
_SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def all_rules() -> List[Rule]:
    return [m.RULE for m in RULE_MODULES]


def get_rule(code: str) -> Rule:
    return RULES[code.strip().upper()]


def run_rules(analysis: Analysis) -> List[Finding]:
    """Every rule's findings, most severe first, then by rule code (stable)."""
    findings: List[Finding] = []
    for module in RULE_MODULES:
        findings.extend(module.check(analysis))
    findings.sort(key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), f.code))
    return findings


def example_text(example) -> List[str]:
    lines = [example.description]
    base = "examples/incident" if example.base == "incident" else "an empty root"
    changes = []
    for path, content in example.files.items():
        if isinstance(content, tuple):
            changes.append(f"    {path} -> {content[1]}")
        elif path.startswith(("/usr/lib/modules/", "/lib/modules/")):
            changes.append(f"    {path}: (module metadata, {len(content.splitlines())} lines)")
        elif content.startswith("070701"):
            from sysctl_doctor.boot.initrd import read_initrd

            listed = ", ".join(m for m, _ in read_initrd(path, content.encode()).loads)
            changes.append(f"    {path}: (initramfs image; conf/modules loads: {listed})")
        else:
            body = content.rstrip("\n").replace("\n", "\n      ")
            changes.append(f"    {path}:\n      {body}")
    for path in example.removed:
        changes.append(f"    {path}: removed")
    if example.kernel:
        changes.append(f"    kernel: {example.kernel}")
    if example.live_values:
        changes.append("    live values: " + ", ".join(f"{k}={v}" for k, v in example.live_values.items()))
    if example.nat_facts:
        changes.append("    NAT facts given (check does not read them): "
                       + ", ".join(f"{k}={v}" for k, v in example.nat_facts.items()))
    lines.append(f"  Root: {base}" + (", with:" if changes else ""))
    lines.extend(changes)
    return lines


def rule_doc(code: str) -> str:
    """The documentation of one rule, as `sysctl-doctor explain CODE` prints it (plain text)."""
    try:
        rule = get_rule(code)
    except KeyError:
        from sysctl_doctor.errors import DoctorError

        known = ", ".join(RULES)
        raise DoctorError(f"unknown finding code {code!r} (known: {known})") from None
    parts = [
        f"{rule.code} ({rule.name}) [{rule.severity}]",
        rule.title,
        "",
        "Why:",
        rule.rationale,
        "",
        "Fix:",
        rule.fix,
        "",
        "Fires on:",
        *example_text(rule.example),
    ]
    if rule.passing is not None:
        parts += ["", "Does not fire on:", *example_text(rule.passing)]
    return "\n".join(parts) + "\n"


def is_code(text: str) -> bool:
    return text.strip().upper() in RULES


def advise_all(facts: NatFacts) -> List[Recommendation]:
    """Every CT rule's advice for NAT facts (sysctl_doctor.conntrack.nat_facts.NatFacts), most severe first."""
    out = [r for r in (module.advise(facts) for module in CT_RULE_MODULES) if r is not None]
    return sorted(out, key=lambda r: (_SEVERITY_ORDER[r.severity], r.code))
