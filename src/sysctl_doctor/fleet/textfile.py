"""node_exporter's textfile convention: write `<dir>/sysctl_doctor.prom` so a scrape never sees half a file.

The text goes to a temporary file in the same directory whose name does not end in `.prom` (the collector
reads only `*.prom`), is fsynced, made world-readable, and renamed over the old file; the directory is
fsynced after. A failure removes the temporary file and leaves the old metrics in place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sysctl_doctor.errors import DoctorError

FILENAME = "sysctl_doctor.prom"


def write_textfile(directory: str, text: str, filename: str = FILENAME, option: str = "--textfile-dir") -> Path:
    """`directory`/`filename` replaced atomically; `option` names the directory in errors."""
    target_dir = Path(directory)
    if not target_dir.is_dir():
        hint = (" (node_exporter's --collector.textfile.directory, e.g. /var/lib/prometheus/node-exporter)"
                if option == "--textfile-dir" else "")
        raise DoctorError(f"{option} {directory}: not a directory{hint}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=target_dir)
    except OSError as exc:
        raise DoctorError(f"{option} {directory}: cannot create a file there: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o644)
        os.rename(tmp, target_dir / filename)
        dir_fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target_dir / filename
