"""`conntrack logs` over every log shape: dmesg, journalctl short and JSON, syslog (.gz), /dev/kmsg,
the seed write-up's wrapped lines, and garbage. The lines are the real kernel's (6.18, from the lab)
and the seed incident's (an older kernel)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

from sysctl_doctor.conntrack.kernel_log import classify, parse_kernel_log

SEED = "/work/shared/seed/incident-writeup.txt"
# Seen on this machine (kernel 6.18) during `sysctl-doctor lab`.
OVER = ("nf_ct_proto_6: SEQ is over upper bound 1220495536 (over the window of the receiver) IN=to-srv OUT= "
        "MAC=4e:2f:10:e1:97:62:8e:ff:6d:c4:ef:5b:08:00 SRC=10.232.2.2 DST=10.232.2.1 LEN=1274 TOS=0x00 "
        "PREC=0x00 TTL=61 ID=24301 DF PROTO=TCP SPT=40536 DPT=59596 SEQ=1221473815 ACK=3659454992 "
        "WINDOW=509 RES=0x00 ACK PSH URGP=0 ")
RST = ("nf_ct_proto_6: invalid new IN= OUT=to-srv SRC=10.232.2.1 DST=10.232.2.2 LEN=40 TOS=0x00 PREC=0x00 "
       "TTL=64 ID=0 DF PROTO=TCP SPT=59596 DPT=40536 SEQ=3659454992 ACK=0 WINDOW=0 RES=0x00 RST URGP=0 ")
UNDER = ("nf_ct_proto_6: SEQ is under lower bound 97685062 (already ACKed data retransmitted) IN=to-srv OUT= "
         "SRC=10.232.2.2 DST=10.232.2.1 LEN=1274 TOS=0x00 PREC=0x00 TTL=61 ID=24301 DF PROTO=TCP SPT=54371 "
         "DPT=53606 SEQ=97629679 ACK=2845575489 WINDOW=509 RES=0x00 ACK PSH URGP=0 ")
OTHER = "eth0: renamed from veth1234"


def _codes(report):  # type: ignore[no-untyped-def]
    return [(r.reason.code, r.reason.verdict) for r in report.records]


def test_verdicts_follow_the_kernels_wording() -> None:
    assert (classify("SEQ is under lower bound 5 (already ACKed data retransmitted)").verdict) == "IGNORE"
    assert classify("SEQ is under the lower bound (already ACKed data retransmitted)").verdict == "INVALID"
    assert classify("ignored ACK under lower bound 7 (possible overly delayed)").verdict == "IGNORE"
    assert classify("ACK is under the lower bound (possible overly delayed ACK)").verdict == "INVALID"
    assert classify("SEQ is over upper bound 9 (over the window of the receiver)").verdict == "INVALID"
    assert classify("SEQ is over the upper bound (over the window of the receiver)").verdict == "INVALID"
    assert classify("ACK is over upper bound 3 (ACKed data not seen yet)").verdict == "INVALID"
    assert classify("12 bytes more than expected").verdict == "ACCEPT"
    assert classify("invalid rst").verdict == "INVALID"
    assert classify("invalid packet ignored in state ESTABLISHED ").verdict == "IGNORE"
    assert classify("packet (index 3) in dir 1 ignored, state SYN_SENT").verdict == "IGNORE"
    # 6.x wordings of the state machine's verdicts, seen on this kernel (6.18)
    assert classify("packet (index 3) in dir 0 invalid, state SYN_SENT").code == "invalid-state"
    assert classify("packet (index 3) in dir 0 invalid, state SYN_SENT").verdict == "INVALID"
    assert classify("packet (index 3) in dir 1 ignored, state SYN_SENT").verdict == "IGNORE"
    assert classify("packet (index 2, dir 1) response for index 2 lower timeout to 300").verdict == "ACCEPT"
    assert classify("something new").code == "other"


def test_seed_writeup_wrapped_lines_are_joined() -> None:
    report = parse_kernel_log(open(SEED, "rb").read(), SEED)
    assert _codes(report) == [("seq-under-lower-bound", "INVALID"), ("invalid-rst", "INVALID")]
    first, second = report.records
    assert first.reason.wording == "<6.1" and first.continued == 3
    assert first.record.int_field("SEQ") == 4213094653 and first.record.options == "0101080A084C76F30D12DCAA"
    assert second.record.int_field("SEQ") == 4213164625 and second.record.tcp_flags == {"RST"}
    assert first.flow == second.flow
    assert report.continuation_lines == 6
    assert report.skipped.other == report.lines_total - 2 - 6
    assert len(report.flows()) == 1 and report.flows()[0].reasons == {"seq-under-lower-bound": 1, "invalid-rst": 1}


def test_dmesg_and_kmsg() -> None:
    dmesg = f"[  668.487344] {OVER}\n[  668.487400] {RST}\n[  669.000000] {OTHER}\n".encode()
    report = parse_kernel_log(dmesg)
    assert _codes(report) == [("seq-over-upper-bound", "INVALID"), ("invalid-new", "INVALID")]
    assert report.records[0].time == "668.487344" and report.records[0].clock == "boot"
    assert report.skipped.other == 1
    kmsg = f"5,348,668487344,-;{OVER}\n4,349,668487400,-;{OTHER}\n".encode()
    report = parse_kernel_log(kmsg)
    assert report.records[0].timestamp == 668.487344 and report.skipped.other == 1


def test_syslog_plain_gz_and_iso(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (f"Nov 26 13:00:01 node1 kernel: [  668.487344] {OVER}\n"
            f"Nov 26 13:00:01 node1 kernel: {RST}\n"
            f"Nov 26 13:00:02 node1 systemd[1]: Started foo.service.\n")
    path = tmp_path / "syslog.2.gz"
    path.write_bytes(gzip.compress(text.encode()))
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1  # INVALID lines found
    data = json.loads(out.stdout)
    assert data["schema"] == "sysctl-doctor/conntrack-logs/2" and "records" not in data
    assert data["counts"]["INVALID"] == 2 and data["lines"]["skipped"]["other"] == 1
    assert data["flows"][0]["records"] == 2 and data["flows"][0]["first_time"] == "Nov 26 13:00:01"
    events = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), "--events"],
                            capture_output=True, text=True, timeout=60)
    assert events.returncode == 1
    *records, summary = [json.loads(line) for line in events.stdout.splitlines()]
    assert records[0]["time"] == "Nov 26 13:00:01" and records[0]["clock"] == "realtime"
    assert [r["type"] for r in records] == ["record", "record"] and summary.pop("type") == "summary"
    assert summary == data
    iso = f"2026-11-26T13:00:01.123456+00:00 node1 kernel: {UNDER}\n".encode()
    report = parse_kernel_log(iso)
    assert _codes(report) == [("seq-under-lower-bound", "IGNORE")]
    assert report.records[0].timestamp == 1795698001.123456


def test_journal_short_and_json_and_since() -> None:
    short = f"Nov 26 13:00:01 node1 kernel: {UNDER}\n".encode()
    assert _codes(parse_kernel_log(short)) == [("seq-under-lower-bound", "IGNORE")]
    now = time.time()
    entries = [
        {"MESSAGE": OVER, "__REALTIME_TIMESTAMP": str(int((now - 7200) * 1e6)), "_TRANSPORT": "kernel"},
        {"MESSAGE": RST, "__REALTIME_TIMESTAMP": str(int((now - 60) * 1e6)), "_TRANSPORT": "kernel"},
        {"MESSAGE": list(OTHER.encode()), "__REALTIME_TIMESTAMP": str(int(now * 1e6))},
    ]
    data = "".join(json.dumps(e) + "\n" for e in entries).encode()
    report = parse_kernel_log(data, since=now - 600)
    assert _codes(report) == [("invalid-new", "INVALID")]
    assert report.skipped.filtered == 1 and report.skipped.other == 1
    assert report.records[0].clock == "realtime"


def test_garbage_partial_and_interleaved_lines_are_counted() -> None:
    data = (b"\x00\xff\xfe binary junk nf_ct_\n"
            + b"nf_ct_proto_6: SEQ is over upper bou\n"  # cut short, nothing follows
            + OTHER.encode() + b"\n"
            + f"[1.0] {OVER}\n".encode()
            + b"{not json nf_ct_proto_6: \n"
            + b"[2.0] nf_ct_proto_6: invalid rst IN= OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=40\n"  # wrapped ...
            + b"[2.1] usb 1-1: new device\n"  # ... but the next line is another message
            + b"\n")
    report = parse_kernel_log(data)
    assert _codes(report) == [("seq-over-upper-bound", "INVALID"), ("invalid-rst", "INVALID")]
    assert report.lines_total == 8
    assert report.skipped.partial == 1
    assert report.skipped.other == 5
    assert report.skipped.total + len(report.records) + report.continuation_lines == report.lines_total


def test_bad_file_is_exit_2_naming_it() -> None:
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "/nonexistent/kern.log"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "/nonexistent/kern.log" in out.stderr and "Traceback" not in out.stderr


def test_stdin_text_and_exit_0_without_invalid() -> None:
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "-"],
                         input=f"[1.0] {UNDER}\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IGNORE" in out.stdout and "seq-under-lower-bound" in out.stdout


def test_live_host_reads_journal_or_kmsg() -> None:
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "--since", "1d",
                          "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout)
    assert data["source"] in ("journalctl -k -o json", "/dev/kmsg")
    assert data["lines"]["total"] > 0


def test_fast_path_equals_the_generic_parser() -> None:
    """The one-regex path must build exactly the record parse_nflog_line builds."""
    from sysctl_doctor.conntrack.kernel_log import _parse_fast
    from sysctl_doctor.conntrack.nflog import parse_nflog_line

    lines = [OVER, RST, UNDER, f"[  668.487344] {OVER}", f"Nov 26 13:00:01 node1 kernel: {RST}",
             OVER.rstrip() + " OPT (0101080A084C76F30D12DCAA)"]
    for line in lines:
        fast = _parse_fast(line)
        assert fast is not None and fast == parse_nflog_line(line), line
        at = line.index("nf_ct_")
        assert _parse_fast(line, at) == fast
    seed = open(SEED).read().splitlines()
    assert all(_parse_fast(line) is None for line in seed)  # wrapped: the generic path's job


def test_ipv6_line_takes_the_generic_path() -> None:
    line = ("[ 10.5] nf_ct_proto_6: SEQ is over upper bound 5 (over the window of the receiver) IN=to-srv OUT= "
            "SRC=fd32::2 DST=fd32::1 LEN=1294 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=5000 DPT=40000 "
            "SEQ=1 ACK=2 WINDOW=509 RES=0x00 ACK PSH URGP=0\n")
    report = parse_kernel_log(line.encode())
    assert _codes(report) == [("seq-over-upper-bound", "INVALID")]
    assert report.records[0].flow == "tcp [fd32::1]:40000 <-> [fd32::2]:5000"


def test_streamed_cli_json_equals_the_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CLI streams records without keeping them; its JSON (summary) and --events (records, then the
    summary) must equal the library's report."""
    text = open(SEED).read() + f"[ 1.0] {OVER}\n[ 2.0] {RST}\n[ 3.0] {UNDER}\n{OTHER}\n"
    path = tmp_path / "mixed.log"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    streamed = json.loads(out.stdout)
    expected = json.loads(json.dumps(parse_kernel_log(text.encode(), str(path)).to_json()))
    records = expected.pop("records")
    assert streamed == expected
    events = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), "--format", "json",
                             "--events"], capture_output=True, text=True, timeout=60)
    assert events.returncode == 1
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert [dict(r, type="record") for r in records] == lines[:-1] and dict(expected, type="summary") == lines[-1]
    assert streamed["lines"]["total"] == (streamed["lines"]["conntrack"] + streamed["lines"]["continuation"]
                                          + streamed["lines"]["skipped"]["total"])


