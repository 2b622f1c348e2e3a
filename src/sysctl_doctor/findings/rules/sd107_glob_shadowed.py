"""SD107: a glob does not apply to keys that have an explicit setting."""

from __future__ import annotations

import fnmatch
from typing import Iterator

from sysctl_doctor.findings.model import INFO, Example, Finding, Rule

RULE = Rule(
    code="SD107",
    name="glob-shadowed-by-explicit",
    severity=INFO,
    title="A glob setting is shadowed by an explicit setting",
    rationale=(
        "systemd-sysctl expands a glob (net.ipv4.conf.*.rp_filter) against the keys that exist when it "
        "runs, but skips every key that has an explicit assignment (or a \"-key\" exclusion) anywhere in "
        "the configuration, whatever the file order. The explicit value wins even when the glob comes "
        "from a later file."
    ),
    fix="If the glob's value is meant for that key too, drop the explicit line; otherwise nothing to do.",
    example=Example(
        "rp_filter set for all interfaces by a glob and explicitly for 'all'.",
        files={"/etc/sysctl.d/50-rp.conf": "net.ipv4.conf.all.rp_filter = 0\n",
               "/etc/sysctl.d/60-rp.conf": "net.ipv4.conf.*.rp_filter = 2\n"},
    ),
    passing=Example("The incident node without its hardening baseline: no globs.",
                    removed=("/etc/sysctl.d/10-hardening.conf",)),
)


def check(analysis) -> Iterator[Finding]:
    config = analysis.config
    if config.flavor != "systemd":
        return
    globs = [a for a in config.assignments if a.is_glob]
    explicit = [a for a in config.assignments if not a.is_glob]
    for glob in globs:
        for other in explicit:
            if fnmatch.fnmatchcase(other.path, glob.path):
                message = (
                    f"{glob.key} = {glob.value} ({glob.origin}) does not apply to {other.key}: it is set "
                    f"explicitly at {other.origin} ({other.value})"
                )
                yield Finding(RULE.code, RULE.severity, other.key, message, RULE.fix, glob.origin.file, glob.origin.line)
        for exclusion in config.exclusions:
            if fnmatch.fnmatchcase(exclusion.path, glob.path):
                message = f"{glob.key} ({glob.origin}) skips {exclusion.pattern}: excluded at {exclusion.origin}"
                yield Finding(RULE.code, RULE.severity, None, message, RULE.fix, glob.origin.file, glob.origin.line)
