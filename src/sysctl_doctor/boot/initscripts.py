"""Boot ordering of sysvinit (LSB headers) and OpenRC (depend()) services.

sysvinit (Debian, insserv): each /etc/init.d script's ``### BEGIN INIT INFO`` block
gives ``Provides``, ``Required-Start``, ``Should-Start`` and ``X-Start-Before``;
``$facility`` names are defined in /etc/insserv.conf and /etc/insserv.conf.d/*.
startpar runs scripts with no dependency between them in parallel
(``CONCURRENCY=makefile``), so only a dependency chain orders two scripts. A script
runs at boot when a ``S??name`` link exists in /etc/rcS.d or /etc/rc2.d.

OpenRC: ``depend() { need …; use …; want …; after …; before …; }`` in the script, plus
``rc_need``/``rc_use``/``rc_want``/``rc_after``/``rc_before`` in /etc/conf.d/<service>;
a service runs when it is linked in /etc/runlevels/{sysinit,boot,default}/. Its
``sysctl`` and ``modules`` services have no ordering between them.
"""

from __future__ import annotations

import re
import shlex
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.root import PathKind, Root


@dataclass
class InitScript:
    name: str
    file: str
    provides: List[str] = field(default_factory=list)
    after: List[Tuple[str, str]] = field(default_factory=list)  # (name or $facility, file:line)
    before: List[Tuple[str, str]] = field(default_factory=list)
    enabled_by: Optional[str] = None  # the link that starts it at boot
    level: int = 0  # OpenRC runlevel rank (sysinit 0 < boot 1 < default 2): earlier levels finish first


@dataclass
class InitOrder:
    """Scripts of one init system and the order edges between them."""

    system: str  # "sysvinit" or "openrc"
    scripts: Dict[str, InitScript]
    facilities: Dict[str, List[str]]

    def _resolve(self, name: str) -> List[str]:
        if name.startswith("$"):
            out: List[str] = []
            for member in self.facilities.get(name, []):
                out.extend(self._resolve(member))
            return out
        found = [s.name for s in self.scripts.values() if name in s.provides or s.name == name]
        return found

    def _edges(self) -> Dict[str, List[Tuple[str, str]]]:
        edges: Dict[str, List[Tuple[str, str]]] = {}
        for script in self.scripts.values():
            if script.enabled_by is None:
                continue
            for name, where in script.after:
                for other in self._resolve(name):
                    edges.setdefault(other, []).append((script.name, where))
            for name, where in script.before:
                for other in self._resolve(name):
                    edges.setdefault(script.name, []).append((other, where))
        return edges

    def order_path(self, first: str, second: str) -> Optional[List[str]]:
        edges = self._edges()
        queue = deque([(first, [])])
        seen = {first}
        while queue:
            name, chain = queue.popleft()
            if name == second:
                return chain
            for nxt, where in edges.get(name, []):
                if nxt not in seen and (nxt == second or self.scripts.get(nxt, InitScript(nxt, "")).enabled_by):
                    seen.add(nxt)
                    queue.append((nxt, chain + [f"{name} before {nxt} ({where})"]))
        return None

    def relation(self, script: str, reference: str) -> str:
        if self.system == "openrc" and script in self.scripts and reference in self.scripts:
            a, b = self.scripts[script].level, self.scripts[reference].level
            if a != b:
                return "before" if a < b else "after"
        if self.order_path(script, reference) is not None:
            return "before"
        if self.order_path(reference, script) is not None:
            return "after"
        return "unordered"

    def enabled(self, name: str) -> bool:
        script = self.scripts.get(name)
        return script is not None and script.enabled_by is not None


_LSB_FIELD = re.compile(r"^#\s*([A-Za-z-]+):\s*(.*)$")


def _read_lsb(root: Root, path: str, name: str) -> InitScript:
    script = InitScript(name=name, file=path, provides=[name])
    text = root.read_config(path)
    if text is None:
        return script
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("### BEGIN INIT INFO"):
            inside = True
            continue
        if line.startswith("### END INIT INFO"):
            break
        if not inside:
            continue
        match = _LSB_FIELD.match(line)
        if not match:
            continue
        key, words = match.group(1), match.group(2).split()
        where = f"{path}:{number}"
        if key == "Provides":
            script.provides = words or [name]
        elif key in ("Required-Start", "Should-Start"):
            script.after.extend((w, where) for w in words)
        elif key == "X-Start-Before":
            script.before.extend((w, where) for w in words)
    return script


def _insserv_facilities(root: Root) -> Dict[str, List[str]]:
    facilities: Dict[str, List[str]] = {}
    files = ["/etc/insserv.conf"] + [f"/etc/insserv.conf.d/{n}" for n in root.listdir("/etc/insserv.conf.d")]
    for path in files:
        if root.kind(path) is not PathKind.FILE:
            continue
        for raw in (root.read_config(path) or "").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line.startswith("$"):
                continue
            words = line.split()
            facilities.setdefault(words[0], []).extend(w.lstrip("+") for w in words[1:] if not w.startswith("<"))
    return facilities


