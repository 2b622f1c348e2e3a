"""`check`'s findings: the rules run over one Analysis, as one plain CheckReport.

`sysctl_doctor.analysis.build_analysis()` gathers every fact; `run_check()` adds the coded findings.
Nothing here prints; renderers in `sysctl_doctor.report` only render a `CheckReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from sysctl_doctor.analysis import Analysis, CheckInputs, build_analysis
from sysctl_doctor.boot.model import KeyFate
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.findings.model import ERROR, Finding
from sysctl_doctor.root import Root


@dataclass(frozen=True)
class CheckReport:
    analysis: Analysis
    findings: List[Finding]
    _codes: Dict[str, List[str]] = field(default_factory=dict, repr=False)  # key -> codes, in finding order

    @property
    def fates(self) -> List[KeyFate]:
        return self.analysis.fates

    @property
    def has_errors(self) -> bool:
        return any(f.severity == ERROR for f in self.findings)

    def codes_for(self, key: str) -> List[str]:
        """The finding codes about one key, each once, in the order the findings are listed."""
        return list(self._codes.get(key, ()))


def report_for(analysis: Analysis) -> CheckReport:
    from sysctl_doctor.findings.registry import run_rules

    findings = run_rules(analysis)
    codes: Dict[str, List[str]] = {}
    for finding in findings:
        for key in dict.fromkeys((finding.key, *finding.keys) if finding.key else finding.keys):
            listed = codes.setdefault(key, [])
            if finding.code not in listed:
                listed.append(finding.code)
    return CheckReport(analysis, findings, codes)


def run_check(root: Root, **options) -> CheckReport:  # type: ignore[no-untyped-def]
    """build_analysis + the rules; `options` are CheckInputs fields (live, kernel, cmdline, …)."""
    return report_for(build_analysis(CheckInputs(root, **options)))


__all__ = ["Analysis", "CheckInputs", "CheckReport", "DoctorError", "report_for", "run_check"]
