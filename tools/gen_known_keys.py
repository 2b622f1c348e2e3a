#!/usr/bin/env python3
"""Regenerate src/sysctl_doctor/data/known_keys/<series>.tsv from an unpacked Debian kernel tree.

    SYSCTL_DOCTOR_TEST_CACHE=/work/cache .venv/bin/python tools/gen_known_keys.py 5.10 6.1 6.12

Each series' tree is fetched (or reused) by tests/kernel_trees.py (linux-image-amd64 of bullseye,
bookworm, bookworm-backports), its module files are scanned by the project's own ELF reader
(sysctl_doctor.kernel), and every module whose sysctl tables were all tied to a directory is written
with its keys. A tree path can be given instead of a series: tools/gen_known_keys.py 6.1=/path/to/root
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from sysctl_doctor.kernel.known_keys import render  # noqa: E402
from sysctl_doctor.kernel.known_keys_scan import module_keys_of_tree  # noqa: E402


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out_dir = REPO / "src/sysctl_doctor/data/known_keys"
    for arg in argv:
        series, _, path = arg.partition("=")
        if path:
            tree = Path(path)
            kver = sorted(p.name for p in (tree / "lib/modules").iterdir())[-1]
        else:
            from kernel_trees import debian_kernel_tree

            tree = debian_kernel_tree(series)
            kver = tree.kver
        kernel, package, keys = module_keys_of_tree(tree, kver)
        text = render(series, kernel, package, keys)
        (out_dir / f"{series}.tsv").write_text(text, encoding="utf-8")
        print(f"{series}: {sum(len(v) for v in keys.values())} keys of {len(keys)} modules from {kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
