"""Conntrack counters: /proc rows summed per CPU, ctnetlink, per namespace, on the real kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sysctl_doctor.conntrack.stats import parse_proc_stat, read_netns_stats
from sysctl_doctor.errors import DoctorError

from .conftest import send_lone_rst

HEADER = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop"


def test_rows_are_summed_except_entries() -> None:
    text = (HEADER + "\n"
            "00000005  00000000 00000001 00000000 0000000a 00000000 00000000 00000000 00000000 00000001 00000000 00000000\n"
            "00000005  00000000 00000002 00000000 00000010 00000000 00000000 00000000 00000000 00000002 00000000 00000003\n")
    stats = parse_proc_stat(text)
    assert stats.cpus == 2
    assert stats.counters["entries"] == 5  # global, repeated per row
    assert stats.counters["invalid"] == 0x0A + 0x10
    assert stats.counters["insert_failed"] == 3 and stats.counters["early_drop"] == 3


def test_bad_rows_name_the_line() -> None:
    with pytest.raises(DoctorError, match=r":2: not a hex"):
        parse_proc_stat(HEADER + "\n" + " ".join(["zz"] * 12) + "\n", "x")
    with pytest.raises(DoctorError, match=r":2: 2 columns"):
        parse_proc_stat(HEADER + "\n00 00\n", "x")


def test_invalid_counted_in_its_own_namespace_by_both_sources(lab_netns) -> None:  # type: ignore[no-untyped-def]
    before = read_netns_stats(lab_netns)
    for port in range(3):
        send_lone_rst(lab_netns, 40000 + port)
    after = read_netns_stats(lab_netns)
    # each lone RST is judged twice: leaving (OUTPUT) and coming back in over lo (PREROUTING)
    assert after.counters["invalid"] - before.counters["invalid"] == 6
    assert after.rates(before)["invalid"] > 0
    pytest.importorskip("pyroute2")
    netlink = read_netns_stats(lab_netns, "netlink")
    assert netlink.counters["invalid"] == after.counters["invalid"]
    assert netlink.cpus == after.cpus


def test_cli_json_watch(lab_netns) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "stats", "--netns", lab_netns,
                           "--watch", "--count", "2", "--interval", "0.2", "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    updates = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(updates) == 2
    assert updates[1]["namespaces"][0]["netns"] == lab_netns
    assert "invalid" in updates[1]["namespaces"][0]["rates_per_second"]


def test_unknown_netns_is_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "conntrack", "stats", "--netns", "sdlab-nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "sdlab-nope" in proc.stderr
