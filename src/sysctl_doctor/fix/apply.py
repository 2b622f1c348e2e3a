"""Apply planned edits atomically, inside the root, keeping mode, owner and a backup.

For each file: resolve it inside the root (links followed, never out of it; a mask is
refused), back up the current content under <root>/var/backups/sysctl-doctor/<stamp>-<random>/
(one new directory per run), write a temporary file in the same directory, fsync it, give it the
old file's owner and mode, rename it over the target, fsync the directory. A crash at any point
leaves the old file or the new one, never a torn one; a failure removes the temporary file.
Every write goes through `sysctl_doctor.root_write` (directory fds, O_NOFOLLOW, O_EXCL).

`faults` is called with the name of each step before it runs (tests inject a crash there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.fix.plan import FixPlan
from sysctl_doctor.root import PathKind, Root
from sysctl_doctor.root_write import BackupRun, Faults, open_root, replace_atomically

BACKUP_DIR = "/var/backups/sysctl-doctor"
STEPS = ("backup", "mkdir", "tempfile", "write", "fsync", "chmod", "rename", "dirfsync")


@dataclass(frozen=True)
class AppliedEdit:
    path: str  # inside the root, as planned
    written: str  # inside the root, after following links
    backup: Optional[str]  # inside the root; None for a new file


def backup_run(root: Root, root_fd: int, stamp: Optional[str] = None) -> BackupRun:
    """The run's backup directory (made on first use), under BACKUP_DIR resolved inside the root."""
    return BackupRun(root_fd, root.chase(BACKUP_DIR).resolved, stamp)


def write_atomic(root: Root, path: str, data: bytes, faults: Faults = None, backups: Optional[BackupRun] = None,
                 expected_old: Optional[bytes] = None) -> AppliedEdit:
    """Write one file inside the root (see the module docstring). Without `backups`, a run of its own."""
    fault = faults or (lambda step: None)
    chased = root.chase(path)
    if chased.kind is PathKind.NULL:
        raise DoctorError(f"{path} is masked (links to /dev/null): not writing through a mask")
    if chased.kind not in (PathKind.FILE, PathKind.MISSING):
        raise DoctorError(f"{path}: not a regular file")
    target_inside = chased.resolved
    root_fd = open_root(root) if backups is None else os.dup(backups.root_fd)
    try:
        run = backups or backup_run(root, root_fd)
        saved: List[str] = []

        def backup(old: Optional[bytes], st: Optional[os.stat_result]) -> None:
            if old is not None and expected_old is not None and old != expected_old:
                raise DoctorError(f"{path} changed since the plan was made: run fix again")
            fault("backup")
            if old is not None and st is not None:
                saved.append(run.save(target_inside, old, st))

        replace_atomically(root_fd, target_inside, data, fault, backup)
    finally:
        os.close(root_fd)
    return AppliedEdit(path, target_inside, saved[0] if saved else None)


def apply_plan(root: Root, plan: FixPlan, faults: Faults = None) -> List[AppliedEdit]:
    done: List[AppliedEdit] = []
    root_fd = open_root(root)
    try:
        run = backup_run(root, root_fd)
        for edit in plan.edits:
            # bytes that are not UTF-8 were read as surrogate escapes (plan._read): written back as they were
            expected = edit.old.encode("utf-8", "surrogateescape") if edit.old is not None else None
            try:
                done.append(write_atomic(root, edit.path, edit.new.encode("utf-8", "surrogateescape"), faults, run, expected))
            except (OSError, DoctorError) as exc:  # read-only root, permissions, full disk, a planted link
                written = f" (already written: {', '.join(e.path for e in done)})" if done else ""
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise DoctorError(f"cannot write {edit.path} in {root.path}: {reason}{written}") from exc
    finally:
        os.close(root_fd)
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
            if key.startswith("/") or ".." in key.split("/"):  # a crafted sysctl.d key must not leave /proc/sys
                raise DoctorError(f"refusing to write {proc_sys}/{key}: the key leaves {proc_sys}")
            try:
                (proc_sys / key).write_text(value + "\n")
            except OSError as exc:
                raise DoctorError(f"cannot write {proc_sys / key}: {exc.strerror}") from None
            done.append(f"{proc_sys / key} = {value}")
    return done

