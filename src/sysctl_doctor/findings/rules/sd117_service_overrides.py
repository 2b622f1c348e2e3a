"""SD117: a service started at boot writes another value into the key itself when it starts."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

_DOCKER_UNIT = """[Unit]
Description=Docker Application Container Engine
After=network-online.target containerd.service

[Service]
Type=notify
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS

[Install]
WantedBy=multi-user.target
"""

def _docker_root(icc: bool) -> dict:
    """docker.io enabled, br_netfilter loaded at boot and bridge netfilter set to 0, with daemon.json's "icc"."""
    return {
        "/lib/systemd/system/docker.service": _DOCKER_UNIT,
        "/etc/systemd/system/multi-user.target.wants/docker.service": ("link", "/lib/systemd/system/docker.service"),
        "/etc/docker/daemon.json": "{\n  \"icc\": %s\n}\n" % ("true" if icc else "false"),
        "/etc/modules-load.d/br.conf": "br_netfilter\n",
        "/etc/sysctl.d/95-bridge.conf": "net.bridge.bridge-nf-call-iptables = 0\n",
    }


RULE = Rule(
    code="SD117",
    name="service-overrides",
    severity=WARNING,
    title="A service writes another value into the key when it starts",
    rationale=(
        "Some daemons set kernel keys themselves when they start, after systemd-sysctl has applied the "
        "configuration: dockerd enables net.ipv4.ip_forward (unless \"ip-forward\": false) and, for a bridge "
        "with inter-container communication off, net.bridge.bridge-nf-call-iptables; the k3s and rke2 agents set "
        "bridge-nf-call-iptables, IPv4 forwarding and kube-proxy's conntrack settings; kube-proxy sets "
        "nf_conntrack_max = max(min, maxPerCore x CPUs) and the TCP established/close-wait timeouts. The "
        "administrator's value holds only until that service starts."
    ),
    fix=("Configure the service instead of (or as well as) sysctl.d: /etc/docker/daemon.json (\"ip-forward\", "
         "\"icc\", \"iptables\"), kube-proxy's --conntrack-* flags or its KubeProxyConfiguration `conntrack:` "
         "(maxPerCore: 0 leaves nf_conntrack_max alone), k3s/rke2 --kube-proxy-arg; or accept the service's value "
         "and drop the line."),
    example=Example("docker.io's unit enabled, /etc/docker/daemon.json with \"icc\": false, and bridge netfilter "
                    "turned off.", files=_docker_root(icc=False)),
    passing=Example("The same with \"icc\": true: dockerd leaves bridge-nf-call-iptables alone.",
                    files=_docker_root(icc=True)),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.OVERRIDDEN_BY_SERVICE:
            continue
        message = (f"{p.key} = {p.configured} ({p.file}:{p.line}) holds only until {p.service}: the service writes "
                   f"{p.boot_value} when it starts")
        yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
