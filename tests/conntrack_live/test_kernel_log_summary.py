"""The summary path of `conntrack logs` (whole blocks read with one `findall`, counts aggregated without
Python per line; what `--format json` and the text view's counts use) must give exactly what the reference
reader gives when every record is fed to `FlowTable.add`: the same lines counts, verdicts, reasons and flows
(first/last line and time, in the same order). Lines vary every way the kernel and log sources do — the
fast-path test's matrix (6.1+ and pre-6.1 wordings, dmesg / syslog / journal short / ISO / kmsg prefixes,
IPv6, no MAC, OPT, CE/DF/MF, CRLF, odd whitespace, control bytes, non-ASCII, UDP, SRC-less, truncated) plus
lines that name nf_ct_ without being records, journal JSON, wrapped records and very long lines — shuffled
into blocks of every size."""

from __future__ import annotations

import io
import json
import random

import pytest

from sysctl_doctor.conntrack import kernel_log
from sysctl_doctor.conntrack.kernel_log import (
    FlowTable,
    KernelLogReport,
    iter_kernel_log_stream,
    summarise_block,
    summarise_kernel_log_stream,
)

from .test_kernel_log_fast import LOGGERS, MESSAGES, PREFIXES, TAIL, TAILS, V6, _varied_lines

SEED = "/work/shared/seed/incident-writeup.txt"
YEAR = 2025

ODD = [
    "[  12.000000] nf_conntrack: default automatic helper assignment has been turned off for security reasons",
    "[  12.000001] modprobe: loaded nf_ct_proto_gre, nf_ct_ftp",
    "Nov 26 13:00:01 node1 kernel: xt_CT: nf_ct_helper lookup failed",
    "Nov 26 13:00:01 node1 kernel: [UFW BLOCK] IN=eth0 OUT= MAC=aa SRC=1.2.3.4 DST=5.6.7.8 LEN=60 TOS=0x00 PREC=0x00 "
    "TTL=50 ID=1 DF PROTO=TCP SPT=1 DPT=22 WINDOW=1 RES=0x00 SYN URGP=0",
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) " + TAIL + " nf_ct_proto_6: x",
    "[ 1.0] xnf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) " + TAIL,
    "[ 1.0] nf_ct_proto_6:  SEQ is over upper bound 1 (over the window of the receiver) " + TAIL,
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (fooIN=bar) " + TAIL,
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (over the window) IN=a " + TAIL,
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1\t(over the window of the receiver) " + TAIL,
    "[ 1.0] nf_ct_proto_6: 5 bytes more than expected " + TAIL,
    "[ 1.0] nf_ct_proto_6: invalid rst " + TAIL.replace("DPT=59596 SEQ=", "DPT=59596 OPT (0101)SEQ="),
    "[ 1.0] nf_ct_proto_6: invalid rst " + TAIL.replace("DPT=59596 SEQ=", "DPT=59596 X OPT (0101)SEQ="),
    "[ 1.0] nf_ct_proto_6: invalid rst " + TAIL.replace("ACK PSH URGP=0", "URGP=0 OPT (ff)"),
    "[ 1.0] nf_ct_proto_6:  bytes more than expected " + TAIL,
    "[ 1.0] nf_ct_proto_6: packet (index 12345678901234567890) in dir 1 invalid, state SYN_SENT " + TAIL,
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) " + V6.replace("fd32::2", "fd32::2%eth0"),
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) "
    + TAIL.replace("ACK PSH URGP=0", "ACK PSH URGP=0 " + "A" * 5000),
    "{\"MESSAGE\": \"nf_ct_proto_6: invalid rst " + TAIL + "\", \"__REALTIME_TIMESTAMP\": \"1764158401000000\"}",
    "[ 1.0] nf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) IN=to-srv OUT=",
    "    MAC=4e SRC=10.0.0.9 DST=10.0.0.1 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP",
    "    SPT=1 DPT=2 SEQ=3 ACK=4 WINDOW=5 RES=0x00 ACK URGP=0",
    "",
    "\r",
    "random prose line",
]


