"""The fast path of `conntrack logs` (one bytes regex for flow, reason and time; the full record parsed
only when asked for) must give what the generic parser gives, line for line. The lines vary every way the
kernel and the log sources do: 6.18 and pre-6.1 wordings (`nf_ct_tcp:`), dmesg / syslog / ISO / kmsg /
journal prefixes, IPv6, no MAC, OPT, CE/DF/MF, CRLF, odd whitespace, non-ASCII, wrapped records."""

from __future__ import annotations

import json

from sysctl_doctor.conntrack.kernel_log import (
    _FAST_TCP4,
    _GROUP_TCP4,
    ConntrackLogLine,
    _line_time,
    classify,
    parse_kernel_log,
)
from sysctl_doctor.conntrack.nflog import parse_nflog_line

SEED = "/work/shared/seed/incident-writeup.txt"
YEAR = 2025
TAIL = ("IN=to-srv OUT= MAC=4e:2f:10:e1:97:62:8e:ff:6d:c4:ef:5b:08:00 SRC=10.232.2.2 DST=10.232.2.1 LEN=1274 "
        "TOS=0x00 PREC=0x00 TTL=61 ID=24301 DF PROTO=TCP SPT=40536 DPT=59596 SEQ=1221473815 ACK=3659454992 "
        "WINDOW=509 RES=0x00 ACK PSH URGP=0 ")
NO_MAC = ("IN= OUT=to-srv SRC=10.232.2.1 DST=10.232.2.2 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP "
          "SPT=59596 DPT=40536 SEQ=3659454992 ACK=0 WINDOW=0 RES=0x00 RST URGP=0 ")
V6 = ("IN=to-srv OUT= SRC=fd32::2 DST=fd32::1 LEN=1294 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=5000 "
      "DPT=40000 SEQ=1 ACK=2 WINDOW=509 RES=0x00 ACK PSH URGP=0")
MESSAGES = [
    "SEQ is over upper bound 1220495536 (over the window of the receiver)",
    "SEQ is under lower bound 97685062 (already ACKed data retransmitted)",
    "ignored ACK under lower bound 3 (possible overly delayed)",
    "ACK is over upper bound 77 (ACKed data not seen yet)",
    "1400 bytes more than expected",
    "invalid new",
    "packet (index 3) in dir 0 invalid, state SYN_SENT",
    "packet (index 3) in dir 1 ignored, state SYN_SENT",
    "SEQ is under the lower bound (already ACKed data retransmitted)",  # < 6.1
    "something this table has never seen",
    "",
    "a message with\tIN=inside it",
]
PREFIXES = ["", "[  668.487344] ", "[12345.000001]  ", "Nov 26 13:00:01 node1 kernel: ",
            "2025-11-26T13:00:01.123456+01:00 node1 kernel: ", "4,1234,668487344,-;", "kernel: ",
            "[ oops ] ", "  [  1.5]\t"]
LOGGERS = ["nf_ct_proto_6: ", "nf_ct_tcp: ", "nf_ct_proto_6:", "nf_ct_proto_17: "]
TAILS = [TAIL, NO_MAC, V6, TAIL.rstrip() + " OPT (0101080A084C76F30D12DCAA)", TAIL.replace(" DF ", " CE DF MF "),
         TAIL.replace(" ACK PSH ", " "), TAIL + "\r", TAIL.replace("SRC=10.232.2.2 ", "SRC= "),
         TAIL.replace("DST=10.232.2.1 ", "DST=10.232.2.1\tLEN=1 "), TAIL.replace("IN=to-srv", "IN=to\x1csrv"),
         TAIL.replace("IN=to-srv", "IN=tö-srv"), TAIL.replace("PROTO=TCP", "PROTO=UDP"),
         TAIL.replace(" SPT=40536 DPT=59596", " DPT=59596 SPT=40536"), TAIL.replace("SRC=10.232.2.2", "SRC=fe80::1"),
         "IN=x " + TAIL, TAIL[:120]]


def _varied_lines():  # type: ignore[no-untyped-def]
    for prefix in PREFIXES:
        for logger in LOGGERS:
            for message in MESSAGES:
                for tail in TAILS:
                    yield f"{prefix}{logger}{message} {tail}"


