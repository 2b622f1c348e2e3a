"""Predicted vs observed, per key and phase: pure functions over check's JSON and the reporter's Observation.

The prediction is `check`'s for the same root: its JSON contract (`keys[]`: key, configured, provider,
boot.applied, boot.value, after_late_load.value) and, from the same Analysis, each key's verdict, its label
and its reasons. A key `check` calls "not guaranteed" (a race) agrees with either outcome; which side won is
recorded. The late phase compares the keys whose provider module the late loads brought in against
`after_late_load`; every other key must be unchanged by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import KeyFate
from sysctl_doctor.verify.reporter import BOOT, LATE, Observation, Snapshot, module_name, proc_sys_path

RACE_VERDICTS = ("race", "udev-race")  # `check`'s "not guaranteed" verdicts (boot.model.Verdict values)
LOADER_WON = "loader first: value applied"
STEP_WON = "sysctl step first: value lost"
_ABSENT = object()


@dataclass(frozen=True)
class Predicted:
    key: str
    configured: str
    file: Optional[str]
    line: Optional[int]
    module: Optional[str]  # provider module (None: built in, interface, unknown)
    applied: bool
    boot_value: Optional[str]  # None with boot_absent False: a default the kernel computes at boot
    boot_absent: bool  # the key does not exist after boot
    late_value: Optional[str]
    late_absent: bool
    verdict: str
    label: str
    why: Tuple[str, ...] = ()
    provider_kind: str = ""  # check's provider.kind: builtin, module, interface, …
    fate: str = "applied"  # check's keys[].fate: "applied", or why no line gives the key a value (an unset row)

    @property
    def not_guaranteed(self) -> bool:
        return self.verdict in RACE_VERDICTS


@dataclass(frozen=True)
class Fate:
    """How one Analysis prediction reads, taken through its public attributes only."""

    verdict: str
    label: str
    why: Tuple[str, ...]
    boot_absent: bool
    late_absent: bool


def key_fates(analysis: Analysis) -> Sequence[KeyFate]:
    """The Analysis' per-key fates."""
    return analysis.fates


def fates_of(fates: Sequence[KeyFate]) -> Dict[str, Fate]:
    """key -> Fate (verdict, chain, whether the key is absent after boot / after a late load)."""
    out: Dict[str, Fate] = {}
    for p in fates:
        out[p.key] = Fate(p.verdict.value, p.verdict.label, tuple(p.chain), p.boot_value is None,
                          p.after_late_load is None)
    return out


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def predictions_from(document: Mapping[str, Any], fates: Mapping[str, Fate]) -> List[Predicted]:
    """The concrete keys of check's JSON document (globs are expanded by the kernel's own tree: left out)."""
    out: List[Predicted] = []
    seen = set()
    for item in document.get("keys", []):
        key = item.get("key")
        if not isinstance(key, str) or _is_glob(key) or key in seen:
            continue
        seen.add(key)
        fate = fates.get(key, Fate("", "", (), False, False))
        boot = item.get("boot") or {}
        late = item.get("after_late_load") or {}
        provider = item.get("provider") or {}
        out.append(Predicted(
            key, str(item.get("configured", "")), item.get("file"), item.get("line"),
            provider.get("module") if provider.get("kind") == "module" else None,
            bool(boot.get("applied")), _text(boot.get("value")), fate.boot_absent and boot.get("value") is None,
            _text(late.get("value")), fate.late_absent and late.get("value") is None,
            fate.verdict, fate.label, fate.why, str(provider.get("kind") or ""), str(item.get("fate") or "applied")))
    return out


@dataclass(frozen=True)
class GlobLine:
    """A glob line of the configuration: systemd-sysctl writes its value to every match with no explicit line."""

    pattern: str
    configured: str
    file: Optional[str]
    line: Optional[int]


# check's "assignments" fates of lines that take no part at boot (not in systemd-sysctl's map)
_NOT_IN_MAP = ("shadowed", "masked", "runtime-only", "never-read", "invalid")
_GLOB_IN_MAP = ("applied", "no-such-key")  # a glob line that is its pattern's surviving entry


def globs_from(document: Mapping[str, Any]) -> List[GlobLine]:
    """The glob lines systemd-sysctl expands, in its map's order: from check's "assignments" (each line's
    fate: a glob overridden by a later line with its pattern, or repeating it, is not one); from keys[]
    for a document without them."""
    lines = document.get("assignments")
    if lines is None:
        return [GlobLine(item["key"], str(item.get("configured", "")), item.get("file"), item.get("line"))
                for item in document.get("keys", []) if isinstance(item.get("key"), str) and _is_glob(item["key"])]
    return [GlobLine(a["key"], str(a.get("value", "")), a.get("file"), a.get("line")) for a in lines
            if a.get("glob") and isinstance(a.get("key"), str) and a.get("value") is not None
            and a.get("fate") in _GLOB_IN_MAP]


