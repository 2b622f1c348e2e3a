"""modprobe.d commands change the boot prediction (issue 15 item 5): `install` (the `modprobe --ignore-install M
&& sysctl -w …` idiom, `/bin/true`), `softdep … post:`, `blacklist` per loader, `options` that set a key's
starting value. Roots: the qemu tier's mmdebstrap Debian 12 root (its real units, udev rules and kmod
metadata) with the incident's nftables ruleset enabled, so nf_conntrack is loaded in a race with
systemd-sysctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from sysctl_doctor.boot.modprobe_d import option_default, parse_install, parse_options
from sysctl_doctor.boot.udev import command_covers
from tests.boot.rootfs import INCIDENT, make_root
from tests.boot.test_debian_root import _copy_boot_parts, require_debian_root

BE = "net.netfilter.nf_conntrack_tcp_be_liberal"


def test_install_idioms_are_read_as_the_shell_runs_them() -> None:
    idiom = parse_install("nf_conntrack", "/sbin/modprobe --ignore-install nf_conntrack $CMDLINE_OPTS && "
                          "/sbin/sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1", "/etc/modprobe.d/x.conf:1")
    assert idiom.loads and idiom.value_after_load("net/netfilter/nf_conntrack_tcp_be_liberal", "0", command_covers) == "1"
    shell = parse_install("nf_conntrack", "/bin/sh -c 'modprobe -i nf_conntrack; sysctl net.netfilter.nf_conntrack_max=9'",
                          "f:2")
    assert shell.loads and shell.value_after_load("net/netfilter/nf_conntrack_max", "1", command_covers) == "9"
    rerun = parse_install("nf_conntrack", "modprobe --ignore-install nf_conntrack && /lib/systemd/systemd-sysctl "
                          "--prefix=/net/netfilter", "f:3", root=None)
    assert rerun.loads and rerun.writes == ()
    for disabled in ("/bin/true", "/bin/false", "/usr/bin/logger nf_conntrack is disabled"):
        assert not parse_install("nf_conntrack", disabled, "f:4").loads


def test_option_parsing() -> None:
    assert parse_options('hashsize=1024 acct tstamp=N expect_hashsize="8"') == {
        "hashsize": "1024", "acct": "1", "tstamp": "N", "expect_hashsize": "8"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = require_debian_root()
    copy = _copy_boot_parts(base, tmp_path / "debian")
    (copy / "etc/nftables.conf").write_text((INCIDENT / "etc/nftables.conf").read_text())
    wants = copy / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("/lib/systemd/system/nftables.service", wants / "nftables.service")
    (copy / "etc/sysctl.d/90-nat.conf").write_text(f"{BE} = 1\nnet.netfilter.nf_conntrack_max = 262144\n")
    return copy


def _rows(root: Path) -> Dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return {row["key"]: row for row in json.loads(proc.stdout)["keys"]}


def test_without_modprobe_d_the_race_loses(root: Path) -> None:
    assert _rows(root)[BE]["boot"] == {"applied": False, "value": "0"}


def test_install_idiom_writes_the_key_after_insertion(root: Path) -> None:
    make_root(root, {"/etc/modprobe.d/nat.conf": (
        "# workaround\ninstall nf_conntrack /sbin/modprobe --ignore-install nf_conntrack $CMDLINE_OPTS && "
        f"/sbin/sysctl -w {BE}=1\n"
        "install nf_conntrack /bin/true\n")}, usrmerge=False)  # libkmod takes the first matching install line
    row = _rows(root)[BE]
    assert row["boot"] == {"applied": True, "value": "1"}
    assert row["modprobe"] == [f"/etc/modprobe.d/nat.conf:2 `install nf_conntrack /sbin/modprobe --ignore-install "
                               f"nf_conntrack $CMDLINE_OPTS && /sbin/sysctl -w {BE}=1`"]


def test_install_true_stops_every_load(root: Path) -> None:
    make_root(root, {"/etc/modprobe.d/off.conf": "install nf_conntrack /bin/true\n"}, usrmerge=False)
    row = _rows(root)[BE]
    assert row["boot"]["value"] is None and row["after_late_load"]["value"] is None
    assert any("install nf_conntrack /bin/true" in m for m in row["modprobe"])


def test_options_set_the_starting_value(root: Path) -> None:
    make_root(root, {"/etc/modprobe.d/ct.conf": "options nf_conntrack hashsize=131072\n"}, usrmerge=False)
    row = _rows(root)["net.netfilter.nf_conntrack_max"]
    assert row["boot"] == {"applied": False, "value": str(8 * 131072)}  # lost the race: the hashsize-given max
    assert row["modprobe"] == ["/etc/modprobe.d/ct.conf:1 `options nf_conntrack hashsize=131072`"]


def test_softdep_post_loads_before_the_sysctl_step(root: Path) -> None:
    make_root(root, {"/etc/modules-load.d/bridge.conf": "bridge\n",
                     "/etc/modprobe.d/br.conf": "softdep bridge post: br_netfilter\n",
                     "/etc/sysctl.d/80-br.conf": "net.bridge.bridge-nf-call-iptables = 0\n"}, usrmerge=False)
    row = _rows(root)["net.bridge.bridge-nf-call-iptables"]
    assert row["boot"] == {"applied": True, "value": "0"}


def test_blacklist_applies_to_modules_load_not_to_dependencies(root: Path) -> None:
    make_root(root, {"/etc/modules-load.d/ct.conf": "nf_conntrack\n",
                     "/etc/modprobe.d/bl.conf": "blacklist nf_conntrack\n"}, usrmerge=False)
    row = _rows(root)[BE]
    # systemd-modules-load skips it (KMOD_PROBE_APPLY_BLACKLIST); nftables still loads it as nft_ct's dependency
    assert row["boot"] == {"applied": False, "value": "0"}
    assert any("systemd-modules-load skips deny-listed modules" in m for m in row["modprobe"])


def test_option_default_formulas() -> None:
    class Index:
        def module_options(self, module):
            return [("hashsize=1000 expect_hashsize=64 acct=1", "/etc/modprobe.d/c.conf:3")]
    assert option_default(Index(), "nf_conntrack", "net/netfilter/nf_conntrack_buckets")[0] == "1024"
    assert option_default(Index(), "nf_conntrack", "net/netfilter/nf_conntrack_max")[0] == "8192"
    assert option_default(Index(), "nf_conntrack", "net/netfilter/nf_conntrack_expect_max")[0] == "256"
    assert option_default(Index(), "nf_conntrack", "net/netfilter/nf_conntrack_acct")[0] == "1"


def test_kernel_command_line_options_come_after_modprobe_d(root: Path) -> None:
    make_root(root, {"/etc/modprobe.d/ct.conf": "options nf_conntrack hashsize=131072\n"}, usrmerge=False)
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json",
                           "--cmdline", "root=/dev/vda1 nf_conntrack.hashsize=16384"], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    row = next(r for r in json.loads(proc.stdout)["keys"] if r["key"] == "net.netfilter.nf_conntrack_max")
    assert row["boot"] == {"applied": False, "value": str(8 * 16384)}  # libkmod reads /proc/cmdline last


def test_an_offline_roots_run_modprobe_d_is_empty_at_boot(tmp_path: Path) -> None:
    """/run/modprobe.d, like /run/sysctl.d, is a tmpfs at boot: an image's files there are never read; on the
    running host (live) they count."""
    from fixture_roots import write_root
    from sysctl_doctor.kernel.modules_tree import read_modprobe_config
    from sysctl_doctor.root import Root

    root = write_root(tmp_path / "r", {"/run/modprobe.d/nf.conf": "blacklist nf_conntrack\n",
                                       "/etc/modprobe.d/br.conf": "blacklist br_netfilter\n"})
    offline = read_modprobe_config(Root(root))
    assert set(offline.blacklist) == {"br_netfilter"}, offline.blacklist
    live = read_modprobe_config(Root(root, live=True))
    assert set(live.blacklist) == {"br_netfilter", "nf_conntrack"}, live.blacklist
