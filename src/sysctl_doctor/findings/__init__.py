"""Coded findings: one module per rule under `rules/`, each with its code, severity, title,
rationale, fix and an example root; `explain CODE` and docs/findings.md are generated from them."""

from __future__ import annotations

from sysctl_doctor.findings.model import ERROR, INFO, WARNING, Example, Finding, Rule
from sysctl_doctor.findings.registry import all_rules, get_rule, is_code, rule_doc, run_rules

__all__ = [
    "ERROR", "INFO", "WARNING", "Example", "Finding", "Rule",
    "all_rules", "get_rule", "is_code", "rule_doc", "run_rules",
]
