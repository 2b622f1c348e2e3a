"""`check --format sarif`: SARIF 2.1.0 for code scanning of the repositories that build node images.

One reportingDescriptor per finding code (from the rule modules: name, title, rationale, fix), results at
the file:line inside the root (relative to `--sarif-srcroot` when the root lives in a repository), levels
error/warning/note, and partialFingerprints that stay the same across runs while the finding does.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def _rule_descriptor(rule, help_base: Optional[str]) -> Dict[str, Any]:
    descriptor = {
        "id": rule.code,
        "name": "".join(part.capitalize() for part in rule.name.split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.rationale},
        "help": {"text": f"{rule.rationale}\n\nFix: {rule.fix}",
                 "markdown": f"{rule.rationale}\n\n**Fix:** {rule.fix}"},
        "defaultConfiguration": {"level": LEVELS.get(rule.severity, "note")},
        "properties": {"tags": ["sysctl", "boot"] if rule.code.startswith("SD") else ["conntrack", "nat"]},
    }
    if help_base:  # SARIF wants an absolute URI: the docs/findings.md of the operator's copy of the repository
        descriptor["helpUri"] = f"{help_base}#{rule.code.lower()}"
    return descriptor


def _artifact_uri(file: str, root_dir: str, srcroot: Optional[str]) -> str:
    """The finding's file as a URI relative to the source root (the root itself when none is given)."""
    inside = file.lstrip("/")
    if srcroot:
        absolute = os.path.join(os.path.realpath(root_dir), inside)
        rel = os.path.relpath(absolute, os.path.realpath(srcroot))
        if not rel.startswith(".."):
            inside = rel
    return inside.replace(os.sep, "/")


def fingerprint(code: str, key: Optional[str], file: Optional[str]) -> str:
    """Stable across runs and line moves: the rule, the key and the file, not the message or the line."""
    return hashlib.sha256(f"{code}\0{key or ''}\0{file or ''}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def to_sarif(report, rules: Sequence, version: str, root_dir: str, srcroot: Optional[str] = None,
             help_base: Optional[str] = None) -> Dict[str, Any]:
    index = {r.code: i for i, r in enumerate(rules)}
    results: List[Dict[str, Any]] = []
    for f in report.findings:
        result: Dict[str, Any] = {
            "ruleId": f.code,
            "level": LEVELS.get(f.severity, "note"),
            "message": {"text": f"{f.message}\nFix: {f.fix}" if f.fix else f.message},
            "partialFingerprints": {"sysctlDoctor/v1": fingerprint(f.code, f.key, f.file)},
        }
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        if f.file:
            region = {"startLine": int(f.line)} if f.line else None
            location: Dict[str, Any] = {"artifactLocation": {"uri": _artifact_uri(f.file, root_dir, srcroot),
                                                             "uriBaseId": "SRCROOT"}}
            if region:
                location["region"] = region
            result["locations"] = [{"physicalLocation": location}]
        if f.key:
            result["properties"] = {"key": f.key}
        results.append(result)
    base = os.path.realpath(srcroot or root_dir)
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sysctl-doctor",
                "version": version,
                "semanticVersion": version,
                **({"informationUri": help_base.split("#")[0]} if help_base else {}),
                "rules": [_rule_descriptor(r, help_base) for r in rules],
            }},
            "originalUriBaseIds": {"SRCROOT": {"uri": "file://" + base.rstrip("/") + "/"}},
            "results": results,
        }],
    }
