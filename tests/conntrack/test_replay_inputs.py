"""Issue 16 item 15: `replay -`, /dev/stdin, process substitution and FIFOs were refused ("not seekable"),
and a `.pcap.gz` was "not a pcap". Each now gives the same verdicts as the plain file."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import List, Optional

import pytest

from cli.console import console_script

ARGS = ["--kernel", "5.10", "--what-if", "kernel=6.1", "--format", "json"]


def _replay(file: str, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(console_script()), "conntrack", "replay", file, *ARGS], input=stdin,
                          capture_output=True, timeout=120)


def _verdicts(proc: subprocess.CompletedProcess) -> List[tuple]:
    assert proc.returncode == 1, proc.stderr  # the seed capture has one INVALID packet on 5.10
    data = json.loads(proc.stdout)
    return [(p["frame"], p["verdict"], p["message"]) for p in data["packets"]] + [
        (w["change"], w["invalid"]) for w in data["what_if"]]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conntrack.captures import seed_packets, write_ethernet_pcap

    path = tmp_path_factory.mktemp("cap") / "seed.pcap"
    write_ethernet_pcap(str(path), seed_packets(segments=300))
    return path


@pytest.fixture(scope="module")
def expected(capture: Path) -> List[tuple]:
    return _verdicts(_replay(str(capture)))


def test_stdin_dash(capture: Path, expected: List[tuple]) -> None:
    assert _verdicts(_replay("-", capture.read_bytes())) == expected


def test_dev_stdin_from_a_pipe(capture: Path, expected: List[tuple]) -> None:
    assert _verdicts(_replay("/dev/stdin", capture.read_bytes())) == expected


def test_process_substitution(capture: Path, expected: List[tuple]) -> None:
    if shutil.which("bash") is None:
        pytest.skip("NEEDS bash for <(…)")
    proc = subprocess.run(["bash", "-c", f'exec "$0" conntrack replay <(cat "$1") {" ".join(ARGS)}',
                           str(console_script()), str(capture)], capture_output=True, timeout=120)
    assert _verdicts(proc) == expected


def test_fifo(capture: Path, expected: List[tuple], tmp_path: Path) -> None:
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as writer:
            writer.write(capture.read_bytes())

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    result = _replay(str(fifo))
    feeder.join(timeout=10)
    assert _verdicts(result) == expected


def test_gzip_capture(capture: Path, expected: List[tuple], tmp_path: Path) -> None:
    gz = tmp_path / "seed.pcap.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes()))
    assert _verdicts(_replay(str(gz))) == expected
    assert _verdicts(_replay("-", gz.read_bytes())) == expected


def test_cut_gzip_is_a_clean_error(capture: Path, tmp_path: Path) -> None:
    gz = tmp_path / "cut.pcap.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes())[:200])
    proc = _replay(str(gz))
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"not a valid gzip file" in proc.stderr and b"Traceback" not in proc.stderr
