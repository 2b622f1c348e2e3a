"""`check --format json`: the contract external checks rely on (keep the shape exactly)."""

from __future__ import annotations

import json


def check_to_dict(report) -> dict:
    keys = []
    for p in report.predictions:
        provider = p.provider
        kind = getattr(getattr(provider, "kind", None), "value", "unknown")
        keys.append({
            "key": p.key,
            "configured": p.configured,
            "file": p.file,
            "line": p.line,
            "provider": {"kind": kind, "module": getattr(provider, "module", None)},
            "boot": {"applied": bool(p.applied), "value": p.boot_value},
            "after_late_load": {"value": p.after_late_load},
            "live": p.live,
            "findings": list(p.findings),
        })
    findings = [
        {"code": f.code, "severity": f.severity, "key": f.key, "message": f.message, "fix": f.fix}
        for f in report.findings
    ]
    return {"keys": keys, "findings": findings}


def render_check_json(report) -> str:
    return json.dumps(check_to_dict(report), indent=2) + "\n"
