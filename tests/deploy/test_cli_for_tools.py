"""The two CLI additions the deployment paths rely on: `check --live` (the DaemonSet) and `fix --format json`
(the Ansible module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cli.console import INCIDENT, console_script, run_cli


def test_check_live_on_a_bind_mount_of_this_host_is_check_of_this_host(tmp_path: Path, require_root) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("unshare") is None:
        pytest.skip("NEEDS unshare (util-linux)")
    view = tmp_path / "host"
    view.mkdir()
    tool = console_script()
    script = (f"mount --rbind / {view} && "
              f"{tool} check --root {view} --live --format json > {tmp_path}/live.json; echo $? > {tmp_path}/live.rc; "
              f"{tool} check --root {view} --format json > {tmp_path}/offline.json; true")
    env = {k: v for k, v in os.environ.items() if k != "SYSCTL_DOCTOR_DEBUG"}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    host = run_cli(["check", "--format", "json"])
    live = json.loads((tmp_path / "live.json").read_text())
    assert int((tmp_path / "live.rc").read_text()) == host.returncode
    assert live == json.loads(host.stdout)
    offline = json.loads((tmp_path / "offline.json").read_text())
    assert offline != live and all(k["live"] is None for k in offline["keys"])
    assert any(k["live"] is not None for k in live["keys"])


def test_fix_format_json_plans_writes_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "incident"
    shutil.copytree(INCIDENT, root, symlinks=True)
    planned = run_cli(["fix", "--root", str(root), "--dry-run", "--format", "json"])
    assert planned.returncode == 0, planned.stderr.decode()
    plan = json.loads(planned.stdout)
    assert plan["dry_run"] is True and plan["written"] == []
    (edit,) = plan["edits"]
    assert edit["path"] == "/etc/modules-load.d/sysctl-doctor.conf" and edit["before"] is None
    assert edit["after"].splitlines()[-1] == "nf_conntrack"
    assert not (root / "etc/modules-load.d/sysctl-doctor.conf").exists()

    applied = run_cli(["fix", "--root", str(root), "--format", "json"])
    assert applied.returncode == 0, applied.stderr.decode()
    result = json.loads(applied.stdout)
    assert [w["path"] for w in result["written"]] == [edit["path"]]
    assert (root / "etc/modules-load.d/sysctl-doctor.conf").read_text() == edit["after"]
    assert result["keys"] == [{"key": "net.netfilter.nf_conntrack_tcp_be_liberal", "applied": True,
                                "verdict": "applied"}]

    again = json.loads(run_cli(["fix", "--root", str(root), "--format", "json"]).stdout)
    assert again["edits"] == [] and again["written"] == []


def test_fix_format_json_error_is_exit_2_without_json(tmp_path: Path) -> None:
    done = run_cli(["fix", "--root", str(tmp_path / "missing"), "--format", "json"])
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().startswith("error: ") and "Traceback" not in done.stderr.decode()
