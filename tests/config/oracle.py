"""Differential oracle: the real systemd-sysctl and procps `sysctl --system` versus our model.

`run_real(jobs)` starts ONE private mount namespace (`unshare --mount --propagation private`)
running oracle_ns.py, which lays out each job's config files and fake /proc/sys on tmpfs
mounts, runs the real program and reads the key files back. The mounts die with that process.

`run_model(case, flavor)` lays the same files out as a root directory under tmp and asks
`load_sysctl_config` + `effective_settings` what the final values are.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fixture_roots import Entry, write_root
from sysctl_doctor.config.model import KeyTree, path_to_key
from sysctl_doctor.config.sysctl_d import effective_settings, load_sysctl_config
from sysctl_doctor.root import Root

NS_SCRIPT = Path(__file__).with_name("oracle_ns.py")
SYSTEMD_SYSCTL = "/usr/lib/systemd/systemd-sysctl"



@dataclass
class Case:
    name: str
    files: Dict[str, Entry]
    keys: Sequence[str]  # slash paths under /proc/sys; "x/" is a directory
    flavors: Tuple[str, ...] = ("systemd", "procps")
    why: str = ""
    args: List[str] = field(default_factory=list)  # systemd-sysctl arguments (e.g. --prefix)
    # /proc/sys path -> the key file it is one kernel variable with: laid out as a symlink in the tmpfs,
    # so a write through either name lands in one file, as it does in the kernel (aliases)
    links: Dict[str, str] = field(default_factory=dict)


ORACLE_VERSIONS = ("252", "4.0.2")  # systemd, procps-ng: Debian 12, the rules config/ implements


def _oracle_versions() -> Tuple[str, str]:
    """(systemd major version, procps-ng version) of the programs the oracle runs."""
    def first_match(cmd: List[str], pattern: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            return ""
        m = re.search(pattern, out)
        return m.group(1) if m else ""
    return (first_match([SYSTEMD_SYSCTL, "--version"], r"systemd (\d+)"),
            first_match(["sysctl", "--version"], r"procps-ng (\S+)"))


def why_not_runnable() -> Optional[str]:
    """A loud reason when the oracle cannot run here, else None."""
    if os.geteuid() != 0:
        return "NEEDS ROOT: the oracle mounts tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "NEEDS unshare (util-linux): the oracle runs in a private mount namespace"
    if not os.access(SYSTEMD_SYSCTL, os.X_OK):
        return f"NEEDS {SYSTEMD_SYSCTL} (systemd 252) as the systemd oracle"
    if shutil.which("sysctl") is None:
        return "NEEDS procps sysctl as the procps oracle"
    versions = _oracle_versions()
    if versions != ORACLE_VERSIONS:
        return (f"NEEDS systemd-sysctl {ORACLE_VERSIONS[0]} and procps-ng {ORACLE_VERSIONS[1]} (the versions the "
                f"model follows); this host has {versions[0] or '?'} and {versions[1] or '?'}")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        return ("NEEDS mount namespaces (unshare --mount failed: "
                f"{probe.stderr.decode(errors='replace').strip()})")
    return None


# Directories the oracle covers with tmpfs inside its namespace; on the host they must
# look exactly the same afterwards (existence and entries).
HOST_PATHS = ("/proc/sys", "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
              "/etc/sysctl.conf", "/usr/local/lib", "/run")


def host_snapshot() -> Dict[str, object]:
    snap: Dict[str, object] = {}
    for p in HOST_PATHS:
        if os.path.isdir(p):
            snap[p] = sorted(os.listdir(p)) if p not in ("/run", "/proc/sys") else "dir"
        elif os.path.exists(p):
            snap[p] = os.stat(p).st_size
        else:
            snap[p] = None
    with open("/proc/self/mountinfo") as fh:
        snap["oracle-mounts"] = [line for line in fh if "sysctl-doctor-oracle" in line]
    return snap


def _entry_json(entry: Entry) -> dict:
    if isinstance(entry, tuple):
        if entry[0] == "link":
            return {"link": entry[1]}
        if entry[0] == "dir":
            return {"dir": True}
        if entry[0] == "null":
            return {"null": True}
        raise ValueError(entry)
    data = entry.encode() if isinstance(entry, str) else entry
    return {"data": base64.b64encode(data).decode()}


def run_real(jobs: List[Tuple[Case, str]]) -> List[dict]:
    """Run every (case, flavour) with the real program; one namespace for all."""
    payload = [
        {"flavor": flavor, "files": {p: _entry_json(e) for p, e in case.files.items()},
         "keys": list(case.keys), "args": list(case.args) if flavor == "systemd" else [],
         "links": dict(case.links)}
        for case, flavor in jobs
    ]
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, str(NS_SCRIPT)],
        env={**os.environ, "SYSCTL_DOCTOR_HOST_MNTNS": os.readlink("/proc/self/ns/mnt")},
        input=json.dumps(payload).encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"oracle namespace failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    results = json.loads(proc.stdout)
    for r in results:
        r["written"] = {k: base64.b64decode(v).decode("utf-8", "surrogateescape") for k, v in r["written"].items()}
    return results


def build_root(case: Case, where: Path) -> Path:
    """The case's files as a root directory (for the model)."""
    return write_root(where, case.files, dirs=("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d",
                                               "usr/lib/sysctl.d"))


