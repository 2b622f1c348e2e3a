"""systemd unit files as the root holds them: search path, drop-ins, masks, wants, ordering.

Only what decides *when* something runs at boot is modelled:
- the unit search path of a system manager (first directory holding a name wins; a
  link to /dev/null there masks the unit);
- drop-ins ``<unit>.d/*.conf`` and the type-wide ``service.d/*.conf`` from every
  directory of the path, the same file name in an earlier directory winning, all
  applied in file-name order; an empty assignment (``After=``) resets a list;
- the boot transaction: units pulled in from ``default.target`` through ``Wants=``,
  ``Requires=``, ``BindsTo=`` and ``.wants/`` / ``.requires/`` link directories;
- ordering: ``After=``/``Before=`` plus the implicit default dependencies
  (a service with ``DefaultDependencies=yes`` is ordered after ``sysinit.target``
  and ``basic.target``; a target orders itself after what it wants).
  Ordering between two units only holds through units that are in the transaction.
"""

from __future__ import annotations

import os
import shlex
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from sysctl_doctor.root import ChasedPath, PathKind, Root

UNIT_PATH: Tuple[str, ...] = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)

SYSCTL_UNIT = "systemd-sysctl.service"
MODULES_LOAD_UNIT = "systemd-modules-load.service"
# Targets every systemd boot reaches whatever the root's link farm says.
ALWAYS_PULLED: Tuple[str, ...] = ("sysinit.target", "basic.target")
# When a root lacks these unit files (a partial image), systemd 252's shipped ordering is assumed.
SHIPPED_ORDERING = {
    SYSCTL_UNIT: "[Unit]\nDefaultDependencies=no\nAfter=systemd-modules-load.service\nBefore=sysinit.target shutdown.target\n",
    MODULES_LOAD_UNIT: "[Unit]\nDefaultDependencies=no\nBefore=sysinit.target shutdown.target\n",
}
SHIPPED_MARK = "(systemd 252 as shipped)"


@dataclass(frozen=True)
class UnitLine:
    """One assignment in a unit file or drop-in, with where it is."""

    section: str
    key: str
    value: str
    file: str
    line: int


@dataclass
class Unit:
    """A unit after its fragment and drop-ins are merged."""

    name: str
    fragment: Optional[str]  # path inside the root; None when no file exists
    dropins: List[str] = field(default_factory=list)
    masked: bool = False
    masked_by: Optional[str] = None
    lines: List[UnitLine] = field(default_factory=list)

    def values(self, section: str, key: str) -> List[UnitLine]:
        """Assignments of a key in order, an empty one resetting those before it."""
        out: List[UnitLine] = []
        for item in self.lines:
            if item.section == section and item.key == key:
                if item.value == "":
                    out = []
                else:
                    out.append(item)
        return out

    def names(self, section: str, key: str) -> List[str]:
        result: List[str] = []
        for item in self.values(section, key):
            for word in item.value.split():
                if word not in result:
                    result.append(word)
        return result

    def last(self, section: str, key: str) -> Optional[UnitLine]:
        values = self.values(section, key)
        return values[-1] if values else None

    @property
    def default_dependencies(self) -> bool:
        item = self.last("Unit", "DefaultDependencies")
        if item is None:
            return True
        return item.value.strip().lower() not in ("no", "false", "0", "off", "n", "f")

    @property
    def kind(self) -> str:
        return self.name.rsplit(".", 1)[-1] if "." in self.name else ""

    def exec_lines(self, key: str = "ExecStart") -> List[UnitLine]:
        return self.values("Service", key)


def parse_unit_text(text: str, file: str) -> List[UnitLine]:
    """Assignments of a unit file: sections, comments (# ;), backslash continuation."""
    out: List[UnitLine] = []
    section = ""
    pending: Optional[Tuple[str, int]] = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if pending is not None:
            start_text, start_line = pending
            if line.startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending = (start_text + " " + line[:-1].strip(), start_line)
                continue
            line, number = (start_text + " " + line).strip(), start_line
            pending = None
        elif not line or line.startswith(("#", ";")):
            continue
        elif line.endswith("\\"):
            pending = (line[:-1].strip(), number)
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.append(UnitLine(section, key.strip(), value.strip(), file, number))
    if pending is not None:
        start_text, start_line = pending
        if "=" in start_text:
            key, value = start_text.split("=", 1)
            out.append(UnitLine(section, key.strip(), value.strip(), file, start_line))
    return out


