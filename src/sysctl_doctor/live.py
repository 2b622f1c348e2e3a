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


class HostSysctlChange:
    """Set host (init-namespace) sysctls for a while and always put them back.

    Host-global keys such as ``net.netfilter.nf_log_all_netns`` are shared by
    every test, lab run and debug session on the machine, so each change is a
    hold in the host-switch record (`sysctl_doctor.host_switches`): several
    holders at once, the original written back when the last one leaves, and
    a holder killed with SIGKILL undone by the next run. `HOST_LOCK` is held
    only while switching, never for the whole block:

        with HostSysctlChange({"net/netfilter/nf_log_all_netns": "1"}):
            ...

    Keys are slash paths under /proc/sys. `saved` maps each key to the value
    it goes back to (exceptions and KeyboardInterrupt included).
    """

    def __init__(self, changes: "dict[str, str]", proc_sys: Path = Path("/proc/sys"),
                 what: str = "HostSysctlChange") -> None:
        self.changes = dict(changes)
        self.proc_sys = proc_sys
        self.what = what
        self.saved: "dict[str, str]" = {}
        self._holds: list = []

    def __enter__(self) -> "HostSysctlChange":
        from sysctl_doctor.host_switches import Holder, SwitchHold

        try:
            for key, value in self.changes.items():
                hold = SwitchHold(key, value, Holder.this_process(self.what), self.proc_sys)
                self._holds.append(hold)
                self.saved[key] = hold.take()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        from sysctl_doctor.errors import DoctorError

        holds, self._holds = self._holds, []
        self.saved.clear()
        failed: "list[DoctorError]" = []
        for hold in reversed(holds):
            try:
                hold.release()
            except DoctorError as exc:  # the record still names this process: the next run restores
                failed.append(exc)
        if failed:
            raise failed[0]
