"""Build small fixture roots: write files and links under a temporary directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Union

REPO = Path(__file__).resolve().parents[2]
INCIDENT = REPO / "examples" / "incident"


def make_root(base: Path, files: Dict[str, Union[str, tuple]], usrmerge: bool = True) -> Path:
    """files: inside path -> text, or ("link", target) for a symlink."""
    base.mkdir(parents=True, exist_ok=True)
    if usrmerge and not (base / "lib").exists():
        (base / "usr" / "lib").mkdir(parents=True, exist_ok=True)
        os.symlink("usr/lib", base / "lib")
    for inside, content in files.items():
        host = base / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            assert content[0] == "link"
            os.symlink(content[1], host)
        else:
            host.write_text(content)
    return base


def copy_incident(dest: Path, extra: Optional[Dict[str, Union[str, tuple]]] = None) -> Path:
    shutil.copytree(INCIDENT, dest, symlinks=True)
    if extra:
        make_root(dest, extra, usrmerge=False)
    return dest
