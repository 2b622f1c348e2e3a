"""The incident on the real kernel: scenario × mitigation, what each end saw, and cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sysctl_doctor.conntrack.kernel_log import parse_kernel_log
from sysctl_doctor.kernel_version import version_or_unknown as kernel_version
from sysctl_doctor.lab.scenarios import expected_survival

KERNEL = kernel_version(os.uname().release)
SDOC = [sys.executable, "-m", "sysctl_doctor"]


def _outcome(report, scenario, mitigation):  # type: ignore[no-untyped-def]
    return next(o for o in report.outcomes if o.scenario == scenario and o.mitigation == mitigation)


def _lab_namespaces(pid=None):  # type: ignore[no-untyped-def]
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    prefix = "sdlab-" if pid is None else f"sdlab-{pid}x"
    return [n for n in names if n.startswith(prefix)]


def test_every_run_matches_the_model(lab_report) -> None:  # type: ignore[no-untyped-def]
    assert len(lab_report.outcomes) == 8
    for o in lab_report.outcomes:
        assert o.error is None, o.error
        assert o.survived == expected_survival(o.scenario, o.mitigation, KERNEL), o.to_json()
        assert o.seconds < 10


def test_over_upper_bound_resets_both_ends(lab_report) -> None:  # type: ignore[no-untyped-def]
    o = _outcome(lab_report, "seq-over-upper-bound", "none")
    assert not o.survived
    assert o.client.state == "reset" and o.server.state == "reset"
    assert o.nat_rst, "the NAT box's own stack answers the un-NATed segment with a RST"
    assert o.kernel_reasons[0] == "seq-over-upper-bound" and o.kernel_verdicts[0] == "INVALID"
    assert "invalid-new" in o.kernel_reasons  # the box's RST has no conntrack entry
    assert o.counters["invalid"] >= 1
    assert o.injected is not None and o.injected.ack == o.injected.client_next


def test_mitigations_on_over_upper_bound(lab_report) -> None:  # type: ignore[no-untyped-def]
    liberal = _outcome(lab_report, "seq-over-upper-bound", "be-liberal")
    assert liberal.survived and not liberal.nat_rst and liberal.kernel_reasons == []
    inp = _outcome(lab_report, "seq-over-upper-bound", "drop-invalid-input")
    assert inp.survived and not inp.nat_rst and inp.kernel_reasons == ["seq-over-upper-bound"]
    fwd = _outcome(lab_report, "seq-over-upper-bound", "drop-invalid-forward")
    assert not fwd.survived and fwd.nat_rst, "FORWARD never sees a segment addressed to the NAT box"


def test_under_lower_bound_is_harmless_from_6_1(lab_report) -> None:  # type: ignore[no-untyped-def]
    if KERNEL < (6, 1):
        pytest.skip(f"NEEDS KERNEL >= 6.1: {os.uname().release} treats SEQ under lower bound as INVALID")
    for mitigation in ("none", "drop-invalid-input", "drop-invalid-forward"):
        o = _outcome(lab_report, "seq-under-lower-bound", mitigation)
        assert o.survived and not o.nat_rst
        assert o.kernel_reasons == ["seq-under-lower-bound"] and o.kernel_verdicts == ["IGNORE"]
        assert o.client.bytes_received == 2 * 64 * 1024


def test_captures_hold_the_incident(lab_report) -> None:  # type: ignore[no-untyped-def]
    from sysctl_doctor.lab.capture import parse_ethernet_tcp

    o = _outcome(lab_report, "seq-over-upper-bound", "none")
    assert o.capture and os.path.getsize(o.capture) > 24 and o.capture_frames > 10
    # tshark, an independent reader, sees the injected segment and the box's RST.
    out = subprocess.run(["tshark", "-r", o.capture, "-T", "fields", "-e", "ip.src", "-e", "tcp.seq_raw",
                          "-e", "tcp.flags.reset"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.skip(f"NEEDS tshark: {out.stderr.strip()[:200]}")
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [o.injected.src, str(o.injected.seq), "0"] in [r[:3] for r in rows]
    assert any(r[0] == "10.232.2.1" and r[2] == "1" for r in rows)
    assert parse_ethernet_tcp(b"short", 0.0, False) is None


def test_kernel_lines_are_explained_by_conntrack_logs(lab_report) -> None:  # type: ignore[no-untyped-def]
    for o in lab_report.outcomes:
        report = parse_kernel_log("".join(line + "\n" for line in o.kernel_lines).encode(), "lab")
        assert [r.reason.code for r in report.records] == o.kernel_reasons
        assert report.skipped.total == 0
        for rec in report.records:
            assert rec.clock == "boot"  # kmsg stamps
            assert str(o.server_port) in rec.flow


def _resting_host_value() -> str:
    """nf_log_all_netns as it is when no run holds it (other runs and tests hold it at times)."""
    from sysctl_doctor.host_switches import resting_value

    value = resting_value("net/netfilter/nf_log_all_netns")
    assert value is not None
    return value


def test_host_left_as_found(lab_report) -> None:  # type: ignore[no-untyped-def]
    assert _lab_namespaces(os.getpid()) == []
    assert lab_report.host_changes == {"net.netfilter.nf_log_all_netns": _resting_host_value()}


def test_cli_json_is_pure_and_exit_0() -> None:
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT")
    proc = subprocess.run(SDOC + ["lab", "--scenario", "seq-under-lower-bound", "--mitigation", "none",
                                  "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "sysctl-doctor/lab/1" and len(data["outcomes"]) == 1
    assert data["outcomes"][0]["survived"] is (KERNEL >= (6, 1))


@pytest.mark.parametrize("delay", [0.0, 0.45])
def test_ctrl_c_cleans_up(delay: float) -> None:
    """Ctrl-C while namespaces are being made (0 s) and mid-traffic or teardown (0.45 s)."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT")
    before = _resting_host_value()
    proc = subprocess.Popen(SDOC + ["lab"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60  # the lab may wait for the host lock other tests hold
    while time.time() < deadline and not _lab_namespaces(proc.pid):
        time.sleep(0.005)
    assert _lab_namespaces(proc.pid), "the lab never created its namespaces"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _lab_namespaces(proc.pid) == []
    assert _resting_host_value() == before


def test_sigterm_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT")
    proc = subprocess.Popen(SDOC + ["lab"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60  # the lab may wait for the host lock other tests hold
    while time.time() < deadline and not _lab_namespaces(proc.pid):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert _lab_namespaces(proc.pid) == []


def test_missing_pyroute2_is_exit_2_naming_the_extra() -> None:
    code = ("import sys; sys.modules['pyroute2'] = None\n"
            "from sysctl_doctor.cli import main\nmain(['lab'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pyroute2" in proc.stderr and "sysctl-doctor[lab]" in proc.stderr


def test_leftovers_of_a_killed_run_are_removed() -> None:
    """A SIGKILLed lab cannot clean up; the next run removes its namespaces (pid gone)."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT")
    pytest.importorskip("pyroute2")
    from pyroute2 import netns

    from sysctl_doctor.lab.topology import remove_stale_namespaces

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    name = f"sdlab-{dead}x1-pod"
    netns.create(name)
    try:
        assert name in remove_stale_namespaces()
        assert name not in _lab_namespaces()
    finally:
        if name in _lab_namespaces():
            netns.remove(name)
