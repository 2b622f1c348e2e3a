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
