"""One cached Debian root that can boot each supported Debian kernel: 5.10 (Debian 11), 6.1 (Debian 12)
and 6.12 (Debian 12 backports / Debian 13's series), for the conntrack kernel matrix.

Userland is bookworm (mmdebstrap, as base_root.py) with Python, nftables, iproute2, tcpdump and
conntrack; each kernel's vmlinuz, config and /lib/modules tree come from tests/kernel_trees.py (the
pinned Debian packages), then the root's own depmod and mkinitramfs build modules.dep and an initrd
per kernel. One root, three kernels: a boot picks its vmlinuz/initrd pair.

Cached under `$SYSCTL_DOCTOR_TEST_CACHE/slow/matrix-<hash>` (built once: a few minutes).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Dict, Tuple

from .base_root import ARCH, SUITE, BaseRoot, build_root, cache_dir, host_mirror
from .legacy_root import CUSTOMIZE, PACKAGES as LEGACY_PACKAGES, _install_kernel

SERIES: Tuple[str, ...] = ("5.10", "6.1", "6.12")
PACKAGES: Tuple[str, ...] = LEGACY_PACKAGES + ("tcpdump", "conntrack", "xz-utils")
BUILDER_VERSION = "1"


def _trees() -> Dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from kernel_trees import debian_kernel_tree
    finally:
        sys.path.pop(0)
    return {series: debian_kernel_tree(series) for series in SERIES}


def ensure_matrix_root() -> Dict[str, BaseRoot]:
    """series -> BaseRoot (the same directory, that series' kernel), built first when absent."""
    mirror = host_mirror()
    trees = _trees()
    kvers = [trees[s].kver for s in SERIES]  # type: ignore[attr-defined]
    material = "\n".join([BUILDER_VERSION, SUITE, ARCH, mirror, *kvers, *PACKAGES, *CUSTOMIZE])
    final = cache_dir() / f"matrix-{hashlib.sha256(material.encode()).hexdigest()[:16]}"
    if not (final / ".complete").exists():
        def finish(rootdir: Path) -> Tuple[str, str]:
            for series in SERIES:
                tree = trees[series]
                _install_kernel(rootdir, Path(tree), tree.kver)  # type: ignore[attr-defined,arg-type]
            return kvers[0], "kernels " + " ".join(kvers) + "\n"

        build_root(final, PACKAGES, CUSTOMIZE, mirror, finish)
    return {series: BaseRoot(final, kver) for series, kver in zip(SERIES, kvers)}


if __name__ == "__main__":
    for series, root in ensure_matrix_root().items():
        print(series, root.path, root.kernel)
