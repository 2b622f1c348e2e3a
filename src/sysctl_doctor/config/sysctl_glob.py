"""Glob matching against a key tree, as glob(3) does it for /proc/sys/<pattern>.

systemd-sysctl 252 calls glob() with GLOB_NOSORT|GLOB_BRACE|GLOB_NOCHECK; procps 4.0.2
with no flags. Patterns are matched one path component at a time (``*`` never crosses
a slash, a leading dot must be matched literally); brackets, ``?`` and backslash escapes
follow POSIX.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from sysctl_doctor.config.model import KeyTree


_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v", "xdigit": "0-9A-Fa-f", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f", "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e",
}


def _component_regex(comp: str, in_path: bool = False) -> "re.Pattern[str]":
    """POSIX glob (fnmatch without FNM_PERIOD relaxations) for one path component
    (`in_path`: as part of a whole-path regex, so nothing may match a slash)."""
    anychar = "[^/]" if in_path else "."
    out: List[str] = []
    i, n = 0, len(comp)
    while i < n:
        c = comp[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(comp[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(anychar + "*")
        elif c == "?":
            out.append(anychar)
        elif c == "[":
            j = i + 1
            negate = j < n and comp[j] in "!^"
            if negate:
                j += 1
            items: List[str] = []
            first = True
            closed = False
            while j < n:
                ch = comp[j]
                if ch == "]" and not first:
                    closed = True
                    break
                first = False
                if ch == "[" and comp.startswith("[:", j):
                    end = comp.find(":]", j + 2)
                    if end > 0 and comp[j + 2 : end] in _CLASSES:
                        items.append(_CLASSES[comp[j + 2 : end]])
                        j = end + 2
                        continue
                if ch == "\\" and j + 1 < n:
                    j += 1
                    ch = comp[j]
                if j + 2 < n and comp[j + 1] == "-" and comp[j + 2] != "]":
                    hi = comp[j + 2]
                    if hi == "\\" and j + 3 < n:
                        hi = comp[j + 3]
                        j += 1
                    items.append(re.escape(ch) + "-" + re.escape(hi))
                    j += 3
                    continue
                items.append(re.escape(ch))
                j += 1
            if not closed:
                out.append(re.escape("["))
            else:
                body = "".join(items)
                if negate and in_path:
                    body += "/"
                out.append(f"[{'^' if negate else ''}{body}]" if body else ("[^/]" if negate else "(?!)"))
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return re.compile(re.escape(comp), re.DOTALL)


def expand_braces(pattern: str) -> List[str]:
    """glob(3) GLOB_BRACE expansion ("a{b,c}d" -> "abd", "acd"; nested braces too)."""
    depth = 0
    start = -1
    for i, c in enumerate(pattern):
        if c == "\\":
            continue
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                body = pattern[start + 1 : i]
                alts, level, last = [], 0, 0
                for j, ch in enumerate(body):
                    if ch == "{":
                        level += 1
                    elif ch == "}":
                        level -= 1
                    elif ch == "," and level == 0:
                        alts.append(body[last:j])
                        last = j + 1
                alts.append(body[last:])
                if len(alts) == 1:
                    return [pattern]
                head, tail = pattern[:start], pattern[i + 1 :]
                out: List[str] = []
                for alt in alts:
                    out.extend(expand_braces(head + alt + tail))
                return out
    return [pattern]


def glob_matches(pattern: str, keys: KeyTree, braces: bool = False) -> List[str]:
    """Slash paths (files and directories) in `keys` that glob(3) returns for
    /proc/sys/<pattern>, sorted like glob; `braces` = GLOB_BRACE (systemd)."""
    patterns = expand_braces(pattern) if braces else [pattern]
    found: List[str] = []
    for pat in patterns:
        for path in _glob_one(pat, keys):
            if path not in found:
                found.append(path)
    return found


_PATH_REGEX_CACHE: Dict[Tuple[str, bool], "re.Pattern[str]"] = {}


def _union_glob_regex(patterns: List[str], braces: bool) -> "re.Pattern[str]":
    """One regex matching a path when any of the globs would."""
    for pat in patterns:
        glob_matches_path(pat, "", braces)  # fills the cache
    return re.compile("|".join(f"(?:{_PATH_REGEX_CACHE[(pat, braces)].pattern})" for pat in patterns), re.DOTALL)


def glob_matches_path(pattern: str, path: str, braces: bool = False) -> bool:
    """Would glob(3) of /proc/sys/<pattern> return /proc/sys/<path> if it existed?"""
    rx = _PATH_REGEX_CACHE.get((pattern, braces))
    if rx is None:
        alternatives = []
        for pat in expand_braces(pattern) if braces else [pattern]:
            parts = []
            for comp in (c for c in pat.split("/") if c not in ("", ".")):
                no_dot = "" if comp.startswith(".") or comp.startswith("\\.") else "(?!\\.)"
                parts.append(no_dot + "(?:" + _component_regex(comp, in_path=True).pattern + ")")
            alternatives.append("/".join(parts))
        rx = re.compile("(?:" + "|".join(alternatives) + ")" if alternatives else "(?!)", re.DOTALL)
        _PATH_REGEX_CACHE[(pattern, braces)] = rx
    return rx.fullmatch(path) is not None


def _glob_one(pattern: str, keys: KeyTree) -> List[str]:
    comps = [c for c in pattern.split("/") if c not in ("", ".")]
    if not comps:
        return []
    children = keys.children()
    everything = keys.paths | keys.all_directories()
    level = [""]
    for comp in comps:
        nxt = []
        if not any(ch in comp for ch in "*?[\\"):
            for base in level:
                cand = f"{base}/{comp}" if base else comp
                if cand in everything:
                    nxt.append(cand)
        else:
            rx = _component_regex(comp)
            dot_ok = comp.startswith(".") or comp.startswith("\\.")
            for base in level:
                for name in children.get(base, ()):
                    if name.startswith(".") and not dot_ok:
                        continue
                    if rx.fullmatch(name):
                        nxt.append(f"{base}/{name}" if base else name)
        level = nxt
        if not level:
            return []
    level.sort(key=_sort_key)
    return level


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


