"""Small fixture roots for the boot tests (written by the suite's one builder, tests/fixture_roots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from fixture_roots import INCIDENT, REPO, Entry, write_root

__all__ = ["INCIDENT", "REPO", "copy_incident", "make_root"]


def make_root(base: Path, files: Dict[str, Entry], usrmerge: bool = True) -> Path:
    """files: inside path -> text, or ("link", target) for a symlink."""
    return write_root(base, files, usrmerge=usrmerge)


def copy_incident(dest: Path, extra: Optional[Dict[str, Entry]] = None) -> Path:
    return write_root(dest, extra, base=INCIDENT)
