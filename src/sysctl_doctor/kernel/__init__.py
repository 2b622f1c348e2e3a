"""Which provider makes each sysctl key exist, for one kernel build: the kernel index."""

from __future__ import annotations

from sysctl_doctor.kernel.describe import describe_provider
from sysctl_doctor.kernel.index import ModuleIndex, load_module_index
from sysctl_doctor.kernel.model import KeyProvider, ProviderKind
from sysctl_doctor.kernel.modules_tree import available_kernels

__all__ = [
    "KeyProvider",
    "ModuleIndex",
    "ProviderKind",
    "available_kernels",
    "describe_provider",
    "load_module_index",
]