class SystemdUnits:
    """The units of a root, loaded lazily and cached."""

    def __init__(self, root: Root, unit_path: Iterable[str] = UNIT_PATH) -> None:
        self.root = root
        self.unit_path = tuple(unit_path)
        self._units: Dict[str, Unit] = {}
        self._dir_cache: Dict[str, List[str]] = {}
        self._chased: Dict[str, ChasedPath] = {}
        # each distinct directory of the path once (/lib -> usr/lib is the same one)
        self._dirs: List[str] = []
        seen: Set[str] = set()
        for directory in self.unit_path:
            real = root.chase(directory).resolved
            if root.empty_at_boot(directory):
                continue  # an offline root's /run/systemd/system: a tmpfs at boot, never read
            if real not in seen:
                seen.add(real)
                self._dirs.append(directory)
        self._top: Dict[str, Set[str]] = {d: set(root.listdir(d)) for d in self._dirs}

    # -- reading ---------------------------------------------------------------
    def _listdir(self, path: str) -> List[str]:
        if path not in self._dir_cache:
            parent, _, name = path.rpartition("/")
            if parent in self._top and name not in self._top[parent]:
                self._dir_cache[path] = []
            else:
                self._dir_cache[path] = self.root.listdir(path)
        return self._dir_cache[path]

    def _find_fragment(self, name: str) -> Tuple[Optional[str], bool]:
        """(path, masked) of the first file named `name` on the unit path."""
        for directory in self._dirs:
            if name not in self._top[directory]:
                continue
            path = f"{directory}/{name}"
            chased = self.root.chase(path)
            self._chased[path] = chased
            if chased.kind is PathKind.NULL:
                return path, True
            if chased.kind is PathKind.FILE:
                return path, False
        return None, False

    def _template_of(self, name: str) -> Optional[str]:
        stem, dot, suffix = name.rpartition(".")
        if "@" in stem and not stem.endswith("@"):
            return stem.split("@", 1)[0] + "@." + suffix
        return None

    def _dropin_files(self, name: str) -> List[str]:
        kind = name.rsplit(".", 1)[-1]
        dirs_names = [f"{name}.d"]
        template = self._template_of(name)
        if template:
            dirs_names.insert(0, f"{template}.d")
        dirs_names.insert(0, f"{kind}.d")
        chosen: Dict[str, str] = {}
        masked: Set[str] = set()
        for directory in self._dirs:
            for dname in dirs_names:
                for entry in self._listdir(f"{directory}/{dname}"):
                    if not entry.endswith(".conf") or entry in chosen or entry in masked:
                        continue
                    path = f"{directory}/{dname}/{entry}"
                    chased = self.root.chase(path)
                    self._chased[path] = chased
                    if chased.kind is PathKind.NULL:
                        masked.add(entry)
                        continue
                    chosen[entry] = path
        return [chosen[n] for n in sorted(chosen)]

    def unit(self, name: str) -> Unit:
        if name in self._units:
            return self._units[name]
        fragment, masked = self._find_fragment(name)
        if fragment is None:
            template = self._template_of(name)
            if template:
                fragment, masked = self._find_fragment(template)
        unit = Unit(name=name, fragment=fragment, masked=masked)
        if masked:
            unit.masked_by = f"{fragment} -> /dev/null"
            self._units[name] = unit
            return unit
        if fragment is not None:
            unit.lines.extend(self._read(fragment))
        elif name in SHIPPED_ORDERING:
            unit.lines.extend(parse_unit_text(SHIPPED_ORDERING[name], f"{name} {SHIPPED_MARK}"))
        unit.dropins = self._dropin_files(name)
        for path in unit.dropins:
            unit.lines.extend(self._read(path))
        self._units[name] = unit
        return unit

    def _read(self, path: str) -> List[UnitLine]:
        # one chase per file: the chased host path is opened directly (it is inside the root)
        chased = self._chased.get(path) or self.root.chase(path)
        if chased.kind is not PathKind.FILE:
            return []
        try:
            with open(chased.host, "rb") as handle:
                text = handle.read().decode("utf-8", errors="replace")
        except OSError as exc:
            self.root.note_unreadable_file(path, exc.strerror or str(exc))
            return []
        return parse_unit_text(text, path)

    def linked_from(self, name: str, suffix: str) -> List[str]:
        """Units listed in `<name>.<suffix>/` link directories (wants, requires)."""
        out: List[str] = []
        for directory in self._dirs:
            for entry in self._listdir(f"{directory}/{name}.{suffix}"):
                if entry not in out:
                    out.append(entry)
        return out

    def wanted_link(self, target: str, unit: str) -> Optional[str]:
        """The `<target>.wants/<unit>` link path that enables `unit`, if any."""
        for directory in self._dirs:
            for suffix in ("wants", "requires"):
                if unit in self._listdir(f"{directory}/{target}.{suffix}"):
                    return f"{directory}/{target}.{suffix}/{unit}"
        return None

    def default_target(self) -> str:
        for directory in self._dirs:
            link = self.root.readlink(f"{directory}/default.target")
            if link:
                return os.path.basename(link)
            if self.root.kind(f"{directory}/default.target") is PathKind.FILE:
                return "default.target"
        return "graphical.target"

    # -- boot transaction and ordering -----------------------------------------
    def pulled_by(self, unit: Unit) -> List[str]:
        names: List[str] = []
        for key in ("Wants", "Requires", "BindsTo"):
            names.extend(unit.names("Unit", key))
        for suffix in ("wants", "requires"):
            names.extend(self.linked_from(unit.name, suffix))
        if unit.kind == "service" and unit.default_dependencies:
            names.extend(["sysinit.target", "basic.target"])
        return names

    def boot_transaction(self) -> "BootTransaction":
        seeds = [self.default_target(), "multi-user.target", "sysinit.target", "basic.target"]
        if self.unit("sysinit.target").fragment is None:
            # a partial root without systemd's own targets: assume what sysinit.target.wants ships
            seeds += [SYSCTL_UNIT, MODULES_LOAD_UNIT]
        members: Dict[str, Unit] = {}
        pulled_from: Dict[str, str] = {}
        queue = deque(seeds)
        while queue:
            name = queue.popleft()
            if name in members:
                continue
            unit = self.unit(name)
            if unit.masked:
                continue
            members[name] = unit
            for dep in self.pulled_by(unit):
                if dep not in members:
                    pulled_from.setdefault(dep, name)
                    queue.append(dep)
        return BootTransaction(self, members, pulled_from)


