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
from typing import Dict, FrozenSet, List, Literal, NamedTuple, Optional, Tuple, Union

from sysctl_doctor.errors import Diagnostic

Flavor = Literal["systemd", "procps"]
FLAVORS: Tuple[str, ...] = ("systemd", "procps")

GLOB_CHARS = "*?["


def is_glob(key: str) -> bool:
    """True when `key` holds a glob character (both tools use ``*?[``)."""
    return "*" in key or "?" in key or "[" in key


def swap_separators(key: str) -> str:
    """Swap dots and slashes when the first separator is a dot (sysctl.d(5)).

    ``net.ipv4.conf.eth0/100.rp_filter`` -> ``net/ipv4/conf/eth0.100/rp_filter``;
    a key whose first separator is already a slash is left alone.
    """
    dot = key.find(".")
    if dot < 0:
        return key
    slash = key.find("/", 0, dot)
    if slash >= 0:
        return key
    return key[:dot] + _swap_all(key[dot:])


def _swap_all(text: str) -> str:
    # Three C-level replaces beat str.translate by far on short keys.
    if "/" not in text:
        return text.replace(".", "/")
    return text.replace(".", "\0").replace("/", ".").replace("\0", "/")


def key_to_path(key: str) -> str:
    """A key as written (dotted or slash form, with stray spaces or outer slashes) -> slash path relative to
    /proc/sys: the one normaliser for keys that come from users, rules and tables. (What systemd-sysctl and
    procps themselves open is `sysctl_d.systemd_normalize` / `sysctl_d.procps_path`: each program's own rule.)"""
    return swap_separators(key.strip()).strip("/")


def path_to_key(path: str) -> str:
    """Slash path relative to /proc/sys -> dotted key (dots in names become slashes)."""
    return _swap_all(path)


@dataclass(frozen=True)
class Origin:
    file: str  # path inside the root
    line: int  # 1-based

    def __init__(self, file: str, line: int) -> None:
        # One is made per config line: fill the fields directly (2x faster than the
        # generated frozen __init__); the instance stays frozen, hashable and comparable.
        fields = self.__dict__
        fields["file"] = file
        fields["line"] = line

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


# Why a file's lines are never applied (IgnoredFile.kind; the fate of each line in it)
SHADOWED = "shadowed"  # a file of the same name in an earlier directory wins
MASKED = "masked"  # the winner of its name is a link to /dev/null
RUNTIME_ONLY = "runtime-only"  # in an offline root's /run: a tmpfs at boot
NEVER_READ = "never-read"  # any other reason: not a .conf name, /etc/sysctl.conf without the link, ...


@dataclass(frozen=True)
class IgnoredFile:
    file: str
    reason: str
    kind: str = NEVER_READ  # SHADOWED, MASKED, RUNTIME_ONLY or NEVER_READ
    by: Optional[str] = None  # SHADOWED, MASKED: the file of the same name that wins (or the /dev/null link)


class ConfigLine(NamedTuple):
    """One line that took part (assignment or exclusion), whether or not it survived."""

    origin: Origin
    key: str  # normalised dotted form
    path: str  # slash form as the flavour uses it
    value: Optional[str]  # None: an exclusion ("-key")
    ignore_failure: bool = False

    @property
    def is_glob(self) -> bool:
        return "*" in self.path or "?" in self.path or "[" in self.path


@dataclass
class SysctlConfig:
    flavor: Flavor
    files: List[str]  # files read, in the order they are applied
    assignments: List[SysctlAssignment]  # in apply order
    exclusions: List[SysctlExclusion]
    ignored_files: List[IgnoredFile]
    diagnostics: List[Diagnostic]  # non-assignment lines, bad bytes, unreadable files (file:line)
    # Every line that took part, in apply (file) order, including ones later replaced.
    history: List[ConfigLine] = field(default_factory=list)
    # Every file the flavour opens, in order (files + masks + directories; procps also
    # names files it then fails to open).
    opened: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class KeyTree:
    """The set of keys that exist: slash paths of the files under a /proc/sys-like directory."""

    paths: FrozenSet[str]  # e.g. "net/netfilter/nf_conntrack_tcp_be_liberal"
    directories: FrozenSet[str] = frozenset()
    read_only: FrozenSet[str] = frozenset()  # files known to lack the owner write bit
    source: Optional[str] = None  # the directory it was read from (for `writable`)

    @classmethod
    def from_dir(cls, path: Union[str, "os.PathLike[str]"]) -> "KeyTree":
        """Walk a directory laid out like /proc/sys (the real one is fine).

        File types come from the directory entries (no stat per key); modes are
        looked up only for the few keys `writable()` is asked about."""
        base = os.fspath(path)
        files: set = set()
        dirs: set = set()
        todo = [("", base)]
        while todo:
            rel, host = todo.pop()
            try:
                with os.scandir(host) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir():
                        dirs.add(child)
                        if not entry.is_symlink():
                            todo.append((child, entry.path))
                    elif entry.is_file():
                        files.add(child)
                except OSError:
                    continue
        return cls(frozenset(files), frozenset(dirs), frozenset(), base)

    @classmethod
    def of(cls, paths: "Union[FrozenSet[str], set, list, tuple]") -> "KeyTree":
        """A tree holding exactly these key files (and their parent directories)."""
        files = frozenset(paths)
        dirs = set()
        for p in files:
            parts = p.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
        return cls(files, frozenset(dirs))

    def __contains__(self, path: object) -> bool:
        return path in self.paths

    def writable(self, path: str) -> bool:
        """Does the key file have its owner write bit (procps checks S_IWUSR)?"""
        if path in self.read_only:
            return False
        if self.source is None:
            return True
        try:
            return bool(os.stat(os.path.join(self.source, path)).st_mode & stat.S_IWUSR)
        except OSError:
            return False

    def all_directories(self) -> FrozenSet[str]:
        """`directories` plus every parent of a key (a tree built from key paths alone works)."""
        cached = self.__dict__.get("_all_dirs")
        if cached is None:
            found = set(self.directories)
            for p in self.paths:
                parent = p.rpartition("/")[0]
                while parent and parent not in found:
                    found.add(parent)
                    parent = parent.rpartition("/")[0]
            cached = frozenset(found)
            object.__setattr__(self, "_all_dirs", cached)
        return cached

    def children(self) -> Dict[str, List[str]]:
        """Directory ("" for the top) -> names in it (files and directories); built once."""
        cached = self.__dict__.get("_children")
        if cached is None:
            cached = {}
            for p in (*self.paths, *self.all_directories()):
                parent, _, name = p.rpartition("/")
                cached.setdefault(parent, []).append(name)
            object.__setattr__(self, "_children", cached)
        return cached


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
    # Not final because a later write through another name of the same kernel variable (an alias,
    # e.g. net.nf_conntrack_max for net.netfilter.nf_conntrack_max) replaced it: that name's slash path.
    alias_winner: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.path:
            self.path = key_to_path(self.key)
