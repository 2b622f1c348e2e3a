"""Issue 15 item 8 on a real boot: dockerd (Debian 12's docker.io 20.10) overrides the administrator's
net.ipv4.ip_forward = 0 when it starts, unless /etc/docker/daemon.json says "ip-forward": false.

The roots are the docker.io variant of the base root (docker_root.py, an extra mmdebstrap build), so these
boots are opt-in inside the slow tier: `SYSCTL_DOCTOR_SLOW_DOCKER=1 pytest --run-slow tests/slow/test_docker_boots.py`.
`check --root` runs on the very root that is imaged (conftest.booted); the guest's probe reports /proc/sys,
`systemctl is-active` of docker's units and dockerd's journal lines.
"""

from __future__ import annotations

import os

import pytest

from .prediction import prediction_for
from .scenarios import CONTROL_KEY, CONTROL_VALUE, DOCKER, IP_FORWARD
from .test_real_boots import _explain, compare_every_prediction

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("SYSCTL_DOCTOR_SLOW_DOCKER") != "1",
                       reason="DOCKER BOOTS NOT RUN: set SYSCTL_DOCTOR_SLOW_DOCKER=1 (builds a docker.io root once)"),
]

# scenario -> (what the guest shows after boot, check's verdict for the key)
EXPECTED = {
    "docker-ip-forward": ("1", "overridden-by-service"),
    "docker-no-ip-forward": ("0", "applied"),
}


def _docker_explain(run) -> str:
    report = run.boot.report
    docker_lines = [line for line in report.journal if "docker" in line.lower()][:30]
    return _explain(run) + "\n" + "\n".join(f"docker journal {line}" for line in docker_lines)


def _booted_with_docker(run):
    report = run.boot.report
    assert run.boot.exit_code == 0 and report.complete, (
        "the guest did not power off after a complete probe (timeout or crash):\n" + _docker_explain(run))
    assert report.values.get(CONTROL_KEY) == CONTROL_VALUE, (
        "systemd-sysctl did not apply the built-in control key: the boot itself is broken\n" + _docker_explain(run))
    assert report.active.get("docker.service") == "active", (
        "docker.service did not start in the guest\n" + _docker_explain(run))
    return report


@pytest.mark.parametrize("name", [s.name for s in DOCKER])
def test_dockerd_and_the_administrators_ip_forward(booted, name):
    run = booted(name)
    if run.check_error is not None:
        pytest.fail(f"`sysctl-doctor check --root` failed on the {name} root: {run.check_error}")
    report = _booted_with_docker(run)
    seen, verdict = EXPECTED[name]
    assert report.values.get(IP_FORWARD) == seen, _docker_explain(run)

    predicted = prediction_for(run.check.document, IP_FORWARD)
    assert predicted is not None, f"no prediction for {IP_FORWARD}"
    assert predicted.value == seen and predicted.raw.get("configured") == "0", predicted.raw
    boot_sections = [sec["data"] for sec in run.explain[IP_FORWARD]["sections"]
                     if isinstance(sec.get("data"), dict) and "verdict" in sec["data"] and "chain" in sec["data"]]
    assert boot_sections and boot_sections[0]["verdict"] == verdict, run.explain[IP_FORWARD]
    assert boot_sections[0]["value"] == seen, boot_sections[0]
    sd117 = [f for f in run.check.document.get("findings", []) if f.get("code") == "SD117"
             and f.get("key") == IP_FORWARD]
    if name == "docker-ip-forward":
        assert predicted.applied is False, predicted.raw
        assert len(sd117) == 1 and "SD117" in predicted.raw.get("findings", []), run.check.document.get("findings")
        message = sd117[0]["message"]
        assert "docker.service" in message and "/usr/lib/systemd/system/docker.service:" in message \
            and "ExecStart=/usr/sbin/dockerd" in message and "default ip-forward: true" in message, message
    else:
        assert predicted.applied is True, predicted.raw
        assert not sd117, sd117


@pytest.mark.parametrize("name", [s.name for s in DOCKER])
def test_prediction_matches_the_docker_boot(booted, name):
    """Every key `check` predicts on the docker.io root (nf_conntrack's be_liberal too: dockerd's iptables rules
    load nf_conntrack after systemd-sysctl) against the booted guest."""
    compare_every_prediction(booted(name), name)
