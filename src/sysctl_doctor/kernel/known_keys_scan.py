"""The module keys of one kernel tree, as data/known_keys/<series>.tsv records them (see known_keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from sysctl_doctor.errors import DoctorError


def module_keys_of_tree(tree: Path, kver: str) -> Tuple[str, str, Dict[str, List[str]]]:
    """(kernel release, package description, module -> keys) from the ELF scan of `tree`'s modules."""
    from sysctl_doctor.kernel.index import MODE_ELF, load_module_index
    from sysctl_doctor.root import Root

    index = load_module_index(Root(tree), kver)
    if index.mode != MODE_ELF or index.data.partial:
        raise DoctorError(f"{tree}: kernel {kver} has no complete set of module files to scan")
    out: Dict[str, List[str]] = {}
    for name, scan in index.data.scans.items():
        if scan.error is not None or scan.loose_names or not scan.entries:
            continue
        out[name] = sorted({e.path for e in scan.entries})
    return kver, f"Debian linux-image {kver} (modules under lib/modules/{kver})", out
