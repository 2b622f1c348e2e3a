"""Globs at boot (issue 15 item 4): an offline root's `net.ipv4.conf.*.X` is predicted for all, default, lo and
the interfaces the root's network configuration names, with real configuration files from Debian 12 packages
(ifupdown's and netplan.io's own examples, systemd's /usr/lib/systemd/network), and the expansion is checked
against the real systemd-sysctl 252 and procps 4.0.2 (an explicit line beats a glob whatever their order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor.boot.network import glob_candidates, network_interfaces, yaml_block_keys
from sysctl_doctor.config.sysctl_d import effective_settings, expand_globs_over, load_sysctl_config
from sysctl_doctor.root import Root
from tests.boot.debian_packages import install_into, package_tree
from tests.boot.rootfs import make_root
from tests.boot.test_debian_root import _copy_boot_parts, require_debian_root
from tests.config.oracle import Case, build_root, host_snapshot, run_real, why_not_runnable

E = "/etc/sysctl.d"


def _names(net):
    return {(i.name, i.tool, i.kind, i.created) for i in net.configured}


def test_netplan_examples_of_the_real_package(tmp_path: Path) -> None:
    examples = package_tree("netplan.io") / "usr/share/doc/netplan/examples"
    root = make_root(tmp_path / "r", {
        "/etc/netplan/01-bridge-vlan.yaml": (examples / "bridge_vlan.yaml").read_text(),
        "/etc/netplan/02-bonding.yaml": (examples / "bonding.yaml").read_text(),
    })
    net = network_interfaces(Root(root))
    names = _names(net)
    assert ("br0", "netplan", "bridge", True) in names
    assert ("vlan15", "netplan", "vlan", True) in names
    assert ("enp0s25", "netplan", "ethernet", False) in names
    assert ("bond0", "netplan", "bond", True) in names
    assert {"enp3s0", "enp4s0"} <= {n for n, *_ in names}  # `enp3s0: {}` on one line
    br0 = net.find("br0")
    assert br0.where == "/etc/netplan/01-bridge-vlan.yaml:8" and br0.text == "br0:"
    assert net.tools == ["netplan"]


def test_netplan_match_ids_and_set_name(tmp_path: Path) -> None:
    root = make_root(tmp_path / "r", {"/etc/netplan/10.yaml": (
        "network:\n  version: 2\n  ethernets:\n    lan:   # an id, not a name\n      match:\n"
        "        macaddress: \"00:11:22:33:44:55\"\n      set-name: lan0\n    eth9:\n      dhcp4: true\n"
        "  vlans:\n    'eth9.7':\n      id: 7\n      link: eth9\n")})
    net = network_interfaces(Root(root))
    assert {n for n, *_ in _names(net)} == {"lan0", "eth9", "eth9.7"}
    assert any("lan" in s and "match" in s for s in net.skipped)


def test_yaml_subset_paths() -> None:
    keys = yaml_block_keys("a:\n  b: {x: {}, y: 1}\n  c:\n    - d: 1\n  e: 'q' # c\n")
    assert [(k, n) for k, n, _v in keys] == [(("a",), 1), (("a", "b", "x"), 2), (("a", "b", "y"), 2),
                                             (("a", "b"), 2), (("a", "c"), 3), (("a", "e"), 5)]


def test_ifupdown_bridge_example_and_vlan(tmp_path: Path) -> None:
    example = (package_tree("ifupdown") / "usr/share/doc/ifupdown/examples/bridge").read_text()
    stanza = example[example.index("auto br0"):example.index("\n\n", example.index("auto br0"))] + "\n"
    root = make_root(tmp_path / "r", {
        "/etc/network/interfaces": "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n" + stanza,
        "/etc/network/interfaces.d/vlans": ("auto eth0.100\niface eth0.100 inet manual\n"
                                            "auto vlan7\niface vlan7 inet manual\n    vlan-raw-device eth2\n"
                                            "iface spare0 inet dhcp\n"),
    })
    net = network_interfaces(Root(root))
    names = _names(net)
    assert ("br0", "ifupdown", "bridge", True) in names
    assert {("eth0", "ifupdown"), ("eth1", "ifupdown")} <= {(n, t) for n, t, *_ in names}
    assert ("eth0.100", "ifupdown", "vlan", True) in names
    assert ("vlan7", "ifupdown", "vlan", True) in names and ("eth2", "ifupdown", "VLAN raw device", False) in names
    assert "spare0" not in {n for n, *_ in names} and any("spare0" in s for s in net.skipped)
    assert "lo" not in {n for n, *_ in names}
    # not started at boot: ifupdown creates nothing, the NICs it names still count
    idle = network_interfaces(Root(root), ifupdown_runs=False)
    assert "br0" not in {i.name for i in idle.configured} and "eth0" in {i.name for i in idle.configured}


def test_networkd_files_and_systemd_own_patterns(tmp_path: Path) -> None:
    found = require_debian_root()
    files = {"/etc/systemd/network/10-dummy.netdev": "[NetDev]\nName=dummy0\nKind=dummy\n",
             "/etc/systemd/network/20-lan.network": "[Match]\nName=eth3 en*\n[Network]\nDHCP=yes\n",
             "/run/systemd/network/30-rt.netdev": "[NetDev]\nName=runtime0\nKind=dummy\n",
             "/etc/systemd/network/40-masked.netdev": ("link", "/dev/null"),
             "/etc/systemd/network/50-veth.netdev": "[NetDev]\nName=ve-host\nKind=veth\n[Peer]\nName=ve-peer\n"}
    # systemd's own container templates (Name=ve-* ...): patterns, not names
    templates = sorted((found / "usr/lib/systemd/network").glob("80-container-*.network"))
    assert templates, "systemd 252 ships 80-container-*.network"
    for f in templates:
        files[f"/usr/lib/systemd/network/{f.name}"] = f.read_text()
    root = make_root(tmp_path / "r", files)
    net = network_interfaces(Root(root))
    assert {n for n, *_ in _names(net)} == {"dummy0", "eth3", "ve-host", "ve-peer"}
    assert ("dummy0", "systemd-networkd", "netdev:dummy", True) in _names(net)
    assert any("en*" in s for s in net.skipped)
    live = network_interfaces(Root(root, live=True))
    assert "runtime0" in {i.name for i in live.configured}  # a running host's /run counts


def _systemd_root(tmp_path: Path, udev_rerun: bool) -> Path:
    base = require_debian_root()
    root = _copy_boot_parts(base, tmp_path / "debian")
    install_into(root, package_tree("ifupdown"))
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("/lib/systemd/system/networking.service", wants / "networking.service")
    os.symlink("/lib/systemd/system/systemd-networkd.service", wants / "systemd-networkd.service")
    make_root(root, {
        "/etc/systemd/network/10-dummy.netdev": "[NetDev]\nName=dummy0\nKind=dummy\n",
        "/etc/network/interfaces": "auto lo\niface lo inet loopback\nauto eth0.100\niface eth0.100 inet manual\n",
        "/etc/sysctl.d/50-rp.conf": "net.ipv4.conf.*.rp_filter = 2\nnet.ipv4.conf.dummy0.rp_filter = 0\n",
    }, usrmerge=False)
    if not udev_rerun:
        os.symlink("/dev/null", root / "etc/udev/rules.d/99-systemd.rules")
    return root


def _check_json(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return {row["key"]: row for row in json.loads(proc.stdout)["keys"]}


def test_check_rows_for_a_glob_on_a_debian_root(tmp_path: Path) -> None:
    rows = _check_json(_systemd_root(tmp_path, udev_rerun=True))
    glob = rows["net.ipv4.conf.*.rp_filter"]
    assert "glob" not in glob  # the pattern's own row, as before
    for name in ("all", "default", "lo", "eth0/100", "eth0"):
        row = rows[f"net.ipv4.conf.{name}.rp_filter"]
        assert row["boot"] == {"applied": True, "value": "2"}, name
        assert row["glob"] == "net.ipv4.conf.*.rp_filter" and row["line"] == 1
    assert rows["net.ipv4.conf.eth0/100.rp_filter"]["interface"] == {
        "name": "eth0.100", "tool": "ifupdown", "kind": "vlan", "created": True,
        "evidence": "/etc/network/interfaces:4 `iface eth0.100 inet manual`"}
    explicit = rows["net.ipv4.conf.dummy0.rp_filter"]  # the explicit line beats the glob
    assert explicit["configured"] == "0" and explicit["line"] == 2 and "glob" not in explicit
    assert explicit["boot"] == {"applied": True, "value": "0"}
    assert explicit["interface"]["evidence"] == "/etc/systemd/network/10-dummy.netdev:2 `Name=dummy0`"


def test_without_the_udev_rule_created_interfaces_start_from_default(tmp_path: Path) -> None:
    rows = _check_json(_systemd_root(tmp_path, udev_rerun=False))
    vlan = rows["net.ipv4.conf.eth0/100.rp_filter"]
    assert vlan["boot"] == {"applied": True, "value": "2"}  # copied from default (= the glob's 2)
    dummy = rows["net.ipv4.conf.dummy0.rp_filter"]  # explicit 0, but nothing writes it: it starts as default's 2
    assert dummy["boot"] == {"applied": False, "value": "2"}


# --------------------------------------------------------------------------- against the real programs

IFACES = ("all", "default", "lo", "dummy0", "eth0.100", "br0")
DIFF_CASES = [
    Case("glob-then-explicit", {f"{E}/10-g.conf": "net.ipv4.conf.*.rp_filter = 2\n",
                                f"{E}/20-e.conf": "net.ipv4.conf.dummy0.rp_filter = 0\n"}, ()),
    Case("explicit-then-glob", {f"{E}/10-e.conf": "net.ipv4.conf.br0.rp_filter = 0\n",
                                f"{E}/20-g.conf": "net.ipv4.conf.*.rp_filter = 1\n"}, ()),
    Case("vlan-explicit-slash-form", {f"{E}/10.conf": "net.ipv4.conf.*.rp_filter = 1\n"
                                                      "net.ipv4.conf.eth0/100.rp_filter = 0\n"}, ()),
    Case("two-globs-and-exclusion", {f"{E}/10.conf": "net.ipv4.conf.*.rp_filter = 1\n"
                                                     "net.ipv4.conf.[bd]*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\n"}, ()),
    Case("brace-glob", {f"{E}/10.conf": "net.ipv{4,6}.conf.*.forwarding = 1\n"}, (), flavors=("systemd",)),
]


def _keys() -> list:
    return [f"net/ipv{v}/conf/{i}/{leaf}" for v in (4, 6) for i in IFACES for leaf in ("rp_filter", "forwarding")]


def _model(root_dir: Path, flavor: str) -> dict:
    config = load_sysctl_config(Root(root_dir), flavor)
    settings = effective_settings(config, None)
    candidates = {a.path: glob_candidates(a.path, flavor == "systemd", list(IFACES), {}) for a in config.assignments
                  if a.is_glob}
    final = {}
    for s in expand_globs_over(config, settings, candidates):
        if s.final and not (s.assignment.is_glob and s.key == s.assignment.key):
            final[s.path] = s.value
    return final


def test_offline_expansion_equals_the_real_programs(tmp_path: Path) -> None:
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    cases = [Case(c.name, c.files, _keys(), c.flavors) for c in DIFF_CASES]
    jobs = [(case, flavor) for case in cases for flavor in case.flavors]
    before = host_snapshot()
    results = run_real(jobs)
    assert host_snapshot() == before, "the oracle changed something on the host"
    for (case, flavor), real in zip(jobs, results):
        root = build_root(case, tmp_path / f"{case.name}-{flavor}")
        assert _model(root, flavor) == real["written"], (case.name, flavor, real["stderr"][-2000:])


def test_explain_a_glob_lists_the_keys_it_writes(tmp_path: Path) -> None:
    root = _systemd_root(tmp_path, udev_rerun=True)
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "net.ipv4.conf.*.rp_filter", "--root",
                           str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "cannot be predicted" in out and "99-systemd.rules:72) re-runs systemd-sysctl" in out
    assert "net.ipv4.conf.eth0/100.rp_filter = 2  (applied" in out
    assert "net.ipv4.conf.dummy0.rp_filter" not in out.split("keys it is predicted to write:")[1]  # explicit line
