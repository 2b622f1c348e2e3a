"""One declaration of the TCP flag bits (conntrack/tcp_flags.py); every place that used to spell them out
reads it, and what each prints is unchanged (the tables below are the spellings it replaced)."""

from __future__ import annotations

from sysctl_doctor.conntrack import kernel_log, nflog, replay, tcp_model
from sysctl_doctor.conntrack.tcp_flags import TcpFlag
from sysctl_doctor.lab import capture


def test_the_model_constants_are_the_header_bits() -> None:
    assert (tcp_model.F_FIN, tcp_model.F_SYN, tcp_model.F_RST, tcp_model.F_PSH, tcp_model.F_ACK, tcp_model.F_URG,
            tcp_model.F_ECE, tcp_model.F_CWR) == (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
    assert all(type(f) is int for f in (tcp_model.F_FIN, tcp_model.F_ACK))  # plain ints on the hot path
    assert int(TcpFlag.SYN | TcpFlag.ACK) == 0x12


def test_replay_names_flags_as_before() -> None:
    assert replay._FLAG_NAMES == ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"),
                                  (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"))
    assert replay.flag_names(0x12) == "SYN,ACK" and replay.flag_names(0) == "none"
    assert replay.flag_names(0xFF) == "SYN,ACK,FIN,RST,PSH,URG,ECE,CWR"


def test_lab_capture_names_flags_as_before() -> None:
    assert capture._FLAG_BITS == (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
                                  ("URG", 0x20))


def test_nflog_words_as_before() -> None:
    assert nflog._FLAG_WORDS == frozenset({"CE", "DF", "MF", "CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN"})
    assert nflog._TCP_FLAGS == frozenset({"CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN"})
    assert kernel_log._TCP_FLAG_WORDS == "CWR|ECE|URG|ACK|PSH|RST|SYN|FIN"
    record = nflog.parse_nflog_line("nf_ct_proto_6: invalid rst IN=a OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=40 TOS=0x00 "
                                    "PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=1 DPT=2 SEQ=3 ACK=4 WINDOW=0 "
                                    "RES=0x00 ACK RST URGP=0")
    assert record is not None and record.tcp_flags == {"ACK", "RST"} and record.flags == {"DF", "ACK", "RST"}
