"""Glob matching against a key tree, as glob(3) does it for /proc/sys/<pattern>.

systemd-sysctl 252 calls glob() with GLOB_NOSORT|GLOB_BRACE|GLOB_NOCHECK; procps 4.0.2
with no flags. Patterns are matched one path component at a time (``*`` never crosses
a slash, a leading dot must be matched literally); brackets, ``?`` and backslash escapes
follow POSIX.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

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


# A pattern's brace alternatives, at most (hostile input: "*{a,b}" x 22 is 4 million globs; glob(3) would
# run them all, the analysis keeps the first ones)
BRACE_ALTERNATIVES_MAX = 1024


def expand_braces(pattern: str, limit: int = BRACE_ALTERNATIVES_MAX) -> List[str]:
    """glob(3) GLOB_BRACE expansion ("a{b,c}d" -> "abd", "acd"; nested braces too), the first `limit`
    alternatives at most."""
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
                    if len(out) >= limit:
                        break
                    out.extend(expand_braces(head + alt + tail, limit - len(out)))
                return out[:limit]
    return [pattern]


def glob_matches(pattern: str, keys: KeyTree, braces: bool = False, work: Optional[List[int]] = None) -> List[str]:
    """Slash paths (files and directories) in `keys` that glob(3) returns for
    /proc/sys/<pattern>, sorted like glob; `braces` = GLOB_BRACE (systemd).
    `work[0]` (if given) is increased by the number of names tried."""
    patterns = expand_braces(pattern) if braces else [pattern]
    found: List[str] = []
    seen: Set[str] = set()
    counter = work if work is not None else [0]
    for pat in patterns:
        for path in _glob_one(pat, keys, counter):
            if path not in seen:
                seen.add(path)
                found.append(path)
    return found


_PATH_REGEX_CACHE: Dict[Tuple[str, bool], "re.Pattern[str]"] = {}


def glob_matches_path(pattern: str, path: str, braces: bool = False) -> bool:
    """Would glob(3) of /proc/sys/<pattern> return /proc/sys/<path> if it existed?"""
    return _path_regex(pattern, braces).fullmatch(path) is not None


def _path_regex(pattern: str, braces: bool) -> "re.Pattern[str]":
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
    return rx


def _glob_one(pattern: str, keys: KeyTree, work: List[int]) -> List[str]:
    comps = [c for c in pattern.split("/") if c not in ("", ".")]
    if not comps:
        return []
    children = keys.children()
    files, dirs = keys.paths, keys.all_directories()  # (not their union: that is a copy of the tree per glob)
    level = [""]
    for comp in comps:
        nxt = []
        if not any(ch in comp for ch in "*?[\\"):
            work[0] += len(level)
            for base in level:
                cand = f"{base}/{comp}" if base else comp
                if cand in files or cand in dirs:
                    nxt.append(cand)
        else:
            rx = _component_regex(comp)
            dot_ok = comp.startswith(".") or comp.startswith("\\.")
            for base in level:
                names = children.get(base, ())
                work[0] += len(names)
                for name in names:
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




# --------------------------------------------------------------------------- many globs, many keys

_END = 8  # characters of a literal start or end a glob is filed under
GLOB_SPECIALS = "*?[]\\"  # glob(3): what may stand for other characters (after brace expansion)
FNMATCH_SPECIALS = "*?[]"  # fnmatch: backslash is an ordinary character


class GlobIndex:
    """Which of many globs may match a path, without trying each one (issue 16: G x K was quadratic).

    A glob is filed under its literal start (text before the first special character) and its
    literal end (text after the last one), each cut to 8 characters and possibly empty. A path
    looks up the pairs of its own first and last 0..8 characters, so only globs whose literal ends
    both fit it are candidates. Candidates are a superset of the matches, in the globs' order;
    callers confirm each with the exact matcher. `patterns` must be what the matcher matches
    (brace alternatives and empty/"." components resolved: see `normalized_alternatives`).
    """

    def __init__(self, patterns: Sequence[Tuple[int, str]], specials: str = GLOB_SPECIALS) -> None:
        self._by_ends: Dict[Tuple[str, str], List[int]] = {}
        self._heads: Set[str] = set()
        self._tails: Set[str] = set()
        for ident, pat in patterns:
            first = next((i for i, c in enumerate(pat) if c in specials), len(pat))
            last = max(pat.rfind(c) for c in specials)
            head, tail = pat[:first][:_END], (pat[last + 1:] if last >= 0 else pat)[-_END:]
            self._by_ends.setdefault((head, tail), []).append(ident)
            self._heads.add(head)
            self._tails.add(tail)
        # only the lengths some glob's head/tail has are worth slicing a path at
        self._head_lengths = sorted({len(h) for h in self._heads})
        self._tail_lengths = sorted({len(t) for t in self._tails})

    def candidates(self, path: str) -> List[int]:
        """Idents of the globs that may match `path`, ascending, each once."""
        n = len(path)
        heads = [path[:m] for m in self._head_lengths if m <= n and path[:m] in self._heads]
        tails = [path[n - m:] for m in self._tail_lengths if m <= n and path[n - m:] in self._tails]
        found: List[int] = []
        by_ends = self._by_ends
        for h in heads:
            for t in tails:
                found += by_ends.get((h, t), ())
        if len(found) > 1:
            found = sorted(set(found))
        return found


def normalized_alternatives(pattern: str, braces: bool) -> List[str]:
    """The patterns `glob_matches_path` matches for `pattern`: brace alternatives (systemd), with
    empty and "." components dropped."""
    return ["/".join(c for c in pat.split("/") if c not in ("", "."))
            for pat in (expand_braces(pattern) if braces else [pattern])]
