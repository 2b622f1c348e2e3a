"""udev rules that re-run systemd-sysctl when a module or a network interface appears.

Rules files (udev(7)): ``*.rules`` in /etc/udev/rules.d, /run/udev/rules.d,
/usr/local/lib/udev/rules.d, /usr/lib/udev/rules.d (+ /lib/udev/rules.d); the same
name in an earlier directory wins, a link to /dev/null masks, files are processed in
name order. A rule is one logical line (``\\`` continues it) of comma-separated
``KEY[{attr}] op "value"`` tokens. Match values are shell globs with ``|``
alternatives.

Only the rules that matter to sysctl are kept: an "add" (or any-action) rule whose
``RUN`` runs ``systemd-sysctl`` for ``SUBSYSTEM=="module"`` (sysctl.d(5)'s recipe) or
``SUBSYSTEM=="net"`` (udev's own 99-systemd.rules).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import FrozenSet, List, Optional, Sequence, Tuple

from sysctl_doctor.boot.conf_dirs import files_by_precedence
from sysctl_doctor.root import Root

UDEV_RULES_DIRS: Tuple[str, ...] = (
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
)
_TOKEN = re.compile(r'\s*([A-Za-z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass(frozen=True)
class UdevToken:
    key: str
    attr: Optional[str]
    op: str
    value: str


@dataclass
class UdevRule:
    file: str
    line: int
    text: str
    tokens: List[UdevToken] = field(default_factory=list)

    def matches(self, key: str) -> List[UdevToken]:
        return [t for t in self.tokens if t.key == key and t.op in ("==", "!=")]

    def matches_value(self, key: str, value: str) -> Optional[bool]:
        """True/False if the rule tests `key`, None if it does not test it."""
        tests = self.matches(key)
        if not tests:
            return None
        for test in tests:
            hit = any(fnmatch.fnmatchcase(value, alt) for alt in test.value.split("|"))
            if (test.op == "==") != hit:
                return False
        return True

    def runs(self) -> List[str]:
        return [t.value for t in self.tokens if t.key == "RUN" and t.op in ("=", "+=", ":=")]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def command_covers(prefixes: Tuple[str, ...], only_keys: Optional[FrozenSet[str]], slash_key: str, name: str = "") -> bool:
    """Whether a systemd-sysctl/procps sysctl run with these --prefix values (or `-p` keys) writes the key.

    --prefix values are normalised exactly as systemd-sysctl 252 does (config.sysctl_d), so
    ``--prefix=/net/netfilter`` and ``--prefix=net.netfilter`` match while ``/proc/sys/net`` does not."""
    from sysctl_doctor.config.sysctl_d import normalize_prefix, under_prefix

    if only_keys is not None:
        return slash_key in only_keys
    if not prefixes:
        return True
    expanded = [normalize_prefix(p.replace("$name", name).replace("%k", name).replace("$kernel", name))
                for p in prefixes]
    return under_prefix(slash_key, expanded)


def sysctl_command(root: Root, command: str) -> Optional[Tuple[Tuple[str, ...], Optional[FrozenSet[str]]]]:
    """(prefixes, only_keys) when `command` re-applies sysctl settings, else None."""
    prefixes = _prefixes(command)
    if prefixes is not None:
        return prefixes, None
    is_procps, keys = _procps_run(root, command)
    if is_procps:
        return (), keys
    return None


@dataclass(frozen=True)
class SysctlRerun:
    """A udev rule that runs systemd-sysctl (optionally limited by --prefix) on an event."""

    rule: UdevRule
    subsystem: str  # "module" or "net"
    prefixes: Tuple[str, ...]  # --prefix values as written ("/net/ipv4/conf/$name"); () = everything
    only_keys: Optional[FrozenSet[str]] = None  # `sysctl -p FILE`: the slash keys that file sets

    def covers_key(self, slash_key: str, name: str) -> bool:
        """Whether a run for device/module `name` re-applies the key (``$name``/``%k`` substituted)."""
        return command_covers(self.prefixes, self.only_keys, slash_key, name)

    def matches_module(self, module: str) -> bool:
        return self.subsystem == "module" and self.rule.matches_value("KERNEL", module) is not False


def parse_rules(text: str, file: str) -> List[UdevRule]:
    rules: List[UdevRule] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not buffer:
            start = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        logical = buffer.strip()
        buffer = ""
        rule = UdevRule(file=file, line=start, text=logical)
        pos = 0
        while pos < len(logical):
            match = _TOKEN.match(logical, pos)
            if not match:
                break
            rule.tokens.append(UdevToken(match.group(1), match.group(2), match.group(3), match.group(4)))
            pos = match.end()
        rules.append(rule)
    return rules


def rules_files(root: Root, dirs: Sequence[str] = UDEV_RULES_DIRS) -> List[str]:
    return files_by_precedence(root, dirs, ".rules")[0]


def _prefixes(command: str) -> Optional[Tuple[str, ...]]:
    """--prefix values of a systemd-sysctl command line, None if it does not run systemd-sysctl."""
    words = command.split()
    if not words or not words[0].endswith("systemd-sysctl"):
        return None
    out: List[str] = []
    i = 1
    while i < len(words):
        word = words[i]
        if word.startswith("--prefix="):
            out.append(word[len("--prefix="):])
        elif word == "--prefix" and i + 1 < len(words):
            out.append(words[i + 1])
            i += 1
        i += 1
    return tuple(out)


def sysctl_reruns(root: Root) -> List[SysctlRerun]:
    """Every rule that re-runs systemd-sysctl on a module or net "add" event."""
    out: List[SysctlRerun] = []
    for path in rules_files(root):
        text = root.read_config(path)
        if text is None or "sysctl" not in text:
            continue
        for rule in parse_rules(text, path):
            if rule.matches_value("ACTION", "add") is False:
                continue
            for subsystem in ("module", "net"):
                if rule.matches_value("SUBSYSTEM", subsystem) is not True:
                    continue
                for command in rule.runs():
                    prefixes = _prefixes(command)
                    if prefixes is not None:
                        out.append(SysctlRerun(rule, subsystem, prefixes))
                        continue
                    is_procps, keys = _procps_run(root, command)
                    if is_procps:
                        out.append(SysctlRerun(rule, subsystem, (), keys))
    return out


def _procps_run(root: Root, command: str) -> Tuple[bool, Optional[FrozenSet[str]]]:
    """(runs procps sysctl, keys it applies): `sysctl --system` applies everything (None),
    `sysctl -p [FILE]` the keys FILE (default /etc/sysctl.conf) sets."""
    words = command.split()
    if not words or words[0].rsplit("/", 1)[-1] != "sysctl":
        return False, None
    if "--system" in words:
        return True, None
    files: List[str] = []
    loads = False
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("-p", "--load"):
            loads = True
            if i + 1 < len(words) and not words[i + 1].startswith("-"):
                files.append(words[i + 1])
                i += 1
        elif word.startswith("--load="):
            loads = True
            files.append(word.split("=", 1)[1])
        elif word.startswith("-p") and len(word) > 2:
            loads = True
            files.append(word[2:])
        i += 1
    if not loads:
        return False, None
    from sysctl_doctor.config.model import key_to_path

    keys = set()
    for path in files or ["/etc/sysctl.conf"]:
        text = root.read_config(path)
        for raw in (text or "").splitlines():
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            keys.add(key_to_path(line.split("=", 1)[0].strip().lstrip("-")))
    return True, frozenset(keys)