def build_key_dir(keys: Sequence[str], where: Path) -> KeyTree:
    for key in keys:
        p = where / key
        if key.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"0\n")
    return KeyTree.from_dir(where)


def model_final(root_dir: Path, flavor: str, keys: KeyTree, prefixes: Sequence[str] = ()) -> Dict[str, str]:
    config = load_sysctl_config(Root(root_dir), flavor)  # type: ignore[arg-type]
    final: Dict[str, str] = {}
    for setting in effective_settings(config, keys, prefixes):
        if setting.exists:
            canonical = "/".join(c for c in setting.path.split("/") if c not in ("", "."))
            final[canonical] = setting.value
    return final


def prefixes_of(args: Sequence[str]) -> List[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith("--prefix=")]


_SETTING = re.compile(r"^Setting '/proc/sys/(.*?)' to '(.*)$", re.DOTALL)
TRACE_VALUE_CHARS = 1000  # systemd truncates long log lines; longer values are compared by prefix


def real_trace(flavor: str, result: dict) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(files opened, successful writes as (dotted key, value)) from the real program's output.

    systemd-sysctl (SYSTEMD_LOG_LEVEL=debug) logs "Parsing F" and "Setting '/proc/sys/P' to 'V'",
    followed by "Couldn't write ..." when it fails; procps prints "* Applying F ..." and
    "key = value" for each successful write.
    """
    opened: List[str] = []
    writes: List[Tuple[str, str]] = []
    if flavor == "systemd":
        lines = result["stderr"].split("\n")
        for i, line in enumerate(lines):
            if line.startswith("Parsing "):
                opened.append(line[len("Parsing "):])
            m = _SETTING.match(line)
            if m and not (i + 1 < len(lines) and lines[i + 1].startswith("Couldn't write")):
                value = m.group(2)[:-1] if m.group(2).endswith("'") else m.group(2)
                writes.append((path_to_key(m.group(1)), value[:TRACE_VALUE_CHARS]))
    else:
        for line in result["stdout"].split("\n"):
            if line.startswith("* Applying ") and line.endswith(" ..."):
                opened.append(line[len("* Applying "):-len(" ...")])
            elif " = " in line:
                key, value = line.split(" = ", 1)
                writes.append((key, value[:TRACE_VALUE_CHARS]))
    return opened, writes


def model_trace(root_dir: Path, flavor: str, keys: KeyTree,
                prefixes: Sequence[str] = ()) -> Tuple[List[str], List[Tuple[str, str]]]:
    config = load_sysctl_config(Root(root_dir), flavor)  # type: ignore[arg-type]
    writes = [(s.key, s.value[:TRACE_VALUE_CHARS]) for s in effective_settings(config, keys, prefixes) if s.exists]
    return config.opened, writes


def runs_sorted(writes: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Sort inside each run of equal values: systemd expands globs with GLOB_NOSORT
    (directory order), so only the order between runs is comparable."""
    out: List[Tuple[str, str]] = []
    run: List[Tuple[str, str]] = []
    for w in writes:
        if run and run[-1][1] != w[1]:
            out.extend(sorted(run))
            run = []
        run.append(w)
    out.extend(sorted(run))
    return out
