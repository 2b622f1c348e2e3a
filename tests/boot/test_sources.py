"""modules-load.d, /etc/modules, kernel command line, initramfs lists, udev rules, loaders, init scripts."""

from __future__ import annotations

from pathlib import Path

from boot.rootfs import INCIDENT, make_root
from sysctl_doctor.boot.cmdline import read_cmdline, split_cmdline
from sysctl_doctor.boot.initramfs import load_initramfs_modules
from sysctl_doctor.boot.initscripts import load_openrc, load_sysvinit
from sysctl_doctor.boot.modules_load import load_modules_load
from sysctl_doctor.boot.timeline import AFTER, BEFORE, RACE, build_timeline, detect_init_system
from sysctl_doctor.boot.udev import parse_rules, sysctl_reruns
from sysctl_doctor.root import Root

UDEV_99 = (INCIDENT / "usr/lib/udev/rules.d/99-systemd.rules").read_text()


def test_modules_load_precedence_mask_and_dash_equivalence(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/usr/lib/modules-load.d/a.conf": "vendor_a\n",
        "/etc/modules-load.d/a.conf": "# local\n; also comment\nbr-netfilter\n",
        "/usr/lib/modules-load.d/b.conf": "masked_mod\n",
        "/etc/modules-load.d/b.conf": ("link", "/dev/null"),
        "/usr/lib/modules-load.d/c.txt": "ignored\n",
        "/etc/modules": "# /etc/modules\nnf_conntrack\nloop max_loop=8\n",
        "/etc/modules-load.d/modules.conf": ("link", "../modules"),
    })
    config = load_modules_load(Root(root))
    assert config.modules() == ["br_netfilter", "nf_conntrack"]
    assert config.masked == ["/etc/modules-load.d/b.conf -> /dev/null"]
    request = config.request_for("nf-conntrack")
    assert request is not None and request.source == "/etc/modules:2"
    assert request.via == "/etc/modules-load.d/modules.conf"
    assert any("loop max_loop=8" in d.message and d.line == 3 for d in config.diagnostics)


def test_cmdline_from_grub_and_explicit(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="modules-load=nf_conntrack,br_netfilter rd.modules_load=ip_vs"\n',
    })
    cmdline = read_cmdline(Root(root))
    assert [r.module for r in cmdline.module_requests()] == ["nf_conntrack", "br_netfilter", "ip_vs"]
    assert read_cmdline(Root(root), "modules_load=sctp").module_requests()[0].module == "sctp"
    assert split_cmdline('a="b c" d') == ["a=b c", "d"]


def test_initramfs_tools_and_dracut_lists(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/etc/initramfs-tools/modules": "# comment\nnf_conntrack\nraid1 opt=1\n",
        "/etc/dracut.conf.d/net.conf": 'force_drivers+=" br_netfilter "\nadd_drivers+=" sctp "\n',
    })
    result = load_initramfs_modules(Root(root))
    assert [r.module for r in result.loaded] == ["nf_conntrack", "raid1", "br_netfilter"]
    assert [r.module for r in result.included_only] == ["sctp"]


def test_udev_rules_find_module_and_net_reruns(tmp_path: Path) -> None:
    rule = 'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", \\\n  RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"\n'
    root = make_root(tmp_path, {
        "/usr/lib/udev/rules.d/99-systemd.rules": UDEV_99,
        "/etc/udev/rules.d/90-conntrack.rules": rule,
        "/usr/lib/udev/rules.d/91-masked.rules": rule.replace("nf_conntrack", "br_netfilter"),
        "/etc/udev/rules.d/91-masked.rules": ("link", "/dev/null"),
    })
    reruns = sysctl_reruns(Root(root))
    module = [r for r in reruns if r.subsystem == "module"]
    assert len(module) == 1 and module[0].rule.where == "/etc/udev/rules.d/90-conntrack.rules:1"
    assert module[0].matches_module("nf_conntrack") and not module[0].matches_module("br_netfilter")
    assert module[0].covers_key("net/netfilter/nf_conntrack_tcp_be_liberal", "nf_conntrack")
    assert not module[0].covers_key("net/ipv4/ip_forward", "nf_conntrack")
    net = [r for r in reruns if r.subsystem == "net"]
    assert net[0].covers_key("net/ipv4/conf/eth0/rp_filter", "eth0")
    assert not net[0].covers_key("net/ipv4/conf/eth1/rp_filter", "eth0")
    assert parse_rules('KERNEL=="a|b", RUN+="x"', "f")[0].matches_value("KERNEL", "b") is True


