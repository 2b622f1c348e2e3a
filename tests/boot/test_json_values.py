"""Issue 16 item 15: `boot.value` was the text "(kernel default)" where the JSON contract says a value or null."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from boot.rootfs import copy_incident


def test_unknown_default_is_null_in_json(tmp_path: Path) -> None:
    # nf_conntrack_max's default is computed from memory at boot; the race leaves the key at that default
    root = copy_incident(tmp_path / "r", {"/etc/sysctl.d/60-ct.conf": "net.netfilter.nf_conntrack_max = 262144\n"})
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    data = json.loads(proc.stdout)
    for entry in data["keys"]:
        for value in (entry["boot"]["value"], entry["after_late_load"]["value"]):
            assert value is None or value != "(kernel default)", entry
    entry = next(e for e in data["keys"] if e["key"] == "net.netfilter.nf_conntrack_max")
    assert entry["boot"] == {"applied": False, "value": None}
    text = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root)],
                          capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert "(kernel default)" in text  # the text report still says what it is
