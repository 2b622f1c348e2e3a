"""conntrack logs --format prometheus: running totals that only go up, as node_exporter serves them."""

from __future__ import annotations

import json
import subprocess

from fleet.test_prometheus import _get, exporter  # noqa: F401 - the real node_exporter fixture
from fleet.tools import lines, need, sysctl_doctor
from tests.conntrack_live.test_kernel_log import OVER, RST, UNDER

METRIC = "sysctl_doctor_conntrack_log_messages_total"


def _series(text: str) -> dict:
    out = {}
    for line in lines(text):
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def _run(log, state, *extra):
    proc = sysctl_doctor("conntrack", "logs", str(log), "--format", "prometheus", "--state-dir", str(state), *extra)
    assert proc.returncode == 0, proc.stderr  # INVALID lines are data here, not a failure
    return proc


def test_counts_only_new_records_and_never_goes_down(tmp_path):
    log, state = tmp_path / "kern.log", tmp_path / "state"
    log.write_text(f"[   10.000000] {OVER}\n[   11.000000] {UNDER}\n[   12.000000] {RST}\n")
    first = _series(_run(log, state).stdout)
    over = f'{METRIC}{{reason="seq-over-upper-bound",verdict="INVALID"}}'
    under = f'{METRIC}{{reason="seq-under-lower-bound",verdict="IGNORE"}}'
    new = f'{METRIC}{{reason="invalid-new",verdict="INVALID"}}'
    assert (first[over], first[under], first[new]) == (1, 1, 1)
    assert first[f'{METRIC}{{reason="bad-checksum",verdict="INVALID"}}'] == 0  # every series from the start
    assert _series(_run(log, state).stdout) == first  # the same lines again: nothing new
    with open(log, "a") as fh:
        fh.write(f"[   13.000000] {OVER}\n[   14.000000] {OVER}\n")
    third = _series(_run(log, state).stdout)
    assert third[over] == 3 and third[under] == 1
    log.write_text(f"[    1.000000] {RST}\n")  # rotated under the same name, older stamps: ignored, not subtracted
    assert _series(_run(log, state).stdout) == third
    other = tmp_path / "kern.log.1"
    other.write_text(f"[    1.000000] {RST}\n")
    assert _series(_run(other, state).stdout)[new] == 2  # another source has its own cursor
    doc = json.loads((state / "conntrack-log-counters.json").read_text())
    assert doc["format"] == "sysctl-doctor/conntrack-log-counters/1" and str(log) in doc["cursors"]


def test_promtool_and_node_exporter_read_it(tmp_path, exporter):  # noqa: F811
    promtool = need("promtool", "prometheus")
    textdir, port = exporter
    log, state = tmp_path / "kern.log", tmp_path / "state"
    log.write_text(f"[   10.000000] {OVER}\n")
    text = _run(log, state).stdout
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = _run(log, state, "--textfile-dir", str(textdir))
    assert proc.stdout == ""
    scraped = _get(f"http://127.0.0.1:{port}/metrics")
    assert f'{METRIC}{{reason="seq-over-upper-bound",verdict="INVALID"}} 1' in scraped
    assert "node_textfile_scrape_error 0" in scraped


def test_bad_state_and_misuse_are_clean_errors(tmp_path):
    log, state = tmp_path / "kern.log", tmp_path / "state"
    log.write_text(f"[   10.000000] {OVER}\n")
    state.mkdir()
    (state / "conntrack-log-counters.json").write_text("{not json")
    proc = sysctl_doctor("conntrack", "logs", str(log), "--format", "prometheus", "--state-dir", str(state))
    assert proc.returncode == 2 and "not JSON" in proc.stderr and "Traceback" not in proc.stderr
    usage = sysctl_doctor("conntrack", "logs", str(log), "--state-dir", str(state))
    assert usage.returncode == 2 and "--format prometheus" in usage.stderr
