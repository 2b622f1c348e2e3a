"""SD116: a key is set only by lines that never apply (cancelled by `-key`, or in files the boot never reads)."""

from __future__ import annotations

from typing import Iterator

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


def _how(fate: str, line) -> str:  # type: ignore[no-untyped-def]
    if fate == CANCELLED:
        return f"is cancelled by the later `-{line.key}` line at {line.by}"
    if fate == SHADOWED:
        return f"sits in a file never read: it is shadowed by {line.by.file if line.by else 'a file of the same name'}"
    if fate == MASKED:
        return f"sits in a file never read: it is masked by {line.by.file if line.by else 'a /dev/null link'}"
    if fate == RUNTIME_ONLY:
        return "sits in /run, an empty tmpfs at boot: the file in the image is never read"
    return "sits in a file that is never read"


def check(analysis: Analysis) -> Iterator[Finding]:
    for u in analysis.unset:
        line = u.unset.line
        others = [f for f in u.unset.lines if f is not line and f.value is not None]
        also = f" (and {len(others)} other line{'s' if len(others) != 1 else ''} that never apply)" if others else ""
        after = "stays at the kernel default" if u.boot_value is not None else "does not exist on this kernel"
        if u.boot_value is not None and not str(u.boot_value).startswith("("):
            after += f" {u.boot_value}"
        message = (f"{u.key} = {line.value} ({line.where}) {_how(u.fate, line)}{also}; nothing else sets the key, "
                   f"so it {after} after boot")
        yield Finding(RULE.code, RULE.severity, u.key, message, RULE.fix, line.origin.file, line.origin.line)
