"""Issue 16 item 9: a value the kernel refuses (no such congestion control or qdisc, a quoted name).

`check` said "applied" while `explain` said "the write will fail"; both now say the write fails (SD115).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boot.rootfs import copy_incident

CONF = "net.ipv4.tcp_congestion_control = nosuchcc\nnet.core.default_qdisc = \"fq\"\nnet.core.rmem_max = 1\n"


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_incident(tmp_path_factory.mktemp("r") / "root", {"/etc/sysctl.d/50-cc.conf": CONF})


@pytest.mark.parametrize("key", ["net.ipv4.tcp_congestion_control", "net.core.default_qdisc"])
def test_check_and_explain_agree_the_write_fails(root: Path, key: str) -> None:
    proc = run("check", "--root", str(root), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    entry = next(e for e in data["keys"] if e["key"] == key)
    assert entry["boot"]["applied"] is False and "SD115" in entry["findings"]
    finding = next(f for f in data["findings"] if f["code"] == "SD115" and f["key"] == key)
    assert finding["severity"] == "error" and "the write fails" in finding["message"]
    text = run("check", "--root", str(root)).stdout
    row = next(line for line in text.splitlines() if line.startswith(f"│{key} "))
    assert "applied" not in row.replace("NOT APPLIED", "") and "value rejected" in row
    explained = json.loads(run("explain", key, "--root", str(root), "--format", "json").stdout)
    boot = next(s for s in explained["sections"] if s["title"].endswith("at the next boot (systemd)"))
    assert boot["data"]["applied"] is False and boot["data"]["verdict"] == "value-rejected"


def test_quoted_name_is_not_a_module_name(root: Path) -> None:
    out = run("explain", "net.core.default_qdisc", "--root", str(root)).stdout
    assert 'sch_"fq"' not in out
    assert "quotes included" in out and "the write will fail" in out


def test_builtin_and_in_core_names_still_apply(tmp_path: Path) -> None:
    conf = "net.ipv4.tcp_congestion_control = reno\nnet.core.default_qdisc = pfifo_fast\n"
    root = copy_incident(tmp_path / "root", {"/etc/sysctl.d/50-cc.conf": conf})
    data = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    for key in ("net.ipv4.tcp_congestion_control", "net.core.default_qdisc"):
        entry = next(e for e in data["keys"] if e["key"] == key)
        assert entry["boot"]["applied"] is True and "SD115" not in entry["findings"], entry


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_real_kernel_refuses_a_quoted_name() -> None:
    """The fact the model relies on: the running kernel fails the write of `"cubic"` (quotes kept)."""
    script = ("printf '\"cubic\"' > /proc/sys/net/ipv4/tcp_congestion_control; echo rc=$?; "
              "printf 'nosuchcc' > /proc/sys/net/ipv4/tcp_congestion_control; echo rc=$?")
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True)
    assert proc.stdout.split() == ["rc=1", "rc=1"], (proc.stdout, proc.stderr)
