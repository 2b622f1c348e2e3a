"""The fate of every line that sets a key, in every sysctl file under the root.

`check` shows each line with what becomes of it at boot: applied, overridden by a later line, a repeat
of a value already set, cancelled by a later ``-key`` (systemd), the exclusion itself, invalid (not an
assignment), or sitting in a file the boot never reads (shadowed by a same-named file in an earlier
directory, masked by a /dev/null link, runtime-only in an offline root's /run, never read for another
reason). From the fates, `unset_keys` finds the keys some line sets that get no value at boot at all.

Pure functions over a `SysctlConfig` (plus the root, read only for the lines of ignored files). The rules
are those of `sysctl_d` (systemd-sysctl 252: one ordered map, a later line replaces an earlier one and a
``-key`` line replaces an assignment; procps 4.0.2: every line written in order, ``-key`` only keeps globs
off), checked against the real programs by tests/config/test_fates_oracle.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from sysctl_doctor.config.model import (MASKED, NEVER_READ, RUNTIME_ONLY, SHADOWED, ConfigLine, EffectiveSetting,
                                        IgnoredFile, KeyTree, Origin, SysctlConfig, path_to_key)
from sysctl_doctor.config.sysctl_d import _canonical, effective_settings, procps_path, systemd_normalize
from sysctl_doctor.config.sysctl_glob import GlobIndex, glob_matches_path, normalized_alternatives
from sysctl_doctor.config.sysctl_lines import INVALID_LINE, parse_sysctl_bytes
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

APPLIED = "applied"  # the value the sysctl step writes for this key (a glob: for every key it matches)
OVERRIDDEN = "overridden"  # a later line for the same key (or pattern) replaces it
REPEAT = "repeat"  # the same value as the line that wins: no effect of its own
CANCELLED = "cancelled"  # systemd: a later "-key" line replaces the assignment, nothing is written
EXCLUDES = "excludes"  # a "-key" line: keeps globs off the key (and, systemd, cancels what came before)
NO_SUCH_KEY = "no-such-key"  # the line would win, but the key does not exist in the key tree: the write fails
INVALID = "invalid"  # not an assignment: ignored
# lines in files that are never read take their file's IgnoredFile.kind
NOT_READ_FATES = (SHADOWED, MASKED, RUNTIME_ONLY, NEVER_READ)
# fates whose line gives the key no value at boot (a key with only such lines keeps its kernel default)
NO_VALUE_FATES = (CANCELLED, *NOT_READ_FATES)

LABELS = {
    CANCELLED: "cancelled by -key",
    SHADOWED: "file shadowed",
    MASKED: "file masked",
    RUNTIME_ONLY: "runtime-only file",
    NEVER_READ: "file never read",
}


@dataclass(frozen=True)
class LineFate:
    origin: Origin
    key: Optional[str]  # dotted as the flavour reads it (may be a glob); None: an invalid line
    path: Optional[str]  # slash form relative to /proc/sys
    value: Optional[str]  # None: an exclusion ("-key") or an invalid line
    is_glob: bool
    fate: str
    reason: str
    by: Optional[Origin] = None  # the line that decides it: the winner, the "-key", the shadowing file's name
    keys: Optional[Tuple[str, ...]] = None  # a glob with a key tree: the concrete keys it writes (dotted)
    text: str = ""  # an invalid line's text

    @property
    def where(self) -> str:
        return f"{self.origin.file}:{self.origin.line}"


@dataclass(frozen=True)
class UnsetKey:
    """A key some line sets that gets no value at boot: every line for it is cancelled or never read, and
    no glob reaches it."""

    key: str  # dotted
    path: str
    fate: str  # the decisive line's fate (CANCELLED, or the kind of file its last line sits in)
    line: LineFate  # the decisive line: the last one in apply order, the cancelled one before never-read ones
    lines: Tuple[LineFate, ...]  # every line that names it


def line_fates(config: SysctlConfig, root: Optional[Root] = None, keys: Optional[KeyTree] = None,
               writes: Optional[List[EffectiveSetting]] = None) -> List[LineFate]:
    """Every line of every sysctl file with its fate: the files read in apply order (invalid lines in
    place), then the lines of the files never read (with `root`), in the order they were passed over.
    `writes`: `effective_settings(config, keys)` when the caller has it already (it is not computed again)."""
    out = _read_lines(config, keys, writes)
    invalid = [d for d in config.diagnostics if d.kind == INVALID_LINE and d.file is not None]
    if invalid:
        rank = {f: i for i, f in enumerate(config.files)}
        out += [LineFate(Origin(d.file, d.line or 0), None, None, None, False, INVALID,
                         "not an assignment: the line is ignored (see SD111)", text=d.message.split(": ", 1)[-1])
                for d in invalid if d.file in rank]
        out.sort(key=lambda f: (rank.get(f.origin.file, len(rank)), f.origin.line))
    if root is not None:
        out += _ignored_lines(config, root)
    return out


def _read_lines(config: SysctlConfig, keys: Optional[KeyTree],
                writes: Optional[List[EffectiveSetting]]) -> List[LineFate]:
    systemd = config.flavor == "systemd"
    written: Dict[Origin, List[str]] = {}
    missing: Dict[Origin, bool] = {}
    replaced: Dict[Origin, str] = {}  # an explicit write a later write (a procps glob) replaces -> its key
    final_by: Dict[str, Origin] = {}  # key -> the line of its final write
    if keys is not None:
        for w in effective_settings(config, keys) if writes is None else writes:
            origin = w.assignment.origin
            if w.final and w.exists:
                written.setdefault(origin, []).append(w.key)
                final_by[_canonical(w.path)] = origin
            elif w.exists is False and not w.assignment.is_glob:
                missing[origin] = True
            elif w.exists and not w.assignment.is_glob:
                replaced[origin] = _canonical(w.path)
    if systemd:
        # the map's surviving entry per key (or pattern): an assignment or an exclusion
        entry: Dict[str, ConfigLine] = {}
        for a in config.assignments:
            entry[a.path] = ConfigLine(a.origin, a.key, a.path, a.value, a.ignore_failure)
        for e in config.exclusions:
            entry[e.path] = ConfigLine(e.origin, e.pattern, e.path, None)
        return [_fate(h, entry.get(h.path), systemd, keys, written, missing) for h in config.history]
    # procps: every line is written in order; the last write through any spelling of the path wins. The same
    # file can be read twice (/etc/sysctl.conf through the link and again last; a file name procps globs), so
    # lines are told apart by their place in the history, not by file:line.
    last: Dict[str, int] = {}
    for i, h in enumerate(config.history):
        if h.value is not None and not missing.get(h.origin):  # a write that fails (no such key) wins nothing
            last[_canonical(h.path)] = i
    out: List[LineFate] = []
    for i, h in enumerate(config.history):
        if missing.get(h.origin):
            out.append(LineFate(h.origin, h.key, h.path, h.value, h.is_glob, NO_SUCH_KEY,
                                "the key does not exist (as procps opens this spelling of it): the write fails"))
            continue
        j = last.get(_canonical(h.path))
        later = final_by.get(replaced.get(h.origin, ""))
        if j == i and later is not None and later != h.origin:  # a glob line writes the key after it
            out.append(LineFate(h.origin, h.key, h.path, h.value, h.is_glob, OVERRIDDEN, by=later,
                                reason=f"written, then overwritten by the glob at {later} (this spelling of the "
                                       "key is not the one the glob skips)"))
            continue
        if j is not None and j != i and config.history[j].origin == h.origin:
            out.append(LineFate(h.origin, h.key, h.path, h.value, h.is_glob, REPEAT, by=h.origin,
                                reason="procps reads this file twice: the second reading of the line writes it again"))
            continue
        out.append(_fate(h, None if j is None else config.history[j], systemd, keys, written, missing, j == i))
    return out


def _fate(h: ConfigLine, entry: Optional[ConfigLine], systemd: bool, keys: Optional[KeyTree],
          written: Dict[Origin, List[str]], missing: Dict[Origin, bool], wins: Optional[bool] = None) -> LineFate:
    glob = h.is_glob
    base = dict(origin=h.origin, key=h.key, path=h.path, value=h.value, is_glob=glob)
    if h.value is None:  # an exclusion line
        if systemd and entry is not None and entry.origin != h.origin:
            return LineFate(**base, fate=OVERRIDDEN, by=entry.origin,
                            reason=f"replaced by the later line {entry.origin} for the same key")
        return LineFate(**base, fate=EXCLUDES, reason=(
            "keeps globs off the key; being the last line for it, it also cancels every earlier assignment"
            if systemd else "keeps globs off the key (procps writes explicit lines all the same)"))
    if wins is None:
        wins = entry is None or entry.origin == h.origin
    if wins or entry is None:
        if glob:
            if keys is None:
                return LineFate(**base, fate=APPLIED,
                                reason="a glob: expanded at boot, every matching key without a line of its own "
                                       "gets the value")
            won = tuple(written.get(h.origin, ()))
            if not won:
                return LineFate(**base, fate=NO_SUCH_KEY, keys=won,
                                reason="a glob that writes no key here: it matches none, or only keys with lines "
                                       "of their own or that a later glob writes")
            return LineFate(**base, fate=APPLIED, keys=won,
                            reason=f"a glob: writes {len(won)} key{'s' if len(won) != 1 else ''} here")
        if missing.get(h.origin):
            return LineFate(**base, fate=NO_SUCH_KEY,
                            reason="the last line for this key, but the key does not exist: the write fails")
        return LineFate(**base, fate=APPLIED, reason="the last line for this key in apply order" if systemd
                        else "the last write to this key (procps writes every line, in order)",
                        keys=tuple(written.get(h.origin, ())) if keys is not None and glob else None)
    # another line decides
    if entry.value is None:  # systemd: the surviving entry is a "-key" line
        return LineFate(**base, fate=CANCELLED, by=entry.origin,
                        reason=f"cancelled by the later exclusion line {entry.origin} ('-key' replaces the "
                               "assignment: nothing is written)")
    if entry.value == h.value:
        where = "stays in its place" if systemd else "is written again later"
        return LineFate(**base, fate=REPEAT, by=entry.origin,
                        reason=f"the same value as {entry.origin}, which {where}")
    if glob and not systemd:
        return LineFate(**base, fate=OVERRIDDEN, by=entry.origin,
                        reason=f"written, then overwritten by {entry.origin} with the same pattern")
    return LineFate(**base, fate=OVERRIDDEN, by=entry.origin,
                    reason=f"a later line for the same key replaces it: {entry.origin}" if systemd
                    else f"written, then overwritten by {entry.origin} (procps writes every line in order)")


# Bounds on the files never read whose lines are shown (hostile input: thousands of .cfg files, a 200 MB
# runtime-only file); the files read are bounded by sysctl_d's own limits. Every reader of ignored files
# (fates, `explain`'s story, SD105) goes through `ignored_file_bytes`.
IGNORED_FILES_MAX = 1000
IGNORED_BYTES_MAX = 2 << 20


def ignored_file_bytes(config: SysctlConfig, root: Root, files_max: int = IGNORED_FILES_MAX,
                       bytes_max: int = IGNORED_BYTES_MAX,
                       file_max: Optional[int] = None) -> Iterator[Tuple[IgnoredFile, bytes]]:
    """The regular files never read, once each in their order, with their whole lines: at most `files_max`
    files, `file_max` bytes of one file and `bytes_max` bytes in all (a file cut by a bound keeps whole lines
    only). Unreadable files, links out of the root or in loops, FIFOs and devices are passed over unread."""
    seen = set()
    budget = bytes_max
    for ignored in config.ignored_files:
        if ignored.file in seen:
            continue
        seen.add(ignored.file)
        if len(seen) > files_max or budget <= 0:
            return
        limit = budget if file_max is None else min(budget, file_max)
        try:
            if root.kind(ignored.file) is not PathKind.FILE:
                continue
            data = root.read_bytes(ignored.file, limit)
        except (OSError, Exception):  # noqa: BLE001 - an unreadable ignored file has no lines to show
            continue
        if len(data) == limit:  # cut by the bound: keep whole lines only
            data = data[: data.rfind(b"\n") + 1]
        budget -= max(len(data), 1)
        yield ignored, data


def _ignored_lines(config: SysctlConfig, root: Root) -> List[LineFate]:
    out: List[LineFate] = []
    for ignored, data in ignored_file_bytes(config, root):
        by = Origin(ignored.by, 0) if ignored.by else None  # the file that shadows or masks it (no line)
        for pl in parse_sysctl_bytes(data, config.flavor, ignored.file).lines:  # type: ignore[arg-type]
            path = _canonical(systemd_normalize(pl.key) if config.flavor == "systemd" else procps_path(pl.key))
            out.append(LineFate(Origin(ignored.file, pl.line), path_to_key(path), path, pl.value,
                                any(c in path for c in "*?["), ignored.kind,
                                ignored.reason, by))
    return out


# key x glob tests `unset_keys` makes without a key tree, after GlobIndex has left out the globs whose literal
# ends cannot fit (as effective_settings' GLOB_WORK_MAX); past it, the keys left are not reported as unset (a
# glob may reach them: no value is guessed).
UNSET_GLOB_WORK_MAX = 2_000_000


def _note_unset_work_cap(config: SysctlConfig, line: LineFate) -> None:
    """One diagnostic, at the first line whose key the cap left unchecked (the cut was silent)."""
    if any(d.message.startswith(_UNSET_CAP_NOTE) for d in config.diagnostics):
        return
    config.diagnostics.append(Diagnostic(
        f"{_UNSET_CAP_NOTE} ({UNSET_GLOB_WORK_MAX} key x glob tests): keys set from this line on that no line "
        "applies are not reported as getting no value (a glob might reach them)", line.origin.file, line.origin.line))


_UNSET_CAP_NOTE = "glob work limit reached while finding keys that get no value"


def unset_keys(config: SysctlConfig, fates: List[LineFate], keys: Optional[KeyTree] = None) -> List[UnsetKey]:
    """Concrete keys that some line sets, none of whose lines gives them a value at boot (all cancelled or
    in files never read) and that no applied glob reaches. In the order their first line appears."""
    by_key: Dict[str, List[LineFate]] = {}
    for f in fates:
        if f.path is None or f.is_glob or f.value is None and f.fate != EXCLUDES:
            continue
        by_key.setdefault(_canonical(f.path), []).append(f)
    systemd = config.flavor == "systemd"
    named = {_canonical(a.path) for a in config.assignments if not a.is_glob} | {
        _canonical(e.path) for e in config.exclusions}
    globs = [f for f in fates if f.is_glob and f.fate == APPLIED]
    written = {k for g in globs if g.keys is not None for k in g.keys}  # what the globs write in the key tree
    patterns = [g.path or "" for g in globs if g.keys is None and keys is None]
    index = GlobIndex([(i, alt) for i, pattern in enumerate(patterns)
                       for alt in normalized_alternatives(pattern, systemd)])
    work = UNSET_GLOB_WORK_MAX
    out: List[UnsetKey] = []
    for path, lines in by_key.items():
        setting = [f for f in lines if f.value is not None]
        if not setting or any(f.fate not in NO_VALUE_FATES for f in setting):
            continue
        if path not in named:  # a glob reaching it gives it a value (the lines of its own are not read)
            if path_to_key(path) in written:
                continue
            candidates = index.candidates(path) if patterns else []
            work -= len(candidates)
            if work < 0:
                _note_unset_work_cap(config, lines[0])
                continue
            if any(glob_matches_path(patterns[i], path, braces=systemd) for i in candidates):
                continue
        cancelled = [f for f in setting if f.fate == CANCELLED]
        decisive = cancelled[-1] if cancelled else setting[-1]
        out.append(UnsetKey(path_to_key(path), path, decisive.fate, decisive, tuple(lines)))
    return out
