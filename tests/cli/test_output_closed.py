"""Issue 16 item 13: output closed early (`… | head`) is a quiet exit 0 for every command (README "Exit codes").

`check`, `conntrack replay` and `lab` print through rich, whose Console answers a broken pipe with
SystemExit(1): read as "findings" / "INVALID packet" / "the lab did not match". The reader here closes its
end before the command writes anything, so the first write meets EPIPE on every run (a `| head -1` may or may
not, depending on how fast head exits). The exit status of a run whose output was cut short says nothing
about findings: it is 0 whatever they were, as the README documents.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from cli.console import INCIDENT, console_script


def _with_closed_reader(args: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([str(console_script()), *args], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=timeout)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def invalid_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conntrack.captures import seed_packets, write_ethernet_pcap

    capture = tmp_path_factory.mktemp("cap") / "seed.pcap"
    write_ethernet_pcap(str(capture), seed_packets(segments=300))
    return capture


def test_check_with_findings_then_closed_output(tmp_path: Path) -> None:
    assert subprocess.run([str(console_script()), "check", "--root", str(INCIDENT)],
                          capture_output=True).returncode == 1  # findings at error level
    result = _with_closed_reader(["check", "--root", str(INCIDENT)])
    assert (result.returncode, result.stderr) == (0, b"")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_replay_with_invalid_packets_then_closed_output(invalid_capture: Path, fmt: str) -> None:
    args = ["conntrack", "replay", str(invalid_capture), "--kernel", "5.10", "--format", fmt]
    assert subprocess.run([str(console_script()), *args], capture_output=True).returncode == 1  # INVALID
    result = _with_closed_reader(args)
    assert (result.returncode, result.stderr) == (0, b"")


def test_lab_closed_output_is_0_and_cleans_up() -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("NEEDS ROOT and nft for the lab")
    pytest.importorskip("pyroute2")
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen([str(console_script()), "lab", "--scenario", "seq-over-upper-bound",
                             "--mitigation", "none"], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, b"")
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in netns if n.startswith(f"sdlab-{proc.pid}x")] == []


def test_other_exits_are_not_taken_for_a_closed_output() -> None:
    """stdout already /dev/null from the start: a real exit 1 stays 1."""
    with open(os.devnull, "wb") as devnull:
        result = subprocess.run([str(console_script()), "check", "--root", str(INCIDENT)], stdout=devnull,
                                stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 1
