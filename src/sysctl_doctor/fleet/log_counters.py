"""Running totals of the kernel's conntrack log lines, for Prometheus: counters that only go up.

`conntrack logs --format prometheus` reads the log (the live journal or ring buffer, or a FILE) and adds
to totals kept in `<state-dir>/conntrack-log-counters.json` only the records after the cursor of that
source: the timestamp of the last record counted (or its line number when the source has no timestamps).
A cursor on the boot clock (dmesg, /dev/kmsg) holds for one boot only (kernel.random.boot_id). Totals
never decrease, whatever the sources do; the label set is bounded by the reason table (plus "other").
Records stamped exactly at the cursor are not counted again (a tie at microsecond resolution is lost, not
doubled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.errors import DoctorError

STATE_FILE = "conntrack-log-counters.json"
TEXTFILE = "sysctl_doctor_conntrack.prom"
DEFAULT_STATE_DIR = "/var/lib/sysctl-doctor"
FORMAT = "sysctl-doctor/conntrack-log-counters/1"
MAX_SOURCES = 64  # cursors kept (the oldest go first): rotated files must not grow the state forever

Pair = Tuple[str, str]  # (reason code, verdict)


@dataclass
class Cursor:
    timestamp: Optional[float] = None
    line: int = 0
    boot_id: Optional[str] = None  # set when the timestamps are on the boot clock


@dataclass
class LogCounters:
    totals: Dict[Pair, int] = field(default_factory=dict)
    cursors: Dict[str, Cursor] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT,
                "totals": [{"reason": r, "verdict": v, "count": n} for (r, v), n in sorted(self.totals.items())],
                "cursors": {s: c.__dict__ for s, c in self.cursors.items()}}

    @classmethod
    def from_json(cls, doc: dict, where: str) -> "LogCounters":
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            totals = {(str(t["reason"]), str(t["verdict"])): int(t["count"]) for t in doc["totals"]}
            cursors = {str(s): Cursor(c.get("timestamp"), int(c.get("line", 0)), c.get("boot_id"))
                       for s, c in doc["cursors"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DoctorError(f"{where}: not a sysctl-doctor counter state ({exc}); move it away to start again")
        return cls(totals, cursors)


def boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def load(state_dir: str) -> LogCounters:
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LogCounters()
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise DoctorError(f"{path}: not JSON ({exc}); move it away to start again") from None
    return LogCounters.from_json(doc, str(path))


def save(state_dir: str, counters: LogCounters) -> None:
    """Written whole or not at all (the textfile writer: temporary file, fsync, rename): a killed run keeps the old state."""
    from sysctl_doctor.fleet.textfile import write_textfile

    try:
        Path(state_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise DoctorError(f"--state-dir {state_dir}: {exc.strerror}") from None
    write_textfile(state_dir, json.dumps(counters.to_json()), STATE_FILE, option="--state-dir")


def count_new(counters: LogCounters, source: str, records, current_boot: Optional[str]) -> int:  # type: ignore[no-untyped-def]
    """Add the records after `source`'s cursor to the totals; move the cursor. Returns how many were new."""
    cursor = counters.cursors.pop(source, None) or Cursor()
    counters.cursors[source] = cursor  # most recent last (the oldest are dropped first)
    new = 0
    for rec in records:
        on_boot_clock = rec.clock == "boot"
        if on_boot_clock and cursor.boot_id != current_boot:
            cursor.timestamp, cursor.line, cursor.boot_id = None, 0, current_boot  # a new boot: a new clock
        if rec.timestamp is not None:
            if cursor.timestamp is not None and rec.timestamp <= cursor.timestamp:
                continue
            cursor.timestamp = rec.timestamp
        elif rec.line <= cursor.line:
            continue
        cursor.line = max(cursor.line, rec.line)
        pair = (rec.reason.code, rec.reason.verdict)
        counters.totals[pair] = counters.totals.get(pair, 0) + 1
        new += 1
    while len(counters.cursors) > MAX_SOURCES:
        counters.cursors.pop(next(iter(counters.cursors)))
    return new


def known_pairs() -> List[Pair]:
    """Every (reason, verdict) the reason table can produce: each series exists from the first run."""
    from sysctl_doctor.conntrack.kernel_log import _REASONS, _UNKNOWN_REASON

    pairs = {(r.code, r.verdict) for _, r in _REASONS} | {(_UNKNOWN_REASON.code, _UNKNOWN_REASON.verdict)}
    return sorted(pairs)


def render(counters: LogCounters) -> str:
    from sysctl_doctor.report.prometheus import Metric, render as render_metrics

    totals = {pair: 0 for pair in known_pairs()}
    totals.update(counters.totals)
    metric = Metric("sysctl_doctor_conntrack_log_messages_total", "counter",
                    "conntrack (nf_log) kernel log lines sysctl-doctor has read, by reason and verdict.",
                    [((("reason", r), ("verdict", v)), n) for (r, v), n in sorted(totals.items())])
    return render_metrics([metric])
