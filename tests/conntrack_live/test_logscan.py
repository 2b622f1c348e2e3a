"""The compiled scanner of `conntrack logs` (sysctl_doctor.conntrack._logscan) against the Python paths.

It is only a speed-up: on any log, `summarise_kernel_log_stream` with it must give exactly what the
reference reader gives (every record fed to `FlowTable.add`) and what the pure-Python summary path
gives — line counts, verdicts, reasons, flows with first/last line and time, orders included — and the
CLI must print the same bytes (text, --format json, --events) with and without it. The logs here mix
well-formed lines of every source (dmesg, syslog, journal short, ISO, kmsg, journal JSON) with what the
scanner must hand back: truncated and over-long lines, CR/LF, IPv6, UDP/ICMP, journal JSON escapes and
byte arrays, NUL and other control bytes, non-ASCII, two loggers on a line, wrapped records; read in
pieces that end at every offset near a line's end."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysctl_doctor.compiled import PURE_PYTHON_ENV, load_accelerator
from sysctl_doctor.conntrack import kernel_log
from sysctl_doctor.conntrack.kernel_log import FlowTable, KernelLogReport, iter_kernel_log_stream

from .test_kernel_log_fast import LOGGERS, MESSAGES, PREFIXES, TAIL, V6
from .test_kernel_log_summary import ODD, ShortReads, _corpus, _journal_corpus, _view

YEAR = 2025
SEED = "/work/shared/seed/incident-writeup.txt"
MODULE = "sysctl_doctor.conntrack._logscan"


scanner_module = load_accelerator(MODULE)
needs_scanner = pytest.mark.skipif(scanner_module is None, reason="the compiled scanner is not built")


def _reference(data: bytes):  # type: ignore[no-untyped-def]
    report, table = KernelLogReport("x"), FlowTable()
    for rec in iter_kernel_log_stream(io.BytesIO(data), report, year=YEAR):
        table.add(rec)
    return _view(report, table)


def _summarised(data: bytes, chunk=None, keep: int = 0, pure: bool = False):  # type: ignore[no-untyped-def]
    report, table = KernelLogReport("x"), FlowTable()
    stream = io.BytesIO(data) if chunk is None else ShortReads(data, chunk)
    old = os.environ.get(PURE_PYTHON_ENV)
    os.environ[PURE_PYTHON_ENV] = "1" if pure else ""
    try:
        kept = kernel_log.summarise_kernel_log_stream(stream, report, table, year=YEAR, keep=keep)
    finally:
        if old is None:
            del os.environ[PURE_PYTHON_ENV]
        else:
            os.environ[PURE_PYTHON_ENV] = old
    return _view(report, table), [(r.line, r.flow, r.reason.code, r.time) for r in kept]


# --- lines -------------------------------------------------------------------------------------

ADDRS = ["10.232.2.1", "10.232.2.2", "192.168.0.7", "fd32::1", "fd32::2", "2001:db8::dead:beef"]
STAMPS = ["[  668.487344] ", "Nov 26 13:00:01 node1 kernel: ", "Nov  6 03:04:05 ip-10-0-0-1 kernel: [ 12.5] ",
          "2025-11-26T13:00:01.123456+01:00 node1 kernel: ", "4,1234,668487344,-;", "kernel: ", "", "  [  1.5]\t",
          "Nov 26 13:00:01 node1 kernel: [UFW] "]


def _tail(rng: random.Random) -> str:
    src, dst = rng.choice(ADDRS), rng.choice(ADDRS)
    spt, dpt = rng.choice((40536, 443, 59596)), rng.choice((40536, 443, 59596))
    mac = rng.choice(("MAC=4e:2f:10:e1:97:62:8e:ff:6d:c4:ef:5b:08:00 ", "", "MAC= "))
    if ":" in src or rng.random() < 0.2:
        ip = f"LEN=1294 TC=0 HOPLIMIT=64 FLOWLBL={rng.randrange(1 << 20)} "
    else:
        ip = f"LEN=1274 TOS=0x00 PREC=0x00 TTL=61 ID={rng.randrange(65536)} " + rng.choice(("DF ", "", "CE DF MF "))
    flags = rng.choice(("ACK PSH ", "RST ", "", "SYN ACK "))
    end = rng.choice(("URGP=0 ", "URGP=0", "URGP=0 OPT (0101080A084C76F3)", "URGP=0 \r"))
    return (f"IN={rng.choice(('to-srv', '', 'eth0'))} OUT={rng.choice(('', 'eth1'))} {mac}SRC={src} DST={dst} {ip}"
            f"PROTO=TCP SPT={spt} DPT={dpt} SEQ={rng.randrange(1 << 32)} ACK={rng.randrange(1 << 32)} "
            f"WINDOW=509 RES=0x00 {flags}{end}")


def _message(rng: random.Random) -> str:
    return rng.choice(MESSAGES).replace("1220495536", str(rng.randrange(1 << 32)))


def _text_line(rng: random.Random) -> str:
    return f"{rng.choice(STAMPS)}{rng.choice(LOGGERS[:3])}{_message(rng)} {_tail(rng)}"


def _journal_line(rng: random.Random, i: int) -> str:
    entry = {"__CURSOR": f"s=1;i={i:x}", "__REALTIME_TIMESTAMP": str(1764158401000000 + i * 1000),
             "_TRANSPORT": "kernel", "MESSAGE": f"{rng.choice(LOGGERS[:3])}{_message(rng)} {_tail(rng)}".rstrip("\r"),
             "_HOSTNAME": "node1"}
    separators = rng.choice(((",", ":"), (", ", ": "), (", ", " : ")))
    return json.dumps(entry, separators=separators)


# What a line may become on its way into a log: the scanner must hand each of these back unless it
# reads it exactly as the reference does.
NOISE = ["\x00", "\t", "\r", '"', "\\", "\x1c", "\x0b", "\x0c", "é", "\x7f", " ", "I", "=", "0", "nf_ct_", "{", "[",
         "IN=", "URGP=", "SRC=", "\u2028", "\\u005f"]


def _mutated(rng: random.Random, line: str) -> str:
    pick = rng.random()
    if pick < 0.3:
        return line[: rng.randrange(len(line) + 1)]  # truncated
    if pick < 0.6:
        at = rng.randrange(len(line) + 1)
        return line[:at] + rng.choice(NOISE) + line[at:]
    if pick < 0.7:
        at = rng.randrange(len(line))
        return line[:at] + line[at + 1:]
    if pick < 0.8:
        return line.replace("PROTO=TCP", rng.choice(("PROTO=UDP", "PROTO=ICMP", "PROTO=TCP6")))
    if pick < 0.9:
        return line.replace(" ", rng.choice(("  ", "\t")), 1 + rng.randrange(3))
    return line + " nf_ct_proto_6: x"


def _log(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    seed_lines = open(SEED, encoding="utf-8").read().splitlines() if os.path.exists(SEED) else []
    corpus = _corpus(seed, 200) + _journal_corpus(seed, 200)
    lines: List[str] = []
    for i in range(n):
        pick = rng.random()
        if pick < 0.45:
            line = _text_line(rng)
        elif pick < 0.6:
            line = _journal_line(rng, i)
        elif pick < 0.7:
            line = rng.choice(corpus)
        elif pick < 0.75:
            line = rng.choice(ODD)
        elif pick < 0.8 and seed_lines:
            at = rng.randrange(len(seed_lines))
            lines.extend(seed_lines[at:at + 4])  # wrapped records of the write-up
            continue
        elif pick < 0.85:
            line = rng.choice(("eth0: renamed from veth1", "", "\r", "x" * rng.randrange(2000), "random prose"))
        else:
            line = _mutated(rng, rng.choice((_text_line(rng), _journal_line(rng, i))))
        lines.append(line)
    end = rng.choice(("\n", "", "\r\n"))
    return ("\n".join(lines) + end).encode("utf-8", "surrogatepass")


# --- agreement ---------------------------------------------------------------------------------

@needs_scanner
@pytest.mark.parametrize("seed", range(12))
def test_compiled_summary_equals_the_reference_and_the_python_summary(seed: int) -> None:
    data = _log(seed, 1500)
    expected = _reference(data)
    python = _summarised(data, pure=True)
    assert python[0] == expected
    for chunk in (None, 1 << 12, 997, 64 + seed):
        assert _summarised(data, chunk=chunk) == python, chunk
    kept = _summarised(data, keep=30, chunk=4096)  # the text view: the first records one by one
    assert kept == _summarised(data, keep=30, pure=True)


@needs_scanner
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1 << 30), n=st.integers(0, 60), chunk=st.integers(1, 700),
       max_line=st.sampled_from([kernel_log.MAX_LINE, 300, 120]))
def test_compiled_summary_equals_the_reference_on_generated_logs(seed: int, n: int, chunk: int, max_line: int) -> None:
    data = _log(seed, n)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernel_log, "MAX_LINE", max_line)  # over-long lines (cut and counted) at small sizes
        mp.setattr(kernel_log, "HOLD_BACK", 2048)
        expected = _reference(data)
        assert _summarised(data, chunk=chunk)[0] == expected
        assert _summarised(data)[0] == expected


@needs_scanner
@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(
    st.sampled_from(ODD + [TAIL, V6] + [f"{p}nf_ct_proto_6: {MESSAGES[0]} {TAIL}" for p in PREFIXES]),
    st.text(alphabet=st.sampled_from(list("nf_ct_proto6: INSRCDT=URGP{}\"\\[]0123456789 .\t\r\x00é")), max_size=80),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
), max_size=30), end=st.sampled_from(["", "\n"]))
def test_compiled_summary_equals_the_reference_on_hostile_lines(lines: List[str], end: str) -> None:
    data = ("\n".join(lines) + end).encode("utf-8", "surrogatepass")
    expected = _reference(data)
    for chunk in (None, 5, 61):
        assert _summarised(data, chunk=chunk)[0] == expected


def _journal_log(seed: int, n: int) -> bytes:
    """Mostly journal JSON lines: well formed, mutated, with more fields, other messages, long lines."""
    rng = random.Random(seed)
    lines: List[str] = []
    for i in range(n):
        line = _journal_line(rng, i)
        pick = rng.random()
        if pick < 0.3:
            line = _mutated(rng, line)
        elif pick < 0.4:  # many fields (past the one-pass quote table: the general path reads it)
            extra = ",".join(f'"F{k}":"{"v" * rng.randrange(40)}"' for k in range(rng.randrange(60)))
            line = line[:-1] + "," + extra + "}"
        elif pick < 0.5:
            line = json.dumps({"__REALTIME_TIMESTAMP": "1764158401000000", "MESSAGE": rng.choice(
                ("eth0: renamed from veth1", "x" * rng.randrange(200))), "_TRANSPORT": "kernel"})
        elif pick < 0.55:
            line = '{"MESSAGE":[110,102,95,99,116], "__REALTIME_TIMESTAMP":"1"}'
        lines.append(line)
    return ("\n".join(lines) + rng.choice(("\n", "", "\r\n"))).encode("utf-8", "surrogatepass")


@needs_scanner
@pytest.mark.parametrize("seed", range(8))
def test_every_line_pass_of_this_cpu_reads_as_the_reference(seed: int) -> None:
    """The one-pass reading of journal JSON lines and of text lines from their logger on (AVX2 when the
    CPU has it, else SSE2) gives the reference's summary whichever pass is used, on buffers ending anywhere."""
    data = _journal_log(seed, 1000) if seed % 2 else _log(seed, 1000)
    expected = _reference(data)
    default = scanner_module.simd()  # type: ignore[union-attr]
    passes = ["sse2"]
    try:
        scanner_module.simd("avx2")  # type: ignore[union-attr]
        passes.append("avx2")
    except ValueError:
        pass
    try:
        for name in passes:
            assert scanner_module.simd(name) == name  # type: ignore[union-attr]
            for chunk in (None, 4096, 333, 40 + seed):
                assert _summarised(data, chunk=chunk)[0] == expected, (name, chunk)
    finally:
        scanner_module.simd(default)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        scanner_module.simd("neon")  # type: ignore[union-attr]