INSSERV_OVERRIDES = "/etc/insserv/overrides"


def lsb_header(text: str) -> Optional[str]:
    """The ``### BEGIN INIT INFO`` … ``### END INIT INFO`` block of a script, or None."""
    lines = text.splitlines()
    try:
        start = next(i for i, item in enumerate(lines) if item.startswith("### BEGIN INIT INFO"))
        end = next(i for i, item in enumerate(lines) if i > start and item.startswith("### END INIT INFO"))
    except StopIteration:
        return None
    return "\n".join(lines[start:end + 1]) + "\n"


def load_sysvinit(root: Root) -> InitOrder:
    scripts: Dict[str, InitScript] = {}
    for name in root.listdir("/etc/init.d"):
        path = f"/etc/init.d/{name}"
        if name.startswith(".") or name in ("README", "skeleton", "rc", "rcS") or root.kind(path) is not PathKind.FILE:
            continue
        override = f"{INSSERV_OVERRIDES}/{name}"
        if root.kind(override) is PathKind.FILE:
            # insserv(8): a header in /etc/insserv/overrides/<script> replaces the script's own
            script = _read_lsb(root, override, name)
            script.file = path
            scripts[name] = script
            continue
        scripts[name] = _read_lsb(root, path, name)
    for rcdir in ("/etc/rcS.d", "/etc/rc2.d"):
        for link in root.listdir(rcdir):
            match = re.match(r"^S\d\d(.+)$", link)
            if match and match.group(1) in scripts and scripts[match.group(1)].enabled_by is None:
                scripts[match.group(1)].enabled_by = f"{rcdir}/{link}"
    return InitOrder("sysvinit", scripts, _insserv_facilities(root))


_DEPEND_WORDS = ("need", "use", "want", "after", "before")


def _read_openrc(root: Root, path: str, name: str) -> InitScript:
    script = InitScript(name=name, file=path, provides=[name])
    text = root.read_config(path)
    if text is None:
        return script
    in_depend = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if re.match(r"^depend\s*\(\)", line):
            in_depend = True
            line = line.split("{", 1)[1] if "{" in line else ""
        if not in_depend:
            continue
        for statement in line.split(";"):
            words = statement.replace("}", " ").split()
            if not words:
                continue
            where = f"{path}:{number}"
            if words[0] in ("need", "use", "want", "after"):
                script.after.extend((w, where) for w in words[1:] if w != "*")
            elif words[0] == "before":
                script.before.extend((w, where) for w in words[1:] if w != "*")
            elif words[0] == "provide":
                script.provides.extend(words[1:])
        if "}" in line:
            in_depend = False
    conf = f"/etc/conf.d/{name}"
    for number, variable, words in conf_d_word_lists(root, conf, r"rc_(?:need|use|want|after|before)"):
        target = script.before if variable == "rc_before" else script.after
        target.extend((w, f"{conf}:{number}") for w in words)
    return script


def conf_d_word_lists(root: Root, path: str, variable: str) -> List[Tuple[int, str, List[str]]]:
    """The `NAME=value` lines of a shell-style /etc/conf.d file whose NAME matches the regex `variable`:
    (line number, NAME, the value's words as the shell splits them, comments dropped). A value the shell
    could not split (an open quote) is passed over; a missing file has none."""
    out: List[Tuple[int, str, List[str]]] = []
    if root.kind(path) is not PathKind.FILE:
        return out
    line_of = re.compile(rf"^\s*(?P<name>{variable})\s*=\s*(?P<value>.*)$")
    for number, raw in enumerate((root.read_config(path) or "").splitlines(), start=1):
        match = line_of.match(raw)
        if not match:
            continue
        try:
            words = " ".join(shlex.split(match.group("value"), comments=True)).split()
        except ValueError:
            continue
        out.append((number, match.group("name"), words))
    return out


def load_openrc(root: Root) -> InitOrder:
    scripts: Dict[str, InitScript] = {}
    for name in root.listdir("/etc/init.d"):
        path = f"/etc/init.d/{name}"
        if root.kind(path) is PathKind.FILE:
            scripts[name] = _read_openrc(root, path, name)
    for rank, level in enumerate(("sysinit", "boot", "default")):
        for name in root.listdir(f"/etc/runlevels/{level}"):
            if name in scripts and scripts[name].enabled_by is None:
                scripts[name].enabled_by = f"/etc/runlevels/{level}/{name}"
                scripts[name].level = rank
    return InitOrder("openrc", scripts, {})