def test_incident_timeline_names_nftables_race_with_evidence() -> None:
    timeline = build_timeline(Root(INCIDENT))
    assert timeline.init_system == "systemd" and timeline.modules_step_relation == BEFORE
    loads = [item for item in timeline.loads if item.module == "nf_conntrack"]
    assert len(loads) == 1
    assert loads[0].by == "nftables.service" and loads[0].relation == RACE
    assert loads[0].evidence == "/etc/nftables.conf:9 `ct state established,related accept`"


def test_iptables_restore_after_sysctl_and_docker(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/usr/lib/systemd/system/systemd-sysctl.service": (INCIDENT / "usr/lib/systemd/system/systemd-sysctl.service").read_text(),
        "/usr/lib/systemd/system/netfilter-persistent.service":
            "[Unit]\nDefaultDependencies=no\nAfter=systemd-modules-load.service local-fs.target\nBefore=network-pre.target\n"
            "[Service]\nExecStart=/usr/sbin/netfilter-persistent start\n[Install]\nWantedBy=multi-user.target\n",
        "/etc/systemd/system/multi-user.target.wants/netfilter-persistent.service": ("link", "/lib/systemd/system/netfilter-persistent.service"),
        "/etc/iptables/rules.v4": "*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n",
        "/usr/lib/systemd/system/docker.service": "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/usr/bin/dockerd -H fd://\n",
        "/etc/systemd/system/multi-user.target.wants/docker.service": ("link", "/lib/systemd/system/docker.service"),
    })
    timeline = build_timeline(Root(root))
    by = {(item.by, item.module): item for item in timeline.loads}
    assert by[("netfilter-persistent.service", "nf_conntrack")].relation == RACE
    assert by[("netfilter-persistent.service", "nf_conntrack")].evidence.startswith("/etc/iptables/rules.v4:3 ")
    assert by[("docker.service", "br_netfilter")].relation == AFTER
    assert by[("docker.service", "br_netfilter")].evidence.startswith("/usr/lib/systemd/system/docker.service:4 ")


SYSV_PROCPS = (
    "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          procps\n# Required-Start:    mountkernfs $local_fs\n"
    "# Should-Start:      udev module-init-tools\n# Default-Start:     S\n### END INIT INFO\n"
)
SYSV_KMOD = "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          kmod\n# Required-Start:\n# Default-Start:     S\n### END INIT INFO\n"


def test_sysvinit_order_from_lsb_headers(tmp_path: Path) -> None:
    files = {
        "/sbin/init": "#!binary\n", "/etc/inittab": "id:2:initdefault:\n",
        "/etc/init.d/procps": SYSV_PROCPS, "/etc/init.d/kmod": SYSV_KMOD,
        "/etc/rcS.d/S01kmod": ("link", "../init.d/kmod"), "/etc/rcS.d/S02procps": ("link", "../init.d/procps"),
        "/etc/modules": "nf_conntrack\n",
    }
    root = make_root(tmp_path / "a", files)
    assert detect_init_system(Root(root)) == "sysvinit"
    # procps names "module-init-tools", which kmod does not provide: nothing orders them
    assert load_sysvinit(Root(root)).relation("kmod", "procps") == "unordered"
    timeline = build_timeline(Root(root))
    assert [(item.module, item.relation) for item in timeline.loads] == [("nf_conntrack", RACE)]
    fixed = make_root(tmp_path / "b", {**files, "/etc/init.d/kmod": SYSV_KMOD.replace("kmod\n", "kmod module-init-tools\n", 1)})
    assert load_sysvinit(Root(fixed)).relation("kmod", "procps") == "before"
    # SD110's fix text for sysvinit: name kmod in procps's Required-Start (or Should-Start) line
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.findings.rules.sd110_broken_ordering import RULE

    assert "SD110" in {f.code for f in run_check(Root(root)).findings}
    assert "name kmod in the `# Required-Start:`" in RULE.fix
    for header in ("# Required-Start:    mountkernfs $local_fs kmod\n", "# Should-Start:      udev kmod\n"):
        old = header.split(":")[0] + ":"
        line = next(x for x in SYSV_PROCPS.splitlines(keepends=True) if x.startswith(old))
        as_told = make_root(tmp_path / header[2:8], {**files, "/etc/init.d/procps": SYSV_PROCPS.replace(line, header)})
        assert load_sysvinit(Root(as_told)).relation("kmod", "procps") == "before", header
        assert "SD110" not in {f.code for f in run_check(Root(as_told)).findings}, header


