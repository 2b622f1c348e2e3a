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


def test_explain_code_prints_the_rule_doc() -> None:
    import subprocess
    import sys

    from sysctl_doctor.findings import rule_doc

    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "SD101"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SD101 (module-loaded-after-sysctl) [error]")
    for line in rule_doc("SD101").splitlines():
        assert line.strip() in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "SD999"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown finding code" in bad.stderr


def test_explain_key_has_a_boot_section() -> None:
    import json
    import subprocess
    import sys

    from findings.example_roots import INCIDENT

    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "net.netfilter.nf_conntrack_tcp_be_liberal",
                           "--root", str(INCIDENT), "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    boot = [s for s in json.loads(proc.stdout)["sections"] if "at the next boot" in s["title"]]
    assert len(boot) == 1
    assert boot[0]["data"]["applied"] is False and boot[0]["data"]["verdict"] == "race"
    assert "SD101" in boot[0]["data"]["findings"]


def test_explain_boot_line_reads_naturally() -> None:
    """Regression: the boot section printed "(applied: yes, applied)"; each verdict now has one phrase."""
    import subprocess
    import sys

    from findings.example_roots import INCIDENT
    from sysctl_doctor.boot.model import Verdict
    from sysctl_doctor.cli.explain import boot_verdict_text

    assert all(v.phrase and v.label for v in Verdict)
    assert boot_verdict_text(True, "applied") == "applied"
    assert boot_verdict_text(True, "applied-by-udev") == "applied by a udev rule [applied-by-udev]"

    def boot_line(key: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", key, "--root", str(INCIDENT)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if "after boot:" in line)

    raced = boot_line("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert "(not guaranteed: a module load races the sysctl step [race]); once nf_conntrack is loaded: 0" in raced
    assert "applied: no" not in raced
    applied = boot_line("kernel.pid_max")  # built in: no module to wait for
    assert applied.strip() == "after boot: 4194304  (applied)"


def test_registry_lists_every_rule_module_once_in_code_order() -> None:
    """The registry names each rule module once (the import list and the rule list are one list)."""
    import pkgutil

    import sysctl_doctor.findings.rules as rules_package
    from sysctl_doctor.findings.registry import CT_RULE_MODULES, RULE_MODULES

    on_disk = sorted(m.name for m in pkgutil.iter_modules(rules_package.__path__))
    listed = [m.__name__.rsplit(".", 1)[1] for m in RULE_MODULES]
    assert sorted(listed) == on_disk and len(set(listed)) == len(listed)
    codes = [m.RULE.code for m in RULE_MODULES]
    assert codes == [f"SD{n}" for n in range(101, 118)] + [f"CT00{n}" for n in range(1, 7)]
    assert RULE_MODULES[-len(CT_RULE_MODULES):] == CT_RULE_MODULES
    assert all(hasattr(m, "advise") for m in CT_RULE_MODULES)
