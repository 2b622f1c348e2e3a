"""Apply planned edits atomically, inside the root, keeping mode, owner and a backup.

For each file: resolve it inside the root (links followed, never out of it; a mask is
refused), back up the current content under <root>/var/backups/sysctl-doctor/<stamp>/,
write a temporary file in the same directory, fsync it, give it the old file's mode and
owner, rename it over the target, fsync the directory. A crash at any point leaves the
old file or the new one, never a torn one; a failure removes the temporary file.

`faults` is called with the name of each step before it runs (tests inject a crash there).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.fix.plan import FixPlan
from sysctl_doctor.root import PathKind, Root

BACKUP_DIR = "/var/backups/sysctl-doctor"
STEPS = ("backup", "mkdir", "tempfile", "write", "fsync", "chmod", "rename", "dirfsync")
Faults = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class AppliedEdit:
    path: str  # inside the root, as planned
    written: str  # inside the root, after following links
    backup: Optional[str]  # inside the root; None for a new file


def _inside(root: Root, host: Path) -> None:
    base = str(root.path).rstrip("/") + "/"
    if root.path != Path("/") and not str(host).startswith(base):
        raise DoctorError(f"refusing to write {host}: outside the root {root.path}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(root: Root, inside_dir: str) -> Path:
    chased = root.chase(inside_dir)
    if chased.kind is PathKind.DIR:
        return chased.host
    if chased.kind is not PathKind.MISSING:
        raise DoctorError(f"{inside_dir}: exists and is not a directory")
    _inside(root, chased.host)
    parent = os.path.dirname(chased.resolved.rstrip("/")) or "/"
    _mkdirs(root, parent)
    os.mkdir(chased.host, 0o755)
    _fsync_dir(chased.host.parent)
    return chased.host


def write_atomic(root: Root, path: str, data: bytes, faults: Faults = None, stamp: Optional[str] = None,
                 expected_old: Optional[bytes] = None) -> AppliedEdit:
    fault = faults or (lambda step: None)
    chased = root.chase(path)
    if chased.kind is PathKind.NULL:
        raise DoctorError(f"{path} is masked (links to /dev/null): not writing through a mask")
    if chased.kind not in (PathKind.FILE, PathKind.MISSING):
        raise DoctorError(f"{path}: not a regular file")
    target_inside = chased.resolved
    target = chased.host
    _inside(root, target)
    old: Optional[bytes] = None
    st = None
    if chased.kind is PathKind.FILE:
        st = os.stat(target)
        old = target.read_bytes()
        if expected_old is not None and old != expected_old:
            raise DoctorError(f"{path} changed since the plan was made: run fix again")
    backup_inside = None
    fault("backup")
    if old is not None:
        stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
        backup_inside = f"{BACKUP_DIR}/{stamp}{target_inside}"
        backup_dir = _mkdirs(root, os.path.dirname(backup_inside))
        backup_host = backup_dir / os.path.basename(backup_inside)
        _inside(root, backup_host)
        with open(backup_host, "wb") as handle:
            handle.write(old)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(backup_host, st.st_mode & 0o7777)
    fault("mkdir")
    directory = _mkdirs(root, os.path.dirname(target_inside))
    fault("tempfile")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".sysctl-doctor-tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fault("write")
            handle.write(data)
            handle.flush()
            fault("fsync")
            os.fsync(handle.fileno())
            fault("chmod")
            if st is not None:
                os.fchmod(handle.fileno(), st.st_mode & 0o7777)
                try:
                    os.fchown(handle.fileno(), st.st_uid, st.st_gid)
                except PermissionError:
                    pass
            else:
                os.fchmod(handle.fileno(), 0o644)
        fault("rename")
        os.rename(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fault("dirfsync")
    _fsync_dir(directory)
    return AppliedEdit(path, target_inside, backup_inside)


def apply_plan(root: Root, plan: FixPlan, faults: Faults = None) -> List[AppliedEdit]:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    done: List[AppliedEdit] = []
    for edit in plan.edits:
        expected = edit.old.encode() if edit.old is not None else None
        try:
            done.append(write_atomic(root, edit.path, edit.new.encode(), faults, stamp, expected))
        except OSError as exc:  # read-only root, permissions, full disk: the user's to fix, not a bug
            written = f" (already written: {', '.join(e.path for e in done)})" if done else ""
            raise DoctorError(f"cannot write {edit.path} in {root.path}: {exc.strerror or exc}{written}") from exc
    return done


def apply_now(plan: FixPlan, proc_sys: Path = Path("/proc/sys"), sys_module: Path = Path("/sys/module")) -> List[str]:
    """--now on the live host: load each module (unless /sys/module shows it loaded or built in), then
    write the configured values (in the caller's network namespace). Returns what was done."""
    import subprocess

    done: List[str] = []
    for action in plan.now:
        if action.module:
            if (sys_module / action.module).is_dir():
                done.append(f"{action.module} already loaded (or built in): {sys_module / action.module}")
            else:
                result = subprocess.run(["modprobe", action.module], capture_output=True, text=True)
                if result.returncode != 0:
                    raise DoctorError(f"modprobe {action.module} failed: {result.stderr.strip() or result.returncode}")
                done.append(f"modprobe {action.module}")
        for key, value in action.writes.items():
            try:
                (proc_sys / key).write_text(value + "\n")
            except OSError as exc:
                raise DoctorError(f"cannot write {proc_sys / key}: {exc.strerror}") from None
            done.append(f"{proc_sys / key} = {value}")
    return done

