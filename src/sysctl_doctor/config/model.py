"""The sysctl.d model: what the administrator configured, line by line.

Plain data only. `sysctl_doctor.config.sysctl_d` fills it from a `Root`
exactly the way systemd-sysctl (252) or procps `sysctl --system` (4.0.2)
would read the same files.

Keys are shown in the normalised *dotted* form (``net.ipv4.conf.eth0/100.rp_filter``
is interface ``eth0.100``); `key_to_path` / `path_to_key` convert between that
and the slash form used under /proc/sys (``net/ipv4/conf/eth0.100/rp_filter``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import FrozenSet, List, Literal, Optional, Tuple, Union

from sysctl_doctor.errors import Diagnostic

Flavor = Literal["systemd", "procps"]
FLAVORS: Tuple[str, ...] = ("systemd", "procps")

GLOB_CHARS = "*?["


def is_glob(key: str) -> bool:
    """True when `key` holds a glob character (both tools use ``*?[``)."""
    return any(c in key for c in GLOB_CHARS)


def swap_separators(key: str) -> str:
    """Swap dots and slashes when the first separator is a dot (sysctl.d(5)).

    ``net.ipv4.conf.eth0/100.rp_filter`` -> ``net/ipv4/conf/eth0.100/rp_filter``;
    a key whose first separator is already a slash is left alone.
    """
    for i, c in enumerate(key):
        if c == "/":
            return key
        if c == ".":
            return key[:i] + key[i:].translate(_SWAP)
    return key


_SWAP = str.maketrans({".": "/", "/": "."})


def key_to_path(key: str) -> str:
    """Dotted (or already slash) key -> slash path relative to /proc/sys."""
    return swap_separators(key).lstrip("/")


def path_to_key(path: str) -> str:
    """Slash path relative to /proc/sys -> dotted key (dots in names become slashes)."""
    return path.translate(_SWAP)


@dataclass(frozen=True)
class Origin:
    file: str  # path inside the root
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class OverriddenLine:
    file: str
    line: int
    value: str
    kind: str = "assignment"  # "assignment" | "exclusion" (a "-key" line, value "")

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.line)


@dataclass
class SysctlAssignment:
    key: str  # normalised dotted form; may be a glob
    value: str  # exactly as it would be written (undecodable bytes as surrogate escapes)
    origin: Origin
    ignore_failure: bool  # "-" prefix
    overrides: List[OverriddenLine] = field(default_factory=list)  # lines it beat, oldest first
    is_glob: bool = False
    # Lines that repeated the same key with the same value; systemd keeps the
    # first one in place (and ORs the "-" flag), procps writes each again.
    repeats: List[OverriddenLine] = field(default_factory=list)
    # Slash form relative to /proc/sys, exactly as the flavour opens it
    # (computed from `key` when not given).
    path: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            self.path = key_to_path(self.key)


@dataclass(frozen=True)
class SysctlExclusion:
    pattern: str  # dotted form, "-key" with no value
    origin: Origin
    overrides: Tuple[OverriddenLine, ...] = ()  # systemd: an earlier assignment of the same key it cancelled
    path: str = ""  # slash form relative to /proc/sys (computed from `pattern` when not given)

    def __post_init__(self) -> None:
        if not self.path:
            object.__setattr__(self, "path", key_to_path(self.pattern))


@dataclass(frozen=True)
class IgnoredFile:
    file: str
    reason: str


@dataclass
class SysctlConfig:
    flavor: Flavor
    files: List[str]  # files read, in the order they are applied
    assignments: List[SysctlAssignment]  # in apply order
    exclusions: List[SysctlExclusion]
    ignored_files: List[IgnoredFile]
    diagnostics: List[Diagnostic]  # non-assignment lines, bad bytes, unreadable files (file:line)
    # Every line that took part, in file order, including ones later replaced:
    # (origin, dotted key, value or None for an exclusion). `explain` reads it.
    history: List[Tuple[Origin, str, Optional[str]]] = field(default_factory=list)
    # Every file the flavour opens, in order (files + masks + directories; procps also
    # names files it then fails to open).
    opened: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class KeyTree:
    """The set of keys that exist: slash paths of the files under a /proc/sys-like directory."""

    paths: FrozenSet[str]  # e.g. "net/netfilter/nf_conntrack_tcp_be_liberal"
    directories: FrozenSet[str] = frozenset()
    read_only: FrozenSet[str] = frozenset()  # files without the owner write bit

    @classmethod
    def from_dir(cls, path: Union[str, "os.PathLike[str]"]) -> "KeyTree":
        """Walk a directory laid out like /proc/sys (the real one is fine)."""
        base = os.fspath(path)
        files: set = set()
        dirs: set = set()
        read_only: set = set()
        todo = [("", base)]
        while todo:
            rel, host = todo.pop()
            try:
                entries = list(os.scandir(host))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                child = f"{rel}/{name}" if rel else name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        dirs.add(child)
                        todo.append((child, entry.path))
                        continue
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    dirs.add(child)
                    continue
                files.add(child)
                if not st.st_mode & stat.S_IWUSR:
                    read_only.add(child)
        return cls(frozenset(files), frozenset(dirs), frozenset(read_only))

    def __contains__(self, path: object) -> bool:
        return path in self.paths


@dataclass
class EffectiveSetting:
    """One concrete write, in the order the flavour performs it."""

    key: str  # concrete dotted key (the glob itself when no KeyTree is available)
    value: str
    assignment: SysctlAssignment  # the line it comes from (explicit or glob)
    exists: Optional[bool]  # None when no KeyTree given
    # Lines that set (or would have set) this same concrete key and lost to this write.
    overrides: List[OverriddenLine] = field(default_factory=list)
    # False when a later write to the same key replaces this value (procps duplicates,
    # two globs matching one key).
    final: bool = True
    path: str = ""  # slash form relative to /proc/sys (computed from `key` when not given)

    def __post_init__(self) -> None:
        if not self.path:
            self.path = key_to_path(self.key)
