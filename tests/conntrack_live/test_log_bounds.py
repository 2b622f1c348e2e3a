"""`conntrack logs` under hostile input (issue 16, items 7 and 14): memory bounded whatever the input
(a file of NUL bytes with no newline reached 24 GB), over-long lines cut and counted with a warning,
a corrupt .gz and a journal record with an absurd time stamp reported cleanly."""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from sysctl_doctor.conntrack import kernel_log
from sysctl_doctor.conntrack.kernel_log import KernelLogReport, line_blocks, parse_kernel_log

from tests.conntrack_live.test_kernel_log import OVER, RST, SEED, UNDER
from tests.peak_memory import run_with_peak

CLI = [sys.executable, "-m", "sysctl_doctor"]


def _run(args: List[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(CLI + args, capture_output=True, **kw)


def test_nul_bytes_without_a_newline_keep_memory_bounded(tmp_path: Path) -> None:
    # As found: a file of NUL bytes with no newline grew the process to 24 GB. Here 300 MB of them
    # on stdin (the tool would need 300 MB for the line alone); the peak must stay far below.
    feeder = subprocess.Popen(["head", "-c", str(300 << 20), "/dev/zero"], stdout=subprocess.PIPE)
    proc, peak_mib = run_with_peak(CLI + ["conntrack", "logs", "-"], stdin=feeder.stdout)
    feeder.wait()
    assert proc.returncode == 0, proc.stderr
    assert peak_mib < 150
    assert b"1 line(s) over 65536 bytes cut and not read" in proc.stderr
    assert b"first at line 1" in proc.stderr and b"Traceback" not in proc.stderr
    assert b"too long 1" in proc.stdout


def test_a_50mb_line_is_cut_and_the_records_around_it_keep_their_line_numbers(tmp_path: Path) -> None:
    # As found: one 50 MB line cost 222 MB.
    log = tmp_path / "kern.log"
    with open(log, "wb") as fh:
        fh.write(f"[ 1.000000] {OVER}\n".encode())
        fh.write(b"x" * (50 << 20) + b"\n")
        fh.write(f"[ 2.000000] {UNDER}\n".encode())
    proc = _run(["conntrack", "logs", "--events", str(log)])
    assert proc.returncode == 1, proc.stderr  # the OVER record is INVALID
    *records, doc = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 3]
    assert doc["lines"]["total"] == 3 and doc["lines"]["skipped"]["too_long"] == 1
    assert b"over 65536 bytes cut and not read" in proc.stderr and b"first at line 2" in proc.stderr


def _naive(data: bytes, max_line: int) -> bytes:
    """Each over-long line made empty; a cut last line (no newline) still counts as a line: it gets one."""
    lines = data.split(b"\n")
    out = b"\n".join(b"" if len(x) > max_line else x for x in lines)
    return out + b"\n" if len(lines[-1]) > max_line else out


@pytest.mark.parametrize("seed", range(40))
def test_line_blocks_equal_a_whole_file_split(seed: int) -> None:
    rng = random.Random(seed)
    pieces = []
    for _ in range(rng.randrange(0, 60)):
        n = rng.choice([0, 1, 5, 20, 49, 50, 51, 120, 400])
        pieces.append(bytes(rng.choice(b"ab \x00nf_ct_") for _ in range(n)))
    data = b"\n".join(pieces) + (b"\n" if rng.random() < 0.5 else b"")
    report = KernelLogReport("t")
    blocks = list(line_blocks(io.BytesIO(data), report, block=rng.choice([1, 7, 64, 200]), max_line=50))
    assert b"".join(b for _, b in blocks) == _naive(data, 50)
    line = 1
    for first, block in blocks:
        assert first == line
        line += block.count(b"\n")
    assert report.skipped.too_long == sum(1 for x in data.split(b"\n") if len(x) > 50)


def test_small_blocks_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    # Wrapped records (the seed paste) near a block boundary stay whole: every block size agrees.
    text = (open(SEED, "rb").read() + f"[ 3.0] {RST}\n[ 4.0] {OVER}\nother\n".encode()) * 3
    whole = json.dumps(parse_kernel_log(text, "x", year=2025).to_json())
    for block in (16, 100, 1000):
        monkeypatch.setattr(kernel_log, "BLOCK", block)
        assert json.dumps(parse_kernel_log(text, "x", year=2025).to_json()) == whole


def test_corrupt_gz_is_an_error_not_a_bug(tmp_path: Path) -> None:
    # As found: "internal error: error: Error -3 while decompressing data".
    good = gzip.compress(f"[ 1.0] {OVER}\n".encode() * 1000)
    corrupt = tmp_path / "kern.log.1.gz"
    corrupt.write_bytes(good[:20] + bytes(b ^ 0x55 for b in good[20:60]) + good[60:])
    truncated = tmp_path / "kern.log.2.gz"
    truncated.write_bytes(good[: len(good) // 2])
    for path in (corrupt, truncated):
        proc = _run(["conntrack", "logs", str(path)])
        assert proc.returncode == 2, proc.stderr
        assert f"error: {path}: cannot read: not a valid gzip stream".encode() in proc.stderr
        assert b"internal error" not in proc.stderr
    proc = _run(["conntrack", "logs", "-"], input=good[:30])
    assert proc.returncode == 2 and b"error: <stdin>: cannot read: not a valid gzip stream" in proc.stderr


def test_absurd_journal_time_stamp_skips_that_record_only(tmp_path: Path) -> None:
    # As found: one record with an absurd __REALTIME_TIMESTAMP aborted the whole run.
    good = {"MESSAGE": UNDER, "__REALTIME_TIMESTAMP": "1764162000000000"}
    lines = [good, dict(good, __REALTIME_TIMESTAMP="99999999999999999999999"),
             dict(good, __REALTIME_TIMESTAMP=1e400), dict(good, MESSAGE=OVER)]
    log = tmp_path / "journal.json"
    log.write_text("".join(json.dumps(x).replace("Infinity", "1e400") + "\n" for x in lines))
    proc = _run(["conntrack", "logs", "--events", str(log)])
    assert proc.returncode == 1, proc.stderr
    *records, doc = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 3, 4]  # 1e400 is no integer: kept without a time
    assert records[1]["time"] is None
    assert doc["lines"]["skipped"]["bad_time"] == 1 and doc["lines"]["conntrack"] == 3
    assert b"1 journal record(s) skipped: __REALTIME_TIMESTAMP is not a date" in proc.stderr


def test_flow_summaries_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-flow summaries were the one thing still growing with the log (one per distinct flow).
    monkeypatch.setattr(kernel_log, "MAX_FLOWS", 3)
    lines = [f"[ {i}.0] " + OVER.replace("SPT=40536", f"SPT={1000 + i}") for i in range(5)]
    report = parse_kernel_log(("\n".join(lines) + "\n").encode(), "x")
    table = kernel_log.FlowTable()
    for rec in report.records:
        table.add(rec)
    assert len(table.summaries()) == 3 and table.untracked == 2 and table.verdicts["INVALID"] == 5


def test_cli_names_the_flow_cap(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    n = kernel_log.MAX_FLOWS + 20
    with open(log, "w") as fh:
        for i in range(n):
            fh.write(f"[ 1.0] " + OVER.replace("SRC=10.232.2.2", f"SRC=10.{i >> 16}.{(i >> 8) & 255}.{i & 255}") + "\n")
    proc = _run(["conntrack", "logs", "--format", "json", str(log)])
    assert proc.returncode == 1, proc.stderr[-500:]
    doc = json.loads(proc.stdout)
    assert len(doc["flows"]) == kernel_log.MAX_FLOWS and doc["flows_untracked_records"] == 20
    assert doc["counts"]["INVALID"] == n
    assert b"20 records of later flows are counted but not listed per flow" in proc.stderr