@needs_scanner
@pytest.mark.parametrize("conntrack", [False, True])
def test_the_search_for_loggers_looks_at_each_byte_once(conntrack: bool) -> None:
    """A journal where lines read in one pass alternate with lines that are not (an escaped quote, raw UTF-8):
    the logger search goes over the buffer once, not once a line (it was quadratic: 19 ms for 1 MB)."""
    rng = random.Random(4)
    lines = []
    for i in range(2000):
        message = ('said \\"hi\\"' if i % 3 == 1 else "said h\u00e9" if i % 3 == 2 else "said hi") + " x" * 100
        if conntrack and i % 50 == 0:
            message = f"{rng.choice(LOGGERS[:3])}{_message(rng)} {_tail(rng)}".rstrip("\r")
        lines.append(json.dumps({"__REALTIME_TIMESTAMP": str(1764158401000000 + i), "MESSAGE": message,
                                 "_HOSTNAME": "node1"}, ensure_ascii=i % 3 != 2))
    data = ("\n".join(lines) + "\n").encode()
    for name in ("sse2", "avx2"):
        default = scanner_module.simd()  # type: ignore[union-attr]
        try:
            scanner_module.simd(name)  # type: ignore[union-attr]
        except ValueError:
            continue
        try:
            scanner = scanner_module.Scanner()  # type: ignore[union-attr]
            at = 0
            while at < len(data):
                status, stop, _, _, odd_end, _ = scanner.scan(data, at, len(data), 1, 65536)
                at = odd_end if status == 1 else stop
                if status == 2:
                    scanner.flush()
            assert scanner.searched <= 2 * len(data), (name, scanner.searched, len(data))
        finally:
            scanner_module.simd(default)  # type: ignore[union-attr]
    assert _summarised(data)[0] == _reference(data)


