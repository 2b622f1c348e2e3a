"""`check --format prometheus`: node_exporter textfile-collector metrics (Prometheus text format 0.0.4).

Names follow the Prometheus naming guide (`sysctl_doctor_` prefix, base units, `_total` only on counters)
and sit beside node_exporter's own `node_nf_conntrack_*`, which are not exported again. Every known
finding code has a `sysctl_doctor_findings` series, 0 when clean, so a missing series never reads as
"clean". Per-key series are capped (MAX_KEY_SERIES) so hostile configuration cannot blow up a TSDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sysctl_doctor.findings.registry import LOST_AT_BOOT_CODES

MAX_KEY_SERIES = 500  # per metric; what is cut is counted in sysctl_doctor_series_dropped

Labels = Tuple[Tuple[str, str], ...]


@dataclass
class Metric:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: List[Tuple[Labels, float]] = field(default_factory=list)


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    out: List[str] = []
    for m in metrics:
        out.append(f"# HELP {m.name} {m.help}")
        out.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            out.append(f"{m.name}{{{text}}} {_number(value)}" if text else f"{m.name} {_number(value)}")
    return "\n".join(out) + "\n"


def run_metrics(version: str, started: float, duration: float, success: bool) -> List[Metric]:
    """The metrics every run writes, also a failed one (so a stale or failing check can alert)."""
    return [
        Metric("sysctl_doctor_build_info", "gauge", "The sysctl-doctor version that wrote these metrics.",
               [((("version", version),), 1)]),
        Metric("sysctl_doctor_last_run_timestamp_seconds", "gauge",
               "When the last check started, seconds since the Unix epoch.", [((), round(started, 3))]),
        Metric("sysctl_doctor_last_run_success", "gauge",
               "1 when the last check read the root to the end (exit 0 or 1), 0 when it failed (exit 2).",
               [((), 1 if success else 0)]),
        Metric("sysctl_doctor_last_run_duration_seconds", "gauge", "How long the last check took.",
               [((), round(duration, 6))]),
    ]


def check_metrics(report, rules: Sequence, version: str, started: float, duration: float) -> List[Metric]:
    """All series for one finished check: run metadata, findings per code, keys lost at boot, drift."""
    counts: Dict[str, int] = {r.code: 0 for r in rules}
    for f in report.findings:
        counts[f.code] = counts.get(f.code, 0) + 1
    severity = {r.code: r.severity for r in rules}
    findings = Metric("sysctl_doctor_findings", "gauge",
                      "Findings of the last check by code and severity (every known code, 0 when clean).",
                      [((("code", c), ("severity", severity.get(c, "unknown"))), n) for c, n in sorted(counts.items())])
    lost = Metric("sysctl_doctor_key_lost_at_boot", "gauge",
                  "1 for each configured key the next boot will not apply (or not guarantee), by module and finding.")
    drift = Metric("sysctl_doctor_key_drift", "gauge",
                   "1 for each key whose live value differs from what the next boot will set (SD108).")
    dropped = {"lost": 0, "drift": 0}
    for p in report.fates:
        codes = report.codes_for(p.key)
        code = next((c for c in codes if c in LOST_AT_BOOT_CODES), None)
        if code is not None:
            if len(lost.samples) < MAX_KEY_SERIES:
                lost.samples.append(((("key", p.key), ("module", p.module or ""), ("code", code)), 1))
            else:
                dropped["lost"] += 1
        if "SD108" in codes:
            if len(drift.samples) < MAX_KEY_SERIES:
                drift.samples.append(((("key", p.key),), 1))
            else:
                dropped["drift"] += 1
    cut = Metric("sysctl_doctor_series_dropped", "gauge",
                 f"Per-key series left out of a metric above its cap of {MAX_KEY_SERIES}.",
                 [((("metric", "sysctl_doctor_key_lost_at_boot"),), dropped["lost"]),
                  ((("metric", "sysctl_doctor_key_drift"),), dropped["drift"])])
    return run_metrics(version, started, duration, True) + [findings, lost, drift, cut]


def failure_text(version: str, started: float, duration: float, rules: Optional[Sequence] = None) -> str:
    return render(run_metrics(version, started, duration, False))
