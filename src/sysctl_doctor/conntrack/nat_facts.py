"""The NAT facts the CT rules need, read from a host's (or a namespace's) rules.

Sources: ``nft -j list ruleset`` (native nftables rules) and ``iptables-save``
(legacy or iptables-nft rules; iptables-nft's ``-m conntrack --ctstate`` shows
up in nft's JSON only as an opaque ``xt`` match, so both are read). For an
offline root, `sysctl_doctor.conntrack.persisted_rules` reads the same facts
from the rulesets it would load at boot (nft text, iptables-save files).

Every source becomes the same small model (`FilterChain`, `FilterRule`), and
one function (`facts_from_chains`) decides:
- SNAT to the node: a ``masquerade``/``snat`` rule (``-j MASQUERADE/SNAT``);
  DNAT: a ``dnat`` rule (``-j DNAT``).
- INVALID dropped in a hook: a ``ct state invalid drop`` rule (or a ``ct state
  vmap`` with ``invalid : drop``, or ``--ctstate INVALID -j DROP``) in a base
  chain of the hook or a chain it jumps/goes to, reached before any rule that
  could accept the packet; or a base chain with policy drop in which nothing
  could accept an INVALID reply first. An accept counts
  as harmless only when the rule also requires something an INVALID reply to a
  NATed connection never has: a ct state without ``invalid``, input from
  ``lo``, or (input hook) a destination port below 1024 (NATed replies go to
  the client's ephemeral port, which NAT keeps at or above 1024). Anything else
  is assumed to possibly accept it (conservative: the advice stays).

    facts = read_nat_facts(netns="sdlab-x")       # I/O
    facts = nat_facts_from_rules(nft_json, iptables_save_text, kernel=(6, 1))   # pure
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple

from sysctl_doctor.errors import DoctorError

@dataclass(frozen=True)
class NatFacts:
    """What the CT rules read about a NAT host (the reasoning behind them: findings/rules/ct00N_*)."""

    kernel: Tuple[int, int]  # (major, minor) of the running or target kernel
    snat_to_node: bool = False  # the node masquerades/SNATs to its own address
    dnat: bool = False  # the node DNATs (services, port forwards) to addresses behind it
    be_liberal: Optional[bool] = None  # net.netfilter.nf_conntrack_tcp_be_liberal now (None: unknown)
    be_liberal_after_boot: Optional[bool] = None  # what `check` predicts after the next boot
    invalid_drop_chains: FrozenSet[str] = frozenset()  # "input", "forward": where ct state invalid is dropped
    kube_proxy: Optional[Tuple[int, int]] = None  # kube-proxy version, iptables mode
    kube_proxy_be_liberal_flag: bool = False  # kube-proxy runs with --conntrack-tcp-be-liberal
    logged_reasons: Mapping[str, int] = field(default_factory=dict)  # reason code -> count (conntrack logs)
    be_liberal_void: Optional[str] = None  # why a configured be_liberal=1 will not hold after boot (from `check`)

    @property
    def kernel_known(self) -> bool:
        return self.kernel != (0, 0)

    @property
    def modern(self) -> bool:
        """6.1+: under-lower-bound segments are IGNOREd, not INVALID (unknown kernel: assumed)."""
        return self.kernel >= (6, 1) or not self.kernel_known

    @property
    def kube_liberal(self) -> bool:
        return bool(self.kube_proxy and self.kube_proxy >= (1, 29) and self.kube_proxy_be_liberal_flag)

    @property
    def liberal_now(self) -> bool:
        return bool(self.be_liberal) or self.kube_liberal

    @property
    def liberal(self) -> bool:
        """be_liberal holds: now (live), or after boot when the current value is unknown (an offline root)."""
        return self.liberal_now or (self.be_liberal is None and self.be_liberal_after_boot is True)

    @property
    def liberal_after_boot(self) -> bool:
        return self.be_liberal_after_boot if self.be_liberal_after_boot is not None else self.liberal_now



HOOKS = ("input", "forward")
_LOW_PORT_LIMIT = 1024


@dataclass
class FilterRule:
    """What one rule does, as far as the INVALID / NAT questions go."""

    where: str  # "/etc/nftables.conf:12", "nft inet/filter/input", "iptables-save: -A INPUT ..."
    text: str = ""
    verdict: Optional[str] = None  # accept | drop | jump | goto | None (no verdict)
    target: Optional[str] = None  # chain key for jump/goto
    nat: Optional[str] = None  # "snat" (masquerade/snat) | "dnat"
    invalid_drop: bool = False  # drops ct state invalid
    excludes_invalid: bool = False  # a ct state match without "invalid", so INVALID packets never match
    from_lo: bool = False  # only packets in from lo
    low_dports: bool = False  # only destination ports below 1024


@dataclass
class FilterChain:
    key: str  # "family/table/name" (nft) or "[file:]table/NAME" (iptables)
    family: str = "ip"  # ip | ip6 | inet | bridge | arp | netdev
    hook: Optional[str] = None  # base chain hook
    type: str = "filter"
    policy: str = "accept"
    where: str = ""
    rules: List[FilterRule] = field(default_factory=list)


@dataclass
class NatRulesFacts:
    """The decision and the rules behind it (for messages)."""

    snat: List[FilterRule] = field(default_factory=list)
    dnat: List[FilterRule] = field(default_factory=list)
    invalid_dropped: Dict[str, str] = field(default_factory=dict)  # hook -> why ("rule at …", "policy drop …")

    @property
    def chains(self) -> FrozenSet[str]:
        return frozenset(self.invalid_dropped)


def _fate(key: str, chains: Dict[str, FilterChain], hook: str, seen: Set[str]) -> Tuple[str, Optional[FilterRule]]:
    """What a chain does with an INVALID reply to a NATed connection: ("drop", rule), ("accept", rule)
    when a rule could accept it first (conservative), or ("continue", None)."""
    if key in seen:
        return "continue", None
    seen.add(key)
    chain = chains.get(key)
    for rule in chain.rules if chain else ():
        if rule.invalid_drop:
            return "drop", rule
        if rule.verdict not in ("accept", "jump", "goto"):
            continue
        if rule.excludes_invalid or rule.from_lo or (hook == "input" and rule.low_dports):
            continue
        if rule.verdict == "accept" or rule.target not in chains:
            return "accept", rule  # (a jump to a chain we cannot see counts as a possible accept)
        fate, found = _fate(str(rule.target), chains, hook, seen)
        if fate != "continue":
            return fate, found
    return "continue", None


def facts_from_chains(chains: Iterable[FilterChain]) -> NatRulesFacts:
    by_key = {c.key: c for c in chains}
    out = NatRulesFacts()
    for chain in by_key.values():
        for rule in chain.rules:
            if rule.nat == "snat":
                out.snat.append(rule)
            elif rule.nat == "dnat":
                out.dnat.append(rule)
    for hook in HOOKS:
        # every base chain of the hook sees the packet; a drop in any of them drops it. Only IPv4 chains
        # count (ip, inet): NAT is IPv4 in practice, and an ip6 drop does not protect it (conservative).
        for base in (c for c in by_key.values() if c.hook == hook and c.type == "filter"
                     and c.family in ("ip", "inet")):
            fate, rule = _fate(base.key, by_key, hook, set())
            if fate == "drop" and rule is not None:
                out.invalid_dropped[hook] = f"{rule.where} `{rule.text}`" if rule.text else rule.where
                break
            if fate == "continue" and base.policy == "drop":
                out.invalid_dropped[hook] = (
                    f"the policy drop of {base.where or base.key} (no rule in it accepts an INVALID reply first)")
                break
    return out


# -- nft JSON (`nft -j list ruleset`) -------------------------------------------------------------

def _values(right) -> list:  # type: ignore[no-untyped-def]
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    return list(right) if isinstance(right, list) else [right]


def _ports_low(values: list) -> bool:
    ports: List[int] = []
    for v in values:
        if isinstance(v, int):
            ports.append(v)
        elif isinstance(v, dict) and isinstance(v.get("range"), list):
            ports.extend(p for p in v["range"] if isinstance(p, int))
        else:
            return False  # a named set, a variable: unknown
    return bool(ports) and max(ports) < _LOW_PORT_LIMIT


def _rule_from_json_exprs(exprs: list, where: str, family: str, table: str) -> FilterRule:
    rule = FilterRule(where=where)
    for e in exprs:
        if not isinstance(e, dict):
            continue
        if "masquerade" in e or "snat" in e:
            rule.nat = "snat"
        elif "dnat" in e:
            rule.nat = "dnat"
        for verdict in ("accept", "drop"):
            if verdict in e:
                rule.verdict = verdict
        for verdict in ("jump", "goto"):
            if isinstance(e.get(verdict), dict) and e[verdict].get("target"):
                rule.verdict = verdict
                rule.target = f"{family}/{table}/{e[verdict]['target']}"
        vmap = e.get("vmap")
        if isinstance(vmap, dict) and isinstance(vmap.get("key"), dict) and \
                isinstance(vmap["key"].get("ct"), dict) and vmap["key"]["ct"].get("key") == "state":
            for pair in _values(vmap.get("data")):
                if isinstance(pair, list) and len(pair) == 2 and pair[0] == "invalid" and \
                        isinstance(pair[1], dict) and "drop" in pair[1]:
                    rule.invalid_drop = True
        match = e.get("match")
        if not isinstance(match, dict):
            continue
        left, op, values = match.get("left"), match.get("op", "=="), _values(match.get("right"))
        if not isinstance(left, dict):
            continue
        if op == "!=" and isinstance(left.get("ct"), dict) and left["ct"].get("key") == "state":
            rule.excludes_invalid = "invalid" in values  # `ct state != invalid`
            continue
        if op not in ("==", "in"):
            continue
        if isinstance(left.get("ct"), dict) and left["ct"].get("key") == "state":
            if "invalid" in values:
                rule.invalid_drop = True  # completed below: only with a drop verdict
            else:
                rule.excludes_invalid = True
        elif isinstance(left.get("meta"), dict) and left["meta"].get("key") in ("iif", "iifname"):
            rule.from_lo = values == ["lo"]
        elif isinstance(left.get("payload"), dict) and left["payload"].get("field") == "dport":
            rule.low_dports = _ports_low(values)
    if rule.invalid_drop and rule.verdict != "drop" and not any(isinstance(e, dict) and "vmap" in e for e in exprs):
        rule.invalid_drop = False
    return rule


def chains_from_nft_json(data: Optional[dict]) -> List[FilterChain]:
    chains: Dict[str, FilterChain] = {}
    for item in (data or {}).get("nftables", []):
        chain = item.get("chain")
        if chain:
            key = f"{chain.get('family')}/{chain.get('table')}/{chain.get('name')}"
            found = chains.setdefault(key, FilterChain(key, str(chain.get("family"))))
            found.hook = chain.get("hook")
            found.type = chain.get("type", "filter")
            found.policy = chain.get("policy", "accept")
            found.where = f"nft chain {key.replace('/', ' ')}"
            continue
        rule = item.get("rule")
        if not rule:
            continue
        family, table = rule.get("family"), rule.get("table")
        key = f"{family}/{table}/{rule.get('chain')}"
        where = f"nft rule {family} {table} {rule.get('chain')} handle {rule.get('handle')}"
        chains.setdefault(key, FilterChain(key, str(family))).rules.append(
            _rule_from_json_exprs(rule.get("expr", []), where, str(family), str(table)))
    return list(chains.values())


# -- iptables-save ---------------------------------------------------------------------------------

def _option(words: List[str], *names: str) -> Optional[str]:
    for name in names:
        if name in words and words.index(name) + 1 < len(words):
            return words[words.index(name) + 1]
    return None


def chains_from_iptables_save(text: str, source: str = "iptables-save", family: str = "ip",
                              scope: str = "") -> List[FilterChain]:
    """`scope` keeps the chains of different files apart (each file is its own set of tables)."""
    chains: Dict[str, FilterChain] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source}:{number}"
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if line.startswith(":") and table and line[1:].split():
            words = line[1:].split()
            key = f"{scope}{table}/{words[0]}"
            chain = chains.setdefault(key, FilterChain(key, family))
            if words[0] in ("INPUT", "FORWARD") and table == "filter":
                chain.hook = words[0].lower()
                chain.policy = "drop" if len(words) > 1 and words[1] == "DROP" else "accept"
                chain.where = f"{source}:{number} ({words[0]} {words[1] if len(words) > 1 else ''})".rstrip()
            continue
        if not line.startswith(("-A ", "-I ")) or not table:
            continue
        words = line.split()
        key = f"{scope}{table}/{words[1]}"
        rule = FilterRule(where=where, text=line)
        target = _option(words, "-j", "-g")
        negated_state = False
        for opt in ("--ctstate", "--state"):
            if opt in words:
                i = words.index(opt)
                negated_state = words[i - 1] == "!"
                states = words[i + 1].split(",") if i + 1 < len(words) else []
                if "INVALID" in states and not negated_state and target == "DROP":
                    rule.invalid_drop = True
                elif ("INVALID" in states) == negated_state:  # `! --ctstate INVALID` or states without it
                    rule.excludes_invalid = True
        if target in ("MASQUERADE", "SNAT"):
            rule.nat = "snat"
        elif target == "DNAT":
            rule.nat = "dnat"
        elif target in ("ACCEPT", "DROP"):
            rule.verdict = target.lower()
        elif target and target not in ("RETURN", "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK"):
            rule.verdict = "goto" if "-g" in words else "jump"
            rule.target = f"{scope}{table}/{target}"
        rule.from_lo = _option(words, "-i", "--in-interface") == "lo"
        ports = _option(words, "--dport", "--destination-port", "--dports", "--destination-ports")
        if ports is not None:
            try:
                numbers = [int(p) for part in ports.split(",") for p in part.split(":")]
                rule.low_dports = bool(numbers) and max(numbers) < _LOW_PORT_LIMIT
            except ValueError:
                rule.low_dports = False
        chains.setdefault(key, FilterChain(key, family)).rules.append(rule)
    return list(chains.values())


def facts_of(found: NatRulesFacts, kernel: Tuple[int, int], be_liberal: Optional[bool] = None) -> NatFacts:
    return NatFacts(kernel=kernel, snat_to_node=bool(found.snat), dnat=bool(found.dnat), be_liberal=be_liberal,
                    invalid_drop_chains=found.chains)


def _start(argv: List[str]) -> "subprocess.Popen[str]":
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: "subprocess.Popen[str]") -> Tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        return -9, "", "no answer in 60 s"
    return proc.returncode, stdout, stderr


def read_live_rules(netns: Optional[str] = None) -> NatRulesFacts:
    """The live host's (or an `ip netns` namespace's) rules, as facts. Missing tools: no rules."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    # both tools run at once: each is a few ms of process start, and `check` waits for them
    nft = _start(prefix + ["nft", "-j", "list", "ruleset"]) if shutil.which("nft") else None
    saver = _start(prefix + ["iptables-save"]) if shutil.which("iptables-save") else None
    nft_json = None
    if nft is not None:
        returncode, stdout, stderr = _finish(nft)
        if returncode != 0:
            if saver is not None:
                _finish(saver)
            raise DoctorError("nft -j list ruleset: " + "; ".join(ln.strip() for ln in stderr.splitlines() if ln.strip()))
        try:
            nft_json = json.loads(stdout) if stdout.strip() else None
        except ValueError as exc:
            if saver is not None:
                _finish(saver)
            raise DoctorError(f"nft -j list ruleset: not JSON ({exc})") from exc
    save = ""
    if saver is not None:
        returncode, stdout, _ = _finish(saver)
        save = stdout if returncode == 0 else ""
    return facts_from_chains(chains_from_nft_json(nft_json) + chains_from_iptables_save(save))


