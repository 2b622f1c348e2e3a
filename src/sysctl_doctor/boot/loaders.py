"""Services that load kernel modules on demand, with the line that makes each load.

A module is loaded on demand when something uses a feature it implements: an nft
ruleset with a ``ct`` expression loads nft_ct and so nf_conntrack; an iptables ruleset
with ``-m conntrack`` or a ``*nat`` table loads xt_conntrack / iptable_nat and so
nf_conntrack; dockerd installs NAT and conntrack rules and modprobes br_netfilter;
kube-proxy programs conntrack-using rules. This module finds such services among the
units a boot starts and reports, for each, the modules it loads and the evidence: the
ruleset line (file:line and text) or, for daemons whose rules are built at run time,
the unit's ``ExecStart=`` line.

The direct module named here is what the feature needs (``nft_ct``); the closure to
``nf_conntrack`` comes from the kernel's modules.dep (plus the documented dependency
listed here, so a root without a modules tree still gets it right).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from sysctl_doctor.boot.modules_load import module_name
from sysctl_doctor.boot.units import BootTransaction, Unit, UnitLine, exec_words
from sysctl_doctor.root import PathKind, Root


@dataclass(frozen=True)
class Evidence:
    file: str
    line: Optional[int]
    text: str  # the line as written
    why: str  # "ct expression loads nft_ct -> nf_conntrack"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class OnDemandLoader:
    """A unit started at boot that loads modules as a side effect."""

    unit: str
    unit_file: Optional[str]
    modules: Dict[str, Evidence] = field(default_factory=dict)  # module -> first evidence
    rulesets: List[Tuple[str, str]] = field(default_factory=list)  # (nft|iptables|ufw, file) it loads
    failures: List[str] = field(default_factory=list)  # rulesets that fail to load at boot, and why

    def add(self, modules: Tuple[str, ...], evidence: Evidence) -> None:
        for module in modules:
            self.modules.setdefault(module_name(module), evidence)


# (pattern, modules it loads, why). Patterns run on a line with its comment removed.
NFT_TRIGGERS: Tuple[Tuple[re.Pattern, Tuple[str, ...], str], ...] = (
    (re.compile(r"\bct\s+(state|status|mark|direction|expiration|helper|label|zone|count|original|reply|"
                r"l3proto|protocol|proto-src|proto-dst|bytes|packets|avgpkt|id|event|timeout|expectation)\b"),
     ("nft_ct", "nf_conntrack"), "a ct expression loads nft_ct, which needs nf_conntrack"),
    (re.compile(r"\bnotrack\b"), ("nft_ct", "nf_conntrack"), "notrack is implemented by nft_ct (nf_conntrack)"),
    (re.compile(r"\btype\s+nat\b"), ("nft_chain_nat", "nf_nat", "nf_conntrack"),
     "a nat chain loads nft_chain_nat -> nf_nat -> nf_conntrack"),
    (re.compile(r"\b(masquerade|snat|dnat|redirect)\b"), ("nft_nat", "nf_nat", "nf_conntrack"),
     "NAT statements load nf_nat, which needs nf_conntrack"),
    (re.compile(r"\b(flowtable|flow\s+(add|offload))\b"), ("nf_flow_table", "nf_conntrack"),
     "flowtables load nf_flow_table, which needs nf_conntrack"),
)
IPT_TRIGGERS: Tuple[Tuple[re.Pattern, Tuple[str, ...], str], ...] = (
    (re.compile(r"-m\s+conntrack\b|--ctstate\b"), ("xt_conntrack", "nf_conntrack"),
     "-m conntrack loads xt_conntrack, which needs nf_conntrack"),
    (re.compile(r"-m\s+state\b|--state\b"), ("xt_state", "nf_conntrack"), "-m state loads xt_state (nf_conntrack)"),
    (re.compile(r"^\*nat\b"), ("iptable_nat", "nf_nat", "nf_conntrack"), "the nat table loads iptable_nat -> nf_nat -> nf_conntrack"),
    (re.compile(r"-j\s+(MASQUERADE|SNAT|DNAT|REDIRECT)\b"), ("nf_nat", "nf_conntrack"), "NAT targets need nf_nat -> nf_conntrack"),
    (re.compile(r"-j\s+(CT|NOTRACK)\b"), ("xt_CT", "nf_conntrack"), "the CT target loads xt_CT (nf_conntrack)"),
    (re.compile(r"-m\s+physdev\b"), ("xt_physdev", "br_netfilter"), "-m physdev loads xt_physdev -> br_netfilter"),
)

# Daemons that build their rules at run time: what they load, and why.
DAEMONS: Tuple[Tuple[str, Tuple[str, ...], str], ...] = (
    ("dockerd", ("br_netfilter", "nf_nat", "xt_conntrack", "nf_conntrack"),
     "dockerd's bridge driver installs MASQUERADE and -m conntrack rules and modprobes br_netfilter"),
    ("kube-proxy", ("nf_nat", "xt_conntrack", "nf_conntrack"),
     "kube-proxy programs NAT and conntrack rules for services"),
    ("kubelet", ("nf_nat", "xt_conntrack", "nf_conntrack", "br_netfilter"),
     "kubelet starts kube-proxy and the CNI plugins, which install NAT/conntrack rules (and need br_netfilter)"),
    ("k3s", ("nf_nat", "xt_conntrack", "nf_conntrack", "br_netfilter"),
     "k3s runs an embedded kube-proxy and flannel (NAT, conntrack, bridge netfilter)"),
    ("rke2", ("nf_nat", "xt_conntrack", "nf_conntrack", "br_netfilter"),
     "rke2 runs kube-proxy and a CNI (NAT, conntrack, bridge netfilter)"),
    ("firewalld", ("nft_ct", "nf_conntrack"), "firewalld's zones accept `ct state established,related`"),
    ("libvirtd", ("nf_nat", "xt_conntrack", "nf_conntrack"),
     "libvirtd installs MASQUERADE and -m conntrack rules for its NAT networks"),
    ("lxc-net", ("nf_nat", "nf_conntrack"), "lxc-net installs a MASQUERADE rule for lxcbr0"),
)
KEEPALIVED_TRIGGERS: Tuple[Tuple[re.Pattern, Tuple[str, ...], str], ...] = (
    (re.compile(r"^\s*virtual_server(_group)?\b"), ("ip_vs",), "an LVS virtual_server makes keepalived load ip_vs"),
)
IPVSADM_TRIGGERS: Tuple[Tuple[re.Pattern, Tuple[str, ...], str], ...] = (
    (re.compile(r"^-A\b|^--add-service\b"), ("ip_vs",), "restoring an IPVS service loads ip_vs"),
)


def _exec_words(item: UnitLine) -> List[str]:
    return exec_words(item.value)


def _strip_comment(line: str) -> str:
    out = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == "#" and not quoted:
            break
        out.append(char)
    return "".join(out).strip()


NFT_INCLUDE_PATH = "/etc"  # nft's default --includepath (nftables 1.0.6: "Default is: /etc")
NFT_MAX_INCLUDE_DEPTH = 16  # nft: "Include nested too deeply, max 16 levels"
_NFT_INCLUDE = re.compile(r'include\s+"([^"]+)"')


def nft_include_target(pattern: str) -> str:
    """Where `nft -f` looks for an include: absolute as is; "./x" from the working directory (a unit's is /);
    any other relative name in the include path (/etc), not next to the including file."""
    if pattern.startswith("/"):
        return os.path.normpath(pattern)
    if pattern.startswith("./"):
        return os.path.normpath("/" + pattern)
    return os.path.normpath(f"{NFT_INCLUDE_PATH}/{pattern}")


def _nft_includes(root: Root, path: str) -> List[Tuple[int, str, List[str]]]:
    """(line, pattern, files it names) of each include of an nft file; a glob may name none."""
    text = root.read_config(path)
    if text is None:
        return []
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        match = _NFT_INCLUDE.match(_strip_comment(raw))
        if match:
            target = nft_include_target(match.group(1))
            found = [f for f in _glob_inside(root, target) if root.kind(f) is not PathKind.MISSING]
            out.append((number, match.group(1), found))
    return out


def nft_ruleset_failure(root: Root, path: str, depth: int = 0) -> Optional[str]:
    """Why `nft -f path` fails as a whole (it loads all or nothing), or None.

    As nft 1.0.6 does: an include of a file that does not exist ("File not found"; a glob matching nothing
    is fine), and includes nested more than 16 deep (a loop)."""
    if depth > NFT_MAX_INCLUDE_DEPTH:
        return f"{path}: include nested too deeply, max {NFT_MAX_INCLUDE_DEPTH} levels (an include loop?)"
    for number, pattern, found in _nft_includes(root, path):
        if not found and not any(c in pattern for c in "*?["):
            return f"{path}:{number} include \"{pattern}\": file not found ({nft_include_target(pattern)})"
        for included in found:
            failure = nft_ruleset_failure(root, included, depth + 1)
            if failure is not None:
                return failure
    return None


def _scan(root: Root, path: str, triggers, loader: OnDemandLoader, follow_includes: bool, depth: int = 0) -> None:
    if depth > NFT_MAX_INCLUDE_DEPTH or root.kind(path) is not PathKind.FILE:
        return
    if follow_includes and depth == 0:
        failure = nft_ruleset_failure(root, path)
        if failure is not None:
            loader.failures.append(f"nft -f {path} fails at boot, so {loader.unit} loads none of it "
                                   f"(nft loads a ruleset all or nothing): {failure}")
            return
    text = root.read_config(path)
    if text is None:
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line:
            continue
        if follow_includes:
            match = _NFT_INCLUDE.match(line)
            if match:
                for included in _glob_inside(root, nft_include_target(match.group(1))):
                    _scan(root, included, triggers, loader, True, depth + 1)
                continue
        for pattern, modules, why in triggers:
            if pattern.search(line):
                loader.add(modules, Evidence(path, number, raw.strip(), why))


def _glob_inside(root: Root, pattern: str) -> List[str]:
    if not any(c in pattern for c in "*?["):
        return [pattern]
    directory = os.path.dirname(pattern)
    base = os.path.basename(pattern)
    import fnmatch

    return [f"{directory}/{n}" for n in root.listdir(directory) if fnmatch.fnmatchcase(n, base)]


def _nft_files(words: List[str]) -> List[str]:
    files = []
    for i, word in enumerate(words):
        if word in ("-f", "--file") and i + 1 < len(words):
            files.append(words[i + 1])
        elif word.startswith("--file="):
            files.append(word.split("=", 1)[1])
    return files


def _restore_files(words: List[str]) -> List[str]:
    return [w.lstrip("<") for w in words[1:] if w.startswith("/") or w.startswith("</")]


def _detect(root: Root, unit: Unit) -> Optional[OnDemandLoader]:
    loader = OnDemandLoader(unit=unit.name, unit_file=unit.fragment)
    for item in unit.exec_lines("ExecStartPre") + unit.exec_lines("ExecStart"):
        words = _exec_words(item)
        if not words:
            continue
        program = os.path.basename(words[0])
        if program in ("sh", "bash") and "-c" in words:
            joined = words[words.index("-c") + 1] if words.index("-c") + 1 < len(words) else ""
            words = joined.split()
            program = os.path.basename(words[0]) if words else ""
        if program == "nft":
            for path in _nft_files(words):
                loader.rulesets.append(("nft", path))
                _scan(root, path, NFT_TRIGGERS, loader, follow_includes=True)
        elif program in ("iptables-restore", "ip6tables-restore", "iptables-legacy-restore", "iptables-nft-restore"):
            for path in _restore_files(words):
                loader.rulesets.append(("iptables", path))
                _scan(root, path, IPT_TRIGGERS, loader, follow_includes=False)
        elif program == "netfilter-persistent":
            for path in ("/etc/iptables/rules.v4", "/etc/iptables/rules.v6"):
                loader.rulesets.append(("iptables", path))
                _scan(root, path, IPT_TRIGGERS, loader, follow_includes=False)
        elif program == "ufw-init":
            for path in ("/etc/ufw/before.rules", "/etc/ufw/before6.rules"):
                loader.rulesets.append(("ufw", path))
                _scan(root, path, IPT_TRIGGERS, loader, follow_includes=False)
        elif program == "keepalived":
            config = "/etc/keepalived/keepalived.conf"
            for i, word in enumerate(words):
                if word in ("-f", "--use-file") and i + 1 < len(words):
                    config = words[i + 1]
            _scan(root, config, KEEPALIVED_TRIGGERS, loader, follow_includes=False)
        elif program == "ipvsadm-restore":
            for path in _restore_files(words) or ["/etc/ipvsadm.rules"]:
                _scan(root, path, IPVSADM_TRIGGERS, loader, follow_includes=False)
        elif program in ("iptables.init", "ip6tables.init"):
            for path in ("/etc/sysconfig/iptables", "/etc/sysconfig/ip6tables"):
                loader.rulesets.append(("iptables", path))
                _scan(root, path, IPT_TRIGGERS, loader, follow_includes=False)
        else:
            for daemon, modules, why in DAEMONS:
                if program == daemon:
                    if daemon == "dockerd" and _docker_iptables_disabled(root):
                        modules = ("br_netfilter",)
                        why = "dockerd modprobes br_netfilter (iptables: false in /etc/docker/daemon.json)"
                    loader.add(modules, Evidence(item.file, item.line, f"{item.key}={item.value}", why))
    return loader if loader.modules or loader.failures else None


def _docker_iptables_disabled(root: Root) -> bool:
    text = root.read_config("/etc/docker/daemon.json")
    if text is None:
        return False
    return re.search(r'"iptables"\s*:\s*false', text) is not None


def find_loaders(root: Root, transaction: BootTransaction,
                 skip: Callable[[str], bool] = lambda name: False) -> List[OnDemandLoader]:
    """Loaders among the units the boot starts (services only), in name order."""
    out: List[OnDemandLoader] = []
    for name in sorted(transaction.members):
        if not name.endswith(".service") or skip(name):
            continue
        loader = _detect(root, transaction.members[name])
        if loader is not None:
            out.append(loader)
    return out


# sysvinit/OpenRC scripts that load modules: script name -> (ruleset kind, files) or daemon name.
SCRIPT_RULESETS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "nftables": ("nft", ("/etc/nftables.conf", "/var/lib/nftables/rules-save")),
    "netfilter-persistent": ("ipt", ("/etc/iptables/rules.v4", "/etc/iptables/rules.v6")),
    "iptables": ("ipt", ("/var/lib/iptables/rules-save", "/etc/iptables/rules.v4")),
    "ip6tables": ("ipt", ("/var/lib/ip6tables/rules-save", "/etc/iptables/rules.v6")),
    "ufw": ("ipt", ("/etc/ufw/before.rules", "/etc/ufw/before6.rules")),
    "ipvsadm": ("ipvs", ("/etc/ipvsadm.rules",)),
    "keepalived": ("keepalived", ("/etc/keepalived/keepalived.conf",)),
}
SCRIPT_DAEMONS = {"docker": "dockerd", "kubelet": "kubelet", "kube-proxy": "kube-proxy", "k3s": "k3s",
                  "firewalld": "firewalld", "libvirtd": "libvirtd", "lxc-net": "lxc-net"}


def detect_script_loader(root: Root, name: str, file: str) -> Optional[OnDemandLoader]:
    """A sysvinit/OpenRC script that loads modules, with the ruleset line or the script as evidence."""
    loader = OnDemandLoader(unit=name, unit_file=file)
    if name in SCRIPT_RULESETS:
        kind, files = SCRIPT_RULESETS[name]
        triggers = {"nft": NFT_TRIGGERS, "ipt": IPT_TRIGGERS, "ipvs": IPVSADM_TRIGGERS,
                    "keepalived": KEEPALIVED_TRIGGERS}[kind]
        for path in files:
            if kind in ("nft", "ipt"):
                loader.rulesets.append(("nft" if kind == "nft" else "ufw" if name == "ufw" else "iptables", path))
            _scan(root, path, triggers, loader, follow_includes=kind == "nft")
    elif name in SCRIPT_DAEMONS:
        for daemon, modules, why in DAEMONS:
            if daemon == SCRIPT_DAEMONS[name]:
                loader.add(modules, Evidence(file, None, f"init script {file}", why))
    return loader if loader.modules or loader.failures else None
