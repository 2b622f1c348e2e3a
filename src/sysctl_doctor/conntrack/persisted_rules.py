"""The NAT facts of an offline root, from the rulesets it loads at boot (read through `Root`).

- nftables: /etc/nftables.conf (Debian's nftables.service) or /etc/sysconfig/nftables.conf (Fedora/RHEL),
  with the files it includes (paths inside the root; relative ones from the including file's directory,
  then /etc; glob patterns and directories).
- iptables-save files: /etc/iptables/rules.v4 and rules.v6 (netfilter-persistent / iptables-persistent),
  /etc/sysconfig/iptables and ip6tables (iptables-services).

A ruleset file counts whether or not its service is enabled (the boot timeline shows which loaders run).
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field
from typing import List, Optional

from sysctl_doctor.conntrack.nat_facts import NatRulesFacts, chains_from_iptables_save, facts_from_chains
from sysctl_doctor.conntrack.nft_text import NftTextReader
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

NFT_RULESETS = ("/etc/nftables.conf", "/etc/sysconfig/nftables.conf")
IPTABLES_SAVE_FILES = ("/etc/iptables/rules.v4", "/etc/iptables/rules.v6", "/etc/sysconfig/iptables",
                       "/etc/sysconfig/ip6tables")


@dataclass
class PersistedRules:
    rules: NatRulesFacts
    files: List[str] = field(default_factory=list)  # the ruleset files read, in order
    diagnostics: List[Diagnostic] = field(default_factory=list)


def _read(root: Root, path: str) -> Optional[str]:
    try:
        return root.read_text(path)
    except OSError:
        return None


def _resolve_include(root: Root, pattern: str, including: str) -> List[str]:
    bases = [pattern] if pattern.startswith("/") else [
        posixpath.join(posixpath.dirname(including), pattern), posixpath.join("/etc", pattern)]
    for candidate in bases:
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


def read_persisted_rules(root: Root) -> PersistedRules:
    reader = NftTextReader(lambda path: _read(root, path), lambda pattern, inc: _resolve_include(root, pattern, inc))
    for path in NFT_RULESETS:
        if root.kind(path) is PathKind.FILE:
            reader.feed_file(path)
    chains = list(reader.chains.values())
    files = list(reader.files)
    for path in IPTABLES_SAVE_FILES:
        text = _read(root, path) if root.kind(path) is PathKind.FILE else None
        if text is not None:
            files.append(path)
            chains += chains_from_iptables_save(text, path)
    return PersistedRules(facts_from_chains(chains), files, list(reader.diagnostics))
