"""`sysctl-doctor verify` errors before any boot: exit 2 with one clear line, no traceback, nothing copied."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from cli.console import INCIDENT, run_cli


def _errors(result) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    return err


def test_a_root_without_a_kernel_to_boot(tmp_path):
    root = tmp_path / "incident"
    shutil.copytree(INCIDENT, root, symlinks=True)
    result = run_cli(["verify", "--root", str(root)])
    assert result.returncode == 2
    assert "error: " in _errors(result) and "no vmlinuz-<version>" in _errors(result)


def test_missing_qemu_or_e2fsprogs_is_named_with_its_package(tmp_path):
    root = tmp_path / "incident"
    shutil.copytree(INCIDENT, root, symlinks=True)
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    result = subprocess.run([sys.executable, "-m", "sysctl_doctor", "verify", "--root", str(root)],
                            capture_output=True, env=env, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err
    assert "qemu-system-x86_64 not found" in err and "apt-get install qemu-system-x86" in err


def test_usage_errors(tmp_path):
    assert run_cli(["verify"]).returncode == 2  # --root is required
    result = run_cli(["verify", "--root", "/"])
    assert result.returncode == 2 and "not the running host" in _errors(result)
    # tmp_path has no kernel either (also exit 2): each case must fail for its own reason
    for option, value, message in (("--boots", "0", "Invalid value for '--boots'"),
                                   ("--boots", "51", "Invalid value for '--boots'"),
                                   ("--late-load", "nf_conntrack;reboot", "not a module name"),
                                   ("--kernel", "../x", "Invalid value for '--kernel'")):
        bad = run_cli(["verify", "--root", str(tmp_path), option, value])
        assert bad.returncode == 2 and message in _errors(bad), (option, value, _errors(bad))
        assert "no vmlinuz" not in _errors(bad)
