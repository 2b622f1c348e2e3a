"""Optional compiled accelerators (issue #12): which may be used.

A few hot loops (the kernel-log scanner, the pcap reader) have a C twin built by `pip install` when a C
compiler is present (`[tool.setuptools] ext-modules`, each `optional`: without a compiler the install goes
on and the pure-Python code runs). Each C twin must give results identical to its Python original; tests
run both on the same inputs and compare. `SYSCTL_DOCTOR_PURE_PYTHON=1` turns every accelerator off (the
agreement tests, the benchmarks' baseline, and anyone who distrusts the compiled code).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

PURE_PYTHON_ENV = "SYSCTL_DOCTOR_PURE_PYTHON"


def pure_python_forced() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def load_accelerator(module: str) -> Optional[ModuleType]:
    """The compiled module `module` (e.g. "sysctl_doctor.conntrack._logscan"), or None when it was not
    built or SYSCTL_DOCTOR_PURE_PYTHON is set."""
    if pure_python_forced():
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# The accelerators, and what each speeds up (for `sysctl-doctor --version`).
ACCELERATORS = {
    "sysctl_doctor.conntrack._logscan": "conntrack logs",
    "sysctl_doctor.conntrack._replayfast": "conntrack replay",
}


def accelerator_status() -> str:
    """One line: which accelerators this install runs, e.g. "conntrack logs, conntrack replay"."""
    if pure_python_forced():
        return f"none ({PURE_PYTHON_ENV} is set)"
    found = [what for module, what in ACCELERATORS.items() if load_accelerator(module) is not None]
    return ", ".join(found) if found else "none (not built: pure Python)"
