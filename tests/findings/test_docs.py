"""docs/findings.md is generated from the rules and must be up to date."""

from __future__ import annotations

from pathlib import Path

from sysctl_doctor.findings import all_rules
from sysctl_doctor.findings.docs import render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "findings.md"


def test_findings_doc_is_up_to_date() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/findings.md is stale: run `python -m sysctl_doctor.findings.docs > docs/findings.md`")


def test_every_rule_has_a_section() -> None:
    text = DOC.read_text()
    for rule in all_rules():
        assert f"\n## {rule.code}\n" in text and rule.rationale in text
