"""check --format sarif: valid against the official 2.1.0 schema and the SARIF multitool (GitHub rules)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from fleet.tools import REPO, SARIF_SCHEMA, multitool, sysctl_doctor

EXAMPLE = REPO / "examples" / "incident"
HELP = "https://git.example.org/ops/sysctl-doctor/blob/main/docs/findings.md"


def _sarif(root, *extra):
    proc = sysctl_doctor("check", "--root", str(root), "--format", "sarif", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_incident_findings_are_results_at_their_lines():
    doc = _sarif(EXAMPLE, "--sarif-help-uri", HELP)
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    from sysctl_doctor.findings.registry import all_rules

    assert [r["id"] for r in rules] == [r.code for r in all_rules()]  # one descriptor per code
    assert rules[0]["helpUri"] == HELP + "#sd101"
    [sd101] = [r for r in run["results"] if r["ruleId"] == "SD101"]
    assert sd101["level"] == "error"
    loc = sd101["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "etc/sysctl.d/99-sysctl.conf", "uriBaseId": "SRCROOT"}
    assert loc["region"] == {"startLine": 71}
    assert rules[sd101["ruleIndex"]]["id"] == "SD101"
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["SD106"] == "warning" and levels["SD109"] == "note"


def test_srcroot_makes_paths_relative_to_the_repository(tmp_path):
    repo = tmp_path / "image-repo"
    shutil.copytree(EXAMPLE, repo / "rootfs", symlinks=True)
    doc = _sarif(repo / "rootfs", "--sarif-srcroot", str(repo))
    [sd101] = [r for r in doc["runs"][0]["results"] if r["ruleId"] == "SD101"]
    assert sd101["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "rootfs/etc/sysctl.d/99-sysctl.conf"
    assert doc["runs"][0]["originalUriBaseIds"]["SRCROOT"]["uri"] == f"file://{repo.resolve()}/"


def test_fingerprints_survive_a_line_move(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    before = {r["ruleId"] + r.get("properties", {}).get("key", ""): r["partialFingerprints"]
              for r in _sarif(root)["runs"][0]["results"]}
    conf = root / "etc" / "sysctl.conf"
    conf.write_text("# a comment added above\n" + conf.read_text())
    after_doc = _sarif(root)
    after = {r["ruleId"] + r.get("properties", {}).get("key", ""): r["partialFingerprints"]
             for r in after_doc["runs"][0]["results"]}
    assert before == after
    [sd101] = [r for r in after_doc["runs"][0]["results"] if r["ruleId"] == "SD101"]
    assert sd101["locations"][0]["physicalLocation"]["region"]["startLine"] == 72  # the line moved, the print did not


def test_valid_against_the_official_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="NEEDS jsonschema (pip install '.[test]')")
    if not SARIF_SCHEMA.exists():
        pytest.skip(f"NEEDS the official SARIF schema at {SARIF_SCHEMA} (shared/schemas beside the checkout)")
    schema = json.loads(SARIF_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    doc = _sarif(EXAMPLE, "--sarif-help-uri", HELP)
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = json.loads(json.dumps(doc))
    broken["runs"][0]["results"][0]["level"] = "fatal"  # the validator does reject what is wrong
    assert list(validator.iter_errors(broken))


def test_multitool_validates_with_github_rules(tmp_path):
    tool = multitool()
    good = tmp_path / "check.sarif"
    good.write_text(json.dumps(_sarif(EXAMPLE, "--sarif-help-uri", HELP)))

    def problems(path):
        out = tmp_path / (path.stem + ".validation.sarif")
        proc = subprocess.run([tool, "validate", str(path), "--rule-kind", "Sarif;Gh", "-o", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
        results = json.loads(out.read_text())["runs"][0].get("results", [])
        return [(r["ruleId"], r.get("level", "warning")) for r in results
                if r.get("level", "warning") in ("error", "warning")]

    assert problems(good) == []
    bad = json.loads(good.read_text())
    del bad["runs"][0]["tool"]["driver"]["rules"][0]["shortDescription"]
    bad["runs"][0]["results"][0]["ruleId"] = "sd101 lower"
    broken = tmp_path / "broken.sarif"
    broken.write_text(json.dumps(bad))
    assert problems(broken), "the multitool flags a broken file (else this test could not fail)"
