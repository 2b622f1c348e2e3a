"""verify's output: text for people, JSON for programs. Pure: a VerifyResult in, text or a dict out."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

from sysctl_doctor.verify.compare import KeyOutcome, evidence
from sysctl_doctor.verify.reporter import BOOT, LATE
from sysctl_doctor.verify.run import VerifyResult

def _per_key(result: VerifyResult, key: str, phase: str) -> List[KeyOutcome]:
    return [o for b in result.boots for o in b.outcomes if o.key == key and o.phase == phase]


def _observed_words(outcomes: List[KeyOutcome]) -> str:
    counts = Counter(o.observed_text for o in outcomes)
    if len(outcomes) == 1:
        return outcomes[0].observed_text
    return ", ".join(f"{value} ×{n}" for value, n in counts.most_common())


def _differs(outcomes: List[KeyOutcome]) -> str:
    """"DIFFERS" (with "n of N boots" over several boots) and the first note, or "" when all agree."""
    bad = [o for o in outcomes if not o.agree]
    if not bad:
        return ""
    words = f"DIFFERS ({len(bad)} of {len(outcomes)} boots)" if len(outcomes) > 1 else "DIFFERS"
    note = next((o.note for o in bad if o.note), "")
    return f"{words}: {note}" if note else words


def _state(outcomes: List[KeyOutcome]) -> str:
    if not outcomes:
        return "-"
    if _differs(outcomes):
        return _differs(outcomes)
    if all(o.untested for o in outcomes):
        return outcomes[0].note
    sides = Counter(o.race_side for o in outcomes if o.race_side)
    if sides:
        return "race: " + "; ".join(f"{side} ({n} of {len(outcomes)})" for side, n in sides.most_common())
    return "agrees" + (f" ({outcomes[0].note})" if outcomes[0].note else "")


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)).rstrip()
            for row in rows]


def render_text(result: VerifyResult) -> str:
    lines: List[str] = []
    n = len(result.boots)
    lines.append(f"sysctl-doctor verify {result.root}: kernel {result.kernel}, init {result.init_system}, "
                 f"qemu -accel {result.accel} ({result.accel_why})")
    timings = ", ".join(f"boot {b.number} {b.run.seconds:.1f} s" for b in result.boots)
    lines.append(f"image built in {result.image_seconds:.1f} s; {timings}")
    for boot in result.boots:
        if boot.failure:
            lines += ["", f"BOOT {boot.number} FAILED: {boot.failure}", "console (last lines):"]
            lines += [f"  {line}" for line in boot.console_tail]
    if not any(b.outcomes for b in result.boots):
        lines += ["", "no comparison: no boot reported (exit 2)"]
        return "\n".join(lines) + "\n"
    head = "after boot" if n == 1 else f"after boot ({n} boots)"
    rows = [["key", "predicted", head, "verdict"]]
    for p in result.predicted:
        outcomes = _per_key(result, p.key, BOOT)
        expected = outcomes[0].expected if outcomes else "-"
        rows.append([p.key, expected, _observed_words(outcomes) if outcomes else "-", _state(outcomes)])
    lines += [""] + _table(rows)
    listed = {p.key for p in result.predicted}
    matched = list(dict.fromkeys(o.key for b in result.boots for o in b.outcomes
                                 if o.phase == BOOT and o.key not in listed))
    if matched:
        rows = [["key (a glob's match)", "predicted", head, "verdict"]]
        for key in matched:
            outcomes = _per_key(result, key, BOOT)
            state = _differs(outcomes) or f"agrees: {outcomes[0].note}"
            rows.append([key, outcomes[0].expected, _observed_words(outcomes), state])
        lines += [""] + _table(rows)
    if any(o.phase == LATE for b in result.boots for o in b.outcomes):
        loads = "; ".join(f"{load.module} rc={load.rc}" for load in result.boots[-1].observation.loads)
        rows = [["key", "predicted", "after late load", "verdict"]]
        for p in result.predicted:
            outcomes = _per_key(result, p.key, LATE)
            rows.append([p.key, outcomes[0].expected if outcomes else "-",
                         _observed_words(outcomes) if outcomes else "-", _state(outcomes)])
        lines += ["", f"After late load ({loads})"] + _table(rows)
    races = result.races
    if races:
        lines += ["", "Races (keys check calls not guaranteed)"]
        for tally in races:
            other = f", neither {tally.other}" if tally.other else ""
            lines.append(f"  {tally.key}: loader first (value applied) {tally.loader} of {tally.boots} boots, "
                         f"sysctl step first (value lost) {tally.step} of {tally.boots}{other}")
    shown = [p for p in result.predicted
             if p.not_guaranteed or any(not o.agree for o in _per_key(result, p.key, BOOT) + _per_key(result, p.key, LATE))]
    last = next((b for b in reversed(result.boots) if b.outcomes), None)
    if shown and last is not None:
        lines += ["", "Evidence"]
        for p in shown:
            lines.append(f"  {p.key} ({p.label or p.verdict}; configured {p.configured} at {p.file}:{p.line}):")
            lines += [f"    predicted: {why}" for why in p.why]
            found = evidence(p, last.observation)
            lines += [f"    boot {last.number}: {line}" for line in found] or [f"    boot {last.number}: no journal line names it"]
    differing = {o.key for o in result.differing}
    lines.append("")
    if result.boot_failed:
        lines.append("result: a boot failed (exit 2)")
    elif differing:
        lines.append(f"result: {len(differing)} key(s) differ from the prediction: {', '.join(sorted(differing))} (exit 1)")
    else:
        lines.append(f"result: every key agrees with the prediction over {n} boot(s) (exit 0)")
    for d in result.diagnostics:
        lines.append(f"note: {d}")
    return "\n".join(lines) + "\n"


def _outcome_dict(o: KeyOutcome) -> Dict[str, Any]:
    return {"key": o.key, "phase": o.phase, "expected": o.expected, "observed": o.observed,
            "agree": None if o.untested else o.agree, "race_side": o.race_side, "note": o.note or None}


def to_dict(result: VerifyResult) -> Dict[str, Any]:
    last = next((b for b in reversed(result.boots) if b.outcomes), None)
    keys = []
    for p in result.predicted:
        boot, late = _per_key(result, p.key, BOOT), _per_key(result, p.key, LATE)
        keys.append({
            "key": p.key, "configured": p.configured, "file": p.file, "line": p.line, "module": p.module,
            "verdict": p.verdict, "not_guaranteed": p.not_guaranteed,
            "predicted": {"boot": {"applied": p.applied, "value": p.boot_value, "absent": p.boot_absent},
                          "after_late_load": {"value": p.late_value, "absent": p.late_absent}},
            "observed": {"boot": [o.observed for o in boot], "late": [o.observed for o in late]},
            "agree": all(o.agree for o in boot + late) if boot and not all(o.untested for o in boot) else None,
            "evidence": evidence(p, last.observation) if last is not None else [],
        })
    return {
        "root": result.root, "kernel": result.kernel, "init": result.init_system,
        "accel": {"name": result.accel, "why": result.accel_why}, "cmdline": result.cmdline,
        "late_load": result.late_load, "status": result.status,
        "image_seconds": round(result.image_seconds, 1),
        "keys": keys,
        "glob_matches": [_outcome_dict(o) for b in result.boots[-1:] for o in b.outcomes
                         if o.phase == BOOT and o.key not in {p.key for p in result.predicted}],
        "races": [{"key": t.key, "loader_first": t.loader, "sysctl_step_first": t.step, "neither": t.other,
                   "boots": t.boots} for t in result.races],
        "boots": [{"number": b.number, "seconds": round(b.run.seconds, 1), "qemu_exit": b.run.exit_code,
                   "failure": b.failure, "console_tail": b.console_tail,
                   "uptime": {phase: snap.uptime for phase, snap in b.observation.phases.items()},
                   "loads": [{"module": x.module, "rc": x.rc, "message": x.message} for x in b.observation.loads],
                   "outcomes": [_outcome_dict(o) for o in b.outcomes]} for b in result.boots],
        "diagnostics": result.diagnostics,
    }
