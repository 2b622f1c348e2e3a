"""The NAT facts of an offline root, from the rulesets it loads at boot (read through `Root`).

Which files: those the boot timeline's loaders load (`OnDemandLoader.rulesets`: the `nft -f FILE` of an
enabled nftables.service, netfilter-persistent's rules.v4/v6, iptables-restore files, ufw's before.rules,
the sysvinit/OpenRC scripts' files) — a ruleset no unit loads at boot does not count. Without a timeline,
the usual places (`DEFAULT_RULESETS`).
- nft text, with the files it includes (paths inside the root; relative ones from the including file's
  directory, then /etc; glob patterns and directories);
- iptables-save format; files named *6* (rules.v6, ip6tables) are IPv6 and do not count as drops;
- ufw's before.rules: iptables-save format whose ufw-before-input/forward chains ufw-init hooks into
  INPUT/FORWARD (ufw's own logging chains only log).
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

from sysctl_doctor.conntrack.nat_facts import (
    FilterChain,
    FilterRule,
    NatRulesFacts,
    chains_from_iptables_save,
    facts_from_chains,
)
from sysctl_doctor.conntrack.nft_text import NftTextReader
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

DEFAULT_RULESETS: Tuple[Tuple[str, str], ...] = (
    ("nft", "/etc/nftables.conf"), ("nft", "/etc/sysconfig/nftables.conf"),
    ("iptables", "/etc/iptables/rules.v4"), ("iptables", "/etc/iptables/rules.v6"),
    ("iptables", "/etc/sysconfig/iptables"), ("iptables", "/etc/sysconfig/ip6tables"),
)
_UFW_HOOKS = {"INPUT": "ufw-before-input", "FORWARD": "ufw-before-forward"}


@dataclass
class PersistedRules:
    rules: NatRulesFacts
    files: List[str] = field(default_factory=list)  # the ruleset files read, in order
    diagnostics: List[Diagnostic] = field(default_factory=list)


def _read(root: Root, path: str) -> Optional[str]:
    return root.read_config(path)


def _resolve_include(root: Root, pattern: str, including: str) -> List[str]:
    from sysctl_doctor.boot.loaders import nft_include_target

    for candidate in [nft_include_target(pattern)]:
        candidate = posixpath.normpath(candidate)
        directory, name = posixpath.split(candidate)
        if any(c in name for c in "*?["):
            matches = [posixpath.join(directory, n) for n in root.listdir(directory) if fnmatch.fnmatchcase(n, name)]
            if matches:
                return [m for m in matches if root.kind(m) is PathKind.FILE]
            continue
        kind = root.kind(candidate)
        if kind is PathKind.DIR:
            return [posixpath.join(candidate, n) for n in root.listdir(candidate)
                    if root.kind(posixpath.join(candidate, n)) is PathKind.FILE]
        if kind is not PathKind.MISSING:
            return [candidate]
    return []


def _ufw_chains(chains: List[FilterChain], scope: str, path: str) -> List[FilterChain]:
    """What ufw-init adds around before.rules: INPUT/FORWARD jump to ufw's chains; its logging chains return."""
    out = list(chains)
    for hook, target in _UFW_HOOKS.items():
        rule = FilterRule(where=f"ufw-init ({path})", text=f"-A {hook} -j {target}", verdict="jump",
                          target=f"{scope}filter/{target}")
        out.append(FilterChain(f"{scope}filter/{hook}", chains[0].family if chains else "ip", hook.lower(),
                               where=f"ufw-init's {hook} chain", rules=[rule]))
    known = {c.key for c in chains}
    for name in ("ufw-logging-deny", "ufw-logging-allow"):
        if f"{scope}filter/{name}" not in known:
            out.append(FilterChain(f"{scope}filter/{name}", where=f"ufw-init's {name} chain"))
    return out


def read_persisted_rules(root: Root, rulesets: Optional[Iterable[Tuple[str, str]]] = None) -> PersistedRules:
    """`rulesets`: (nft|iptables|ufw, file) as the boot loads them; None: `DEFAULT_RULESETS`."""
    reader = NftTextReader(lambda path: _read(root, path), lambda pattern, inc: _resolve_include(root, pattern, inc))
    chains: List[FilterChain] = []
    files: List[str] = []
    for kind, path in (DEFAULT_RULESETS if rulesets is None else rulesets):
        if root.kind(path) is not PathKind.FILE or path in files or path in reader.files:
            continue
        if kind == "nft":
            from sysctl_doctor.boot.loaders import nft_ruleset_failure

            failure = nft_ruleset_failure(root, path)
            if failure is not None:  # nft loads a ruleset all or nothing: none of its rules count
                reader.diagnostics.append(Diagnostic(f"not loaded at boot: nft -f fails: {failure}", path, None))
                continue
            before = len(reader.files)
            reader.feed_file(path)
            files += reader.files[before:]
            continue
        text = _read(root, path)
        if text is None:
            continue
        files.append(path)
        family = "ip6" if "6" in posixpath.basename(path) else "ip"
        found = chains_from_iptables_save(text, path, family, scope=f"{path}:")
        chains += _ufw_chains(found, f"{path}:", path) if kind == "ufw" else found
    chains += list(reader.chains.values())
    return PersistedRules(facts_from_chains(chains), files, list(reader.diagnostics))
