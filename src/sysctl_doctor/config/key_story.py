"""The story of one key: every line that sets it, in apply order, which one wins and why.

Pure function over a `SysctlConfig` (and optionally a `KeyTree`); `sysctl-doctor explain KEY`
renders it. Lines in files the flavour never reads (an /etc/sysctl.conf without the Debian
link, a masked vendor file, ...) are included as "not applied", with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from sysctl_doctor.config.model import (ConfigLine, EffectiveSetting, KeyTree, Origin, SysctlConfig, is_glob,
                                        path_to_key)
from sysctl_doctor.config.fates import ignored_file_bytes
from sysctl_doctor.config.sysctl_d import effective_settings, procps_path, systemd_normalize
from sysctl_doctor.config.sysctl_glob import glob_matches_path
from sysctl_doctor.config.sysctl_lines import parse_sysctl_bytes
from sysctl_doctor.root import Root

WINS = "wins"
OVERRIDDEN = "overridden"
SKIPPED = "skipped"
CANCELLED = "cancelled"
REPEAT = "repeat"
EXCLUDES = "excludes"
NOT_APPLIED = "not applied"
NO_EFFECT = "no effect"


@dataclass
class KeyLine:
    origin: Origin
    key: str  # as the line names it (dotted; may be a glob)
    value: Optional[str]  # None: an exclusion line
    is_glob: bool
    verdict: str  # WINS, OVERRIDDEN, SKIPPED, CANCELLED, REPEAT, EXCLUDES, NOT_APPLIED, NO_EFFECT
    reason: str
    ignore_failure: bool = False


@dataclass
class KeyStory:
    key: str  # dotted
    path: str  # slash, relative to /proc/sys
    flavor: str
    lines: List[KeyLine] = field(default_factory=list)  # in apply order, then lines never applied
    winner: Optional[KeyLine] = None
    final_value: Optional[str] = None
    exists: Optional[bool] = None  # None: no key tree
    summary: str = ""


def _canonical(path: str) -> str:
    return "/".join(c for c in path.split("/") if c not in ("", "."))


def lookup_path(key: str, flavor: str) -> str:
    """The /proc/sys path a user-typed key names, under the flavour's rules."""
    return _canonical(systemd_normalize(key) if flavor == "systemd" else procps_path(key))


def _matches(line_path: str, is_glob: bool, path: str, flavor: str) -> bool:
    if not is_glob:
        return _canonical(line_path) == path
    return glob_matches_path(line_path, path, braces=flavor == "systemd")


def key_story(config: SysctlConfig, key: str, keys: Optional[KeyTree] = None,
              root: Optional[Root] = None, aliases: Optional[Mapping[str, str]] = None) -> KeyStory:
    """Explain `key` (dotted or slash form). With `root`, also read the ignored files for
    lines that would have set it. With `aliases` (slash path -> one name of its kernel variable),
    the lines of every other name of the key's variable are part of its story: the last write
    through any name wins."""
    flavor = config.flavor
    path = lookup_path(key, flavor)
    if aliases and path in aliases and not is_glob(path):
        return _aliased_story(config, path, keys, root, aliases)
    if is_glob(path) and not (keys is not None and path in keys.paths):
        # a pattern asked about as itself; a key whose name really holds '*' (it exists) is a key
        return pattern_story(config, path, keys)
    story = KeyStory(key=path_to_key(path), path=path, flavor=flavor)
    relevant = [h for h in config.history if _matches(h.path, h.is_glob, path, flavor)]

    # Which line would write this key: decided as if the key exists (other keys do not
    # change this key's story); whether it really exists is reported separately.
    writes = [w for w in effective_settings(config, KeyTree.of({path})) if _canonical(w.path) == path]
    story.exists = None if keys is None else (path in keys.paths)
    final: Optional[EffectiveSetting] = None
    for w in writes:
        if w.final and w.exists is not False:
            final = w
    written_by: Dict[Origin, EffectiveSetting] = {w.assignment.origin: w for w in writes}

    explicit_entry = _surviving_entry(config, path)
    for h in relevant:
        line = _verdict(h, config, final, written_by, explicit_entry)
        if line.verdict == WINS and len(relevant) == 1 and not h.is_glob:
            line.reason = "the only line that sets this key"
        story.lines.append(line)
    story.lines.extend(_ignored_file_lines(config, path, root))

    if final is not None:
        story.winner = next((ln for ln in story.lines if ln.origin == final.assignment.origin and ln.verdict == WINS),
                            None)
        story.final_value = final.value
    story.summary = _summary(story, final, explicit_entry)
    return story


