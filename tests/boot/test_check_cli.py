"""`sysctl-doctor check` as a user runs it: exit codes, the JSON contract, the incident end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from boot.rootfs import INCIDENT, copy_incident

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"
OPTIONAL_KEY_FIELDS = {"glob", "interface", "modprobe", "service"}  # present only where they apply (README)


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True, env=env)


def test_incident_json_contract_and_exit_1() -> None:
    proc = run("check", "--root", str(INCIDENT), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"keys", "findings", "assignments"}  # "assignments": issue 15's extension
    for entry in data["keys"]:
        # the original contract, extended (issue 15) by fate, kernel_default and aliases, and the optional
        # fields glob/interface/modprobe/service where they apply
        required = {"key", "configured", "file", "line", "provider", "boot", "after_late_load", "live", "findings",
                    "fate", "kernel_default", "aliases"}
        assert required <= set(entry) <= required | OPTIONAL_KEY_FIELDS, set(entry) - required
        assert entry["kernel_default"] is None or set(entry["kernel_default"]) == {"value", "sized", "formula"}
        assert isinstance(entry["aliases"], list)
        assert set(entry["provider"]) == {"kind", "module"}
        assert entry["provider"]["kind"] in ("builtin", "module", "interface", "autoload", "unknown")
        assert set(entry["boot"]) == {"applied", "value"} and isinstance(entry["boot"]["applied"], bool)
        assert set(entry["after_late_load"]) == {"value"}
        assert entry["live"] is None  # an offline root has no live values
    for finding in data["findings"]:
        assert set(finding) == {"code", "severity", "key", "message", "fix", "keys"}
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["configured"] == "1" and entry["line"] == 71
    assert entry["provider"] == {"kind": "module", "module": "nf_conntrack"}
    assert entry["boot"] == {"applied": False, "value": "0"}
    assert entry["after_late_load"] == {"value": "0"}
    assert "SD101" in entry["findings"]
    sd101 = next(f for f in data["findings"] if f["code"] == "SD101")
    assert sd101["severity"] == "error" and sd101["key"] == KEY
    assert "nftables.service" in sd101["message"] and "/etc/nftables.conf:9" in sd101["message"]
    forward = next(e for e in data["keys"] if e["key"] == "net.ipv4.ip_forward")
    assert forward["boot"] == {"applied": True, "value": "1"}


def test_text_output_table_chain_and_findings() -> None:
    proc = run("--root", str(INCIDENT))  # a bare sysctl-doctor runs check
    assert proc.returncode == 1
    out = proc.stdout
    assert "\x1b[" not in out  # plain when piped
    assert "NOT GUARANTEED (race)" in out
    assert "could not write net.netfilter.nf_conntrack_tcp_be_liberal: key absent" in out
    assert "error SD101" in out and "fix:" in out
    assert "nftables.service: loads" in out


def test_fixed_ordering_exits_0(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {"/etc/modules": "nf_conntrack\n"})
    proc = run("check", "--root", str(root), "--format", "json")
    assert proc.returncode == 0, proc.stdout
    entry = next(e for e in json.loads(proc.stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}


def test_bad_root_is_exit_2_without_traceback(tmp_path: Path) -> None:
    proc = run("check", "--root", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a directory" in proc.stderr


def test_live_host_check_runs_and_reports_live_values() -> None:
    proc = run("check", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    for entry in data["keys"]:
        if entry["provider"]["kind"] == "builtin" and "*" not in entry["key"]:
            assert entry["live"] is not None, entry


OPENRC_FILES = {
    "/sbin/openrc": "openrc",
    "/etc/init.d/sysctl": "#!/sbin/openrc-run\ndepend() {\n\tbefore bootmisc logger\n\tkeyword -prefix -vserver\n}\n",
    "/etc/init.d/modules": "#!/sbin/openrc-run\ndepend() {\n\tuse isapnp\n\tbefore hwclock\n}\n",
    "/etc/init.d/iptables": "#!/sbin/openrc-run\ndepend() {\n\tbefore net\n}\n",
    "/etc/runlevels/boot/sysctl": ("link", "/etc/init.d/sysctl"),
    "/etc/runlevels/boot/modules": ("link", "/etc/init.d/modules"),
    "/etc/runlevels/default/iptables": ("link", "/etc/init.d/iptables"),
    "/var/lib/iptables/rules-save": "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n",
    "/etc/sysctl.d/local.conf": f"{KEY} = 1\n",
}


def test_openrc_root_check_and_fix(tmp_path: Path) -> None:
    from boot.rootfs import make_root

    root = make_root(tmp_path / "openrc", OPENRC_FILES)
    proc = run("check", "--root", str(root), "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": False, "value": "0"}
    sd101 = next(f for f in data["findings"] if f["code"] == "SD101")
    # the default runlevel starts after boot: iptables loads nf_conntrack after sysctl ran
    assert "iptables (openrc)" in sd101["message"] and "/var/lib/iptables/rules-save:1 `*nat`" in sd101["message"]
    fixed = subprocess.run([sys.executable, "-m", "sysctl_doctor", "fix", "--root", str(root)], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert 'modules="${modules} nf_conntrack"' in (root / "etc/conf.d/modules").read_text()
    assert 'rc_after="modules"' in (root / "etc/conf.d/sysctl").read_text()
    after = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    assert next(e for e in after["keys"] if e["key"] == KEY)["boot"] == {"applied": True, "value": "1"}


def test_sysvinit_procps_flavour_reads_etc_sysctl_conf_last(tmp_path: Path) -> None:
    from boot.rootfs import make_root

    root = make_root(tmp_path / "sysv", {
        "/sbin/init": "sysvinit", "/etc/inittab": "id:2:initdefault:\n",
        "/etc/init.d/procps": "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: procps\n# Required-Start: mountkernfs $local_fs\n"
                              "# Should-Start: udev module-init-tools\n### END INIT INFO\n",
        "/etc/init.d/kmod": "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: kmod module-init-tools\n### END INIT INFO\n",
        "/etc/rcS.d/S01kmod": ("link", "../init.d/kmod"), "/etc/rcS.d/S02procps": ("link", "../init.d/procps"),
        "/etc/modules": "nf_conntrack\n",
        "/etc/sysctl.d/10-a.conf": f"{KEY} = 0\n",
        "/etc/sysctl.conf": f"{KEY} = 1\n",
    })
    proc = run("check", "--root", str(root), "--format", "json")
    data = json.loads(proc.stdout)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["file"] == "/etc/sysctl.conf" and entry["boot"] == {"applied": True, "value": "1"}


def test_grub_modules_load_makes_the_key_apply(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {
        "/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="modules_load=nf_conntrack"\n'})
    entry = next(e for e in json.loads(run("check", "--root", str(root), "--format", "json").stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}
    # --cmdline replaces what the root says
    proc = run("check", "--root", str(root), "--format", "json", "--cmdline", "quiet")
    entry = next(e for e in json.loads(proc.stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"]["applied"] is False


def test_kubelet_node_loads_conntrack_after_sysctl(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {
        "/usr/lib/systemd/system/kubelet.service":
            "[Unit]\nWants=network-online.target\nAfter=network-online.target\n[Service]\nExecStart=/usr/bin/kubelet\n"
            "[Install]\nWantedBy=multi-user.target\n",
        "/etc/systemd/system/multi-user.target.wants/kubelet.service": ("link", "/lib/systemd/system/kubelet.service"),
        "/etc/sysctl.d/k8s.conf": "net.bridge.bridge-nf-call-iptables = 1\n",
    })
    (root / "etc/systemd/system/sysinit.target.wants/nftables.service").unlink()
    data = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    bridge = next(e for e in data["keys"] if e["key"] == "net.bridge.bridge-nf-call-iptables")
    assert bridge["provider"] == {"kind": "module", "module": "br_netfilter"}
    # not written in time, but br_netfilter's default is already 1: the value after boot is right
    assert bridge["boot"] == {"applied": True, "value": "1"}
    assert not [f for f in data["findings"] if f["code"] == "SD101" and f["key"] == bridge["key"]]
    finding = next(f for f in data["findings"] if f["code"] == "SD101" and f["key"] == KEY)
    assert "kubelet.service" in finding["message"] and "runs after systemd-sysctl.service" in finding["message"]


def test_module_alias_in_modules_load_counts(tmp_path: Path) -> None:
    # modules.alias (real Debian 6.1 metadata): "alias ip_conntrack nf_conntrack"
    root = copy_incident(tmp_path / "r", {"/etc/modules-load.d/old.conf": "ip_conntrack\n"})
    entry = next(e for e in json.loads(run("check", "--root", str(root), "--format", "json").stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}


def test_garbage_and_symlink_loops_do_not_stop_check(tmp_path: Path) -> None:
    import os

    root = copy_incident(tmp_path / "r")
    rnd = os.urandom(3000)
    (root / "etc/systemd/system/x.service").write_bytes(rnd)
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/10-x.rules").write_bytes(rnd[::-1])
    (root / "etc/modules-load.d/junk.conf").write_bytes(b"\x1b[31mred\n\x00\xff\n")
    os.symlink("loop-b.conf", root / "etc/modules-load.d/loop-a.conf")
    os.symlink("loop-a.conf", root / "etc/modules-load.d/loop-b.conf")
    proc = run("check", "--root", str(root))
    assert proc.returncode == 1, proc.stderr  # the incident's SD101 is still found
    assert "Traceback" not in proc.stderr and "\x1b[31m" not in proc.stdout
    assert "skipped: /etc/modules-load.d/loop-a.conf: too many levels of symbolic links" in proc.stdout


def test_modprobe_install_true_blocks_every_load(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {"/etc/modprobe.d/cis.conf": "install nf_conntrack /bin/true\n",
                                          "/etc/modules": "nf_conntrack\n"})
    data = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    entry = next(e for e in data["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": False, "value": None}
    assert entry["after_late_load"] == {"value": None}  # nothing can ever load it
    sd114 = [f for f in data["findings"] if f["code"] == "SD114"]
    assert {f["message"].split(" would load")[0] for f in sd114} == {"systemd-modules-load.service", "nftables.service"}
    assert all("/etc/modprobe.d/cis.conf:1" in f["message"] for f in sd114)


def test_a_late_unit_rerunning_sysctl_after_the_loader_applies_the_key(tmp_path: Path) -> None:
    late = ("[Unit]\nDefaultDependencies=no\nAfter=nftables.service\nBefore=sysinit.target\n"
            "[Service]\nType=oneshot\nExecStart=/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter\n"
            "[Install]\nWantedBy=sysinit.target\n")
    root = copy_incident(tmp_path / "r", {
        "/etc/systemd/system/sysctl-late.service": late,
        "/etc/systemd/system/sysinit.target.wants/sysctl-late.service": ("link", "/etc/systemd/system/sysctl-late.service"),
    })
    proc = run("check", "--root", str(root), "--format", "json")
    assert proc.returncode == 0, proc.stdout
    entry = next(e for e in json.loads(proc.stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}
    # not ordered after nftables.service: it races too, so nothing is guaranteed
    unordered = copy_incident(tmp_path / "u", {
        "/etc/systemd/system/sysctl-late.service": late.replace("After=nftables.service\n", ""),
        "/etc/systemd/system/sysinit.target.wants/sysctl-late.service": ("link", "/etc/systemd/system/sysctl-late.service"),
    })
    entry = next(e for e in json.loads(run("check", "--root", str(unordered), "--format", "json").stdout)["keys"] if e["key"] == KEY)
    assert entry["boot"]["applied"] is False
