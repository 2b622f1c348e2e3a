"""Facts that exist only on a running host: /proc/sys, the running kernel, loaded modules.

Offline roots (`--root DIR`) have no `LiveHost`; code that wants live facts
takes an `Optional[LiveHost]` and treats None as "not known".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet


@dataclass(frozen=True)
class LiveHost:
    proc_sys: Path = Path("/proc/sys")
    proc_modules: Path = Path("/proc/modules")

    def kernel_release(self) -> str:
        return os.uname().release

    def loaded_modules(self) -> FrozenSet[str]:
        """Names of loaded modules (empty on kernels without module support)."""
        try:
            text = self.proc_modules.read_text()
        except OSError:
            return frozenset()
        return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)


HOST_LOCK = Path("/run/lock/sysctl-doctor.lock")


class HostSysctlChange:
    """Set host (init-namespace) sysctls for a while and always put them back.

    Host-global keys such as ``net.netfilter.nf_log_all_netns`` are shared by
    every test, lab run and debug session on the machine, so changes are made
    under an exclusive lock (`HOST_LOCK`) held until they are restored:

        with HostSysctlChange({"net/netfilter/nf_log_all_netns": "1"}):
            ...

    Keys are slash paths under /proc/sys. The previous values are restored on
    exit, exceptions and KeyboardInterrupt included.
    """

    def __init__(self, changes: "dict[str, str]", proc_sys: Path = Path("/proc/sys")) -> None:
        self.changes = dict(changes)
        self.proc_sys = proc_sys
        self.saved: "dict[str, str]" = {}
        self._lock = None

    def __enter__(self) -> "HostSysctlChange":
        import fcntl

        HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(HOST_LOCK, "a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            for key, value in self.changes.items():
                path = self.proc_sys / key
                self.saved[key] = path.read_text().strip()
                path.write_text(value + "\n")
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        try:
            for key, value in self.saved.items():
                try:
                    (self.proc_sys / key).write_text(value + "\n")
                except OSError:
                    pass
            self.saved.clear()
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None
