"""The one way sysctl-doctor writes inside a root: never through a symbolic link, never over a file
it did not create, never outside the root.

`Root` (root.py) resolves a path inside the root (links followed, re-rooted). Between that and the
write, anyone who can write in the root could swap a directory for a link to /etc on the host. So
every write here is relative to a directory file descriptor:

- the root is opened once (`O_DIRECTORY`); each component of an already-resolved inside path is
  opened from its parent's fd with `O_DIRECTORY | O_NOFOLLOW` (a link found there is refused: the
  tree changed under us), and missing ones are made with `mkdir(dir_fd=…)`;
- files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted link or file is never
  followed or reused), read with `O_NOFOLLOW`, and renamed within their directory fd;
- mode and owner are set with `fchown`/`fchmod` on the open fd, never by path;
- a backup run directory is made once per run with a random name (`mkdir` is exclusive), so it
  cannot be predicted or shared by two runs in the same second.

Nothing else in `src/` opens a path inside a root for writing: tests/fix/test_root_write.py scans
the sources for raw writes and lists the few that are allowed (and why).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.root import Root

Faults = Optional[Callable[[str], None]]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_SUFFIX = ".sysctl-doctor-tmp"


class UnsafePath(DoctorError):
    """A path inside the root changed into a link, or is not what it must be: nothing is written."""


def components(inside: str) -> List[str]:
    parts = [c for c in inside.split("/") if c not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"{inside}: '..' in a resolved path")
    return parts


def open_root(root: Root) -> int:
    """An fd on the root directory itself (the user chose it; its own path is trusted)."""
    return os.open(root.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(root_fd: int, inside: str, create: bool = False, mode: int = 0o755) -> int:
    """The directory `inside` (already resolved, no links expected) opened component by component from
    `root_fd` without following a link; missing components are created when `create`. Caller closes."""
    fd = os.dup(root_fd)
    walked = ""
    try:
        for name in components(inside):
            walked += "/" + name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened (without following) just below
                os.fsync(fd)
                child = _open_dir_component(fd, name, walked)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"refusing to write under {walked}: it is a symbolic link or not a "
                                     "directory (it changed since it was resolved inside the root)") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_dir_component(parent_fd: int, name: str, walked: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"refusing to write under {walked}: it is a symbolic link or not a directory") from None
        raise


def read_existing(dir_fd: int, name: str, shown: str) -> Tuple[bytes, os.stat_result]:
    """Content and stat of a regular file in `dir_fd`, not following a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"refusing to replace {shown}: it is a symbolic link now") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"refusing to replace {shown}: not a regular file")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def set_owner_mode(fd: int, mode: int, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    """Owner first (a chown clears set-id bits), then mode, both on the fd. Not root: the owner stays ours."""
    if uid is not None and gid is not None:
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            pass
    os.fchmod(fd, mode & 0o7777)


def create_file(dir_fd: int, name: str, data: bytes, mode: int = 0o600, uid: Optional[int] = None,
                gid: Optional[int] = None) -> None:
    """A new file `name` in `dir_fd` (O_EXCL|O_NOFOLLOW: an existing file or link there is an error),
    written, owned and moded through its fd, fsynced; then the directory is fsynced."""
    fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        set_owner_mode(fd, mode, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.fsync(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def new_temp_file(dir_fd: int, base: str) -> Tuple[int, str]:
    """An exclusive temporary file next to `base` in `dir_fd`: (fd, name)."""
    for _ in range(100):
        name = f".{base}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            return os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no unused temporary file name", base)


@dataclass
class AtomicResult:
    old: Optional[bytes]  # what was replaced; None: the file is new
    old_stat: Optional[os.stat_result]


def replace_atomically(root_fd: int, inside: str, data: bytes, fault: Callable[[str], None],
                       before_write: Callable[[Optional[bytes], Optional[os.stat_result]], None]) -> AtomicResult:
    """Write `data` to `inside` (resolved, no links) atomically: temporary file in the same directory,
    fsync, owner/mode from the old file (0644 for a new one), rename over it, directory fsync.

    `before_write(old, stat)` runs once the old content is read (the backup, the "changed since
    planned" check); `fault(step)` runs before each step (tests crash there)."""
    parent, _, base = inside.rstrip("/").rpartition("/")
    if not base:
        raise UnsafePath(f"{inside}: not a file path")
    old: Optional[bytes] = None
    st: Optional[os.stat_result] = None
    try:
        existing_dir = open_dir(root_fd, parent)
    except FileNotFoundError:
        existing_dir = None
    if existing_dir is not None:
        try:
            old, st = read_existing(existing_dir, base, inside)
        except FileNotFoundError:
            pass
        finally:
            os.close(existing_dir)
    before_write(old, st)
    fault("mkdir")
    dir_fd = open_dir(root_fd, parent, create=True)
    try:
        fault("tempfile")
        fd, tmp = new_temp_file(dir_fd, base)
        try:
            try:
                fault("write")
                _write_all(fd, data)
                fault("fsync")
                os.fsync(fd)
                fault("chmod")
                if st is not None:
                    set_owner_mode(fd, st.st_mode, st.st_uid, st.st_gid)
                else:
                    set_owner_mode(fd, 0o644)
            finally:
                os.close(fd)
            fault("rename")
            os.rename(tmp, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        fault("dirfsync")
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return AtomicResult(old, st)


class BackupRun:
    """One backup directory per run: <backup dir>/<YYYYmmddTHHMMSS>-<random>, made with an exclusive
    mkdir (mode 0700) the first time something is backed up. Two runs never share one."""

    def __init__(self, root_fd: int, base_inside: str, stamp: Optional[str] = None) -> None:
        self.root_fd = root_fd
        self.base_inside = base_inside  # resolved inside the root
        self.stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
        self.inside: Optional[str] = None  # the run directory, once made

    def _make(self) -> str:
        base_fd = open_dir(self.root_fd, self.base_inside, create=True)
        try:
            for _ in range(100):
                name = f"{self.stamp}-{secrets.token_hex(4)}"
                try:
                    os.mkdir(name, 0o700, dir_fd=base_fd)
                except FileExistsError:
                    continue
                os.fsync(base_fd)
                return f"{self.base_inside.rstrip('/')}/{name}"
        finally:
            os.close(base_fd)
        raise OSError(errno.EEXIST, "no unused backup directory name", self.base_inside)

    def save(self, original_inside: str, data: bytes, st: os.stat_result) -> str:
        """Copy `data` to <run dir><original path>, with the original's mode and owner. Returns its inside path."""
        if self.inside is None:
            self.inside = self._make()
        parent, _, base = original_inside.rstrip("/").rpartition("/")
        dir_fd = open_dir(self.root_fd, self.inside + parent, create=True, mode=0o700)
        try:
            create_file(dir_fd, base, data, st.st_mode & 0o777, st.st_uid, st.st_gid)  # no set-id bits on a copy
        finally:
            os.close(dir_fd)
        return f"{self.inside}{original_inside}"
