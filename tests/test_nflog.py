"""The nf_log line parser on the seed incident's lines and on real-kernel wordings."""

from __future__ import annotations

from sysctl_doctor.conntrack.nflog import parse_nflog_line

SEED = (
    "kernel: nf_ct_proto_6: SEQ is under the lower bound (already ACKed data retransmitted) "
    "IN= OUT= SRC=10.1.2.3 DST=10.4.5.6 LEN=1480 TOS=0x00 PREC=0x00 TTL=61 ID=53534 DF "
    "PROTO=TCP SPT=6379 DPT=26110 SEQ=4213094653 ACK=3402842193 WINDOW=509 RES=0x00 "
    "ACK PSH URGP=0 OPT (0101080A084C76F30D12DCAA)"
)


def test_seed_line() -> None:
    rec = parse_nflog_line(SEED)
    assert rec is not None
    assert rec.logger == "nf_ct_proto_6" and rec.protocol == 6
    assert rec.message == "SEQ is under the lower bound (already ACKed data retransmitted)"
    assert rec.fields["SRC"] == "10.1.2.3" and rec.fields["IN"] == ""
    assert rec.int_field("SEQ") == 4213094653 and rec.int_field("SPT") == 6379
    assert rec.tcp_flags == {"ACK", "PSH"} and "DF" in rec.flags
    assert rec.options == "0101080A084C76F30D12DCAA"
    assert rec.prefix == "kernel:"


def test_dmesg_invalid_rst_old_logger() -> None:
    rec = parse_nflog_line(
        "[ 1234.567890] nf_ct_tcp: invalid rst IN= OUT= SRC=10.0.0.2 DST=10.0.0.1 LEN=40 "
        "TOS=0x00 PREC=0x00 TTL=61 ID=0 DF PROTO=TCP SPT=6379 DPT=26110 SEQ=4213164625 ACK=0 "
        "WINDOW=0 RES=0x00 RST URGP=0"
    )
    assert rec is not None and rec.protocol == 6 and rec.message == "invalid rst"
    assert rec.tcp_flags == {"RST"} and rec.prefix == "[ 1234.567890]"


def test_not_a_conntrack_line() -> None:
    assert parse_nflog_line("kernel: eth0: link up") is None
    assert parse_nflog_line("") is None
