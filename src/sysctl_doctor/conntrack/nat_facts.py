"""The NAT facts `recommend` needs, read from a host's (or a namespace's) rules.

Sources: ``nft -j list ruleset`` (native nftables rules) and ``iptables-save``
(legacy or iptables-nft rules; iptables-nft's ``-m conntrack --ctstate`` shows
up in nft's JSON only as an opaque ``xt`` match, so both are read). A chain
counts for a hook when it is the base chain of that hook or is reached from it
by jump/goto.

    facts = read_nat_facts(netns="sdlab-x")       # I/O
    facts = nat_facts_from_rules(nft_json, iptables_save_text, kernel=(6, 1))   # pure
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from sysctl_doctor.conntrack.recommend import NatFacts
from sysctl_doctor.errors import DoctorError

_HOOKS = ("input", "forward")


def _reachable(start: List[str], edges: Dict[str, Set[str]]) -> Set[str]:
    seen: Set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(edges.get(name, ()))
    return seen


def _is_ct_invalid_match(expr: dict) -> bool:
    match = expr.get("match")
    if not isinstance(match, dict):
        return False
    left, right = match.get("left"), match.get("right")
    if not (isinstance(left, dict) and isinstance(left.get("ct"), dict) and left["ct"].get("key") == "state"):
        return False
    values = right if isinstance(right, list) else [right]
    if isinstance(right, dict) and "set" in right:
        values = right["set"]
    return "invalid" in values


def _from_nft(data: Optional[dict]) -> Tuple[bool, bool, Set[str]]:
    snat = dnat = False
    drop_chains: Dict[str, bool] = {}
    edges: Dict[str, Set[str]] = {}
    hooks: Dict[str, List[str]] = {h: [] for h in _HOOKS}
    for item in (data or {}).get("nftables", []):
        chain = item.get("chain")
        if chain:
            key = f"{chain.get('family')}/{chain.get('table')}/{chain.get('name')}"
            if chain.get("hook") in hooks and chain.get("type", "filter") == "filter":
                hooks[chain["hook"]].append(key)
            continue
        rule = item.get("rule")
        if not rule:
            continue
        key = f"{rule.get('family')}/{rule.get('table')}/{rule.get('chain')}"
        exprs = rule.get("expr", [])
        names = {name for e in exprs if isinstance(e, dict) for name in e}
        if "masquerade" in names or "snat" in names:
            snat = True
        if "dnat" in names:
            dnat = True
        if "drop" in names and any(_is_ct_invalid_match(e) for e in exprs if isinstance(e, dict)):
            drop_chains[key] = True
        for e in exprs:
            if isinstance(e, dict):
                for verb in ("jump", "goto"):
                    target = e.get(verb)
                    if isinstance(target, dict) and target.get("target"):
                        family, table, _ = key.split("/", 2)
                        edges.setdefault(key, set()).add(f"{family}/{table}/{target['target']}")
    found = {hook for hook, bases in hooks.items() if _reachable(bases, edges) & set(drop_chains)}
    return snat, dnat, found


def _from_iptables_save(text: str) -> Tuple[bool, bool, Set[str]]:
    snat = dnat = False
    drop_chains: Set[str] = set()
    edges: Dict[str, Set[str]] = {}
    table = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A "):
            continue
        words = line.split()
        chain = f"{table}/{words[1]}"
        target = None
        for flag in ("-j", "-g"):
            if flag in words and words.index(flag) + 1 < len(words):
                target = words[words.index(flag) + 1]
        if target in ("MASQUERADE", "SNAT"):
            snat = True
        elif target == "DNAT":
            dnat = True
        elif target == "DROP":
            for opt in ("--ctstate", "--state"):
                if opt in words and "INVALID" in words[words.index(opt) + 1].split(","):
                    drop_chains.add(chain)
        elif target:
            edges.setdefault(chain, set()).add(f"{table}/{target}")
    found = {hook for hook in _HOOKS if _reachable([f"filter/{hook.upper()}"], edges) & drop_chains}
    return snat, dnat, found


def nat_facts_from_rules(nft_json: Optional[dict], iptables_save: str, kernel: Tuple[int, int],
                         be_liberal: Optional[bool] = None) -> NatFacts:
    """Pure: the facts from nft's JSON ruleset and iptables-save's text."""
    s1, d1, c1 = _from_nft(nft_json)
    s2, d2, c2 = _from_iptables_save(iptables_save)
    chains: FrozenSet[str] = frozenset(c1 | c2)
    return NatFacts(kernel=kernel, snat_to_node=s1 or s2, dnat=d1 or d2, be_liberal=be_liberal,
                    invalid_drop_chains=chains)


def read_nat_facts(netns: Optional[str] = None) -> NatFacts:
    """The live host's (or an `ip netns` namespace's) NAT facts."""
    from sysctl_doctor.conntrack.recommend import kernel_version
    from sysctl_doctor.conntrack.stats import in_netns

    prefix = ["ip", "netns", "exec", netns] if netns else []
    nft_json = None
    if shutil.which("nft"):
        proc = subprocess.run(prefix + ["nft", "-j", "list", "ruleset"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DoctorError(f"nft -j list ruleset: {proc.stderr.strip()}")
        try:
            nft_json = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError as exc:
            raise DoctorError(f"nft -j list ruleset: not JSON ({exc})") from exc
    save = ""
    if shutil.which("iptables-save"):
        proc = subprocess.run(prefix + ["iptables-save"], capture_output=True, text=True, timeout=60)
        save = proc.stdout if proc.returncode == 0 else ""
    with in_netns(netns):
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal") as fh:
                be_liberal: Optional[bool] = fh.read().strip() != "0"
        except OSError:
            be_liberal = None
    return nat_facts_from_rules(nft_json, save, kernel_version(os.uname().release), be_liberal)
