"""The network interfaces a root's own configuration names, with the line that names each one.

A glob such as ``net.ipv4.conf.*.rp_filter`` is expanded by the sysctl step against the interfaces that
exist when it runs; offline there is no /proc/sys to expand against. What can be known from the root:
``all``, ``default`` and ``lo`` (every network namespace has them), and the interfaces its network
configuration creates or names:

- systemd-networkd (systemd.netdev(5), systemd.network(5), systemd.link(5)): ``*.netdev`` ``[NetDev] Name=``
  creates a virtual interface (a veth's ``[Peer] Name=`` too); ``*.network`` ``[Match] Name=`` names the interfaces it configures (literal
  names only: a glob such as ``en*`` names no interface); ``*.link`` ``[Link] Name=`` renames a NIC.
  Directories /etc, /run, /usr/local/lib, /usr/lib, /lib ``/systemd/network``; a file name in an earlier
  directory hides the same name in later ones, a link to /dev/null masks it. ``.netdev`` files count only
  when systemd-networkd is started at boot.
- ifupdown (interfaces(5)): /etc/network/interfaces and what its ``source``/``source-directory`` lines pull
  in; ``auto``/``allow-auto`` interfaces are brought up by networking.service at boot, ``allow-hotplug`` ones
  when their device appears; an ``iface`` stanza with neither is not brought up at boot. A name ``X.N``
  (``eth0.100``) or ``vlanN`` with ``vlan-raw-device`` is a VLAN the vlan package creates; ``bridge_ports``/
  ``bridge-ports`` makes a bridge; ``bond-slaves``/``bond-mode`` a bond.
- netplan (netplan(5)): /etc, /run, /lib ``/netplan/*.yaml`` (same-name precedence); every name under
  ``network: ethernets|bonds|bridges|vlans|tunnels|vrfs|wifis|modems|dummy-devices|virtual-ethernets``, and
  an ethernet's ``set-name``. Only the block-mapping subset of YAML netplan files use is read here (no PyYAML
  dependency): flow mappings of names (``{eth0: {}}``) are read too; anchors, aliases and multi-line scalars
  are not interpreted.

Names of physical NICs that no configuration mentions (``ens3``, ``enp0s25``) come from udev at boot and
cannot be known offline; `NetworkInterfaces.note` says so.

On an offline root, /run is a tmpfs at boot: files there are not read (Root.empty_at_boot, the project's one
policy for runtime directories).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from sysctl_doctor.boot.conf_dirs import files_by_precedence
from sysctl_doctor.boot.units import parse_unit_text
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

NETWORKD_DIRS = ("/etc/systemd/network", "/run/systemd/network", "/usr/local/lib/systemd/network",
                 "/usr/lib/systemd/network", "/lib/systemd/network")
NETPLAN_DIRS = ("/etc/netplan", "/run/netplan", "/lib/netplan", "/usr/lib/netplan")
IFUPDOWN_FILE = "/etc/network/interfaces"
NETWORKD_UNIT = "systemd-networkd.service"

# Every network namespace has these before anything runs (the sysctl step sees them).
ALWAYS = ("all", "default", "lo")
# interface-scoped sysctl directories: <base>/<interface>/<leaf>
INTERFACE_DIRS = ("net/ipv4/conf", "net/ipv6/conf", "net/ipv4/neigh", "net/ipv6/neigh", "net/mpls/conf")
IFNAMSIZ = 16  # a Linux interface name is at most 15 bytes
MAX_FILES = 512  # configuration files read per tool (source-directory loops, huge /etc/netplan)
MAX_SOURCE_DEPTH = 8
NETPLAN_TYPES = ("ethernets", "bonds", "bridges", "vlans", "tunnels", "vrfs", "wifis", "modems", "dummy-devices",
                 "virtual-ethernets", "nm-devices")
_NAME = re.compile(r"[^\s/:]{1,15}")
_VLAN_DOTTED = re.compile(r"^(?P<raw>[^\s/:.]+)\.(?P<id>\d{1,4})$")


@dataclass(frozen=True)
class ConfiguredInterface:
    """An interface the root's network configuration creates (virtual) or names (a NIC's name)."""

    name: str
    kind: str  # "netdev:<Kind>", "vlan", "bridge", "bond", "ethernet", "named", ...
    created: bool  # True: the configuration creates it (a virtual device), False: a device's driver does
    tool: str  # "systemd-networkd", "ifupdown", "netplan"
    file: str
    line: int
    text: str  # the line as written

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def evidence(self) -> str:
        return f"{self.where} `{self.text}`"

    def describe(self) -> str:
        what = f"{self.tool} creates {self.name} ({self.kind})" if self.created else f"{self.tool} configures {self.name}"
        return f"{what}: {self.evidence}"


@dataclass
class NetworkInterfaces:
    """The interfaces a boot is known to have: `ALWAYS` plus those the configuration names."""

    configured: List[ConfiguredInterface] = field(default_factory=list)
    tools: List[str] = field(default_factory=list)  # the network configuration tools found
    skipped: List[str] = field(default_factory=list)  # names that were patterns (en*), or not brought up
    diagnostics: List[Diagnostic] = field(default_factory=list)

    def names(self) -> List[str]:
        out = list(ALWAYS)
        for item in self.configured:
            if item.name not in out:
                out.append(item.name)
        return out

    def find(self, name: str) -> Optional[ConfiguredInterface]:
        return next((item for item in self.configured if item.name == name), None)

    @property
    def note(self) -> str:
        """What the prediction cannot know."""
        tools = f"the root's network configuration ({', '.join(self.tools)})" if self.tools else \
            "no network configuration found in the root"
        return (f"interfaces known offline: all, default, lo and those named by {tools}; names of NICs that no "
                "file mentions come from the kernel and udev at boot and cannot be predicted")


def interface_paths(names: Sequence[str], leaves_by_dir: Dict[str, Iterable[str]]) -> List[str]:
    """Slash paths `<dir>/<name>/<leaf>` for each interface directory and its leaves."""
    out: List[str] = []
    for base, leaves in leaves_by_dir.items():
        for name in names:
            for leaf in leaves:
                out.append(f"{base}/{name}/{leaf}")
    return out


def interface_of(path: str) -> Optional[Tuple[str, str, str]]:
    """(directory, interface, leaf) of an interface-scoped slash path, else None."""
    for base in INTERFACE_DIRS:
        if path.startswith(base + "/"):
            rest = path[len(base) + 1:]
            name, _, leaf = rest.partition("/")
            if name and leaf and "/" not in leaf:
                return base, name, leaf
    return None


# --------------------------------------------------------------------------- systemd-networkd


def _networkd(root: Root, networkd_runs: bool, out: NetworkInterfaces) -> None:
    dirs = NETWORKD_DIRS  # files_by_precedence skips /run on an offline root (Root.empty_at_boot)
    found = False
    for suffix in (".netdev", ".network", ".link"):
        files, _masked = files_by_precedence(root, dirs, suffix)
        for path in files[:MAX_FILES]:
            try:
                lines = parse_unit_text(root.read_text(path), path)
            except (OSError, UnicodeDecodeError) as exc:
                out.diagnostics.append(Diagnostic(f"cannot read: {exc}", path))
                continue
            found = True
            if suffix == ".netdev":
                kind = next((item.value for item in lines if item.section == "NetDev" and item.key == "Kind"), "?")
                for item in lines:
                    # [NetDev] Name= is the device; a veth's (and vxcan's) [Peer] Name= is its other end
                    if item.key == "Name" and (item.section == "NetDev" or item.section == "Peer") and \
                            _NAME.fullmatch(item.value):
                        if networkd_runs:
                            out.configured.append(ConfiguredInterface(item.value, f"netdev:{kind}", True,
                                                                      "systemd-networkd", path, item.line,
                                                                      f"{item.key}={item.value}"))
                        else:
                            out.skipped.append(f"{path}:{item.line} {item.value}: {NETWORKD_UNIT} is not started "
                                               "at boot, so nothing creates it")
            else:
                section = "Match" if suffix == ".network" else "Link"
                conditions = sorted({item.key for item in lines if item.section == section and item.key != "Name"
                                     and item.key != "OriginalName"})
                for item in lines:
                    if item.section != section or item.key != "Name":
                        continue
                    if suffix == ".network" and conditions:
                        out.skipped.append(f"{path}:{item.line} {item.value}: matched only where "
                                           f"{', '.join(conditions)} also match")
                        continue
                    for word in item.value.split():
                        if word.startswith("!") or any(c in word for c in "*?["):
                            out.skipped.append(f"{path}:{item.line} {word}: a pattern, not a name")
                        elif _NAME.fullmatch(word):
                            out.configured.append(ConfiguredInterface(
                                word, "named" if suffix == ".network" else "renamed NIC", False, "systemd-networkd",
                                path, item.line, f"{item.key}={item.value}"))
    if found:
        out.tools.append("systemd-networkd")


# --------------------------------------------------------------------------- ifupdown


def _ifupdown_files(root: Root, path: str, depth: int, seen: Set[str], out: NetworkInterfaces) -> List[str]:
    """`path` and the files its source/source-directory lines include, in reading order."""
    if depth > MAX_SOURCE_DEPTH or path in seen or len(seen) >= MAX_FILES:
        return []
    seen.add(path)
    if root.kind(path) is not PathKind.FILE:
        return []
    files = [path]
    try:
        text = root.read_text(path)
    except (OSError, UnicodeDecodeError):
        return files
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "source":
            for pattern in words[1:]:
                target = pattern if pattern.startswith("/") else f"/etc/network/{pattern}"
                for match in _glob_files(root, target):
                    files += _ifupdown_files(root, match, depth + 1, seen, out)
        elif words[0] in ("source-directory", "source-dir"):
            directory = words[1] if words[1].startswith("/") else f"/etc/network/{words[1]}"
            # run-parts naming: letters, digits, underscores, hyphens only
            for name in sorted(root.listdir(directory)):
                if re.fullmatch(r"[A-Za-z0-9_-]+", name):
                    files += _ifupdown_files(root, f"{directory}/{name}", depth + 1, seen, out)
    return files


def _glob_files(root: Root, pattern: str) -> List[str]:
    directory, _, base = pattern.rpartition("/")
    if not any(c in base for c in "*?["):
        return [pattern]
    return [f"{directory}/{n}" for n in sorted(root.listdir(directory)) if fnmatch.fnmatchcase(n, base)]


def _ifupdown(root: Root, ifupdown_runs: bool, out: NetworkInterfaces) -> None:
    files = _ifupdown_files(root, IFUPDOWN_FILE, 0, set(), out)
    if not files:
        return
    out.tools.append("ifupdown")
    up: Dict[str, Tuple[str, int, str]] = {}  # auto / allow-auto / allow-hotplug -> first line
    stanzas: Dict[str, Tuple[str, int, str, Dict[str, str]]] = {}
    for path in files:
        try:
            text = root.read_text(path)
        except (OSError, UnicodeDecodeError):
            continue
        current: Optional[str] = None
        for number, raw in enumerate(text.splitlines(), 1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            head = words[0]
            if head in ("auto", "allow-auto") or head.startswith("allow-"):
                current = None
                for name in words[1:]:
                    up.setdefault(name, (path, number, raw.strip()))
            elif head in ("iface", "mapping"):
                current = words[1] if head == "iface" and len(words) > 1 else None
                if current is not None and current not in stanzas:
                    stanzas[current] = (path, number, raw.strip(), {})
            elif head in ("source", "source-directory", "source-dir"):
                current = None
            elif current is not None and len(words) >= 2:
                stanzas[current][3].setdefault(head.replace("_", "-"), " ".join(words[1:]))
    for name in list(up) + [n for n in stanzas if n not in up]:
        if not _NAME.fullmatch(name) or name == "lo":
            continue
        stanza = stanzas.get(name)
        options = stanza[3] if stanza else {}
        created, kind = False, "named"
        if _VLAN_DOTTED.match(name) or "vlan-raw-device" in options:
            created, kind = True, "vlan"
        elif "bridge-ports" in options:
            created, kind = True, "bridge"
        elif "bond-slaves" in options or "bond-mode" in options:
            created, kind = True, "bond"
        file, line, text = up.get(name) or (stanza[0], stanza[1], stanza[2])
        if name not in up:
            out.skipped.append(f"{stanza[0]}:{stanza[1]} {name}: no auto/allow-hotplug line, ifup does not bring it "
                               "up at boot")
            continue
        if stanza is not None and created:
            file, line, text = stanza[0], stanza[1], stanza[2]
        if created and not ifupdown_runs:
            out.skipped.append(f"{file}:{line} {name}: networking.service is not started at boot, nothing creates it")
        else:
            out.configured.append(ConfiguredInterface(name, kind, created, "ifupdown", file, line, text))
        # the NICs it names exist whether or not ifupdown runs
        if kind == "bridge":
            for port in options["bridge-ports"].split():
                if _NAME.fullmatch(port) and port not in ("none", "all", "regex"):
                    port_created = bool(_VLAN_DOTTED.match(port))
                    if not port_created or ifupdown_runs:
                        out.configured.append(ConfiguredInterface(port, "bridge port", port_created, "ifupdown",
                                                                  file, line, text))
        raw_device = _VLAN_DOTTED.match(name)
        if kind == "vlan":
            parent = options.get("vlan-raw-device") or (raw_device.group("raw") if raw_device else None)
            if parent and _NAME.fullmatch(parent):
                out.configured.append(ConfiguredInterface(parent, "VLAN raw device", False, "ifupdown", file, line,
                                                          text))


# --------------------------------------------------------------------------- netplan


def yaml_block_keys(text: str, limit: int = 20000) -> List[Tuple[Tuple[str, ...], int, Optional[str]]]:
    """(path of mapping keys, line, scalar value or None) of each key in a YAML block mapping.

    The subset netplan files use: indentation-nested ``key: value`` / ``key:`` lines, ``- item`` list
    entries (skipped), comments, quoted keys; a flow mapping value ``{a: {}, b: {}}`` yields its keys."""
    out: List[Tuple[Tuple[str, ...], int, Optional[str]]] = []
    stack: List[Tuple[int, str]] = []  # (indent, key)
    for number, raw in enumerate(text.splitlines()[:limit], 1):
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not stripped.strip() or stripped.strip() in ("---", "..."):
            continue
        indent = len(stripped) - len(stripped.lstrip(" "))
        body = stripped.strip()
        if body.startswith("- "):
            indent += 2
            body = body[2:].strip()
            is_item = True
        else:
            is_item = False
        match = re.match(r"""^(?:"([^"]*)"|'([^']*)'|([^:{}\[\],#'"][^:]*?))\s*:(?:\s+(.*))?$""", body)
        if not match:
            continue
        key = next(g for g in match.groups()[:3] if g is not None)
        value = match.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if is_item:
            continue  # entries of a list (addresses, routes): not interface names
        path = tuple(k for _, k in stack) + (key,)
        scalar = None
        if value is not None:
            value = value.strip()
            if value.startswith("{") and value.endswith("}"):
                for inner in re.split(r",(?![^{]*\})", value[1:-1]):
                    inner_key = inner.split(":", 1)[0].strip().strip("'\"")
                    if inner_key:
                        out.append((path + (inner_key,), number, None))
            elif value:
                scalar = value.strip("'\"")
        out.append((path, number, scalar))
        if value is None or value == "":
            stack.append((indent, key))
    return out


def _netplan(root: Root, out: NetworkInterfaces) -> None:
    dirs = NETPLAN_DIRS
    files, _masked = files_by_precedence(root, dirs, ".yaml")
    if not files:
        return
    out.tools.append("netplan")
    for path in files[:MAX_FILES]:
        try:
            text = root.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            out.diagnostics.append(Diagnostic(f"cannot read: {exc}", path))
            continue
        lines = text.splitlines()
        entries = yaml_block_keys(text)
        matched = {k[:3] for k, _n, _v in entries if len(k) >= 4 and k[1] == "ethernets" and k[3] == "match"}
        for keys, number, value in entries:
            if len(keys) >= 3 and keys[0] == "network" and keys[1] in NETPLAN_TYPES:
                name = keys[2]
                if len(keys) == 3 and _NAME.fullmatch(name):
                    kind = keys[1].rstrip("s") if keys[1] != "dummy-devices" else "dummy"
                    created = keys[1] not in ("ethernets", "wifis", "modems")
                    if keys in matched:
                        # an id matched by driver/MAC: the device keeps its kernel name unless set-name renames it
                        out.skipped.append(f"{path}:{number} {name}: an id for a match: block, not an interface name")
                        continue
                    out.configured.append(ConfiguredInterface(name, kind, created, "netplan", path, number,
                                                              lines[number - 1].strip()))
                elif len(keys) == 4 and keys[3] == "set-name" and value and _NAME.fullmatch(value):
                    out.configured.append(ConfiguredInterface(value, "renamed NIC", False, "netplan", path, number,
                                                              lines[number - 1].strip()))


def network_interfaces(root: Root, networkd_runs: bool = True,
                       ifupdown_runs: bool = True) -> NetworkInterfaces:
    """The interfaces the root's network configuration creates or names (/run counts on the running host
    only: Root.empty_at_boot)."""
    out = NetworkInterfaces()
    _networkd(root, networkd_runs, out)
    _ifupdown(root, ifupdown_runs, out)
    _netplan(root, out)
    unique: Dict[str, ConfiguredInterface] = {}
    for item in out.configured:
        best = unique.get(item.name)
        if best is None or (item.created and not best.created):
            unique[item.name] = item
    out.configured = list(unique.values())
    return out


def glob_leaves(pattern: str, braces: bool, known: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The leaves of each interface directory a glob (slash form) may set: its literal last component, or, when
    that is a pattern too, the leaves `known` lists for the directory (none known: the glob is not expanded)."""
    from sysctl_doctor.config.sysctl_glob import GLOB_SPECIALS, normalized_alternatives

    out: Dict[str, Set[str]] = {}
    for alt in normalized_alternatives(pattern, braces):
        comps = alt.split("/")
        if len(comps) != 5:
            continue
        for base in INTERFACE_DIRS:
            if not _components_may_match(comps[:3], base.split("/")):
                continue
            leaf = comps[4]
            if any(c in leaf for c in GLOB_SPECIALS):
                out.setdefault(base, set()).update(known.get(base, ()))
            else:
                out.setdefault(base, set()).add(leaf)
    return {base: leaves for base, leaves in out.items() if leaves}


def is_interface_glob(pattern: str, braces: bool) -> bool:
    """Whether a glob (slash form) may set an interface's key (``net/ipv4/conf/*/x``, ``net/*/conf/*/x``)."""
    from sysctl_doctor.config.sysctl_glob import normalized_alternatives

    return any(len(comps) == 5 and any(_components_may_match(comps[:3], base.split("/")) for base in INTERFACE_DIRS)
               for comps in (alt.split("/") for alt in normalized_alternatives(pattern, braces)))


def _components_may_match(patterns: Sequence[str], names: Sequence[str]) -> bool:
    from sysctl_doctor.config.sysctl_glob import glob_matches_path

    return all(glob_matches_path(p, n) for p, n in zip(patterns, names))


def glob_candidates(pattern: str, braces: bool, names: Sequence[str], known: Dict[str, Set[str]]) -> List[str]:
    """Slash paths of interface keys in `names` that the glob may set (the caller matches each exactly)."""
    return interface_paths(names, glob_leaves(pattern, braces, known))
