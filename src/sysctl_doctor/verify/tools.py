"""The host programs `verify` needs, found at run time (nothing is downloaded)."""

from __future__ import annotations

import shutil
from typing import Dict

from sysctl_doctor.errors import DoctorError

# program -> the Debian/Ubuntu package that ships it
QEMU = "qemu-system-x86_64"
MKE2FS = "mke2fs"
PACKAGES: Dict[str, str] = {QEMU: "qemu-system-x86", MKE2FS: "e2fsprogs", "debugfs": "e2fsprogs"}


class ToolMissing(DoctorError):
    """A program verify runs is not installed."""


def require(program: str) -> str:
    """The path of `program`, or a ToolMissing naming the package to install."""
    found = shutil.which(program)
    if found is None:
        package = PACKAGES.get(program, program)
        raise ToolMissing(f"{program} not found in PATH: install it from the distribution "
                          f"(apt-get install {package}); verify downloads nothing")
    return found
