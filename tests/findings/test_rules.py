"""Each rule fires on its own example root and stays quiet on its passing one (real Debian 6.1 metadata)."""

from __future__ import annotations

from pathlib import Path

import pytest

from findings.example_roots import check_example
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.findings import all_rules, get_rule, rule_doc
from sysctl_doctor.findings.model import SEVERITIES

RULES = all_rules()


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_rule_fires_on_its_example(rule, tmp_path: Path) -> None:
    report = check_example(rule.example, tmp_path / "root")
    codes = [f.code for f in report.findings]
    assert rule.code in codes, f"{rule.code} did not fire; got {codes}"
    for finding in report.findings:
        if finding.code == rule.code:
            assert finding.severity == rule.severity and finding.message and finding.fix


@pytest.mark.parametrize("rule", [r for r in RULES if r.passing], ids=[r.code for r in RULES if r.passing])
def test_rule_quiet_on_passing_example(rule, tmp_path: Path) -> None:
    report = check_example(rule.passing, tmp_path / "root")
    assert rule.code not in [f.code for f in report.findings]


def test_codes_unique_stable_and_documented() -> None:
    codes = [r.code for r in RULES]
    assert len(set(codes)) == len(codes) and codes == sorted(codes, key=lambda c: (c[:2] != "SD", c))
    for rule in RULES:
        assert rule.severity in SEVERITIES
        doc = rule_doc(rule.code.lower())
        assert doc.startswith(f"{rule.code} ({rule.name}) [{rule.severity}]")
        assert rule.rationale in doc and rule.fix in doc
    with pytest.raises(DoctorError):
        rule_doc("SD999")
    assert get_rule("sd101").name == "module-loaded-after-sysctl"


def test_incident_sd101_names_the_racing_unit_and_rule_line(tmp_path: Path) -> None:
    report = check_example(get_rule("SD101").example, tmp_path / "root")
    sd101 = [f for f in report.findings if f.code == "SD101"]
    assert len(sd101) == 1
    assert sd101[0].key == "net.netfilter.nf_conntrack_tcp_be_liberal"
    assert "nftables.service" in sd101[0].message
    assert "/etc/nftables.conf:9 `ct state established,related accept`" in sd101[0].message


def test_sd103_applies_on_6_1_but_not_on_5_10(tmp_path: Path) -> None:
    rule = get_rule("SD103")
    old = check_example(rule.example, tmp_path / "old")
    new = check_example(rule.passing, tmp_path / "new")
    key = "net.netfilter.nf_conntrack_tcp_be_liberal"
    old_p = next(p for p in old.fates if p.key == key)
    new_p = next(p for p in new.fates if p.key == key)
    assert old.analysis.kernel == "5.10.0-30-amd64" and new.analysis.kernel.startswith("6.1.")
    assert (old_p.applied, old_p.verdict) == (False, "udev-race")
    assert (new_p.applied, new_p.verdict, new_p.boot_value) == (True, "applied-by-udev", "1")


def test_sd105_once_per_file(tmp_path: Path) -> None:
    """Issue 16 item 15: /etc/sysctl.conf without the Debian link was reported twice (two wordings)."""
    report = check_example(get_rule("SD105").example, tmp_path / "root")
    files = [f.file for f in report.findings if f.code == "SD105"]
    assert files.count("/etc/sysctl.conf") == 1, [f.message for f in report.findings if f.code == "SD105"]
    assert len(files) == len(set(files))