@pytest.fixture(autouse=True, params=["python", "compiled"])
def summary_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both summary paths: the pure-Python one (the reference for the compiled
    one) and the compiled scanner (sysctl_doctor.conntrack._logscan), when it is built."""
    if request.param == "python":
        monkeypatch.setenv("SYSCTL_DOCTOR_PURE_PYTHON", "1")
    elif kernel_log._accelerator() is None:
        pytest.skip("the compiled scanner is not built (tests/conntrack_live/test_logscan.py says why)")
    return request.param


class ShortReads(io.RawIOBase):
    """`data` handed out at most `chunk` bytes per read: buffer and block ends fall inside lines."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.pos = data, chunk, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(self.chunk, len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


class CountingScanner:
    """The compiled scanner, counting the records it took itself."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.real, self.records = real, 0

    @property
    def pending(self) -> int:
        return self.real.pending

    def scan(self, *args):  # type: ignore[no-untyped-def]
        got = self.real.scan(*args)
        self.records += got[3]
        return got

    def flush(self):  # type: ignore[no-untyped-def]
        return self.real.flush()


def count_fast_records(monkeypatch: pytest.MonkeyPatch, path: str):  # type: ignore[no-untyped-def]
    """A function giving how many records the fast path read (Python: per block; compiled: per line)."""
    fast = [0]
    if path == "python":
        real = kernel_log.summarise_block

        def counted(block: bytes):  # type: ignore[no-untyped-def]
            summary = real(block)
            fast[0] += summary.records if summary is not None else 0
            return summary

        monkeypatch.setattr(kernel_log, "summarise_block", counted)
    else:
        make = kernel_log._accelerator

        def counting():  # type: ignore[no-untyped-def]
            scanner = CountingScanner(make())
            scanners.append(scanner)
            return scanner

        scanners: list = []
        monkeypatch.setattr(kernel_log, "_accelerator", counting)
        return lambda: sum(s.records for s in scanners)
    return lambda: fast[0]


def _reference(data: bytes, since=None):  # type: ignore[no-untyped-def]
    report, table = KernelLogReport("x"), FlowTable()
    for rec in iter_kernel_log_stream(io.BytesIO(data), report, since=since, year=YEAR):
        table.add(rec)
    return report, table


def _summary(data: bytes, keep: int = 0, workers: int = 1, since=None, chunk=None):  # type: ignore[no-untyped-def]
    report, table = KernelLogReport("x"), FlowTable()
    stream = io.BytesIO(data) if chunk is None else ShortReads(data, chunk)
    kept = summarise_kernel_log_stream(stream, report, table, since=since, year=YEAR, keep=keep,
                                       workers=workers)
    return report, table, kept


def _view(report, table) -> tuple:  # type: ignore[no-untyped-def]
    """Everything the JSON and text outputs show, orders included."""
    return (report.lines_json(), report.first_too_long, dict(table.verdicts), table.reasons_json(),
            list(table.reasons), [(f.to_json(), list(f.verdicts), list(f.reasons)) for f in table.summaries()],
            table.untracked)


def _corpus(seed: int, n: int, common: float = 0.6) -> list:
    rng = random.Random(seed)
    lines = list(_varied_lines())
    seed_text = open(SEED, encoding="utf-8").read().splitlines()
    out = []
    for _ in range(n):
        pick = rng.random()
        if pick < common:  # the common case: a handful of flows, well-formed lines, varied prefixes
            port = rng.choice((40536, 40537, 40538))
            prefix = rng.choice(PREFIXES[:6])
            msg = rng.choice(MESSAGES[:5]).replace("1220495536", str(rng.randrange(1 << 32)))
            tail = rng.choice((TAIL, V6, TAIL + "\r")).replace("SPT=40536", f"SPT={port}")
            if rng.random() < 0.5:  # the other direction of the same flow
                tail = tail.replace("SRC=10.232.2.2 DST=10.232.2.1", "SRC=10.232.2.1 DST=10.232.2.2").replace(
                    f"SPT={port} DPT=59596", f"SPT=59596 DPT={port}")
            out.append(f"{prefix}{rng.choice(LOGGERS[:3])}{msg} {tail}")
        elif pick < common + (1 - common) / 2:
            out.append(rng.choice(lines))
        elif pick < common + (1 - common) * 3 / 4:
            out.append(rng.choice(ODD))
        else:
            out.append(rng.choice(seed_text) if seed_text else "x")
    return out


@pytest.mark.parametrize("seed", range(8))
def test_summary_equals_the_reference_on_varied_lines(seed: int, monkeypatch: pytest.MonkeyPatch,
                                                      summary_path: str) -> None:
    lines = _corpus(seed, 3000, common=0.6 if seed < 4 else 0.995)
    data = ("\n".join(lines) + ("\n" if seed % 2 else "")).encode("utf-8")
    expected = _view(*_reference(data))
    fast = count_fast_records(monkeypatch, summary_path)
    for block in (512, 4096, 1 << 16, 1 << 22):  # blocks of every size: many read fast, some by the reference
        monkeypatch.setattr(kernel_log, "SUMMARY_BLOCK", block)
        report, table, _ = _summary(data)
        assert _view(report, table) == expected, block
        report, table, _ = _summary(data, chunk=block + 7)  # reads ending inside lines
        assert _view(report, table) == expected, block
    assert fast() > 1000  # the fast path did read records


def test_clean_blocks_take_the_summary_path_and_odd_ones_do_not() -> None:
    clean = "".join(f"Nov 26 13:00:0{i} node1 kernel: nf_ct_proto_6: {MESSAGES[i % 5]} {TAIL}\n" for i in range(9))
    assert summarise_block(clean.encode()) is not None
    assert summarise_block((clean + "[ 1.0] nf_ct_proto_6: " + MESSAGES[0] + " " + V6 + "\n").encode()) is not None
    for odd in ODD[:16] + [TAILS[8], "nf_ct_proto_17: x " + TAIL.replace("PROTO=TCP", "PROTO=UDP")]:
        if "nf_ct_" in odd:
            block = summarise_block((clean + odd + "\n").encode())
            if block is not None:  # read fast: then it must agree (the varied test checks), e.g. a long line
                assert block.records == 10, odd


def test_fast_lines_agree_one_by_one() -> None:
    """Each well-formed line alone: the summary and the reference agree on flow, reason, line and time."""
    for line in _varied_lines():
        data = (line + "\n").encode("utf-8")
        assert _view(*_summary(data)[:2]) == _view(*_reference(data)), line


def test_keep_returns_the_first_records_and_still_counts_all() -> None:
    lines = _corpus(3, 2000)
    data = ("\n".join(lines) + "\n").encode()
    report, table = _reference(data)
    records = list(iter_kernel_log_stream(io.BytesIO(data), KernelLogReport("x"), year=YEAR))
    got_report, got_table, kept = _summary(data, keep=50)
    assert [(r.line, r.flow, r.reason) for r in kept] == [(r.line, r.flow, r.reason) for r in records[:50]]
    assert _view(got_report, got_table) == _view(report, table)


def test_since_reads_every_block_with_the_reference() -> None:
    text = "".join(f"2025-11-26T13:00:{s:02d}+00:00 node1 kernel: nf_ct_proto_6: {MESSAGES[0]} {TAIL}\n"
                   for s in range(10))
    got = _summary(text.encode(), since=1764162005.0)
    assert _view(*got[:2]) == _view(*_reference(text.encode(), since=1764162005.0))
    assert got[0].skipped.filtered == 5


def test_two_processes_give_the_same_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_log, "SUMMARY_BLOCK", 8192)
    lines = _corpus(5, 4000)
    data = ("\n".join(lines) + "\n").encode()
    assert _view(*_summary(data, workers=2)[:2]) == _view(*_reference(data))


def test_flow_cap_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_log, "MAX_FLOWS", 3)
    lines = [f"[ {i}.0] nf_ct_proto_6: {MESSAGES[i % 3]} " + TAIL.replace("SPT=40536", f"SPT={1000 + i % 7}")
             for i in range(50)]
    data = ("\n".join(lines) + "\n").encode()
    report, table, _ = _summary(data)
    assert table.untracked and _view(report, table) == _view(*_reference(data))


def test_cli_json_is_aggregates_and_events_are_json_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    path = tmp_path / "kern.log"
    lines = _corpus(7, 1500)
    path.write_text("\n".join(lines) + "\n")
    run = [sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path)]
    doc = json.loads(subprocess.run(run + ["--format", "json"], capture_output=True, text=True, timeout=120).stdout)
    events = subprocess.run(run + ["--events"], capture_output=True, text=True, timeout=120).stdout.splitlines()
    *records, summary = map(json.loads, events)
    assert summary.pop("type") == "summary" and summary == doc and "records" not in doc
    assert len(records) == doc["lines"]["conntrack"] == sum(doc["counts"].values())
    assert len(json.dumps(doc)) < 60 * 1000  # O(flows × reasons): a few flows here, whatever the lines


def _journal_corpus(seed: int, n: int) -> list:
    """`journalctl -k -o json` lines (compact and spaced separators), mostly well-formed conntrack records of a
    few flows, with the odd ones json.loads reads differently from a naive scan: duplicate keys, escapes,
    byte-array and non-string values, time stamps out of range or after MESSAGE, CRLF, truncated lines."""
    rng = random.Random(seed)
    lines = list(_varied_lines())
    out = []
    for i in range(n):
        stamp = str(1764158401000000 + i * 1000)
        pick = rng.random()
        if pick < 0.85:
            port = rng.choice((40536, 40537))
            msg = rng.choice(MESSAGES[:5]).replace("1220495536", str(rng.randrange(1 << 32)))
            tail = rng.choice((TAIL, V6)).replace("SPT=40536", f"SPT={port}")
            entry = {"__CURSOR": f"s=1;i={i:x}", "__REALTIME_TIMESTAMP": stamp, "_TRANSPORT": "kernel",
                     "PRIORITY": "4", "MESSAGE": f"{rng.choice(LOGGERS[:3])}{msg} {tail}", "_HOSTNAME": "node1"}
        elif pick < 0.92:
            entry = {"__REALTIME_TIMESTAMP": stamp, "MESSAGE": rng.choice(lines)}
        else:
            entry = {"__REALTIME_TIMESTAMP": stamp, "MESSAGE": f"nf_ct_proto_6: {MESSAGES[0]} {TAIL}"}
        separators = ((",", ":"), (", ", ": "), (", ", " : "))[i % 3]  # journalctl now, json.dumps, older journalctl
        text = json.dumps(entry, separators=separators)
        odd = rng.random()
        if odd < 0.02:
            text = text[:-1] + ', "MESSAGE": "something else"}'  # json.loads keeps the last MESSAGE
        elif odd < 0.04:
            text = text[:-1] + ', "__REALTIME_TIMESTAMP": "99999999999999999999"}'  # last one wins, no date
        elif odd < 0.05:
            text = text.replace("SEQ is", 'SEQ \\"is')  # an escape inside MESSAGE
        elif odd < 0.06:
            text = text[:-1] + ', "X": 5}'  # a value that is not a string
        elif odd < 0.07:
            text = text[: len(text) // 2]  # truncated: not JSON
        elif odd < 0.08:
            text += "\r"
        elif odd < 0.09:
            text = json.dumps({"MESSAGE": entry["MESSAGE"], "__REALTIME_TIMESTAMP": stamp})  # stamp after MESSAGE
        elif odd < 0.10:
            text = json.dumps({"MESSAGE": list(entry["MESSAGE"].encode()), "__REALTIME_TIMESTAMP": stamp})
        elif odd < 0.11:
            text = json.dumps({"MESSAGE": "eth0: link up", "__REALTIME_TIMESTAMP": stamp})
        out.append(text)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_journal_json_summary_equals_the_reference(seed: int, monkeypatch: pytest.MonkeyPatch,
                                                   summary_path: str) -> None:
    lines = _journal_corpus(seed, 2500) if seed < 3 else [
        line for line in _journal_corpus(seed, 2500) if '"X"' not in line and "\\" not in line
        and "99999999999999999999" not in line and "something else" not in line]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    expected = _view(*_reference(data))
    fast = count_fast_records(monkeypatch, summary_path)
    for block in (700, 8192, 1 << 16, 1 << 22):
        monkeypatch.setattr(kernel_log, "SUMMARY_BLOCK", block)
        report, table, _ = _summary(data)
        assert _view(report, table) == expected, block
        report, table, _ = _summary(data, chunk=block - 3)
        assert _view(report, table) == expected, block
    assert fast() > 100  # the journal summary path did read records


def test_lines_over_the_cap_are_cut_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line over MAX_LINE (cut, counted as too long) among clean records: same counts, line numbers, times."""
    monkeypatch.setattr(kernel_log, "MAX_LINE", 4096)
    clean = [f"Nov 26 13:00:{i % 60:02d} node1 kernel: nf_ct_proto_6: {MESSAGES[i % 5]} {TAIL}" for i in range(400)]
    clean[150] = clean[150] + " " + "x" * 9000  # a conntrack line too long to read
    clean[300] = "y" * 20000  # another, no newline within a block's reach
    data = ("\n".join(clean) + "\n").encode()
    for block in (4096 * 3, 1 << 16, 1 << 20):
        monkeypatch.setattr(kernel_log, "SUMMARY_BLOCK", block)
        report, table, _ = _summary(data)
        assert _view(report, table) == _view(*_reference(data)), block
        assert report.skipped.too_long == 2 and report.first_too_long == 151


