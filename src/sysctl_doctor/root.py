"""A confined, read-only view of a filesystem: the live `/` or an image directory.

Every path the tool reads goes through a `Root`. Paths are given as they are
seen *inside* the root ("/etc/sysctl.d/x.conf"). Symlinks are resolved inside
the root the way systemd's chase() does with a root directory: an absolute
target is re-rooted, ``..`` stops at the root, and a chain of more than
`MAX_SYMLINK_HOPS` links is reported as a loop. Nothing ever escapes the root.

A link that ends at ``/dev/null`` is a *mask* (systemd's convention); it is
reported as `PathKind.NULL` whether or not the root has a /dev.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from sysctl_doctor.errors import Diagnostic, DoctorError

MAX_SYMLINK_HOPS = 40  # the kernel's and systemd's limit
DEV_NULL = "/dev/null"


class RootError(DoctorError):
    """A path cannot be resolved inside the root (symlink loop, bad root)."""


class SymlinkLoop(RootError, OSError):
    """More than MAX_SYMLINK_HOPS links: also an OSError (ELOOP), so a reader that skips unreadable
    files with a warning skips this one too instead of stopping the whole run."""

    def __init__(self, path: str) -> None:
        OSError.__init__(self, errno.ELOOP, "too many levels of symbolic links (a loop?)", path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class UnreadableError(RootError):
    """Directories the analysis needed could not be listed or searched (EACCES): the answer would be wrong."""


# errno values that mean "there is something here we may not read", not "there is nothing here"
_DENIED = (errno.EACCES, errno.EPERM)


class PathKind(enum.Enum):
    MISSING = "missing"
    FILE = "file"
    DIR = "dir"
    NULL = "null"  # /dev/null, or a link to it: a mask
    OTHER = "other"  # device, socket, fifo


@dataclass(frozen=True)
class ChasedPath:
    """Where an inside path really leads, still inside the root."""

    requested: str  # as asked, normalised ("/etc/sysctl.d/99-sysctl.conf")
    resolved: str  # after following links ("/etc/sysctl.conf")
    host: Path  # the host path to open
    kind: PathKind

    @property
    def is_link(self) -> bool:
        return self.requested != self.resolved


def _components(path: str) -> List[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


class Root:
    """A confined view of the filesystem under `path`."""

    def __init__(self, path: Union[str, Path] = "/", live: bool = False) -> None:
        host = Path(os.path.abspath(os.fspath(path)))
        if not host.is_dir():
            raise RootError(f"--root {os.fspath(path)}: not a directory")
        self.path = Path(os.path.realpath(host))
        # inside directory -> why it could not be read; shared with the views made from this root
        self.unreadable: Dict[str, str] = {}
        # inside file -> why it could not be read (it exists): a diagnostic, shared with the views
        self.unreadable_files: Dict[str, str] = {}
        # `live`: this root is the running system's `/` mounted elsewhere (a container with the node's
        # `/` at /host and the node's /proc): live facts (/proc, uname) describe it.
        self._live = live

    def note_unreadable(self, inside: str, reason: str) -> None:
        """Record a directory that exists but could not be listed or searched (permission denied)."""
        self.unreadable.setdefault("/" + "/".join(_components(inside)), reason)

    def note_unreadable_file(self, inside: str, reason: str) -> None:
        """Record a file that exists but could not be read. Every reader follows this one policy: the file
        is skipped (as systemd, udev and kmod skip it) and the analysis reports `file: cannot read: reason`."""
        self.unreadable_files.setdefault("/" + "/".join(_components(inside)), reason)

    def read_config(self, path: str) -> Optional[str]:
        """A configuration file's text; None when it is absent, or unreadable (then recorded, see
        `note_unreadable_file`)."""
        try:
            return self.read_text(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                self.note_unreadable_file(path, exc.strerror or str(exc))
            return None

    def unreadable_file_diagnostics(self) -> List[Diagnostic]:
        return [Diagnostic(f"cannot read: {reason}", path) for path, reason in self.unreadable_files.items()]

    def raise_if_unreadable(self) -> None:
        """Stop with exit 2 (`UnreadableError`) when a directory the analysis read was unreadable.

        A directory that cannot be read is not a missing one: taking it as missing silently changes
        the answer (another sysctl flavour, another init system, a module never loaded)."""
        if not self.unreadable:
            return
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(self.unreadable.items()))
        raise UnreadableError(
            f"cannot read {listed} (in root {self.path}). The answer depends on what is there, so none is "
            "given: run as a user that can read it (e.g. root)")

    @property
    def is_live(self) -> bool:
        """True when this root is the running system's `/` (or declared to be it, mounted elsewhere)."""
        return self._live or self.path == Path("/")

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    def empty_at_boot(self, directory: str) -> bool:
        """Whether the boot finds `directory` empty although the root holds files there.

        /run is a tmpfs mounted fresh at every boot: in an offline root (an image, a mounted disk) the
        files found under it (/run/sysctl.d, /run/modules-load.d, /run/udev/rules.d,
        /run/systemd/system, …) were left by whoever built the image and are never read at boot. On the
        running host they are what they are: the tools read them when they run again (a unit restart,
        udev, `systemd-sysctl`). The one place this policy lives: every boot reader asks here."""
        if self.is_live:
            return False
        try:
            resolved = self.chase(directory).resolved
        except RootError:
            resolved = "/" + "/".join(_components(directory))
        return resolved == "/run" or resolved.startswith("/run/")

    def host_path(self, inside: str) -> Path:
        """The host path of an already-resolved inside path."""
        parts = _components(inside)
        return self.path.joinpath(*parts) if parts else self.path

    def chase(self, path: str, *, follow_final: bool = True) -> ChasedPath:
        """Resolve `path` inside the root, following links (but never out of it)."""
        if not path.startswith("/"):
            path = "/" + path
        todo = _components(path)
        done: List[str] = []
        hops = 0
        base = os.fspath(self.path).rstrip("/")  # strings, not Path objects: chase runs ~250 times a check
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            host = f"{base}/{'/'.join(done)}/{name}" if done else f"{base}/{name}"
            try:
                st = os.lstat(host)
            except OSError as exc:
                if exc.errno in _DENIED:
                    self.note_unreadable("/".join(done), f"cannot search: {exc.strerror}")
                # Missing (or unreadable) component: the rest is taken literally.
                done.append(name)
                done.extend(c for c in todo if c != "..")
                todo = []
                break
            if stat.S_ISLNK(st.st_mode) and (todo or follow_final):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise SymlinkLoop(path)
                try:
                    target = os.readlink(host)
                except OSError as exc:
                    raise RootError(f"{path}: cannot read link: {exc.strerror}") from exc
                if target.startswith("/"):
                    done = []
                todo = _components(target) + todo
                continue
            done.append(name)
        resolved = "/" + "/".join(done)
        return ChasedPath(
            requested="/" + "/".join(_components(path)),
            resolved=resolved,
            host=self.host_path(resolved),
            kind=self._kind(resolved, follow_final),
        )

    def _kind(self, resolved: str, follow_final: bool) -> PathKind:
        if resolved == DEV_NULL:
            return PathKind.NULL
        host = os.fspath(self.path).rstrip("/") + resolved if resolved != "/" else os.fspath(self.path)
        try:
            st = os.stat(host) if follow_final else os.lstat(host)
        except OSError as exc:
            if exc.errno in _DENIED:
                self.note_unreadable(os.path.dirname(resolved), f"cannot search: {exc.strerror}")
            return PathKind.MISSING
        if stat.S_ISREG(st.st_mode):
            return PathKind.FILE
        if stat.S_ISDIR(st.st_mode):
            return PathKind.DIR
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
            return PathKind.NULL
        return PathKind.OTHER

    def kind(self, path: str) -> PathKind:
        """What `path` leads to; a symlink loop is OTHER (neither file nor directory: never read)."""
        try:
            return self.chase(path).kind
        except SymlinkLoop:
            return PathKind.OTHER

    def exists(self, path: str) -> bool:
        return self.kind(path) is not PathKind.MISSING

    def listdir(self, path: str) -> List[str]:
        """Names in a directory inside the root, sorted; [] when it is missing."""
        chased = self.chase(path)
        if chased.kind is not PathKind.DIR:
            return []
        try:
            return sorted(os.listdir(chased.host))
        except OSError as exc:
            if exc.errno in _DENIED:
                self.note_unreadable(chased.resolved, f"cannot list: {exc.strerror}")
            return []

    def read_bytes(self, path: str, limit: Optional[int] = None) -> bytes:
        """The bytes of a file inside the root (at most `limit` of them, if given).

        Raises `OSError` (with the inside path as filename) when it is missing,
        unreadable or not a regular file; a /dev/null mask reads as empty.
        """
        chased = self.chase(path)
        if chased.kind is PathKind.NULL:
            return b""
        if chased.kind is PathKind.DIR:
            raise IsADirectoryError(21, "Is a directory", path)
        if chased.kind is PathKind.MISSING:
            raise FileNotFoundError(2, "No such file or directory", path)
        if chased.kind is PathKind.OTHER:
            # A FIFO would block open() forever, a device could read forever.
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)", path)
        try:
            with open(chased.host, "rb") as handle:
                return handle.read() if limit is None else handle.read(limit)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None

    def read_text(self, path: str) -> str:
        """A file decoded as UTF-8 with undecodable bytes replaced."""
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def readlink(self, path: str) -> Optional[str]:
        """The raw target of a link inside the root, or None if `path` is no link."""
        chased_parent = self.chase(os.path.dirname(path) or "/")
        host = chased_parent.host / os.path.basename(path)
        try:
            return os.readlink(host)
        except OSError:
            return None


ROOT_DIRS = ("etc", "usr", "lib", "boot")  # a root has at least one of them (a bare modules tree: /lib)


def root_for_cli(root_dir: str, live: bool = False) -> Root:
    """The `--root` of a command: an empty path or a directory with none of ROOT_DIRS is an error.

    Both used to analyse as a clean root (no sysctl.d, nothing loaded) with no warning: a typo in CI
    (`--root "$UNSET"`, a mount that failed) passed as "nothing wrong"."""
    if root_dir == "":
        raise RootError("--root '': an empty path (for the current directory write --root .)")
    root = Root(root_dir, live=live)
    if root.path != Path("/") and not any((root.path / name).is_dir() for name in ROOT_DIRS):
        raise RootError(f"--root {root_dir}: not a root filesystem (it has none of "
                        f"{', '.join('/' + d for d in ROOT_DIRS)}): nothing to analyse")
    return root
