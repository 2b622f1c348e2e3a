"""Issue 16 item 15: `--root ''` and an empty directory analysed as a clean root (exit 0, no warning);
`--kernel ..` accepted (it named /lib/modules/.. = /lib)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from cli.console import INCIDENT, run_cli

COMMANDS = [["check"], ["show"], ["explain", "net.ipv4.ip_forward"], ["fix", "--dry-run"], ["index"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_empty_root_path_is_a_usage_error(command: List[str], tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)  # the current directory looks like a root: still refused
    result = run_cli([*command, "--root", ""], cwd=tmp_path)
    assert result.returncode == 2 and b"--root '': an empty path" in result.stderr, result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_empty_directory_is_not_a_clean_root(command: List[str], tmp_path: Path) -> None:
    result = run_cli([*command, "--root", str(tmp_path)])
    assert result.returncode == 2 and b"not a root filesystem" in result.stderr, result.stderr
    assert result.stdout == b""


@pytest.mark.parametrize("kernel", ["..", ".", "", "../../etc", "6.1/..", " 6.1"])
@pytest.mark.parametrize("command", [["check"], ["index"], ["fix", "--dry-run"]], ids=lambda c: c[0])
def test_kernel_must_be_one_directory_name(command: List[str], kernel: str) -> None:
    result = run_cli([*command, "--root", str(INCIDENT), "--kernel", kernel])
    assert result.returncode == 2 and b"is not a kernel release" in result.stderr, result.stderr


def test_a_real_kernel_release_still_works() -> None:
    result = run_cli(["check", "--root", str(INCIDENT), "--kernel", "6.1.0-56-amd64"])
    assert result.returncode == 1 and b"kernel 6.1.0-56-amd64" in result.stdout