def test_grouping_regex_matches_exactly_the_lines_of_the_full_fast_regex() -> None:
    lines = list(_varied_lines())
    fast = 0
    for line in lines:
        raw = line.encode()
        at = raw.find(b"nf_ct_")
        full = _FAST_TCP4.match(line, line.find("nf_ct_"))
        group = _GROUP_TCP4.match(raw, at) if raw.isascii() else None
        if raw.isascii():
            assert (full is None) == (group is None), line
        if full is not None and group is not None:
            fast += 1
            got = tuple(g.decode() for g in group.group("message", "SRC", "DST", "SPT", "DPT"))
            assert got == full.group("message", "SRC", "DST", "SPT", "DPT"), line
    assert 0 < fast < len(lines)  # both paths are exercised


def test_every_record_equals_the_generic_parsers_reading_of_its_line() -> None:
    lines = list(_varied_lines())
    report = parse_kernel_log("".join(line + "\n" for line in lines).encode(), "varied", year=YEAR)
    assert report.lines_total == len(lines)
    assert report.records and report.skipped.partial  # records and SRC-less lines both occur
    for rec in report.records:
        line = lines[rec.line - 1]
        expected = parse_nflog_line(line.rstrip("\r"))
        assert expected is not None
        # flow, reason and time were computed by the fast path before the record was parsed
        when, seconds, clock = _line_time(expected.prefix, YEAR)
        generic = ConntrackLogLine(rec.line, when, seconds, clock, expected, classify(expected.message))
        assert (rec.flow, rec.reason, rec.time, rec.timestamp, rec.clock) == (
            generic.flow, generic.reason, generic.time, generic.timestamp, generic.clock), line
        assert rec.record == expected, line
        assert rec.to_json() == generic.to_json(), line
        assert rec == generic


def test_json_journal_lines_and_wrapped_records_still_take_the_generic_path() -> None:
    line = f"[ 1.0] nf_ct_proto_6: {MESSAGES[0]} {TAIL}"
    journal = json.dumps({"MESSAGE": f"nf_ct_proto_6: {MESSAGES[1]} {NO_MAC}",
                          "__REALTIME_TIMESTAMP": "1764158401000000"})
    seed = open(SEED, encoding="utf-8").read()
    text = f"{line}\n{journal}\n{seed}{line}\n"
    report = parse_kernel_log(text.encode(), "mixed", year=YEAR)
    codes = [(r.reason.code, r.reason.verdict, r.clock, r.continued) for r in report.records]
    assert codes == [("seq-over-upper-bound", "INVALID", "boot", 0), ("seq-under-lower-bound", "IGNORE", "realtime", 0),
                     ("seq-under-lower-bound", "INVALID", None, 3), ("invalid-rst", "INVALID", None, 3),
                     ("seq-over-upper-bound", "INVALID", "boot", 0)]
    assert report.records[0].to_json()["line"] == 1 and report.records[-1].line == text.count("\n")
    assert report.records[0].flow == report.records[-1].flow == "tcp 10.232.2.1:59596 <-> 10.232.2.2:40536"


def test_since_filters_fast_path_lines_like_generic_ones() -> None:
    text = "".join(f"2025-11-26T13:00:{s:02d}+00:00 node1 kernel: nf_ct_proto_6: {MESSAGES[0]} {TAIL}\n"
                   for s in range(10))
    report = parse_kernel_log(text.encode(), since=1764162005.0)  # 2025-11-26T13:00:05Z
    assert [r.time for r in report.records] == [f"2025-11-26T13:00:{s:02d}+00:00" for s in range(5, 10)]
    assert report.skipped.filtered == 5


def test_text_view_prints_ipv6_flows_as_they_are() -> None:
    """The text view is written plain when piped; `[fd32::1]` used to be swallowed as rich markup."""
    import subprocess
    import sys

    line = f"[ 10.5] nf_ct_proto_6: {MESSAGES[0]} {V6}\n"
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "-"], input=line,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "  tcp [fd32::1]:40000 <-> [fd32::2]:5000: 1 records (INVALID 1; seq-over-upper-bound 1)" in out.stdout
    assert "timeline of <stdin>" in out.stdout and "[ACK PSH]" in out.stdout
