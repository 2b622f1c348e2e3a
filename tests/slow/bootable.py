"""Make a configuration-only root bootable: the cached base root (kernel, initrd, userland) with the
configuration of another root laid over it — e.g. examples/incident, which has only /etc and a module
index. Only the configuration parts are copied (`CONFIG_PARTS`): the base keeps its own kernel and
module tree, so `check` predicts for the kernel that boots.

    python -m tests.slow.bootable examples/incident DEST     # prints DEST, ready for `verify --root DEST`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from sysctl_doctor.verify.image import copy_tree

from .base_root import BaseRoot, ensure_base_root

CONFIG_PARTS = ("etc", "usr/lib/sysctl.d")


def bootable_root(base: BaseRoot, config_root: Path, dest: Path, parts: Sequence[str] = CONFIG_PARTS) -> Path:
    """dest = a copy of the base root, then each of `parts` of `config_root` copied over it."""
    copy_tree(base.path, dest)
    (dest / ".complete").unlink(missing_ok=True)
    for part in parts:
        if (config_root / part).is_dir():
            copy_tree(config_root / part, dest / part)
    return dest


if __name__ == "__main__":
    print(bootable_root(ensure_base_root(), Path(sys.argv[1]), Path(sys.argv[2])))