def named_keys(document: Mapping[str, Any]) -> Set[str]:
    """The concrete keys with a line of their own in a file that is read: an assignment whatever its fate, or
    a "-key" exclusion. systemd-sysctl's glob expansion skips every one of them (the key is in its map)."""
    lines = document.get("assignments")
    if lines is None:
        return {item["key"] for item in document.get("keys", [])
                if isinstance(item.get("key"), str) and not _is_glob(item["key"])}
    return {a["key"] for a in lines if isinstance(a.get("key"), str) and not a.get("glob")
            and a.get("fate") not in _NOT_IN_MAP}


def normal(value: Optional[str]) -> Optional[str]:
    """Values compare as the kernel prints them: whitespace runs are one space."""
    return None if value is None else " ".join(value.split())


@dataclass(frozen=True)
class KeyOutcome:
    key: str
    phase: str  # "boot" | "late"
    expected: str  # what the prediction allows, in words
    observed: Optional[str]  # the value; None: the key does not exist
    agree: bool
    race_side: Optional[str] = None  # for a "not guaranteed" key: which side won this boot
    note: str = ""
    untested: bool = False  # the guest cannot show it (no such interface): neither agrees nor differs

    @property
    def observed_text(self) -> str:
        return "absent" if self.observed is None else self.observed


def _expect(value: Optional[str], absent: bool, configured: str, applied: bool) -> Tuple[str, Any]:
    """(words, what matches): a value, _ABSENT, or ("not", configured) for a default known only at boot."""
    if applied:
        return configured, normal(configured)
    if absent:
        return "absent", _ABSENT
    if value is None:
        return f"kernel default (not {configured})", ("not", normal(configured))
    return value, normal(value)


def _matches(expected: Any, observed: Optional[str]) -> bool:
    if expected is _ABSENT:
        return observed is None
    if isinstance(expected, tuple):
        return observed is not None and observed != expected[1]
    return observed == expected


def _observed(snapshot: Snapshot, key: str) -> Tuple[Any, str]:
    if key in snapshot.unreadable:
        return _ABSENT, "the key exists but could not be read"
    if key not in snapshot.values:
        return _ABSENT, "the reporter did not report this key"
    return normal(snapshot.values[key]), ""


def interface_of(key: str) -> Optional[str]:
    """The interface a per-interface key names (net.ipv4.conf.eth0/100.rp_filter -> eth0.100), else None."""
    parts = key.split(".")
    if len(parts) >= 5 and parts[0] == "net" and parts[2] in ("conf", "neigh"):
        return parts[3].replace("/", ".")
    return None


def _missing_interface(p: Predicted, observed: Optional[str]) -> Optional[str]:
    name = interface_of(p.key)
    if observed is None and p.provider_kind == "interface" and name not in (None, "all", "default", "lo"):
        return f"not tested: the guest has no interface {name} (qemu gives it no network device)"
    return None


def _unset_untested(p: Predicted, phase: str, value: Optional[str], absent: bool, observed: Optional[str],
                    snapshot: Snapshot) -> Optional[KeyOutcome]:
    """An unset row (no line gives the key a value: cancelled, or only in files never read) that the boot
    cannot test: check does not know its kernel default (boot.value null: a guess would be a false result),
    or its module is not loaded so its default is not there to see."""
    if p.fate == "applied" or p.applied:
        return None
    if value is None and not absent:
        what = "the key" if p.provider_kind in ("", "unknown") else "its kernel default"
        return KeyOutcome(p.key, phase, "the kernel default (not known to check)", observed, True, untested=True,
                          note=f"not tested: no line gives it a value at boot ({p.fate}) and check does not know "
                               f"{what}")
    if observed is None and p.module is not None and module_name(p.module) not in snapshot.modules:
        return KeyOutcome(p.key, phase, f"{value} (the kernel default, once {p.module} is loaded)", None, True,
                          untested=True, note=f"not tested: no line gives it a value at boot ({p.fate}) and "
                                              f"{p.module} is not loaded")
    return None


def _reading(p: Predicted, phase: str, snapshot: Snapshot) -> Tuple[Any, Optional[KeyOutcome]]:
    """(the observed value, None), or (None, the outcome already decided: no reading, or an interface the
    guest lacks)."""
    observed, problem = _observed(snapshot, p.key)
    if problem:
        return None, KeyOutcome(p.key, phase, "a reading", None, False, note=problem)
    untested = _missing_interface(p, observed)
    if untested:
        return None, KeyOutcome(p.key, phase, p.configured, None, True, note=untested, untested=True)
    return observed, None