def _aliased_story(config: SysctlConfig, path: str, keys: Optional[KeyTree], root: Optional[Root],
                   aliases: Mapping[str, str]) -> KeyStory:
    """The story of a key with several names: each name's own story, merged; the last write through any
    name is the value (both flavours write every name, in apply order)."""
    group = [path] + sorted(p for p, rep in aliases.items() if rep == aliases[path] and p != path)
    stories = [key_story(config, path_to_key(name), keys, root) for name in group]
    story = stories[0]
    writes = [w for w in effective_settings(config, KeyTree.of(set(group)), aliases=aliases)
              if _canonical(w.path) in group]
    final = next((w for w in reversed(writes) if w.final and w.exists is not False), None)
    position = {h.origin: i for i, h in enumerate(config.history)}
    lines = [ln for st in stories for ln in st.lines]
    lines.sort(key=lambda ln: (ln.verdict == NOT_APPLIED, position.get(ln.origin, len(position))))
    others = ", ".join(path_to_key(name) for name in group[1:])
    for ln in lines:
        if ln.verdict == WINS and final is not None and ln.origin != final.assignment.origin:
            ln.verdict = OVERRIDDEN
            ln.reason = (f"{final.key} is the same kernel variable, written later at {_where(final.assignment.origin)}: "
                         "the last write through either name wins")
        elif ln.verdict == WINS and len([x for x in lines if x.verdict != NOT_APPLIED]) > 1:
            ln.reason = "the last write to this kernel variable through either name (both names are written, in order)"
    story.lines = lines
    if final is None:
        story.summary += f" ({others}: the same kernel variable)"
        return story
    story.winner = next((ln for ln in lines if ln.origin == final.assignment.origin and ln.verdict == WINS), None)
    story.final_value = final.value
    via = "" if _canonical(final.path) == path else f", written as {final.key}"
    story.summary = (f"{story.key} = {final.value}  (from {_where(final.assignment.origin)}{via}; "
                     f"{others} is the same kernel variable)")
    if story.exists is False:
        story.summary += "; but the key does not exist in the key tree, so the write fails"
    return story


def pattern_story(config: SysctlConfig, pattern: str, keys: Optional[KeyTree] = None) -> KeyStory:
    """The story of a glob asked about as itself (`explain 'net.ipv4.conf.*.rp_filter'`).

    The lines with this very pattern (the last one is the value the glob writes: systemd keeps one
    entry per pattern, procps writes each line in order), then the lines that name a key the pattern
    matches (the glob skips those keys). With a key tree, the keys it writes."""
    flavor = config.flavor
    story = KeyStory(key=path_to_key(pattern), path=pattern, flavor=flavor)
    same = [h for h in config.history if h.is_glob and _canonical(h.path) == pattern]
    last = next((h for h in reversed(same)), None)
    for h in same:
        line = KeyLine(h.origin, h.key, h.value, True, NO_EFFECT, "", h.ignore_failure)
        if h is last and h.value is not None:
            line.verdict, line.reason = WINS, ("the last line with this pattern: its value is written to every "
                                               "matching key that has no line of its own")
        elif h is last:
            line.verdict, line.reason = EXCLUDES, "an exclusion line with this pattern: the glob writes nothing"
        elif flavor == "systemd":
            line.verdict = OVERRIDDEN
            line.reason = f"replaced by the later line {_where(last.origin)} with the same pattern"
        else:
            line.verdict = OVERRIDDEN
            line.reason = f"written, then written again by {_where(last.origin)} with the same pattern"
        story.lines.append(line)
    for h in config.history:
        if h.is_glob or not glob_matches_path(pattern, _canonical(h.path), braces=flavor == "systemd"):
            continue
        what = "excludes" if h.value is None else "sets"
        story.lines.append(KeyLine(h.origin, h.key, h.value, False, SKIPPED,
                                   f"{what} {path_to_key(_canonical(h.path))} itself: the glob does not write that key",
                                   h.ignore_failure))
    position = {h.origin: i for i, h in enumerate(config.history)}
    story.lines.sort(key=lambda ln: position[ln.origin])
    if last is None or last.value is None:
        story.summary = f"{story.key}: no line sets this pattern" if last is None else (
            f"{story.key}: excluded at {_where(last.origin)}, nothing is written")
        return story
    story.winner = next(ln for ln in story.lines if ln.origin == last.origin)
    story.final_value = last.value
    written = sorted({_canonical(w.path) for w in effective_settings(config, keys)
                      if w.assignment.origin == last.origin}) if keys is not None else []
    story.exists = None if keys is None else bool(written)
    story.summary = (f"{story.key} = {last.value}  (a glob, from {_where(last.origin)}): expanded when applied; "
                     + (f"writes {len(written)} key{'' if len(written) == 1 else 's'} here: {', '.join(path_to_key(k) for k in written[:8])}"
                        + (", …" if len(written) > 8 else "") if keys is not None
                        else "every matching key without a line of its own gets this value"))
    return story


def _surviving_entry(config: SysctlConfig, path: str) -> Optional[ConfigLine]:
    """The entry naming this exact key that survives (systemd: the map's entry; procps: the
    last explicit line) - an assignment or an exclusion."""
    found: Optional[ConfigLine] = None
    if config.flavor == "systemd":
        for a in config.assignments:
            if not a.is_glob and _canonical(a.path) == path:
                found = ConfigLine(a.origin, a.key, a.path, a.value, a.ignore_failure)
        for e in config.exclusions:
            if _canonical(e.path) == path:
                found = ConfigLine(e.origin, e.pattern, e.path, None)
        return found
    for h in config.history:
        if not h.is_glob and _canonical(h.path) == path and h.value is not None:
            found = h
    return found