@dataclass(frozen=True)
class OrderEdge:
    """`first` is ordered before `second`, because of `because` (file:line or rule)."""

    first: str
    second: str
    because: str


class BootTransaction:
    """The units a boot starts, and the ordering between them."""

    def __init__(self, units: SystemdUnits, members: Dict[str, Unit], pulled_from: Dict[str, str]) -> None:
        self.units = units
        self.members = members
        self.pulled_from = pulled_from
        self.edges: Dict[str, List[OrderEdge]] = {}
        for unit in members.values():
            for edge in self._edges_of(unit):
                if edge.first in members and edge.second in members:
                    self.edges.setdefault(edge.first, []).append(edge)

    def _edges_of(self, unit: Unit) -> Iterable[OrderEdge]:
        for item in unit.values("Unit", "After"):
            for other in item.value.split():
                yield OrderEdge(other, unit.name, f"{item.file}:{item.line} After={other}")
        for item in unit.values("Unit", "Before"):
            for other in item.value.split():
                yield OrderEdge(unit.name, other, f"{item.file}:{item.line} Before={other}")
        if unit.default_dependencies and (unit.fragment is not None or unit.dropins):
            if unit.kind == "service":
                for target in ("sysinit.target", "basic.target"):
                    yield OrderEdge(target, unit.name, f"{unit.fragment or unit.name}: default dependencies")
            elif unit.kind == "target":
                for dep in self.units.pulled_by(unit):
                    yield OrderEdge(dep, unit.name, f"{unit.name} wants {dep} (implicit After=)")

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def order_path(self, first: str, second: str) -> Optional[List[OrderEdge]]:
        """A chain of ordering edges proving `first` runs before `second`, or None."""
        if first not in self.members or second not in self.members:
            return None
        previous: Dict[str, OrderEdge] = {}
        queue = deque([first])
        seen = {first}
        while queue:
            name = queue.popleft()
            if name == second:
                chain: List[OrderEdge] = []
                while name != first:
                    edge = previous[name]
                    chain.append(edge)
                    name = edge.first
                return list(reversed(chain))
            for edge in self.edges.get(name, []):
                if edge.second not in seen:
                    seen.add(edge.second)
                    previous[edge.second] = edge
                    queue.append(edge.second)
        return None

    def relation(self, unit: str, reference: str) -> str:
        """"before", "after" or "unordered": where `unit` runs relative to `reference`."""
        if self.order_path(unit, reference) is not None:
            return "before"
        if self.order_path(reference, unit) is not None:
            return "after"
        return "unordered"

    def why_member(self, name: str) -> str:
        """A short reason the unit is started at boot ("sysinit.target wants it")."""
        if name in ALWAYS_PULLED:
            return "part of every systemd boot"
        parent = self.pulled_from.get(name)
        if parent is None:
            return "assumed started at boot (the root has no sysinit.target to pull it)"
        link = self.units.wanted_link(parent, name)
        if link:
            return f"enabled: {link}"
        return f"pulled in by {parent}"


def exec_words(value: str) -> List[str]:
    """An Exec*= value as systemd runs it: its special prefixes (-@+!:) dropped, then split as the shell
    would (a value the shell cannot split, an open quote, falls back to whitespace)."""
    while value[:1] in ("-", "@", "+", "!", ":"):
        value = value[1:]
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()
