"""NAT facts read from real rules (iptables-nft as kube-proxy writes them, native nft as the lab does),
then fed to the CT rules (`advise_all`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sysctl_doctor.conntrack.nat_facts import read_nat_facts
from sysctl_doctor.findings.registry import advise_all as recommend
from sysctl_doctor.lab.topology import nat_ruleset


def _ipt(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "iptables", *args], check=True, capture_output=True)


def test_kube_proxy_style_iptables(lab_netns) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("iptables") is None:
        pytest.skip("NEEDS iptables: apt-get install iptables")
    _ipt(lab_netns, "-N", "KUBE-FORWARD")
    _ipt(lab_netns, "-A", "FORWARD", "-j", "KUBE-FORWARD")
    _ipt(lab_netns, "-A", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    _ipt(lab_netns, "-t", "nat", "-A", "POSTROUTING", "-s", "10.232.0.0/16", "-j", "MASQUERADE")
    _ipt(lab_netns, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "80", "-j", "DNAT",
         "--to-destination", "10.232.1.2:8080")
    facts = read_nat_facts(lab_netns)
    assert facts.snat_to_node and facts.dnat and facts.be_liberal is False
    assert facts.invalid_drop_chains == frozenset({"forward"})
    recs = recommend(facts)
    assert recs[0].code == "CT001" and "FORWARD does not help" in recs[0].text
    assert "CT002" not in [r.code for r in recs]


def test_lab_nft_ruleset_with_input_drop(lab_netns) -> None:  # type: ignore[no-untyped-def]
    ruleset = nat_ruleset({"input": "ct state invalid counter drop"}).replace("oifname \"to-srv\" ", "")
    subprocess.run(["ip", "netns", "exec", lab_netns, "nft", "-f", "-"], input=ruleset, text=True, check=True)
    facts = read_nat_facts(lab_netns)
    assert facts.snat_to_node and not facts.dnat
    assert facts.invalid_drop_chains == frozenset({"input"})
    assert [r.code for r in recommend(facts)] == []
    subprocess.run(["ip", "netns", "exec", lab_netns, "sysctl", "-qw",
                    "net.netfilter.nf_conntrack_tcp_be_liberal=1"], check=True)
    assert read_nat_facts(lab_netns).be_liberal is True
