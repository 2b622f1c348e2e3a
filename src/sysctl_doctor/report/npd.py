"""`check --format npd`: Kubernetes node-problem-detector custom-plugin protocol.

NPD runs the plugin, reads at most `max_output_length` (80) characters of stdout and maps the exit status:
0 OK, 1 NonOK (the problem condition is true), anything else Unknown. One short line, nothing else.
"""

from __future__ import annotations

from sysctl_doctor.findings.registry import LOST_AT_BOOT_CODES

MAX_LINE = 80
OK, PROBLEM, UNKNOWN = 0, 1, 3


def summary(report) -> "tuple[int, str]":
    """(exit status, one ASCII line of at most 80 bytes): PROBLEM exactly when `check` exits 1."""
    errors = [f for f in report.findings if f.severity == "error"]
    if not errors:
        warnings = sum(1 for f in report.findings if f.severity == "warning")
        return OK, cut(f"OK: {len(report.fates)} sysctls checked, no errors, {warnings} warnings")
    lost = sorted({f.key for f in errors if f.key and f.code in LOST_AT_BOOT_CODES})
    if lost:
        line = f"{len(lost)} sysctl{'s' if len(lost) != 1 else ''} lost at boot: {', '.join(lost)}"
    else:
        line = f"{len(errors)} errors: {', '.join(sorted({f.code for f in errors}))}"
    return PROBLEM, cut(line)


def cut(line: str) -> str:
    """One line, printable ASCII only (hostile key names cannot reach NPD's condition message), <= 80 bytes."""
    line = " ".join(line.split())
    line = line.encode("ascii", "backslashreplace").decode("ascii")
    line = "".join(ch if " " <= ch <= "~" else "?" for ch in line)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."
