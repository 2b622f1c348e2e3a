"""The one fixture-root builder of the test suite: a directory tree from a dict of inside paths.

Every test that needs a root (a rule's example, a boot layout, a differential case against the real
systemd-sysctl and procps) writes it with `write_root`; the older helpers (`boot.rootfs.make_root`,
`boot.rootfs.copy_incident`, `findings.example_roots.build_example`, `config.oracle.build_root`) are thin
callers of it.

Entries: text (str), bytes, ("link", target) for a symlink, ("dir",) for an empty directory, ("null",) for a
link to /dev/null (a systemd mask).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

REPO = Path(__file__).resolve().parents[1]
INCIDENT = REPO / "examples" / "incident"

Entry = Union[str, bytes, Tuple[str, ...]]


def write_root(dest: Path, files: Optional[Dict[str, Entry]] = None, *, base: Optional[Path] = None,
               usrmerge: bool = True, dirs: Iterable[str] = (), removed: Iterable[str] = ()) -> Path:
    """`dest` as a root: a copy of `base` (e.g. INCIDENT) if given, else a merged-/usr skeleton when `usrmerge`
    (/lib -> usr/lib); then `dirs` created, `removed` paths deleted, and `files` written (an existing entry at
    the same path is replaced)."""
    if base is not None:
        shutil.copytree(base, dest, symlinks=True)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        if usrmerge and not os.path.lexists(dest / "lib"):
            (dest / "usr" / "lib").mkdir(parents=True, exist_ok=True)
            os.symlink("usr/lib", dest / "lib")
    for inside in dirs:
        (dest / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for inside in removed:
        host = dest / inside.lstrip("/")
        if host.is_symlink() or host.is_file():
            host.unlink()
        elif host.is_dir():
            shutil.rmtree(host)
    for inside, entry in (files or {}).items():
        host = dest / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        if host.is_symlink() or host.is_file():
            host.unlink()
        if isinstance(entry, tuple):
            kind = entry[0]
            if kind == "link":
                os.symlink(entry[1], host)
            elif kind == "null":
                os.symlink("/dev/null", host)
            elif kind == "dir":
                host.mkdir(exist_ok=True)
            else:
                raise ValueError(f"{inside}: unknown fixture entry {entry!r}")
        elif isinstance(entry, bytes):
            host.write_bytes(entry)
        else:
            host.write_text(entry)
    return dest