def test_events_and_prometheus_do_not_mix() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "-", "--events", "--format",
                          "prometheus"], input="", capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--events" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("control", ["\t", "\x0b", "\x0c", "\r"])
def test_journal_line_with_a_raw_control_character_is_not_a_record(control: str) -> None:
    """json.loads refuses a raw control character inside a string (journalctl escapes them), so the reference
    skips such a line; the summary path read it as a record (found by test_logscan's generated logs)."""
    entry = {"__REALTIME_TIMESTAMP": "1764158401000000", "MESSAGE": f"nf_ct_proto_6: {MESSAGES[0]} {TAIL}"}
    for where in ("ACK=", "SEQ is", "_HOSTNAME"):
        line = json.dumps({**entry, "_HOSTNAME": "node1"}).replace(where, where[:2] + control + where[2:], 1)
        data = (line + "\n").encode()
        assert summarise_block(data) is None or summarise_block(data).records == 0, where
        assert _view(*_summary(data)[:2]) == _view(*_reference(data)), where


def test_journal_time_text_is_the_reference_readers_text_for_every_stamp() -> None:
    """The summary path's time text of a __REALTIME_TIMESTAMP (the second's text worked out once, then its
    microseconds) is the reference reader's (`fromtimestamp(stamp / 1e6)`), near whole seconds, half
    microseconds and the 2**33 s bound where the float stops being exact, and past it."""
    from datetime import datetime, timezone

    rng = random.Random(33)
    bound = (1 << 33) * 1_000_000
    stamps = [0, 1, 999_999, 1_000_000, 1764158401000000, 1764158401999999, 1764158401500000, bound - 1, bound,
              bound + 1, bound + 500_000, 9999999999999999]
    stamps += [rng.randrange(bound) for _ in range(20000)] + [rng.randrange(bound, 10 ** 16) for _ in range(2000)]
    stamps += [second * 1_000_000 + micro for second in (1764158401, (1 << 33) - 1, (1 << 32) + 7)
               for micro in (0, 1, 499_999, 500_000, 500_001, 999_998, 999_999)]
    for stamp in stamps:
        expected = datetime.fromtimestamp(stamp / 1e6, timezone.utc).isoformat(timespec="microseconds")
        assert kernel_log._journal_time_text(str(stamp).encode()) == expected, stamp