def test_openrc_sysctl_and_modules_unordered_unless_conf_d(tmp_path: Path) -> None:
    files = {
        "/sbin/openrc": "bin", "/etc/init.d/sysctl": "#!/sbin/openrc-run\ndepend() {\n\tbefore bootmisc logger\n}\n",
        "/etc/init.d/modules": "#!/sbin/openrc-run\ndepend() {\n\tuse isapnp\n\tbefore hwclock\n}\n",
        "/etc/runlevels/boot/sysctl": ("link", "/etc/init.d/sysctl"), "/etc/runlevels/boot/modules": ("link", "/etc/init.d/modules"),
        "/etc/conf.d/modules": 'modules="nf_conntrack"\n',
    }
    root = make_root(tmp_path / "a", files)
    assert detect_init_system(Root(root)) == "openrc"
    timeline = build_timeline(Root(root))
    assert [(item.module, item.relation, item.evidence) for item in timeline.loads] == [("nf_conntrack", RACE, "/etc/conf.d/modules:1")]
    fixed = make_root(tmp_path / "b", {**files, "/etc/conf.d/sysctl": 'rc_after="modules"\n'})
    assert load_openrc(Root(fixed)).relation("modules", "sysctl") == "before"


def test_udev_rule_running_procps_sysctl_p(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/etc/udev/rules.d/99-bridge.rules":
            'ACTION=="add", SUBSYSTEM=="module", KERNEL=="br_netfilter", RUN+="/sbin/sysctl -p /etc/sysctl.d/99-bridge.conf"\n'
            'ACTION=="add", SUBSYSTEM=="module", KERNEL=="sctp", RUN+="/sbin/sysctl --system"\n',
        "/etc/sysctl.d/99-bridge.conf": "net.bridge.bridge-nf-call-iptables = 0\n",
    })
    reruns = {r.rule.line: r for r in sysctl_reruns(Root(root))}
    assert reruns[1].matches_module("br_netfilter")
    assert reruns[1].covers_key("net/bridge/bridge-nf-call-iptables", "br_netfilter")
    assert not reruns[1].covers_key("net/bridge/bridge-nf-call-ip6tables", "br_netfilter")
    assert reruns[2].covers_key("net/sctp/rto_min", "sctp")


KMOD_VERSION = "30+20221128-1"  # Debian 12's kmod


def _real_debian_init_scripts(tmp_path: Path) -> dict:
    """procps' init script from this Debian host and kmod's from its Debian package (apt-get download)."""
    import os
    import shutil
    import subprocess

    import pytest

    if not Path("/etc/init.d/procps").is_file():
        pytest.skip("NEEDS Debian's procps init script at /etc/init.d/procps")
    cache = Path(os.environ.get("SYSCTL_DOCTOR_TEST_CACHE", Path(__file__).resolve().parents[2] / ".cache")) / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob("kmod_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            pytest.skip("NEEDS apt-get to download Debian's kmod package")
        # the version these headers were checked against; the current one only when the archive dropped it
        proc = subprocess.run(["apt-get", "download", f"kmod={KMOD_VERSION}"], cwd=cache, capture_output=True, text=True)
        if proc.returncode != 0:
            proc = subprocess.run(["apt-get", "download", "kmod"], cwd=cache, capture_output=True, text=True)
        debs = sorted(cache.glob("kmod_*.deb"))
        if proc.returncode != 0 or not debs:
            pytest.skip(f"NEEDS Debian's kmod package (apt-get download failed: {proc.stderr.strip()[-200:]})")
    out = tmp_path / "kmod-deb"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True)
    return {"/etc/init.d/procps": Path("/etc/init.d/procps").read_text(),
            "/etc/init.d/kmod": (out / "etc/init.d/kmod").read_text()}


