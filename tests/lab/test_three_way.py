"""One incident, three witnesses: the lab's capture through `conntrack replay` (the TCP model),
the kernel's own lines through `conntrack logs`, and what the lab's sockets saw.

For every scenario × mitigation run on the real kernel, the injected segment must get
the same verdict and the same message (bound included) from the model as from the
kernel, and the connection's fate must follow from that verdict and the mitigation.
"""

from __future__ import annotations

import os

import pytest

from sysctl_doctor.conntrack.kernel_log import parse_kernel_log

pytest.importorskip("sysctl_doctor.conntrack.replay", reason="NEEDS the tcp branch's conntrack replay")


def test_replay_logs_and_outcome_agree(lab_report) -> None:  # type: ignore[no-untyped-def]
    from sysctl_doctor.conntrack.profiles import profile_for
    from sysctl_doctor.conntrack.replay import replay_capture
    from sysctl_doctor.lab.mitigations import BY_NAME

    profile = profile_for(os.uname().release)
    checked = 0
    for o in lab_report.outcomes:
        assert o.capture and o.injected is not None, o.to_json()
        sysctls = {k.rsplit("/", 1)[1]: v for k, v in BY_NAME[o.mitigation].netns_sysctls.items()}
        verdicts = replay_capture(o.capture, profile, sysctls)
        injected = [v for v in verdicts if v.seq == o.injected.seq and v.length == o.injected.payload]
        assert len(injected) == 1, [v.to_json() for v in verdicts]
        model = injected[0]

        logs = parse_kernel_log("".join(line + "\n" for line in o.kernel_lines).encode(), "lab")
        kernel = [r for r in logs.records if r.record.int_field("SEQ") == o.injected.seq]

        if model.verdict == "accept":
            # Nothing to log: be_liberal (or an in-window segment).
            assert kernel == [] and model.message is None
        else:
            assert len(kernel) == 1, o.kernel_lines
            assert kernel[0].reason.verdict == model.verdict.upper()
            assert kernel[0].record.message == model.message
        broken = model.verdict == "invalid" and o.mitigation not in ("be-liberal", "drop-invalid-input")
        assert o.survived is not broken, o.to_json()
        checked += 1
    assert checked == 8


def test_the_accelerated_replay_agrees_on_the_lab_captures(lab_report) -> None:  # type: ignore[no-untyped-def]
    """The lab's real captures: the compiled fast path and the pure-Python replay print the same report."""
    from conntrack.test_replay_accel import _same_cli

    from sysctl_doctor.lab.mitigations import BY_NAME

    for o in lab_report.outcomes:
        args = [a for k, v in sorted(BY_NAME[o.mitigation].netns_sysctls.items())
                for a in ("--sysctl", f"{k.rsplit('/', 1)[1]}={v}")]
        for kernel in ("5.10", "6.1", "6.12"):
            _same_cli([o.capture, "--kernel", kernel, "--format", "json", *args])
            _same_cli([o.capture, "--kernel", kernel, *args])


def test_the_commands_agree_on_the_reset(lab_report) -> None:  # type: ignore[no-untyped-def]
    """The same agreement through the commands an operator runs."""
    import json
    import subprocess
    import sys

    o = next(x for x in lab_report.outcomes if x.scenario == "seq-over-upper-bound" and x.mitigation == "none")
    sdoc = [sys.executable, "-m", "sysctl_doctor", "conntrack"]
    replay = subprocess.run(sdoc + ["replay", o.capture, "--format", "json"], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 1, replay.stderr  # an INVALID packet
    invalid = [p for p in json.loads(replay.stdout)["packets"] if p["verdict"] == "invalid"]
    logs = subprocess.run(sdoc + ["logs", "-", "--events"], input="".join(f"{line}\n" for line in o.kernel_lines),
                          capture_output=True, text=True, timeout=60)
    assert logs.returncode == 1, logs.stderr
    records = [e for e in map(json.loads, logs.stdout.splitlines()) if e["type"] == "record"]
    injected = [r for r in records if r["seq"] == o.injected.seq]
    assert [p["message"] for p in invalid if p["seq"] == o.injected.seq] == [injected[0]["message"]]
    assert injected[0]["verdict"] == "INVALID" and not o.survived and o.nat_rst


def test_offloaded_checksums_in_the_lab_captures_are_not_bad(lab_report) -> None:  # type: ignore[no-untyped-def]
    """The lab's sockets send through veth with checksum offload: the capture on the NAT box's link
    shows the sender's pseudo-header sum (tcpdump's "cksum incorrect") in most packets, and the
    kernel, with nf_conntrack_checksum=1, did not mark them (CHECKSUM_PARTIAL is not recomputed).
    The replay, which checks checksums by default, must not turn them into "bad checksum"."""
    from sysctl_doctor.conntrack import pcap
    from sysctl_doctor.conntrack.checksum import PARTIAL, tcp_checksum_state
    from sysctl_doctor.conntrack.replay import replay_capture

    partial = 0
    for o in lab_report.outcomes:
        f, info = pcap.open_capture(o.capture)
        try:
            for _frame, _ts, linktype, data, _orig, hint in pcap.read_records(f, info, []):
                pkt = pcap.decode(linktype, data, hint)
                if not isinstance(pkt, str) and tcp_checksum_state(
                        pkt.family, pkt.src, pkt.dst, pkt.raw, pkt.l4, pkt.tcplen) == PARTIAL:
                    partial += 1
        finally:
            f.close()
        verdicts = replay_capture(o.capture, os.uname().release, {"nf_conntrack_checksum": "1"})
        assert not [v.frame for v in verdicts if v.message == "bad checksum"], o.capture
    assert partial > 8, "the lab captures hold no offloaded checksums: this test proves nothing"