@needs_scanner
@pytest.mark.parametrize("seed", range(6))
def test_a_regular_file_and_small_buffers_give_the_same_summary(tmp_path, seed: int) -> None:  # type: ignore[no-untyped-def]
    """A regular file read through small buffers (MAX_LINE 300): buffer ends inside lines, lines longer than a
    buffer cut."""
    rng = random.Random(seed)
    lines = _log(seed, 1200).split(b"\n")
    for at in sorted(rng.sample(range(len(lines)), 3)):
        lines[at] = b"y" * rng.choice((400, 12000, 30000))  # over MAX_LINE; the last two over a buffer
    data = b"\n".join(lines)
    path = tmp_path / "kern.log"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernel_log, "MAX_LINE", 300)
        mp.setattr(kernel_log, "HOLD_BACK", 2048)
        mp.setattr(kernel_log, "ACCEL_BUFFER", 1)
        expected = _reference(data)
        for keep in (0, 40):
            report, table = KernelLogReport("x"), FlowTable()
            with kernel_log.open_log_file(str(path)) as log:
                assert log.regular_size() is not None
                kernel_log.summarise_kernel_log_stream(log, report, table, year=YEAR, keep=keep)
            assert _view(report, table) == expected, keep
            assert _summarised(data, keep=keep)[0] == expected, keep


