"""Issue 15 item 8 on a real boot: dockerd (Debian 12's docker.io 20.10) overrides the administrator's
net.ipv4.ip_forward = 0 when it starts, unless /etc/docker/daemon.json says "ip-forward": false; with
"icc": false it also overrides the administrator's net.bridge.bridge-nf-call-iptables = 0.

The roots are the docker.io variant of the base root (docker_root.py, an extra mmdebstrap build), so these
boots are opt-in inside the slow tier: `SYSCTL_DOCTOR_SLOW_DOCKER=1 pytest --run-slow tests/slow/test_docker_boots.py`.
`check --root` and `explain KEY --root` run on the very root that is imaged (conftest.booted); the guest's probe
reports /proc/sys, `systemctl is-active` of docker's units and dockerd's journal lines.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import pytest

from .prediction import prediction_for
from .scenarios import BRIDGE_NF, CONTROL_KEY, CONTROL_VALUE, DOCKER, IP_FORWARD
from .test_real_boots import _explain, compare_every_prediction

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("SYSCTL_DOCTOR_SLOW_DOCKER") != "1",
                       reason="DOCKER BOOTS NOT RUN: set SYSCTL_DOCTOR_SLOW_DOCKER=1 (builds a docker.io root once)"),
]

UNIT_EVIDENCE = ("/usr/lib/systemd/system/docker.service:", "ExecStart=/usr/sbin/dockerd", "default ip-forward: true")
ICC_EVIDENCE = ("/etc/docker/daemon.json:2", '"icc": false')

# scenario -> key -> (what the guest shows after boot, explain's verdict, what SD117 must cite; None: no SD117)
EXPECTED: Dict[str, Dict[str, Tuple[str, str, Optional[Tuple[str, ...]]]]] = {
    "docker-ip-forward": {IP_FORWARD: ("1", "overridden-by-service", UNIT_EVIDENCE)},
    "docker-no-ip-forward": {IP_FORWARD: ("0", "applied", None)},
    "docker-bridge-nf": {IP_FORWARD: ("1", "overridden-by-service", UNIT_EVIDENCE),
                         BRIDGE_NF: ("0", "applied", None)},
    "docker-icc-off": {IP_FORWARD: ("1", "overridden-by-service", UNIT_EVIDENCE),
                       BRIDGE_NF: ("1", "overridden-by-service", ICC_EVIDENCE)},
    "docker-bridge-nf-late": {IP_FORWARD: ("1", "overridden-by-service", UNIT_EVIDENCE),
                              BRIDGE_NF: ("1", "loaded-late", None)},
}


def _docker_explain(run) -> str:
    report = run.boot.report
    docker_lines = [line for line in report.journal if "docker" in line.lower()][:30]
    return (_explain(run) + f"\nactive {report.active}\n"
            + "\n".join(f"docker journal {line}" for line in docker_lines))


def _booted_with_docker(run):
    report = run.boot.report
    assert run.boot.exit_code == 0 and report.complete, (
        "the guest did not power off after a complete probe (timeout or crash):\n" + _docker_explain(run))
    assert report.values.get(CONTROL_KEY) == CONTROL_VALUE, (
        "systemd-sysctl did not apply the built-in control key: the boot itself is broken\n" + _docker_explain(run))
    assert report.active.get("docker.service") == "active", (
        "docker.service did not start in the guest\n" + _docker_explain(run))
    return report


def _boot_section(explained) -> dict:
    sections = [sec["data"] for sec in explained["sections"]
                if isinstance(sec.get("data"), dict) and "verdict" in sec["data"] and "chain" in sec["data"]]
    assert sections, explained
    return sections[0]


@pytest.mark.parametrize("name", [s.name for s in DOCKER])
def test_dockerd_and_the_administrators_zero(booted, name):
    """The guest's /proc/sys against check's value, explain's verdict and SD117's evidence, key by key."""
    run = booted(name)
    if run.check_error is not None:
        pytest.fail(f"`sysctl-doctor check --root` failed on the {name} root: {run.check_error}")
    report = _booted_with_docker(run)
    findings = run.check.document.get("findings", [])
    for key, (seen, verdict, evidence) in EXPECTED[name].items():
        assert report.values.get(key) == seen, f"{key}\n" + _docker_explain(run)
        predicted = prediction_for(run.check.document, key)
        assert predicted is not None, f"no prediction for {key}"
        assert predicted.value == seen and predicted.raw.get("configured") == "0", predicted.raw
        assert predicted.applied is (verdict == "applied"), predicted.raw
        boot = _boot_section(run.explain[key])
        assert (boot["verdict"], boot["value"]) == (verdict, seen), boot
        sd117 = [f for f in findings if f.get("code") == "SD117" and f.get("key") == key]
        if evidence is None:
            assert not sd117 and "SD117" not in predicted.raw.get("findings", []), sd117
        else:
            assert len(sd117) == 1 and "SD117" in predicted.raw.get("findings", []), findings
            message = sd117[0]["message"]
            assert "docker.service" in message and all(part in message for part in evidence), message


COULDNT_WRITE_BRIDGE_NF = "Couldn't write '0' to 'net/bridge/bridge-nf-call-iptables'"


@pytest.mark.parametrize("name", ["docker-bridge-nf", "docker-icc-off", "docker-bridge-nf-late"])
def test_who_wrote_bridge_nf_call_iptables(booted, name):
    """The journal says how the bridge key got its value: systemd-modules-load inserted br_netfilter before
    systemd-sysctl (so the administrator's 0 was written, and only dockerd's icc-off write makes it 1), or
    nothing did and systemd-sysctl could not write it (dockerd loads br_netfilter later: the kernel's 1)."""
    run = booted(name)
    report = _booted_with_docker(run)
    inserted = any("Inserted module 'br_netfilter'" in line for line in report.journal)
    couldnt = any(COULDNT_WRITE_BRIDGE_NF in line for line in report.journal)
    if name == "docker-bridge-nf-late":
        assert couldnt and not inserted, _docker_explain(run)
    else:
        assert inserted and not couldnt, _docker_explain(run)


@pytest.mark.parametrize("name", [s.name for s in DOCKER])
def test_prediction_matches_the_docker_boot(booted, name):
    """Every key `check` predicts on the docker.io root (nf_conntrack's be_liberal too: dockerd's iptables rules
    load nf_conntrack after systemd-sysctl) against the booted guest."""
    compare_every_prediction(booted(name), name)