def test_text_limit_keeps_counting() -> None:
    text = "".join(f"[ {i}.0] {OVER}\n" for i in range(5))
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", "-", "--limit", "2"],
                         input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.count("seq-over-upper-bound:") == 2 and "3 more records" in out.stdout
    assert "5 conntrack records" in out.stdout and "INVALID 5" in out.stdout


def test_journal_json_byte_array_messages_are_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression: journald writes a non-UTF-8 MESSAGE as an array of bytes (`journalctl -o json`, compact
    separators as journalctl prints them); such conntrack records were passed over by the pre-filter."""
    now = time.time()
    odd = OVER.replace("IN=to-srv", "IN=to-s\xffrv").encode("latin-1")  # an interface name that is not UTF-8
    lines = [
        {"MESSAGE": list(odd), "__REALTIME_TIMESTAMP": str(int(now * 1e6)), "_TRANSPORT": "kernel"},
        {"MESSAGE": RST, "__REALTIME_TIMESTAMP": str(int(now * 1e6)), "_TRANSPORT": "kernel"},
        {"MESSAGE": list(OTHER.encode()), "__REALTIME_TIMESTAMP": str(int(now * 1e6))},
        {"MESSAGE": [1000, 2000], "__REALTIME_TIMESTAMP": str(int(now * 1e6))},  # not bytes: left alone
    ]
    data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in lines).encode()
    assert b"nf_ct_" not in data.split(b"\n")[0]
    report = parse_kernel_log(data)
    assert _codes(report) == [("seq-over-upper-bound", "INVALID"), ("invalid-new", "INVALID")]
    assert [r.line for r in report.records] == [1, 2]
    assert report.records[0].record.fields["IN"] == "to-s\ufffdrv"
    assert report.records[0].clock == "realtime"
    assert report.lines_total == 4 and report.skipped.other == 2

    path = tmp_path / "journal.json"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "logs", str(path), "--events"],
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    *records, summary = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2] and summary["lines"]["conntrack"] == 2