def compare_boot(p: Predicted, snapshot: Snapshot) -> KeyOutcome:
    observed, decided = _reading(p, BOOT, snapshot)
    if decided is not None:
        return decided
    unknown = _unset_untested(p, BOOT, p.boot_value, p.boot_absent, observed, snapshot)
    if unknown is not None:
        return unknown
    configured = normal(p.configured)
    if p.not_guaranteed:
        lost_words, lost = _expect(p.boot_value, p.boot_absent, p.configured, False)
        words = f"{p.configured} or {lost_words} (not guaranteed: a race)"
        if observed == configured:
            return KeyOutcome(p.key, BOOT, words, observed, True, LOADER_WON)
        if _matches(lost, observed):
            return KeyOutcome(p.key, BOOT, words, observed, True, STEP_WON)
        return KeyOutcome(p.key, BOOT, words, observed, False)
    words, expected = _expect(p.boot_value, p.boot_absent, p.configured, p.applied)
    return KeyOutcome(p.key, BOOT, words, observed, _matches(expected, observed))


def late_concerns(p: Predicted, boot: Snapshot, late: Snapshot) -> bool:
    """The late loads brought in this key's provider module (it was not loaded after boot)."""
    if p.module is None:
        return False
    name = module_name(p.module)
    return name not in boot.modules and name in late.modules


def compare_late(p: Predicted, boot: Snapshot, late: Snapshot) -> KeyOutcome:
    observed, decided = _reading(p, LATE, late)
    if decided is not None:
        return decided
    if late_concerns(p, boot, late):
        unknown = _unset_untested(p, LATE, p.late_value, p.late_absent, observed, late)
        if unknown is not None:
            return unknown
        applied = p.late_value is not None and normal(p.late_value) == normal(p.configured)
        words, expected = _expect(p.late_value, p.late_absent, p.configured, applied)
        return KeyOutcome(p.key, LATE, words, observed, _matches(expected, observed),
                          note=f"{p.module} loaded late")
    before, problem = _observed(boot, p.key)
    if problem:
        return KeyOutcome(p.key, LATE, "unchanged", observed, False, note=problem)
    words = "unchanged (" + ("absent" if before is None else str(before)) + ")"
    return KeyOutcome(p.key, LATE, words, observed, observed == before)


def compare_globs(globs: Sequence[GlobLine], named: Collection[str], snapshot: Snapshot) -> List[KeyOutcome]:
    """Each key a glob matched after boot that no read line names (assignment or "-key"): the last matching
    glob's value (systemd-sysctl skips the keys in its map, and a later glob line is written later)."""
    named = set(named)
    winner: Dict[str, GlobLine] = {}
    for glob in globs:
        for key in snapshot.matches.get(glob.pattern, {}):
            if key not in named:
                winner[key] = glob
    out = []
    for key, glob in winner.items():
        observed = normal(snapshot.matches[glob.pattern][key])
        out.append(KeyOutcome(key, BOOT, glob.configured, observed, observed == normal(glob.configured),
                              note=f"matched by {glob.pattern} ({glob.file}:{glob.line})"))
    return out


def compare(predicted: Sequence[Predicted], seen: Observation, globs: Sequence[GlobLine] = (),
            named: Optional[Collection[str]] = None) -> List[KeyOutcome]:
    """Every key after boot (and every match of a glob line no read line names: `named`, by default the
    predicted keys), then (when the reporter loaded modules late) after the late loads."""
    boot = seen.snapshot(BOOT) or Snapshot()
    out = [compare_boot(p, boot) for p in predicted]
    out += compare_globs(globs, [p.key for p in predicted] if named is None else named, boot)
    late = seen.snapshot(LATE)
    if late is not None:
        out += [compare_late(p, boot, late) for p in predicted]
    return out


def evidence(p: Predicted, seen: Observation, limit: int = 8) -> List[str]:
    """The journal lines about this key (its /proc/sys path or name) or its provider module, and its late loads."""
    words = [proc_sys_path(p.key), p.key]
    if p.module:
        words += [p.module, module_name(p.module)]
    lowered = [w.lower() for w in words]
    lines = [line for line in seen.journal if any(w in line.lower() for w in lowered)]
    lines += [f"modprobe {load.module}: rc={load.rc} {load.message}".rstrip() for load in seen.loads
              if p.module and module_name(load.module) == module_name(p.module)]
    return lines[-limit:] if len(lines) > limit else lines


@dataclass
class RaceTally:
    """How often each side of a "not guaranteed" key won over the boots."""

    key: str
    loader: int = 0
    step: int = 0
    other: int = 0
    boots: int = 0


def tally_races(predicted: Sequence[Predicted], per_boot: Sequence[Sequence[KeyOutcome]]) -> List[RaceTally]:
    out: List[RaceTally] = []
    for p in predicted:
        if not p.not_guaranteed:
            continue
        tally = RaceTally(p.key)
        for outcomes in per_boot:
            for o in outcomes:
                if o.key == p.key and o.phase == BOOT:
                    tally.boots += 1
                    if o.race_side == LOADER_WON:
                        tally.loader += 1
                    elif o.race_side == STEP_WON:
                        tally.step += 1
                    else:
                        tally.other += 1
        out.append(tally)
    return out