@needs_scanner
def test_reads_ending_at_every_offset_near_a_line_end() -> None:
    rng = random.Random(1)
    lines = [_text_line(rng) for _ in range(6)] + [_journal_line(rng, 1), ODD[20], ODD[21], ODD[22],
                                                   _text_line(rng), "eth0: up", _journal_line(rng, 2)]
    data = ("\n".join(lines) + "\n").encode()
    expected = _reference(data)
    first_end = data.index(b"\n") + 1
    for chunk in range(max(1, first_end - 40), first_end + 40):
        assert _summarised(data, chunk=chunk)[0] == expected, chunk


@needs_scanner
def test_what_the_scanner_takes_and_hands_back() -> None:
    """Well-formed lines are counted in C; each odd line comes back as a region that ends at the next
    line it reads (so a wrapped record keeps its continuation lines)."""
    scanner = scanner_module.Scanner()  # type: ignore[union-attr]
    good = f"[ 1.0] nf_ct_proto_6: {MESSAGES[0]} {TAIL}\n".encode()
    wrapped = f"[ 2.0] nf_ct_proto_6: {MESSAGES[0]} IN=to-srv OUT=\n    MAC=4e SRC=10.0.0.9\n".encode()
    data = good + good + wrapped + b"prose\n" + good
    status, stop, lines, records, odd_end, odd_lines = scanner.scan(data, 0, len(data), 1, 65536)
    assert (status, stop, lines, records) == (1, 2 * len(good), 2, 2)
    assert (odd_end, odd_lines) == (len(data) - len(good), 3)
    status, stop, lines, records, odd_end, _ = scanner.scan(data, odd_end, len(data), 6, 65536)
    assert (status, stop, lines, records) == (0, len(data), 1, 1)
    journal, counts, first, last, samples = scanner.flush()
    assert journal is False and list(counts.values()) == [3]
    assert list(first.values()) == [(1, b"[ 1.0] ")] and list(last.values()) == [(6, b"[ 1.0] ")]
    assert scanner.flush() is None and scanner.pending == 0
    json_line = _journal_line(random.Random(3), 5).encode() + b"\n"
    status, stop, *_ = scanner.scan(good + json_line, 0, len(good + json_line), 1, 65536)
    assert (status, stop) == (2, len(good))  # journal and text stamps do not share a summary: flush first
    with pytest.raises(ValueError):
        scanner.scan(good, 0, len(good) + 1, 1, 65536)


