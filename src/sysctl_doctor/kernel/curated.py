"""The curated provider table (data/providers.tsv): the fallback where no module file pins a key down."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import List, Optional, Tuple

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.kernel.model import CuratedRule, ProviderKind
from sysctl_doctor.package_data import package_data

IFACE_ANY = "<if>"
NOT_INTERFACES = ("all", "default")
SCOPES = ("netns", "init", "global")


def parse_providers_tsv(text: str, name: str = "providers.tsv") -> List[CuratedRule]:
    rules = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise DoctorError(f"{name}:{lineno}: expected 5 tab-separated columns, got {len(cols)}")
        pattern, kind, module, scope, source = (c.strip() for c in cols)
        try:
            pkind = ProviderKind(kind)
        except ValueError:
            raise DoctorError(f"{name}:{lineno}: unknown kind {kind!r}") from None
        if scope not in SCOPES or not source:
            raise DoctorError(f"{name}:{lineno}: bad scope {scope!r} or missing source")
        rules.append(CuratedRule(pattern, pkind, module or None, scope, source))
    return rules


@lru_cache(maxsize=1)
def curated_rules() -> Tuple[CuratedRule, ...]:
    text = package_data("providers.tsv").read_text(encoding="utf-8")
    return tuple(parse_providers_tsv(text))


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> "re.Pattern[str]":
    # "*" matches across "/" (like fnmatch without FNM_PATHNAME); "<if>" captures one component.
    def glob(part: str) -> str:
        return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in part)

    regex = "(?P<if>[^/]+)".join(glob(p) for p in pattern.split(IFACE_ANY))
    return re.compile(regex + r"\Z", re.S)


@lru_cache(maxsize=None)
def _literal_prefix(pattern: str) -> str:
    """The part of `pattern` before its first wildcard: a path that does not start with it cannot match."""
    cut = len(pattern)
    for wildcard in ("*", "?", IFACE_ANY):
        at = pattern.find(wildcard)
        if at != -1:
            cut = min(cut, at)
    return pattern[:cut]


def match_rule(rule: CuratedRule, path: str) -> Optional[Optional[str]]:
    """None if `rule` does not match `path`; else the interface name it captured ("" if none)."""
    if not path.startswith(_literal_prefix(rule.pattern)):
        return None  # most rules, without compiling their regular expression (82 compiles: 6 ms of `check`)
    m = _compiled(rule.pattern).match(path)
    if not m:
        return None
    iface = m.groupdict().get("if")
    if iface is not None:
        if iface in NOT_INTERFACES:
            return None
        return iface
    return ""


def matching_rules(path: str) -> List[Tuple[CuratedRule, str]]:
    out = []
    for rule in curated_rules():
        iface = match_rule(rule, path)
        if iface is not None:
            out.append((rule, iface))
    return out
