"""SD106: a setting is replaced by a later line with another value."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

RULE = Rule(
    code="SD106",
    name="overridden-by-later-file",
    severity=WARNING,
    title="A setting is overridden by a later file",
    rationale=(
        "All sysctl.d files are applied in file-name order across directories, and for the same key the "
        "last assignment wins (systemd-sysctl moves it to the end of the apply order). A value set in an "
        "early file is silently replaced by a later one, which is easy to miss when files come from "
        "packages, configuration management and hand edits. Some kernel variables have two names "
        "(net.ipv4.ip_forward and net.ipv4.conf.all.forwarding, net.netfilter.nf_conntrack_max and "
        "net.nf_conntrack_max, fs.inotify.max_user_watches and user.max_inotify_watches): both names are "
        "written, so the last write through either name wins."
    ),
    fix="Keep one assignment per key, in the file that should win (usually the highest-numbered one in /etc/sysctl.d).",
    example=Example(
        "A vendor file sets ip_forward = 0, /etc/sysctl.conf (99-sysctl.conf) sets 1.",
        files={"/usr/lib/sysctl.d/10-forward.conf": "net.ipv4.ip_forward = 0\n"},
        removed=("/etc/sysctl.d/10-hardening.conf",),
    ),
    passing=Example("The incident node without its hardening baseline: no key is set twice.",
                    removed=("/etc/sysctl.d/10-hardening.conf",)),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for assignment in analysis.config.assignments:
        for lost in assignment.overrides:
            if getattr(lost, "kind", "assignment") != "assignment":
                continue
            if lost.value.split() == assignment.value.split():
                continue
            message = (
                f"{assignment.key} = {lost.value} ({lost.file}:{lost.line}) is overridden by "
                f"{assignment.origin.file}:{assignment.origin.line} ({assignment.key} = {assignment.value})"
            )
            yield Finding(RULE.code, RULE.severity, assignment.key, message, RULE.fix, lost.file, lost.line)

    # two names of one kernel variable (data/kernel_keys aliases): the later write through the other name wins
    final = {s.path: s for s in analysis.settings if s.final}
    for lost in analysis.settings:
        winner = final.get(lost.alias_winner or "")
        if winner is None or lost.value.split() == winner.value.split():
            continue
        origin, won = lost.assignment.origin, winner.assignment.origin
        message = (f"{lost.key} = {lost.value} ({origin.file}:{origin.line}) is overridden by {won.file}:{won.line} "
                   f"({winner.key} = {winner.value}): {lost.key} and {winner.key} are one kernel variable, "
                   "the last write through either name wins")
        yield Finding(RULE.code, RULE.severity, lost.key, message, RULE.fix, origin.file, origin.line)