# --- the command line ------------------------------------------------------------------------------

@needs_scanner
@pytest.mark.parametrize("args", [[], ["--format", "json"], ["--events"], ["--limit", "0"], ["--limit", "3"]])
def test_cli_prints_the_same_bytes_with_and_without_the_scanner(tmp_path, args) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "kern.log"
    path.write_bytes(_log(5, 3000) + _log(6, 3000))
    outs = []
    for pure in ("1", ""):
        env = {**os.environ, PURE_PYTHON_ENV: pure}
        proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), *args],
                              capture_output=True, env=env, timeout=300)
        outs.append((proc.returncode, proc.stdout, proc.stderr))
    assert outs[0] == outs[1]
    assert outs[0][0] in (0, 1) and outs[0][1]


@needs_scanner
def test_past_the_scanners_caps_its_counts_are_taken_and_it_goes_on() -> None:
    """More directed flows (65,536) and wordings (4,096) than the scanner holds: it asks Python to take its
    counts and goes on; the summary is still the reference's (MAX_FLOWS and the flow order included)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = []
    for i in range(70000):
        tail = TAIL.replace("SPT=40536", f"SPT={i % 60000 + 1}").replace("10.232.2.2", f"10.9.{i // 60000}.2")
        lines.append(f"[ {i}.0] nf_ct_proto_6: {MESSAGES[i % 3]} {tail}")
    for i in range(4200):
        word = "".join(letters[(i // 26 ** j) % 26] for j in range(3))
        lines.append(f"[ 9.0] nf_ct_proto_6: strange {word} message {TAIL}")
    data = ("\n".join(lines) + "\n").encode()
    assert _summarised(data)[0] == _reference(data)


# --- two threads over a regular file -------------------------------------------------------------

def _file_summary(path, keep: int = 0):  # type: ignore[no-untyped-def]
    report, table = KernelLogReport("x"), FlowTable()
    with kernel_log.open_log_file(str(path)) as log:
        assert log.regular_size() is not None
        kept = kernel_log.summarise_kernel_log_stream(log, report, table, year=YEAR, keep=keep)
    return _view(report, table), [(r.line, r.flow, r.reason.code, r.time) for r in kept]


class _AheadSpy:
    """Records what each scan-ahead did: where it started and stopped, and whether its counts were used."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.runs: List[tuple] = []
        join = kernel_log._ScanAhead.join

        def spy(ahead):  # type: ignore[no-untyped-def]
            done = join(ahead)
            self.runs.append((done.start_at, done.stopped_at, done.lines, len(done.flushes)))
            return done

        mp.setattr(kernel_log._ScanAhead, "join", spy)


