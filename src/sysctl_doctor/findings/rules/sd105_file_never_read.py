"""SD105: a file with settings that the sysctl step never reads."""

from __future__ import annotations

import re
from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.config.fates import ignored_file_bytes
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule
from sysctl_doctor.root import PathKind

_ASSIGNMENT = re.compile(r"^\s*-?[A-Za-z0-9_.*?/\[\]-]+\s*=", re.M)

RULE = Rule(
    code="SD105",
    name="file-never-read",
    severity=WARNING,
    title="A file holds settings that are never read",
    rationale=(
        "systemd-sysctl reads only *.conf files in /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d "
        "and /usr/lib/sysctl.d; a file of the same name in an earlier directory, or a link to /dev/null, "
        "hides a later one entirely. It never reads /etc/sysctl.conf itself: Debian 12 links "
        "/etc/sysctl.d/99-sysctl.conf to it, Debian 13 dropped that link, so settings only in "
        "/etc/sysctl.conf are silently ignored there."
    ),
    fix=(
        "Move the settings into /etc/sysctl.d/<name>.conf (or restore the link "
        "/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf); rename files to end in .conf; remove a mask "
        "that is not intended."
    ),
    example=Example(
        "/etc/sysctl.conf without the 99-sysctl.conf link (as on Debian 13).",
        removed=("/etc/sysctl.d/99-sysctl.conf",),
    ),
    passing=Example("The Debian 12 layout: /etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf."),
)


def _has_assignments(data: bytes) -> bool:
    lines = [item for item in data.decode("utf-8", errors="replace").splitlines()
             if item.strip() and not item.lstrip().startswith(("#", ";"))]
    return any(_ASSIGNMENT.match(item) for item in lines)


# SD105 needs one assignment per file: a file's first 64 KiB, 16 MiB in all (hostile input: a 200 MB file)
_FILE_BYTES = 64 << 10
_TOTAL_BYTES = 16 << 20


def _head(root, path: str) -> bytes:
    try:
        return root.read_bytes(path, _FILE_BYTES)
    except (OSError, DoctorError):  # unreadable, or a symlink loop: nothing that could be read
        return b""


def check(analysis: Analysis) -> Iterator[Finding]:
    root = analysis.root
    config = analysis.config
    reported = set()
    for ignored, data in ignored_file_bytes(config, root, bytes_max=_TOTAL_BYTES, file_max=_FILE_BYTES):
        if ignored.file in reported or not _has_assignments(data):
            continue  # one finding per file; a README or an empty mask is fine
        reported.add(ignored.file)
        yield Finding(RULE.code, RULE.severity, None,
                      f"{ignored.file} is never read: {ignored.reason}", RULE.fix, ignored.file, None)
    if config.flavor == "systemd" and "/etc/sysctl.conf" not in reported and (
            root.kind("/etc/sysctl.conf") is PathKind.FILE):
        read = {root.chase(f).resolved for f in config.files}
        if "/etc/sysctl.conf" not in read and _has_assignments(_head(root, "/etc/sysctl.conf")):
            yield Finding(
                RULE.code, RULE.severity, None,
                "/etc/sysctl.conf is never read: systemd-sysctl reads only sysctl.d directories and no "
                "/etc/sysctl.d/*.conf links to it",
                "Restore the link: ln -s ../sysctl.conf /etc/sysctl.d/99-sysctl.conf, or move its settings "
                "into /etc/sysctl.d/99-local.conf.",
                "/etc/sysctl.conf", None)