def _where(origin: Origin) -> str:
    return f"{origin.file}:{origin.line}"


def _verdict(h: ConfigLine, config: SysctlConfig, final: Optional[EffectiveSetting],
             written_by: Dict[Origin, EffectiveSetting], entry: Optional[ConfigLine]) -> KeyLine:
    line = KeyLine(h.origin, h.key, h.value, h.is_glob, NO_EFFECT, "", h.ignore_failure)
    systemd = config.flavor == "systemd"
    if final is not None and final.assignment.origin == h.origin:
        line.verdict = WINS
        if h.is_glob:
            line.reason = "the glob matches this key and no line names the key itself; it is the last write"
        elif systemd:
            line.reason = "the last line for this key in apply order (files by name, lines in order)"
        else:
            line.reason = "the last write to this key (procps writes every line, in order)"
        return line
    if h.value is None:  # an exclusion
        if systemd and (entry is None or entry.origin != h.origin):
            later = entry.origin if entry is not None else None
            line.verdict = CANCELLED
            line.reason = (f"replaced by the later line {_where(later)} for the same key" if later
                           else "replaced by a later line for the same key")
        else:
            line.verdict = EXCLUDES
            line.reason = ("excludes the key from globs; being the last line for this key, it also cancels any "
                           "earlier assignment of it" if systemd
                           else "keeps globs from writing this key; explicit lines still apply")
        return line
    winner = final.assignment.origin if final is not None else None
    if h.is_glob:
        if entry is not None:
            line.verdict = SKIPPED
            what = "excluded by" if entry.value is None else "named explicitly at"
            line.reason = f"globs skip keys that have their own line: the key is {what} {_where(entry.origin)}"
        elif h.origin in written_by and winner is not None:
            line.verdict = OVERRIDDEN
            line.reason = f"written, then overwritten by {_where(winner)}"
        elif h.origin in written_by:
            line.reason = "written, but the key does not exist"
        else:
            line.verdict = OVERRIDDEN if systemd else NO_EFFECT
            line.reason = "replaced by a later line with the same glob" if systemd else "no write"
        return line
    # an explicit assignment that does not win
    if systemd:
        if entry is not None and entry.value is None:
            line.verdict = CANCELLED
            line.reason = f"cancelled by the later exclusion line {_where(entry.origin)} ('-key' replaces it)"
        elif entry is not None and entry.value == h.value and entry.origin != h.origin:
            line.verdict = REPEAT
            line.reason = f"repeats the value of {_where(entry.origin)}, which stays in its place"
        elif winner is not None:
            line.verdict = OVERRIDDEN
            line.reason = f"a later line for the same key replaces it: {_where(winner)}"
        else:
            line.reason = "the key does not exist here, so nothing is written"
    else:
        if winner is not None and final is not None and final.value == h.value:
            line.verdict = REPEAT
            line.reason = f"written, then written again with the same value by {_where(winner)}"
        elif winner is not None:
            line.verdict = OVERRIDDEN
            line.reason = f"written, then overwritten by {_where(winner)} (procps writes every line in order)"
        else:
            line.reason = "the key does not exist here, so nothing is written"
    return line


def _ignored_file_lines(config: SysctlConfig, path: str, root: Optional[Root]) -> List[KeyLine]:
    if root is None:
        return []
    out: List[KeyLine] = []
    for ignored, data in ignored_file_bytes(config, root):  # bounded as check's line fates are
        for pl in parse_sysctl_bytes(data, config.flavor, ignored.file).lines:  # type: ignore[arg-type]
            line_path = systemd_normalize(pl.key) if config.flavor == "systemd" else procps_path(pl.key)
            glob = any(c in line_path for c in "*?[")
            if _matches(line_path, glob, path, config.flavor):
                out.append(KeyLine(Origin(ignored.file, pl.line), path_to_key(line_path), pl.value, glob,
                                   NOT_APPLIED, f"this file is not read: {ignored.reason}", pl.ignore_failure))
    return out


def _summary(story: KeyStory, final: Optional[EffectiveSetting], entry: Optional[ConfigLine]) -> str:
    applied = [ln for ln in story.lines if ln.verdict != NOT_APPLIED]
    never = [ln for ln in story.lines if ln.verdict == NOT_APPLIED]
    if final is not None and story.winner is not None:
        text = f"{story.key} = {final.value}  (from {_where(story.winner.origin)})"
        if story.exists is False:
            text += "; but the key does not exist in the key tree, so the write fails"
        return text
    if entry is not None and entry.value is None and applied:
        return f"{story.key}: no value is written (excluded/cancelled at {_where(entry.origin)})"
    if never and not applied:
        return f"{story.key}: set only in files that are never read, so nothing is applied"
    if story.exists is False and applied:
        return f"{story.key}: configured, but the key does not exist in the key tree"
    return f"{story.key}: no line sets this key"