@needs_scanner
@pytest.mark.parametrize("seed", range(8))
def test_two_threads_over_a_log_file_give_the_one_thread_summary(tmp_path, seed: int) -> None:  # type: ignore[no-untyped-def]
    """A second scanner from the log's middle, in a thread: the summary is the reference's and the one-thread
    one, whether its counts are used or dropped (records still kept for the text view), with odd lines
    anywhere (where it stops and the main thread reads on), small buffers and the text view's records."""
    rng = random.Random(seed)
    clean = [f"{rng.choice(PREFIXES)}nf_ct_proto_6: {rng.choice(MESSAGES)} {TAIL}" for _ in range(400)]
    mixed = _log(seed, 1500).split(b"\n")
    data = b"\n".join(line.encode() for line in clean) + b"\n" + b"\n".join(mixed) if seed % 2 else \
        b"\n".join(mixed + [line.encode() for line in clean]) + b"\n"
    path = tmp_path / "kern.log"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        mp.setattr(kernel_log, "SCAN_AHEAD_MIN", 0)
        mp.setattr(kernel_log, "HOLD_BACK", 2048)
        if seed % 4 < 2:  # small buffers (at least 4 lines' room)
            mp.setattr(kernel_log, "MAX_LINE", 300)
            mp.setattr(kernel_log, "ACCEL_BUFFER", 1)
        spy = _AheadSpy(mp)
        expected = _reference(data)
        for keep in (0, 40):
            got = _file_summary(path, keep)
            assert got[0] == expected, keep
            mp.setenv("SYSCTL_DOCTOR_WORKERS", "1")
            assert got == _file_summary(path, keep), keep
            mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
    assert len(spy.runs) == 2 and all(start > 0 for start, _, _, _ in spy.runs)


@needs_scanner
def test_the_second_scanners_counts_are_used_on_a_clean_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a log of conntrack lines only, the thread reads the whole second half and the main thread takes its
    counts (past the flow cap too: it flushes as it goes); the flows, their first/last lines and the order
    are the reference's."""
    lines = []
    for i in range(140000):  # the second half alone past the scanner's 65,536 directed flows
        tail = TAIL.replace("SPT=40536", f"SPT={i % 60000 + 1}").replace("10.232.2.2", f"10.9.{i // 60000}.2")
        lines.append(f"[ {i}.0] nf_ct_proto_6: {MESSAGES[i % 3]} {tail}")
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "kern.log"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        mp.setattr(kernel_log, "SCAN_AHEAD_MIN", 0)
        spy = _AheadSpy(mp)
        assert _file_summary(path)[0] == _reference(data)
    [(start, stopped, lines_read, flushes)] = spy.runs
    assert stopped == len(data) and lines_read == data[start:].count(b"\n") and flushes >= 2


@needs_scanner
def test_a_log_under_the_threshold_or_one_cpu_is_read_by_one_thread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "kern.log"
    path.write_bytes((f"[ 1.0] nf_ct_proto_6: {MESSAGES[0]} {TAIL}\n" * 100).encode())
    with pytest.MonkeyPatch.context() as mp:
        spy = _AheadSpy(mp)
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        _file_summary(path)  # 6 KB, under SCAN_AHEAD_MIN
        mp.setattr(kernel_log, "SCAN_AHEAD_MIN", 0)
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "1")
        _file_summary(path)
        assert spy.runs == []
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        _file_summary(path)
        assert len(spy.runs) == 1


