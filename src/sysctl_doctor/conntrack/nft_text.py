"""A conservative reader of nftables ruleset files (`/etc/nftables.conf`), for the NAT facts.

It understands the shape of a ruleset — ``table``/``chain`` blocks (other blocks such as
sets, maps and flowtables are skipped), ``type … hook …``, ``policy``, one rule per line or
``;``, anonymous sets ``{ … }`` spanning lines, ``#`` comments, ``\\`` continuations,
``include "…"`` (glob patterns too) and ``add table/chain/rule`` commands — and from each rule
only what `nat_facts` asks: masquerade/snat/dnat, ``ct state`` (also ``vmap``), ``iif``/
``iifname "lo"``, ``tcp|udp|th dport`` and the verdict. Variables (``$x``) and named sets are
left unknown, which keeps the advice (never hides it).
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from sysctl_doctor.conntrack.nat_facts import FilterChain, FilterRule
from sysctl_doctor.errors import Diagnostic

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_SERVICES = {"ssh": 22, "domain": 53, "http": 80, "https": 443, "smtp": 25, "ntp": 123, "bgp": 179,
             "ftp": 21, "telnet": 23, "imap": 143, "pop3": 110, "snmp": 161, "ldap": 389}
_CT_STATE = re.compile(r"\bct\s+state\s+(!=\s*)?(vmap\s+)?(\{[^}]*\}|[\w,]+)")
_IIF_LO = re.compile(r"\biif(?:name)?\s+(?:==\s*)?\"?lo\"?(?=\s|$)")
_DPORT = re.compile(r"\b(?:tcp|udp|th|sctp|dccp)\s+dport\s+(!=\s*)?(\{[^}]*\}|\S+)")
_VERDICT = re.compile(r"\b(accept|drop|jump|goto)\b(?:\s+([\w.-]+|\"[^\"]*\"))?")

# A reader returns the (inside) paths that an include pattern names, and reads one of them.
IncludeResolver = Callable[[str, str], List[str]]  # (pattern, including file) -> paths
FileReader = Callable[[str], Optional[str]]


def _words(values: str) -> List[str]:
    return [w for w in re.split(r"[\s,{}]+", values) if w]


def _low_ports(values: str) -> bool:
    ports: List[int] = []
    for word in _words(values):
        for part in word.split("-"):
            if part.isdigit():
                ports.append(int(part))
            elif part in _SERVICES:
                ports.append(_SERVICES[part])
            else:
                return False  # $variable, @named_set, an unknown service name
    return bool(ports) and max(ports) < 1024


def rule_from_text(text: str, where: str, family: str, table: str) -> FilterRule:
    text = " ".join(text.split())
    rule = FilterRule(where=where, text=text)
    body = re.sub(r"\bcomment\s+\"[^\"]*\"", "", text)
    bare = re.sub(r"\"[^\"]*\"", '""', body)  # no quoted text (log prefixes) for keywords and verdicts
    if re.search(r"\b(masquerade|snat)\b", bare):
        rule.nat = "snat"
    elif re.search(r"\bdnat\b", bare):
        rule.nat = "dnat"
    verdicts = [m for m in _VERDICT.finditer(bare) if not _inside_braces(bare, m.start())]
    if verdicts:
        last = verdicts[-1]
        rule.verdict = last.group(1)
        if rule.verdict in ("jump", "goto") and last.group(2):
            rule.target = f"{family}/{table}/{last.group(2).strip(chr(34))}"
    state = _CT_STATE.search(body)
    if state:
        negated, vmap, values = state.group(1), state.group(2), state.group(3)
        if vmap:
            pairs = dict((k.strip(), v.strip()) for k, v in
                         (p.split(":", 1) for p in values.strip("{} ").split(",") if ":" in p))
            rule.invalid_drop = pairs.get("invalid") == "drop"
        elif negated:
            rule.excludes_invalid = "invalid" in _words(values)  # `ct state != invalid`
        else:
            if "invalid" in _words(values):
                rule.invalid_drop = rule.verdict == "drop"
            else:
                rule.excludes_invalid = True
    rule.from_lo = bool(_IIF_LO.search(body))
    port = _DPORT.search(body)
    if port and not port.group(1):
        rule.low_dports = _low_ports(port.group(2))
    return rule


def _inside_braces(text: str, pos: int) -> bool:
    return text.count("{", 0, pos) > text.count("}", 0, pos)


class NftTextReader:
    """Feed files in load order; `chains` is the result."""

    def __init__(self, read: FileReader, resolve: IncludeResolver) -> None:
        self.read = read
        self.resolve = resolve
        self.chains: Dict[str, FilterChain] = {}
        self.diagnostics: List[Diagnostic] = []
        self.files: List[str] = []
        self._stack: List[Tuple[str, str, str, str]] = []  # (kind, family, table, chain)
        self._depth = 0

    def feed_file(self, path: str) -> None:
        if path in self.files or len(self.files) > 200:
            return
        text = self.read(path)
        if text is None:
            self.diagnostics.append(Diagnostic(f"nftables ruleset {path} could not be read", path, None))
            return
        self.files.append(path)
        self._feed(text, path)

    def _context(self) -> Tuple[str, str, str, str]:
        return self._stack[-1] if self._stack else ("root", "", "", "")

    def _chain(self, family: str, table: str, name: str, line: int, path: str) -> FilterChain:
        key = f"{family}/{table}/{name}"
        chain = self.chains.get(key)
        if chain is None:
            chain = self.chains[key] = FilterChain(key, family, where=f"{path}:{line} (chain {name})")
        return chain

    def _open(self, header: str, line: int, path: str) -> None:
        kind = self._context()[0]
        words = header.split()
        if words[:1] in (["add"], ["create"]):
            words = words[1:]
        if kind == "root" and words[:1] == ["table"]:
            family, name = (words[1], words[2]) if len(words) > 2 and words[1] in FAMILIES else ("ip", words[-1])
            self._stack.append(("table", family, name, ""))
        elif kind == "root" and words[:1] == ["chain"] and len(words) >= 3:
            family, table, name = (words[1], words[2], words[3]) if words[1] in FAMILIES and len(words) > 3 \
                else ("ip", words[1], words[2])
            self._chain(family, table, name, line, path)
            self._stack.append(("chain", family, table, name))
        elif kind == "table" and words[:1] == ["chain"] and len(words) >= 2:
            _, family, table, _ = self._context()
            self._chain(family, table, words[1], line, path)
            self._stack.append(("chain", family, table, words[1]))
        else:
            self._stack.append(("skip", "", "", ""))

    def _statement(self, text: str, line: int, path: str) -> None:
        text = text.strip()
        if not text:
            return
        kind, family, table, chain = self._context()
        words = text.split()
        if words[0] == "include" and len(words) > 1:
            for included in self.resolve(text.split(None, 1)[1].strip().strip('"'), path):
                self.feed_file(included)
            return
        if kind == "root" and words[0] in ("add", "insert") and len(words) >= 5 and words[1] == "rule":
            args = words[2:]
            if args[0] not in FAMILIES:
                args = ["ip"] + args
            if len(args) < 4:
                return
            fam, tbl, name = args[0], args[1], args[2]
            rest = " ".join(args[3:])
            self._chain(fam, tbl, name, line, path).rules.append(
                rule_from_text(rest, f"{path}:{line}", fam, tbl))
            return
        if kind != "chain":
            return
        target = self.chains[f"{family}/{table}/{chain}"]
        if words[0] == "type" and "hook" in words:
            target.type = words[1] if len(words) > 1 else "filter"
            target.hook = words[words.index("hook") + 1] if words.index("hook") + 1 < len(words) else None
            target.where = f"{path}:{line} (chain {chain})"
        elif words[0] == "policy" and len(words) > 1:
            target.policy = words[1].rstrip(";")
        elif words[0] in ("comment", "devices", "device", "flags"):
            return
        else:
            target.rules.append(rule_from_text(text, f"{path}:{line}", family, table))

    def _feed(self, text: str, path: str) -> None:
        buf: List[str] = []
        start = 1
        line = 1
        braces = 0  # anonymous-set depth inside the current statement
        quoted = False
        i = 0
        n = len(text)
        while i < n:
            c = text[i]
            if quoted:
                buf.append(c)
                quoted = c != '"'
            elif c == '"':
                buf.append(c)
                quoted = True
            elif c == "#":
                while i < n and text[i] != "\n":
                    i += 1
                continue
            elif c == "\\" and i + 1 < n and text[i + 1] == "\n":
                buf.append(" ")
                line += 1
                i += 2
                continue
            elif c == "{":
                kind = self._context()[0]
                header = "".join(buf).strip()
                opens_block = braces == 0 and (
                    kind in ("table", "skip")
                    or (kind == "root" and not re.match(r"^(add|insert)\s+rule\b", header)))
                if opens_block:
                    self._open(header or "?", start, path)
                    buf, start = [], line
                else:
                    braces += 1
                    buf.append(c)
            elif c == "}":
                if braces:
                    braces -= 1
                    buf.append(c)
                else:
                    self._statement("".join(buf), start, path)
                    buf, start = [], line
                    if self._stack:
                        self._stack.pop()
            elif c in ";\n" and braces == 0:
                self._statement("".join(buf), start, path)
                buf = []
                if c == "\n":
                    line += 1
                start = line
            else:
                if c == "\n":
                    line += 1
                    c = " "
                buf.append(c)
            i += 1
        self._statement("".join(buf), start, path)
