"""Services that write keys when they start (issue 15 item 8): dockerd (Debian 12's docker.io unit),
k3s (the unit its install script writes), kube-proxy (flags and a KubeProxyConfiguration file, its documented
format), firewalld (Debian's firewalld.conf with CleanupModulesOnExit=yes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor.boot.service_writes import service_writes
from sysctl_doctor.root import Root
from tests.boot.debian_packages import install_into, package_tree
from tests.boot.rootfs import make_root
from tests.boot.test_debian_root import _copy_boot_parts, require_debian_root

BR = "net.bridge.bridge-nf-call-iptables"

K3S_UNIT = """[Unit]
Description=Lightweight Kubernetes
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
KillMode=process
Delegate=yes
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s \\
    server \\
\t'--kube-proxy-arg=conntrack-max-per-core=0' \\
"""

KUBE_PROXY_CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
conntrack:
  maxPerCore: 65536
  min: 262144
  tcpEstablishedTimeout: 2h0m0s
  tcpCloseWaitTimeout: 1h0m0s
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = require_debian_root()
    return _copy_boot_parts(base, tmp_path / "debian")


def _enable(root: Path, unit: str) -> None:
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink(f"/lib/systemd/system/{unit}", wants / unit)


def _rows(root: Path):
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    return {row["key"]: row for row in data["keys"]}, data["findings"]


def test_dockerd_overrides_bridge_netfilter_and_forwarding(root: Path) -> None:
    install_into(root, package_tree("docker.io"))
    _enable(root, "docker.service")
    make_root(root, {"/etc/docker/daemon.json": '{\n  "log-driver": "journald",\n  "icc": false\n}\n',
                     "/etc/modules-load.d/br.conf": "br_netfilter\n",
                     "/etc/sysctl.d/95-br.conf": f"{BR} = 0\nnet.ipv4.ip_forward = 0\n"}, usrmerge=False)
    rows, findings = _rows(root)
    assert rows[BR]["boot"] == {"applied": False, "value": "1"}
    assert rows[BR]["service"] == 'docker.service: /etc/docker/daemon.json:3 `"icc": false`'
    forward = rows["net.ipv4.ip_forward"]
    assert forward["boot"] == {"applied": False, "value": "1"}
    assert forward["service"].startswith("docker.service: /usr/lib/systemd/system/docker.service:")
    assert {f["key"] for f in findings if f["code"] == "SD117"} == {BR, "net.ipv4.ip_forward"}


def test_dockerd_with_defaults_keeps_bridge_netfilter(root: Path) -> None:
    install_into(root, package_tree("docker.io"))
    _enable(root, "docker.service")
    make_root(root, {"/etc/docker/daemon.json": '{"ip-forward": false}\n',
                     "/etc/modules-load.d/br.conf": "br_netfilter\n",
                     "/etc/sysctl.d/95-br.conf": f"{BR} = 0\nnet.ipv4.ip_forward = 0\n"}, usrmerge=False)
    rows, _ = _rows(root)
    assert rows[BR]["boot"] == {"applied": True, "value": "0"} and "service" not in rows[BR]
    assert rows["net.ipv4.ip_forward"]["boot"] == {"applied": True, "value": "0"}


def test_k3s_agent_sets_bridge_netfilter_and_leaves_conntrack_max(root: Path) -> None:
    make_root(root, {"/lib/systemd/system/k3s.service": K3S_UNIT,
                     "/etc/modules-load.d/k8s.conf": "br_netfilter\nnf_conntrack\n",
                     "/etc/sysctl.d/90-k8s.conf": f"{BR} = 0\nnet.netfilter.nf_conntrack_max = 524288\n"},
              usrmerge=False)
    _enable(root, "k3s.service")
    rows, _ = _rows(root)
    assert rows[BR]["boot"] == {"applied": False, "value": "1"}
    assert rows[BR]["service"].startswith("k3s.service: /usr/lib/systemd/system/k3s.service:")
    # conntrack-max-per-core=0: k3s leaves nf_conntrack_max alone
    assert rows["net.netfilter.nf_conntrack_max"]["boot"] == {"applied": True, "value": "524288"}


def test_kube_proxy_config_file_and_flags(tmp_path: Path) -> None:
    root = make_root(tmp_path / "r", {"/etc/kubernetes/kube-proxy.yaml": KUBE_PROXY_CONFIG})
    writes = service_writes(Root(root), "kube-proxy.service", "/etc/systemd/system/kube-proxy.service:7",
                            "ExecStart=/usr/local/bin/kube-proxy --config=/etc/kubernetes/kube-proxy.yaml "
                            "--conntrack-tcp-timeout-close-wait=30m")
    by_key = {w.path: w for w in writes}
    assert by_key["net/netfilter/nf_conntrack_max"].value == "max(262144, 65536 x CPUs)"
    assert by_key["net/netfilter/nf_conntrack_max"].evidence == "/etc/kubernetes/kube-proxy.yaml:5 `maxPerCore: 65536`"
    assert by_key["net/netfilter/nf_conntrack_tcp_timeout_established"].value == "7200"
    assert by_key["net/netfilter/nf_conntrack_tcp_timeout_close_wait"].value == "1800"  # the flag wins
    defaults = {w.path: w.value for w in service_writes(Root(root), "kube-proxy.service", "u:1",
                                                          "ExecStart=/usr/bin/kube-proxy")}
    assert defaults == {"net/netfilter/nf_conntrack_max": "max(131072, 32768 x CPUs)",
                        "net/netfilter/nf_conntrack_tcp_timeout_established": "86400",
                        "net/netfilter/nf_conntrack_tcp_timeout_close_wait": "3600"}


def test_firewalld_cleanup_modules_on_exit(root: Path) -> None:
    tree = package_tree("firewalld")
    install_into(root, tree)
    _enable(root, "firewalld.service")
    conf = (tree / "etc/firewalld/firewalld.conf").read_text()
    assert "CleanupModulesOnExit=no" in conf  # Debian's default: nothing is unloaded
    make_root(root, {"/etc/firewalld/firewalld.conf": conf.replace("CleanupModulesOnExit=no", "CleanupModulesOnExit=yes"),
                     "/etc/modules-load.d/ct.conf": "nf_conntrack\n",
                     "/etc/sysctl.d/90-ct.conf": "net.netfilter.nf_conntrack_tcp_be_liberal = 1\n"}, usrmerge=False)
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "net.netfilter.nf_conntrack_tcp_be_liberal",
                           "--root", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "firewalld.service: firewalld unloads the netfilter modules on stop/restart" in proc.stdout
    assert "/etc/firewalld/firewalld.conf:19 `CleanupModulesOnExit=yes`" in proc.stdout