@needs_scanner
def test_a_wrapped_record_at_a_buffers_end_keeps_its_continuation_after_an_odd_region(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An odd line (UDP) at a buffer's start makes a region the scanner hands back up to its next record; a
    wrapped record whose continuation starts just past the buffer's last newline must be held back with it
    (it was read without its continuation: one continuation line counted as "other"). Found in review."""
    cap = kernel_log.ACCEL_BUFFER
    odd = (b"[ 1.0] nf_ct_proto_17: bad checksum IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=40 TOS=0x00 PREC=0x00 "
           b"TTL=64 ID=1 PROTO=UDP SPT=1 DPT=2 LEN=20\n")
    wrapped = (b"[ 5.0] nf_ct_proto_6: SEQ is over upper bound 5 IN=to-srv OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=40 "
               b"TOS=0x00 PREC=0x00 TTL=61 ID=1 DF PROTO=TCP SPT=1 DPT=2 SEQ=1 ACK=2\n")
    cont = b"WINDOW=509 RES=0x00 ACK PSH URGP=0\n"
    plain = b"[ 2.0] usb 1-1: new high-speed USB device number 2 using xhci_hcd\n"
    body = odd + plain * ((cap - len(odd) - len(wrapped) - 200) // len(plain))
    gap = cap - 10 - len(body) - len(wrapped)  # the continuation starts 10 bytes before the buffer's end
    body += b"x" * (gap - 1) + b"\n" + wrapped + cont + plain * 10
    assert body.rfind(b"\n", 0, cap) + 1 == body.index(cont)
    expected = _reference(body)
    assert expected[0]["continuation"] == 1  # the reference joins the wrapped record
    assert _summarised(body)[0] == expected
    path = tmp_path / "kern.log"
    path.write_bytes(body)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "1")
        assert _file_summary(path)[0] == expected


@needs_scanner
def test_ctrl_c_while_waiting_for_the_second_thread_stops_it_before_the_file_closes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rec = f"[ 1.0] nf_ct_proto_6: {MESSAGES[0]} {TAIL}\n".encode()
    path = tmp_path / "kern.log"
    path.write_bytes(b"x" * 99 + b"\n" * 1 + rec * 40000)
    seen = {}

    def interrupted_join(ahead):  # type: ignore[no-untyped-def]
        seen["ahead"] = ahead
        raise KeyboardInterrupt  # as if Ctrl-C arrived while waiting

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        mp.setattr(kernel_log, "SCAN_AHEAD_MIN", 0)
        mp.setattr(kernel_log._ScanAhead, "join", interrupted_join)
        with pytest.raises(KeyboardInterrupt):  # the thread stopped and joined, not left reading a closed file
            _file_summary(path)
    assert not seen["ahead"].thread.is_alive()


@needs_scanner
def test_a_log_truncated_while_it_is_read_is_read_as_far_as_it_goes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """logrotate's copytruncate may cut kern.log while it is read: the size taken at the start is then too large.
    Read with pread, the halves just read short (a mapping would have died of SIGBUS): the summary is the
    reference's of what the file holds."""
    lines = [f"[ {i}.0] nf_ct_proto_6: {MESSAGES[i % 3]} {TAIL}" for i in range(6000)]
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "kern.log"
    path.write_bytes(data)
    old_size = len(data)
    cut = data.index(b"\n", len(data) * 3 // 4) + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYSCTL_DOCTOR_WORKERS", "2")
        mp.setattr(kernel_log, "SCAN_AHEAD_MIN", 0)
        mp.setattr(kernel_log.LogInput, "regular_size", lambda self: old_size)  # stat'ed before the cut
        spy = _AheadSpy(mp)
        assert _file_summary(path)[0] == _reference(data[:cut])
    [(start, stopped, _, _)] = spy.runs
    assert start < cut and stopped == cut