def read_live_be_liberal(netns: Optional[str] = None) -> Optional[bool]:
    from sysctl_doctor.conntrack.stats import in_netns

    with in_netns(netns):
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal") as fh:
                return fh.read().strip() != "0"
        except OSError:
            return None


def read_nat_facts(netns: Optional[str] = None) -> NatFacts:
    """The live host's (or an `ip netns` namespace's) NAT facts."""
    from sysctl_doctor.kernel_version import version_or_unknown

    found = read_live_rules(netns)
    return facts_of(found, version_or_unknown(os.uname().release), read_live_be_liberal(netns))


@dataclass
class HostNat:
    """What `check` knows about the host's NAT: the facts the CT rules read, and where they come from."""

    facts: NatFacts
    source: str  # "the running rules (nft, iptables-save)" or the ruleset files of the root
    snat: List[str] = field(default_factory=list)  # "file:line `rule`" of masquerade/snat rules
    dnat: List[str] = field(default_factory=list)
    invalid_dropped: dict = field(default_factory=dict)  # hook -> what drops INVALID there


    @property
    def does_nat(self) -> bool:
        return bool(self.snat or self.dnat)

    def summary(self) -> str:
        """One line: what NAT the host does and where INVALID is dropped, with the rules behind it."""
        return nat_evidence(self).strip(" []")


def nat_evidence(nat: HostNat) -> str:
    parts = []
    if nat.snat:
        parts.append("SNAT: " + "; ".join(nat.snat[:2]) + (" …" if len(nat.snat) > 2 else ""))
    if nat.dnat:
        parts.append("DNAT: " + "; ".join(nat.dnat[:2]) + (" …" if len(nat.dnat) > 2 else ""))
    for hook, why in sorted(nat.invalid_dropped.items()):
        parts.append(f"INVALID dropped in {hook} by {why}")
    return f" [{nat.source}: " + ", ".join(parts) + "]" if parts else f" [{nat.source}]"
