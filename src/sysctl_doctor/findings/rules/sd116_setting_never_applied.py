"""SD116: a key is set only by lines that never apply (cancelled by `-key`, or in files the boot never reads)."""

from __future__ import annotations

from typing import Dict, Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.config.fates import CANCELLED, MASKED, RUNTIME_ONLY, SHADOWED
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

RULE = Rule(
    code="SD116",
    name="setting-never-applied",
    severity=WARNING,
    title="A key is set only by lines that never apply: it keeps the kernel default",
    rationale=(
        "An administrator wrote `key = value`, but no line that sets the key takes effect at boot: a later "
        "`-key` line cancels it (systemd-sysctl keeps one entry per key, and the exclusion replaces the "
        "assignment, so nothing is written), or every line for it sits in a file the boot never reads "
        "(shadowed by a file of the same name in an earlier directory, masked by a link to /dev/null, left "
        "in an offline image's /run, which is an empty tmpfs at boot, /etc/sysctl.conf without Debian's "
        "99-sysctl.conf link, a name that does not end in .conf). No glob reaches the key either, so it keeps "
        "the kernel default and nothing says so."
    ),
    fix=(
        "Cancelled: remove the `-key` line, or put the assignment after it (a later line replaces the "
        "exclusion). Never read: move the line into a file that is read, e.g. /etc/sysctl.d/<name>.conf "
        "(a shadowing /etc file of the same name must carry it; a mask must go; /run is not kept across "
        "boots)."
    ),
    example=Example(
        "A hardening file sets kernel.sysrq = 0 and a later local file cancels it with `-kernel.sysrq`.",
        files={"/etc/sysctl.d/60-sysrq.conf": "kernel.sysrq = 0\n",
               "/etc/sysctl.d/90-local.conf": "-kernel.sysrq\n"},
    ),
    passing=Example("The incident node: every key has a line that applies."),
)


def _file_why(fate: str, line) -> str:  # type: ignore[no-untyped-def]
    """Why the file of a never-applied line is not read."""
    if fate == SHADOWED:
        return f"is never read: {line.by.file if line.by else 'a file of the same name'} shadows it"
    if fate == MASKED:
        return f"is never read: {line.by.file if line.by else 'a link of the same name'} -> /dev/null masks it"
    if fate == RUNTIME_ONLY:
        return "is never read at boot: /run is an empty tmpfs then (the file is only in the image)"
    return f"is never read ({line.reason})"


def _after(u) -> str:  # type: ignore[no-untyped-def]
    if u.boot_value is None:
        return "does not exist on this kernel"
    if str(u.boot_value).startswith("("):
        return "stays at the kernel default"
    return f"stays at the kernel default {u.boot_value}"


def check(analysis: Analysis) -> Iterator[Finding]:
    # A cancelled key is one finding each; keys whose lines all sit in one file that is never read are one
    # finding for that file (a Debian 13 /etc/sysctl.conf without the link holds dozens).
    by_file: Dict[str, list] = {}
    for u in analysis.unset:
        line = u.unset.line
        if u.fate != CANCELLED:
            by_file.setdefault(line.origin.file, []).append(u)
            continue
        others = [f for f in u.unset.lines if f is not line and f.value is not None]
        also = f" (and {len(others)} other line{'s' if len(others) != 1 else ''} that never apply)" if others else ""
        message = (f"{u.key} = {line.value} ({line.where}) is cancelled by the later `-{line.key}` line at {line.by}"
                   f"{also}; nothing else sets the key, so it {_after(u)} after boot")
        yield Finding(RULE.code, RULE.severity, u.key, message, RULE.fix, line.origin.file, line.origin.line)
    for file, group in by_file.items():
        first = group[0].unset.line
        if len(group) == 1:
            u = group[0]
            message = (f"{u.key} = {first.value} ({first.where}): {file} {_file_why(u.fate, first)}; nothing else "
                       f"sets the key, so it {_after(u)} after boot")
            yield Finding(RULE.code, RULE.severity, u.key, message, RULE.fix, file, first.origin.line)
            continue
        shown = ", ".join(f"{u.key} = {u.unset.line.value}" for u in group[:12])
        more = f", … ({len(group) - 12} more)" if len(group) > 12 else ""
        message = (f"{len(group)} keys are set only in {file}, which {_file_why(group[0].fate, first)}: {shown}{more}; "
                   "nothing else sets them, so they keep their kernel defaults after boot")
        yield Finding(RULE.code, RULE.severity, group[0].key, message, RULE.fix, file, None,
                      tuple(u.key for u in group))
