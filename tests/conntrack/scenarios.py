"""Crafted TCP conversations that hit each branch of conntrack's TCP tracker.

Each scenario is a list of steps ("c" = client→server, "s" = server→client, "b" = sent by the nat box)
with exact sequence numbers, on its own client port. The netns test pushes
them through the real kernel; nothing here says what the verdicts should be —
the kernel says that, and the model must agree.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from sysctl_doctor.conntrack.frames import tcp_options
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_FIN, F_PSH, F_RST, F_SYN

Step = Tuple[str, int, int, int, int, int, bytes]

CI = 1_000_000  # client ISN
SI = 3_000_000_000  # server ISN (high: exercises 32-bit wrap-around arithmetic near 2^32)
WIN = 16384
AP = F_ACK | F_PSH


def handshake(opts_c: bytes = b"", opts_s: bytes = b"", win_c: int = WIN, win_s: int = WIN,
              ack_win_c: int = WIN) -> List[Step]:
    return [
        ("c", F_SYN, CI, 0, win_c, 0, opts_c),
        ("s", F_SYN | F_ACK, SI, CI + 1, win_s, 0, opts_s),
        ("c", F_ACK, CI + 1, SI + 1, ack_win_c, 0, b""),
    ]


def established(data: int = 1000) -> List[Step]:
    """Handshake, the server sends `data` bytes, the client ACKs them."""
    return handshake() + [
        ("s", AP, SI + 1, CI + 1, WIN, data, b""),
        ("c", F_ACK, CI + 1, SI + 1 + data, WIN, 0, b""),
    ]


D = SI + 1 + 1000  # the server's next sequence number after established()


def window_cases() -> Dict[str, List[Step]]:
    """Default sysctls (loose=1, be_liberal=0)."""
    ws = tcp_options(mss=1460, wscale=7, sack_perm=True)
    return {
        "in_window": established() + [
            ("s", AP, D, CI + 1, WIN, 1000, b""),
            ("c", AP, CI + 1, D + 1000, WIN, 300, b""),
            ("s", F_ACK, D + 1000, CI + 301, WIN, 0, b""),
        ],
        "seq_over": established() + [
            ("s", AP, D + 200_000, CI + 1, WIN, 100, b""),
            ("s", AP, D, CI + 1, WIN, 100, b""),
        ],
        "seq_under_seed": established() + [
            ("s", AP, D - 80_000, CI + 1, WIN, 1234, b""),
            ("s", AP, D, CI + 1, WIN, 1000, b""),
            ("c", F_ACK, CI + 1, D + 1000, WIN, 0, b""),
        ],
        "ack_over": established() + [
            ("c", F_ACK, CI + 1, D + 50_000, WIN, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "ack_under": established() + [
            ("c", F_ACK, CI + 1, D - 70_000, WIN, 0, b""),
        ],
        "overshoot": established() + [
            # the client's last ACK (ack=D, win=WIN) allows the server up to D + WIN
            ("s", AP, D + WIN + 10, CI + 1, WIN, 100, b""),
        ],
        "rst_below_maxack": established() + [
            ("c", F_RST, CI + 1 - 5000, 0, 0, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "rst_exact": established() + [
            ("c", F_RST | F_ACK, CI + 1, D, 0, 0, b""),
            ("s", AP, D, CI + 1, WIN, 100, b""),
        ],
        "rst_not_exact": established() + [
            ("c", F_RST, CI + 1 + 500, 0, 0, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "syn_in_established": established() + [
            ("c", F_SYN, CI + 9000, 0, WIN, 0, b""),
            ("s", F_ACK, D, CI + 1, WIN, 0, b""),
        ],
        "bad_flags": established() + [
            ("c", F_SYN | F_FIN, CI + 1, 0, WIN, 0, b""),
            ("c", F_FIN, CI + 1, 0, WIN, 0, b""),
        ],
        "window_scaling": handshake(ws, ws, win_c=WIN, win_s=WIN, ack_win_c=500) + [
            # 500 << 7 = 64000 bytes of window: data 40000 ahead is fine, 200000 is not
            ("s", AP, SI + 1 + 40_000, CI + 1, 500, 100, b""),
            ("s", AP, SI + 1 + 200_000, CI + 1, 500, 100, b""),
            ("s", AP, SI + 1, CI + 1, 500, 1000, b""),
        ],
        "sack": handshake(ws, ws) + [
            ("s", AP, SI + 1, CI + 1, WIN, 1000, b""),
            ("s", AP, SI + 2001, CI + 1, WIN, 1000, b""),
            ("c", F_ACK, CI + 1, SI + 1001, WIN, 0, tcp_options(sack_blocks=((SI + 2001, SI + 3001),))),
            ("c", F_ACK, CI + 1, SI + 1001, WIN, 0, tcp_options(sack_blocks=((SI + 2001, SI + 90_001),))),
        ],
        "fin_close": established() + [
            ("c", F_FIN | F_ACK, CI + 1, D, WIN, 0, b""),
            ("s", F_FIN | F_ACK, D, CI + 2, WIN, 0, b""),
            ("c", F_ACK, CI + 2, D + 1, WIN, 0, b""),
            ("s", AP, D + 1, CI + 2, WIN, 10, b""),
        ],
        "pickup": [
            ("c", AP, CI + 500, SI + 700, WIN, 200, b""),
            ("s", F_ACK, SI + 700, CI + 700, WIN, 0, b""),
            ("s", AP, SI + 700 + 500_000, CI + 700, WIN, 100, b""),
        ],
        # tools/testing/selftests/net/netfilter/packetdrill/conntrack_syn_challenge_ack.pkt:
        # SYN, challenge ACK of an old incarnation, RST answering it, SYN again, SYN/ACK, ACK
        "syn_challenge_ack": [
            ("c", F_SYN, 643160522, 0, 65535, 0, tcp_options(mss=1460, sack_perm=True, wscale=8)),
            ("s", F_ACK, 145824453, 643160523, 240, 0, b""),
            ("c", F_RST, 643160523, 0, 0, 0, b""),
            ("c", F_SYN, 643160522, 0, 65535, 0, tcp_options(mss=1460, sack_perm=True, wscale=8)),
            ("s", F_SYN | F_ACK, 77, 643160523, 250, 0, tcp_options(mss=1460, wscale=0)),
            ("c", F_ACK, 643160523, 78, 256, 0, b""),
        ],
        "simultaneous_open": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN, SI, 0, WIN, 0, b""),
            ("c", F_SYN | F_ACK, CI, SI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("s", F_ACK, SI + 1, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
            ("c", AP, CI + 1, SI + 1, WIN, 100, b""),
        ],
        "syn_retransmit_and_synack_retransmit": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
        ],
        "rst_answering_syn": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_RST | F_ACK, 0, CI + 1, 0, 0, b""),
            ("c", F_SYN, CI + 100, 0, WIN, 0, b""),
        ],
        "zero_window_and_keepalive": established() + [
            ("c", F_ACK, CI + 1, D, 0, 0, b""),
            ("s", AP, D, CI + 1, WIN, 1, b""),
            ("c", F_ACK, CI, D, 0, 0, b""),  # keepalive: seq one below
            ("s", F_ACK, D, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "retransmissions": established() + [
            ("s", AP, D, CI + 1, WIN, 500, b""),
            ("s", AP, D, CI + 1, WIN, 500, b""),
            ("s", AP, D, CI + 1, WIN, 500, b""),
            ("s", AP, D, CI + 1, WIN, 500, b""),
            ("s", AP, D, CI + 1, WIN, 500, b""),
            ("c", F_ACK, CI + 1, D + 500, WIN, 0, b""),
        ],
        "reopen_after_close": established() + [
            ("c", F_FIN | F_ACK, CI + 1, D, WIN, 0, b""),
            ("s", F_FIN | F_ACK, D, CI + 2, WIN, 0, b""),
            ("c", F_ACK, CI + 2, D + 1, WIN, 0, b""),
            ("c", F_SYN, CI + 100_000, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 500_000, CI + 100_001, WIN, 0, b""),
            ("c", F_ACK, CI + 100_001, SI + 500_001, WIN, 0, b""),
        ],
        "reopen_after_rst": established() + [
            ("c", F_RST | F_ACK, CI + 1, D, 0, 0, b""),
            ("c", F_SYN, CI + 100_000, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 500_000, CI + 100_001, WIN, 0, b""),
        ],
        "data_after_rst_close": established() + [
            ("s", F_RST, D, 0, 0, 0, b""),
            ("c", AP, CI + 1, D, WIN, 10, b""),
            ("s", F_RST, D + 5, 0, 0, 0, b""),
        ],
        "fin_out_of_window": established() + [
            ("c", F_FIN | F_ACK, CI + 1 + 300_000, D, WIN, 0, b""),
            ("s", F_FIN | F_ACK, D + 300_000, CI + 1, WIN, 0, b""),
            ("c", F_FIN | F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "ack_without_syn_after_synack": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
        ],
    }


def loose_off_cases() -> Dict[str, List[Step]]:
    return {
        "pickup_loose0": [
            ("c", AP, CI + 500, SI + 700, WIN, 200, b""),
            ("s", F_ACK, SI + 700, CI + 700, WIN, 0, b""),
        ],
        "handshake_loose0": established(),
    }


def liberal_cases() -> Dict[str, List[Step]]:
    cases = window_cases()
    return {k: cases[k] for k in ("seq_over", "seq_under_seed", "ack_over", "ack_under",
                                  "rst_below_maxack", "syn_in_established", "bad_flags")}


def ignore_rst_cases() -> Dict[str, List[Step]]:
    cases = window_cases()
    return {k: cases[k] for k in ("rst_below_maxack", "rst_not_exact")}


def ipv6_cases() -> Dict[str, List[Step]]:
    cases = window_cases()
    return {k: cases[k] for k in ("in_window", "seq_over", "seq_under_seed", "ack_over", "rst_below_maxack",
                                  "window_scaling", "sack", "pickup")}


BAD_CSUM = {"csum": "bad"}
TO_CLIENT = {"to": "client"}


def checksum_cases() -> Dict[str, List[Step]]:
    """Segments with a wrong TCP checksum arriving at the nat box (PRE_ROUTING): nf_conntrack_checksum."""
    return {
        "bad_csum_data": established() + [
            ("c", AP, CI + 1, D, WIN, 100, b"", BAD_CSUM),
            ("c", AP, CI + 1, D, WIN, 100, b""),
            ("s", F_ACK, D, CI + 101, WIN, 0, b""),
        ],
        "bad_csum_syn": [
            ("c", F_SYN, CI, 0, WIN, 0, b"", BAD_CSUM),
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
        ],
        "bad_csum_rst": established() + [
            ("s", F_RST, D, 0, 0, 0, b"", BAD_CSUM),
            ("c", AP, CI + 1, D, WIN, 10, b""),
            ("s", F_ACK, D, CI + 11, WIN, 0, b""),
        ],
        "bad_csum_bad_flags": established() + [
            ("c", F_SYN | F_FIN, CI + 1, 0, WIN, 0, b"", BAD_CSUM),
        ],
        # the box's own SYN with a wrong checksum: OUTPUT does not check, the entry is made
        "bad_csum_sent_by_the_box": [
            ("b", F_SYN, CI, 0, WIN, 0, b"", BAD_CSUM),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("b", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
            ("s", F_ACK, SI + 1, CI + 1, WIN, 0, b"", BAD_CSUM),
        ],
        "bad_csum_seq_over": established() + [
            ("s", AP, D + 200_000, CI + 1, WIN, 100, b"", BAD_CSUM),
        ],
    }


def pickup_cases() -> Dict[str, List[Step]]:
    """Connections picked up mid-stream, with the client's or the server's packet first, and what each
    later packet of such a flow gets (run with loose=1 and loose=0). Server-first steps go to the
    client's own address (routed, no NAT), so the entry's original direction is server -> client."""
    return {
        "pickup_client_first": [
            ("c", AP, CI + 500, SI + 700, WIN, 200, b""),
            ("s", F_ACK, SI + 700, CI + 700, WIN, 0, b""),
            ("s", AP, SI + 700, CI + 700, WIN, 300, b""),
            ("c", F_ACK, CI + 700, SI + 1000, WIN, 0, b""),
            ("c", F_FIN | F_ACK, CI + 700, SI + 1000, WIN, 0, b""),
            ("s", F_FIN | F_ACK, SI + 1000, CI + 701, WIN, 0, b""),
            ("c", F_ACK, CI + 701, SI + 1001, WIN, 0, b""),
        ],
        "pickup_server_first": [
            ("s", AP, SI + 700, CI + 500, WIN, 300, b"", TO_CLIENT),
            ("c", F_ACK, CI + 500, SI + 1000, WIN, 0, b""),
            ("c", AP, CI + 500, SI + 1000, WIN, 200, b""),
            ("s", F_ACK, SI + 1000, CI + 700, WIN, 0, b"", TO_CLIENT),
            ("s", AP, SI + 1000 + 400_000, CI + 700, WIN, 100, b"", TO_CLIENT),
            ("c", AP, CI + 700 + 400_000, SI + 1000, WIN, 100, b""),
            ("c", F_RST, CI + 700, 0, 0, 0, b""),
        ],
        "pickup_server_rst_first": [
            ("s", F_RST | F_ACK, SI + 700, CI + 500, 0, 0, b"", TO_CLIENT),
            ("c", AP, CI + 500, SI + 700, WIN, 10, b""),
        ],
        "pickup_fin_first": [
            ("c", F_FIN | F_ACK, CI + 500, SI + 700, WIN, 0, b""),
            ("s", F_ACK, SI + 700, CI + 501, WIN, 0, b""),
        ],
        "pickup_synack_first": [
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b"", TO_CLIENT),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
        ],
        "pickup_window_scaled": [
            # a scaled connection picked up: the raw window (500) means 500 << 7 to the endpoints;
            # the picked-up entry knows no scale and stays liberal
            ("c", AP, CI + 500, SI + 700, 500, 200, b""),
            ("s", F_ACK, SI + 700, CI + 700, 500, 0, b""),
            ("s", AP, SI + 700 + 40_000, CI + 700, 500, 100, b""),
        ],
    }


def syn_cases() -> Dict[str, List[Step]]:
    """SYN/ACKs with a new ISN, SYNs and SYN/ACKs arriving for established entries."""
    return {
        "synack_new_isn_after_syn_retransmit": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 7_000_000, CI + 1, 2 * WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 7_000_001, WIN, 0, b""),
            ("s", AP, SI + 7_000_001, CI + 1, WIN, 1000, b""),
            ("s", AP, SI + 1, CI + 1, WIN, 100, b""),
            ("c", F_ACK, CI + 1, SI + 7_001_001, WIN, 0, b""),
            ("s", AP, SI + 7_001_001 + WIN + 50, CI + 1, WIN, 100, b""),
        ],
        "synack_new_isn_without_syn_retransmit": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 7_000_000, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 7_000_001, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
        ],
        "synack_new_isn_syn_new_seq": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_SYN, CI + 50_000, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 7_000_000, CI + 50_001, WIN, 0, b""),
            ("c", F_ACK, CI + 50_001, SI + 7_000_001, WIN, 0, b""),
        ],
        "syn_lower_seq_in_syn_sent": [
            ("c", F_SYN, CI + 50_000, 0, WIN, 0, b""),
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, SI + 1, WIN, 0, b""),
        ],
        "synack_in_established_reply": established() + [
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 9_000, CI + 1, WIN, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "synack_in_established_original": established() + [
            ("c", F_SYN | F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "syn_in_established_reply": established() + [
            ("s", F_SYN, SI + 5, 0, WIN, 0, b""),
            ("s", AP, D, CI + 1, WIN, 10, b""),
        ],
        "syn_then_synack_in_established": established() + [
            ("c", F_SYN, CI + 9000, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI + 80_000, CI + 9001, WIN, 0, b""),
            ("c", F_ACK, CI + 9001, SI + 80_001, WIN, 0, b""),
        ],
    }


def rst_cases() -> Dict[str, List[Step]]:
    """RSTs: below/at/after the window, after the entry closed or went away."""
    return {
        "rst_after_rst_close": established() + [
            ("c", F_RST | F_ACK, CI + 1, D, 0, 0, b""),
            ("s", F_RST, D, 0, 0, 0, b""),
            ("c", F_RST, CI + 1, 0, 0, 0, b""),
            ("c", F_RST, CI - 70_000, 0, 0, 0, b""),
        ],
        "rst_after_fin_close": established() + [
            ("c", F_FIN | F_ACK, CI + 1, D, WIN, 0, b""),
            ("s", F_FIN | F_ACK, D, CI + 2, WIN, 0, b""),
            ("c", F_ACK, CI + 2, D + 1, WIN, 0, b""),
            ("s", F_RST, D - 50_000, 0, 0, 0, b""),
            ("c", F_RST, CI + 2, 0, 0, 0, b""),
        ],
        "rst_kills_unreplied_then_rst": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("c", F_RST, CI + 1, 0, 0, 0, b""),
            ("c", F_RST, CI + 1, 0, 0, 0, b""),
            ("s", F_RST | F_ACK, 0, CI + 1, 0, 0, b""),
        ],
        "rst_new": [
            ("c", F_RST, CI, 0, 0, 0, b""),
            ("c", F_RST | F_ACK, CI, SI, 0, 0, b""),
        ],
        "rst_over_window": established() + [
            ("s", F_RST, D + 500_000, 0, 0, 0, b""),
            ("c", F_RST, CI + 1 + 500_000, 0, 0, 0, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
        ],
        "rst_ack_zero_ack": established() + [
            ("s", F_RST | F_ACK, D, 0, 0, 0, b""),
        ],
        "rst_in_syn_sent": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_RST | F_ACK, 0, CI + 5, 0, 0, b""),
            ("s", F_RST | F_ACK, 0, CI + 1, 0, 0, b""),
        ],
        "rst_below_in_syn_recv": [
            ("c", F_SYN, CI, 0, WIN, 0, b""),
            ("s", F_SYN | F_ACK, SI, CI + 1, WIN, 0, b""),
            ("c", F_RST, CI - 5, 0, 0, 0, b""),
            ("c", F_RST, CI + 1, 0, 0, 0, b""),
        ],
    }


def box_rst_cases() -> Dict[str, List[Step]]:
    """The nat box's own RST: an INVALID reply is not de-NATed, reaches the box's stack (ports
    46000-46999 are open to it) and the box answers RST from its own address with no entry."""
    return {
        "box_rst_after_seq_over": established() + [
            ("s", AP, D + 200_000, CI + 1, WIN, 100, b""),
            ("c", F_ACK, CI + 1, D, WIN, 0, b""),
            ("s", AP, D, CI + 1, WIN, 100, b""),
        ],
        "box_rst_after_ack_over": established() + [
            ("s", AP, D, CI + 1 + 90_000, WIN, 100, b""),
            ("c", F_ACK, CI + 1, D + 100, WIN, 0, b""),
        ],
        "box_rst_after_invalid_state": established() + [
            ("s", F_SYN, SI + 5, 0, WIN, 0, b""),
        ],
        "box_rst_after_closed": established() + [
            ("c", F_RST | F_ACK, CI + 1, D, 0, 0, b""),
            ("s", AP, D + 300_000, CI + 1, WIN, 100, b""),
        ],
    }
