"""`check --format json`: the contract external checks rely on (keep the shape exactly)."""

from __future__ import annotations

import json
from typing import Any


def _bytes_escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {_bytes_escaped(k): _bytes_escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bytes_escaped(v) for v in value]
    return value


def json_text(doc: Any, **options: Any) -> str:
    """json.dumps, except that file names which are not UTF-8 show their bytes as `\\xNN` (as values do).

    Python reads such names as lone surrogates, which json.dumps writes as "\\udcff": strict parsers reject
    that and jq turns it into U+FFFD, so the name no longer matches anything on disk.
    """
    text = json.dumps(doc, **options)
    if "\\udc" not in text:  # the usual case costs one substring search
        return text
    return json.dumps(_bytes_escaped(doc), **options)


def _value(value: Any) -> Any:
    """A value, or null: the contract has no room for the text report's "(kernel default)" placeholder
    (a default the kernel computes at boot, e.g. from memory size: not known here)."""
    from sysctl_doctor.boot.kernel_defaults import UNKNOWN_DEFAULT

    return None if value == UNKNOWN_DEFAULT else value


def _boot_sources(p, report) -> dict:
    """Optional fields of a key row (present only when they apply): `glob`, the pattern whose expansion
    wrote this concrete key; `interface`, how the root's network configuration names the key's interface;
    `modprobe`, the modprobe.d lines that changed the prediction (install, options, blacklist)."""
    out: dict = {}
    assignment = getattr(getattr(p, "setting", None), "assignment", None)
    if assignment is not None and assignment.is_glob and assignment.key != p.key:
        out["glob"] = assignment.key
    interface = getattr(p.provider, "interface", None)
    timeline = getattr(getattr(report, "analysis", None), "timeline", None)
    named = timeline.network.find(interface) if interface and timeline is not None else None
    if named is not None:
        out["interface"] = {"name": named.name, "tool": named.tool, "kind": named.kind, "created": named.created,
                            "evidence": named.evidence}
    modprobe = list(getattr(p, "modprobe", ()))
    modprobe += [b.why for b in getattr(p, "blocked", ()) if "modprobe.d" in b.why or "blacklist" in b.why]
    if modprobe:
        out["modprobe"] = list(dict.fromkeys(modprobe))
    if getattr(p, "service", None):
        out["service"] = p.service
    return out


def _kernel_default(path: str, kernel) -> Any:
    """{"value", "sized", "formula"} of the key's kernel default, or null when it is not known."""
    from sysctl_doctor.boot.kernel_defaults import default_info, kernel_default

    info = default_info(path, kernel)
    if info is not None and (info.sized or info.constant is not None):
        return {"value": info.constant, "sized": info.sized, "formula": info.formula}
    if info is not None:
        return None  # write-only, a running state, or a key only a device the guest lacked makes
    value = kernel_default(path, kernel)
    return None if value is None else {"value": value, "sized": False, "formula": None}


def _aliases_of(path: str, aliases) -> list:
    from sysctl_doctor.config.model import path_to_key

    return sorted(path_to_key(a) for a, rep in aliases.items() if rep == aliases.get(path) and a != path)


def check_to_dict(report) -> dict:
    from sysctl_doctor.config.model import key_to_path

    index = getattr(report.analysis, "index", None)
    kernel = getattr(index, "kernel", None)
    aliases = index.aliases() if index is not None and hasattr(index, "aliases") else {}
    keys = []
    for p in report.fates:
        provider = p.provider
        kind = getattr(getattr(provider, "kind", None), "value", "unknown")
        row = {
            "key": p.key,
            "configured": p.configured,
            "file": p.file,
            "line": p.line,
            "provider": {"kind": kind, "module": getattr(provider, "module", None)},
            "boot": {"applied": bool(p.applied), "value": _value(p.boot_value)},
            "after_late_load": {"value": _value(p.after_late_load)},
            "live": p.live,
            "findings": report.codes_for(p.key),
            # the line is applied, but a later write through another name of its variable wins
            "fate": "overridden" if p.verdict == "alias-overridden" else "applied",
            # extensions (issue 15): the default from a real boot of the kernel's series, and the other
            # names of the same kernel variable (the last write through any name wins)
            "kernel_default": _kernel_default(p.path, kernel),
            "aliases": _aliases_of(p.path, aliases),
        }
        row.update(_boot_sources(p, report))
        keys.append(row)
    analysis = report.analysis
    for u in getattr(analysis, "unset", ()):  # keys set only by lines that never apply: the kernel default
        line = u.unset.line
        kind = getattr(getattr(u.provider, "kind", None), "value", "unknown")
        keys.append({
            "key": u.key,
            "configured": u.configured,
            "file": line.origin.file,
            "line": line.origin.line,
            "provider": {"kind": kind, "module": getattr(u.provider, "module", None)},
            "boot": {"applied": False, "value": _value(u.boot_value)},
            "after_late_load": {"value": _value(u.boot_value)},
            "live": u.live,
            "findings": report.codes_for(u.key),
            "fate": u.fate,
            "kernel_default": _kernel_default(key_to_path(u.key), kernel),
            "aliases": _aliases_of(key_to_path(u.key), aliases),
        })
    findings = [
        {"code": f.code, "severity": f.severity, "key": f.key, "message": f.message, "fix": f.fix,
         "keys": list(dict.fromkeys((f.key, *f.keys) if f.key else f.keys))}
        for f in report.findings
    ]
    return {"keys": keys, "findings": findings,
            "assignments": [_line(f) for f in getattr(analysis, "lines", ())]}


def _line(f) -> dict:  # type: ignore[no-untyped-def]
    """One line of a sysctl file and its fate (`check`'s "assignments" array)."""
    return {
        "file": f.origin.file,
        "line": f.origin.line,
        "key": f.key,
        "value": f.value,
        "glob": f.is_glob,
        "fate": f.fate,
        "reason": f.reason,
        "by": None if f.by is None else {"file": f.by.file, "line": f.by.line or None},
        "keys": None if f.keys is None else list(f.keys),
    }


def render_check_json(report) -> str:
    return json_text(check_to_dict(report), indent=2) + "\n"