def test_real_debian_sysvinit_headers_leave_kmod_and_procps_unordered(tmp_path: Path) -> None:
    scripts = _real_debian_init_scripts(tmp_path)
    root = make_root(tmp_path / "root", {
        **scripts, "/sbin/init": "sysvinit", "/etc/inittab": "id:2:initdefault:\n",
        "/etc/rcS.d/S01kmod": ("link", "../init.d/kmod"), "/etc/rcS.d/S01procps": ("link", "../init.d/procps"),
    })
    # procps asks for "module-init-tools" (the old name); kmod provides only "kmod"
    assert load_sysvinit(Root(root)).relation("kmod", "procps") == "unordered"


def test_keepalived_lvs_loads_ip_vs_with_the_config_line(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "/usr/lib/systemd/system/systemd-sysctl.service": (INCIDENT / "usr/lib/systemd/system/systemd-sysctl.service").read_text(),
        "/usr/lib/systemd/system/keepalived.service":
            "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/usr/sbin/keepalived --dont-fork $DAEMON_ARGS\n",
        "/etc/systemd/system/multi-user.target.wants/keepalived.service": ("link", "/lib/systemd/system/keepalived.service"),
        "/etc/keepalived/keepalived.conf": "global_defs {\n}\nvirtual_server 10.0.0.1 80 {\n  lb_algo rr\n}\n",
    })
    loads = [item for item in build_timeline(Root(root)).loads if item.by == "keepalived.service"]
    assert [(item.module, item.relation, item.evidence) for item in loads] == [
        ("ip_vs", AFTER, "/etc/keepalived/keepalived.conf:3 `virtual_server 10.0.0.1 80 {`")]


def test_sysvinit_fix_writes_an_insserv_override(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    scripts = _real_debian_init_scripts(tmp_path)
    key = "net.netfilter.nf_conntrack_tcp_be_liberal"
    root = make_root(tmp_path / "root", {
        **scripts, "/sbin/init": "sysvinit", "/etc/inittab": "id:2:initdefault:\n",
        "/etc/rcS.d/S01kmod": ("link", "../init.d/kmod"), "/etc/rcS.d/S01procps": ("link", "../init.d/procps"),
        "/etc/sysctl.conf": f"{key} = 1\n", "/etc/modules": "# /etc/modules\n",
    })

    def entry() -> dict:
        out = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                             capture_output=True, text=True).stdout
        return next(e for e in json.loads(out)["keys"] if e["key"] == key)

    assert entry()["boot"]["applied"] is False
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "fix", "--root", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "etc/modules").read_text().endswith("nf_conntrack\n")
    override = (root / "etc/insserv/overrides/procps").read_text()
    assert override.startswith("### BEGIN INIT INFO") and "kmod" in override and "insserv" in proc.stdout
    assert entry()["boot"] == {"applied": True, "value": "1"}


def test_udev_prefix_forms_follow_systemd_252(tmp_path: Path) -> None:
    rules = "".join(
        f'ACTION=="add", SUBSYSTEM=="module", KERNEL=="m{i}", RUN+="/usr/lib/systemd/systemd-sysctl --prefix={p}"\n'
        for i, p in enumerate(["/net/netfilter", "net.netfilter", "/proc/sys/net/netfilter"]))
    root = make_root(tmp_path, {"/etc/udev/rules.d/90-x.rules": rules})
    covers = [r.covers_key("net/netfilter/nf_conntrack_tcp_be_liberal", f"m{i}") for i, r in enumerate(sysctl_reruns(Root(root)))]
    assert covers == [True, True, False]  # 252 turns /proc/sys/... into a prefix no key has
