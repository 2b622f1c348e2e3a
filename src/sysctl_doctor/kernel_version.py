"""One reading of a kernel version: (major, minor) of "6.18", "5.10.0-28-amd64", "6.18.44-fc-v657".

Everything that compares kernels (boot predictions, the known-keys series, the conntrack profiles, the NAT
advice, the lab) parses through `KernelVersion.parse`; a release it cannot read is None ("unknown"), and each
caller says what unknown means for it.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional, Tuple

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


class KernelVersion(NamedTuple):
    major: int
    minor: int

    @classmethod
    def parse(cls, text: Optional[str]) -> Optional["KernelVersion"]:
        match = _VERSION.match(text or "")
        return cls(int(match.group(1)), int(match.group(2))) if match else None

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


UNKNOWN = KernelVersion(0, 0)  # NatFacts' "kernel not known" (modern behaviour assumed)


def version_or_unknown(text: Optional[str]) -> KernelVersion:
    """The version of `text`, or UNKNOWN (0.0) when it has none."""
    return KernelVersion.parse(text) or UNKNOWN


def version_text(version: Tuple[int, int]) -> str:
    """"6.1" for (6, 1)."""
    return f"{version[0]}.{version[1]}"
