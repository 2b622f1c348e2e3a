"""Per-kernel-build cache of the index in the user's cache dir ($XDG_CACHE_HOME or ~/.cache/sysctl-doctor).

The key covers the kernel release, the root, the modules tree's metadata files (size, mtime), the
modules directory itself, the curated table and the scanner's own source, so a new depmod run, an
upgraded package or a changed scanner builds afresh. Writes are atomic (temp file + rename); nothing is written in a root.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from sysctl_doctor.package_data import package_data
from sysctl_doctor.root import Root

SCHEMA = 5  # bump when the scanner or IndexData changes
MAX_ENTRIES = 32  # index files kept in the cache dir
CODE_FILES = ("elf_scan.py", "build.py", "modules_tree.py", "model.py", "index.py")
META_FILES = ("modules.dep", "modules.builtin", "modules.builtin.modinfo", "modules.softdep", "modules.alias", "modules.order")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sysctl-doctor"


def _stat(path: Path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [None]
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def cache_key(root: Root, kver: str, moddir: str) -> str:
    host = root.chase(moddir).host
    parts = [SCHEMA, str(root.path), kver, str(host), _stat(host), _stat(host / "kernel")]
    parts += [[name] + _stat(host / name) for name in META_FILES]
    digest = hashlib.sha256(package_data("providers.tsv").read_bytes())
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:  # a changed scanner never reads an index built by the old one
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            pass
    parts.append(digest.hexdigest())
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / f"index-{key}.json"


def load(key: str):  # -> Optional[IndexData]
    from sysctl_doctor.kernel.model import IndexData

    try:
        with open(_path(key), "rb") as handle:
            return IndexData.from_json(json.loads(handle.read()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str, data) -> Optional[Path]:
    """Write atomically; a cache that cannot be written is not an error (returns None)."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # lazy: only a cache write needs it

        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data.to_json(), handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return None
    prune(path.parent)
    return path


def prune(directory: Path, keep: Optional[int] = None) -> None:
    """Keep the `keep` most recently written indexes (roots under /tmp come and go)."""
    try:
        entries = sorted(directory.glob("index-*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for old in entries[MAX_ENTRIES if keep is None else keep :]:
        try:
            old.unlink()
        except OSError:
            pass
