"""The fleet files shipped in the package (data/fleet) and installing the textfile units into a root."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Dict, List

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.package_data import package_data

SERVICE = "sysctl-doctor-textfile.service"
TIMER = "sysctl-doctor-textfile.timer"
SHIPPED = (SERVICE, TIMER, "sysctl-doctor.rules.yml", "npd-custom-plugin-monitor.json", "npd-kmsg-monitor.json")
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian's prometheus-node-exporter default


def shipped_text(name: str) -> str:
    if name not in SHIPPED:
        raise DoctorError(f"no shipped fleet file {name!r} (have {', '.join(SHIPPED)})")
    return package_data("fleet/" + name).read_text(encoding="utf-8")


def shipped_dir() -> str:
    return str(package_data("fleet"))


def default_binary() -> str:
    """The absolute path of the running sysctl-doctor command (what the unit's ExecStart should run)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "sysctl-doctor" and os.path.isabs(argv0):
        return argv0
    return shutil.which("sysctl-doctor") or "/usr/bin/sysctl-doctor"


def unit_files(binary: str, textfile_dir: str) -> Dict[str, str]:
    """The service and timer, filled in: {unit name: text}."""
    for what, value in (("--binary", binary), ("--textfile-dir", textfile_dir)):
        if not os.path.isabs(value) or any(c.isspace() or c in "%$\\\"'" for c in value):
            raise DoctorError(f"{what} {value!r}: must be an absolute path without spaces, quotes, % or $")
    service = shipped_text(SERVICE).replace("@BINARY@", binary).replace("@TEXTFILE_DIR@", textfile_dir)
    return {SERVICE: service, TIMER: shipped_text(TIMER)}


def install_plan(binary: str, textfile_dir: str) -> List[tuple]:
    """[(path inside the root, bytes)]: the two units and the timer's enablement link target."""
    units = unit_files(binary, textfile_dir)
    return [(f"/etc/systemd/system/{name}", text.encode()) for name, text in units.items()]
