"""Files shipped in the package's data/ directory.

A pathlib.Path when the package sits in a directory (pip, the Debian package, a checkout); importlib.resources
only when it does not (a zip import). Importing importlib.resources costs ~5 ms of every command's start,
which `check`, `show` and `explain` cannot afford (issue #12: 0.15 s whole process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).parent


def package_data(relative: str) -> Any:
    """data/RELATIVE: a Path (or a Traversable with the same read_text/read_bytes/iterdir/name)."""
    if _PACKAGE_DIR.is_dir():
        return _PACKAGE_DIR / "data" / relative
    from importlib import resources

    return resources.files("sysctl_doctor").joinpath("data/" + relative)
