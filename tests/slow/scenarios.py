"""The roots the slow tier boots: what each one configures and what it probes.

A scenario is plain data: files written into a copy of the base root, symlinks
(unit enablement), the sysctl keys the probe reports, and whether
`sysctl-doctor fix` runs on the root before it is imaged. Every scenario also
sets a built-in control key (`net.core.somaxconn = 1234`) so that a boot shows
systemd-sysctl really read the configuration.

The probe (`sdprobe.service`, after multi-user.target) writes `SDPROBE ...`
lines to the second serial port (/dev/ttyS1, a file of its own on the host),
then powers the machine off:
    SDPROBE value <dotted key>=<value, tabs as spaces>|absent
    SDPROBE module <name>=loaded|absent
    SDPROBE unit <unit> state=<ActiveState> start=<µs> exit=<µs>
    SDPROBE active <unit>=<`systemctl is-active` output>    (the scenario's extra units)
    SDPROBE after <unit> <its After= list>
    SDPROBE chain|journal|lsmod <text>
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from sysctl_doctor.verify.reporter import after_boot_unit

BE_LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"
CONTROL_KEY = "net.core.somaxconn"
CONTROL_VALUE = "1234"

SYSCTL_CONF = (
    "# the incident's mitigation (needs nf_conntrack)\n"
    f"{BE_LIBERAL} = 1\n"
)
CONTROL_CONF = f"# built-in control key: shows systemd-sysctl read /etc/sysctl.d\n{CONTROL_KEY} = {CONTROL_VALUE}\n"
MODULES_LOAD_CONF = "nf_conntrack\n"
NFTABLES_CONF = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
	}
}
"""
# sysctl.d(5)'s recommendation for a module's keys, spelled for nf_conntrack.
UDEV_RULE = (
    'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
    'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"\n'
)
# Debian 12's own nftables.service (DefaultDependencies=no, WantedBy=sysinit.target), enabled as
# `systemctl enable nftables` would.
NFTABLES_ENABLED = {
    "etc/systemd/system/sysinit.target.wants/nftables.service": "/lib/systemd/system/nftables.service",
}

# udevd logs at debug level: the journal then shows it running the rule's systemd-sysctl for
# nf_conntrack, the direct evidence of who applied the value.
UDEV_DEBUG = "udev.log_level=debug"

PROBE_KEYS = (BE_LIBERAL, "net.netfilter.nf_conntrack_max", CONTROL_KEY)
PROBE_UNITS = (
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "nftables.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
)

PROBE_SCRIPT = """#!/bin/sh
# sysctl-doctor slow tier: report what the booted system shows, then power off.
exec > /dev/ttyS1 2>&1
echo "SDPROBE BEGIN"
udevadm settle --timeout=30 || echo "SDPROBE note udevadm settle timed out"
read -r up _ < /proc/uptime
echo "SDPROBE uptime $up"
while read -r key path; do
    if [ -e "/proc/sys/$path" ]; then
        echo "SDPROBE value $key=$(cat "/proc/sys/$path" | tr '\\t' ' ')"
    else
        echo "SDPROBE value $key=absent"
    fi
done < /etc/sdprobe/keys
for mod in nf_conntrack nft_ct nf_tables; do
    if [ -d "/sys/module/$mod" ]; then state=loaded; else state=absent; fi
    echo "SDPROBE module $mod=$state"
done
for unit in $(cat /etc/sdprobe/units); do
    echo "SDPROBE unit $unit state=$(systemctl show -P ActiveState "$unit")" \\
         "start=$(systemctl show -P ExecMainStartTimestampMonotonic "$unit")" \\
         "exit=$(systemctl show -P ExecMainExitTimestampMonotonic "$unit")"
done
while read -r unit; do
    [ -n "$unit" ] && echo "SDPROBE active $unit=$(systemctl is-active "$unit")"
done < /etc/sdprobe/active
systemctl show -P After systemd-sysctl.service | sed 's/^/SDPROBE after systemd-sysctl.service /'
systemd-analyze critical-chain systemd-sysctl.service nftables.service 2>&1 | sed 's/^/SDPROBE chain /'
journalctl -b -o short-monotonic --no-pager 2>&1 \\
    | grep -i -e sysctl -e modules-load -e "kernel module" -e nftables -e "couldn't" -e nf_ -e nft -e conntrack \\
          -f /etc/sdprobe/journal-extra \\
    | sed 's/^/SDPROBE journal /'
lsmod 2>&1 | sed 's/^/SDPROBE lsmod /'
echo "SDPROBE END"
sync
systemctl poweroff --no-block
"""
# The probe runs from a transient timer 3 s after sdprobe.service, i.e. once the boot transaction has
# finished, so that `systemd-analyze critical-chain` can answer.
PROBE_UNIT = after_boot_unit("sysctl-doctor slow tier probe (starts the report once boot is finished)",
                             "/usr/bin/systemd-run --no-block --on-active=3 --unit=sdprobe-report /usr/local/sbin/sdprobe")


def proc_sys_path(key: str) -> str:
    """The /proc/sys path of a dotted key, as systemd-sysctl spells it (dots and slashes swapped)."""
    return key.translate(str.maketrans("./", "/."))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    files: Dict[str, str]                       # path inside the root -> content
    symlinks: Dict[str, str] = field(default_factory=dict)   # path inside the root -> target
    fix_args: Optional[Tuple[str, ...]] = None  # run `sysctl-doctor fix --root R *fix_args` first
    cmdline_extra: str = ""                     # appended to the guest's kernel command line
    extra_probe_keys: Tuple[str, ...] = ()      # keys the probe reports besides PROBE_KEYS and the predicted ones
    # path inside the root -> (a file of the base root, text): that file's copy without the lines holding text
    derived: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    base: str = "debian"                        # the cached root it starts from: "debian" (base_root) | "docker"
    extra_probe_units: Tuple[str, ...] = ()     # units the probe also reports (timings and `systemctl is-active`)
    journal_extra: Tuple[str, ...] = ()         # more journal patterns (grep -i) for the probe's journal lines
    explain_keys: Tuple[str, ...] = ()          # `sysctl-doctor explain KEY --root` runs on the imaged root too

    def probe_files(self, extra_keys: Iterable[str] = ()) -> Dict[str, str]:
        keys: List[str] = []
        for key in (*PROBE_KEYS, *self.extra_probe_keys, *extra_keys):
            if key not in keys:
                keys.append(key)
        return {
            "usr/local/sbin/sdprobe": PROBE_SCRIPT,
            "etc/systemd/system/sdprobe.service": PROBE_UNIT,
            "etc/sdprobe/keys": "".join(f"{k} {proc_sys_path(k)}\n" for k in keys),
            "etc/sdprobe/units": "\n".join(PROBE_UNITS + self.extra_probe_units) + "\n",
            "etc/sdprobe/active": "".join(f"{u}\n" for u in self.extra_probe_units),
            # an empty pattern file adds nothing to grep's -e patterns
            "etc/sdprobe/journal-extra": "".join(f"{p}\n" for p in self.journal_extra),
        }

    def probe_symlinks(self) -> Dict[str, str]:
        return {"etc/systemd/system/multi-user.target.wants/sdprobe.service": "/etc/systemd/system/sdprobe.service"}


_BASE_FILES = {
    "etc/sysctl.d/90-conntrack.conf": SYSCTL_CONF,
    "etc/sysctl.d/80-control.conf": CONTROL_CONF,
}

SYSCTL_ONLY = Scenario(
    "sysctl-only",
    "be_liberal in /etc/sysctl.d and nothing loads nf_conntrack",
    dict(_BASE_FILES),
)
MODULES_LOAD = Scenario(
    "modules-load",
    "plus nf_conntrack in /etc/modules-load.d",
    {**_BASE_FILES, "etc/modules-load.d/nf_conntrack.conf": MODULES_LOAD_CONF},
)
NFTABLES_LATE = Scenario(
    "nftables-late",
    "plus Debian's nftables.service with a `ct state` rule that loads nf_conntrack on demand",
    {**_BASE_FILES, "etc/nftables.conf": NFTABLES_CONF},
    symlinks=dict(NFTABLES_ENABLED),
)
NFTABLES_FIXED = Scenario(
    "nftables-fixed",
    "the nftables-late root after `sysctl-doctor fix --root`",
    {**_BASE_FILES, "etc/nftables.conf": NFTABLES_CONF},
    symlinks=dict(NFTABLES_ENABLED),
    fix_args=(),
)
NFTABLES_FIXED_UDEV = Scenario(
    "nftables-fixed-udev",
    "the nftables-late root after `sysctl-doctor fix --root --method udev`",
    {**_BASE_FILES, "etc/nftables.conf": NFTABLES_CONF},
    symlinks=dict(NFTABLES_ENABLED),
    fix_args=("--method", "udev"),
    cmdline_extra=UDEV_DEBUG,
)
UDEV_RULE_LATE = Scenario(
    "udev-rule",
    "nftables loads nf_conntrack late; a udev module rule re-runs systemd-sysctl --prefix=/net/netfilter",
    {
        **_BASE_FILES,
        "etc/nftables.conf": NFTABLES_CONF,
        "etc/udev/rules.d/90-nf-conntrack-sysctl.rules": UDEV_RULE,
    },
    symlinks=dict(NFTABLES_ENABLED),
    cmdline_extra=UDEV_DEBUG,
)

# The incident write-up's layout on Debian 12: the value in /etc/sysctl.conf (read through Debian's
# /etc/sysctl.d/99-sysctl.conf link), the module in /etc/modules (read through
# /etc/modules-load.d/modules.conf), and a vendor file masked by a /dev/null link of the same name.
INCIDENT_LAYOUT = Scenario(
    "incident-layout",
    "be_liberal in /etc/sysctl.conf, nf_conntrack in /etc/modules, /usr/lib/sysctl.d/50-pid-max.conf masked",
    {
        "etc/sysctl.d/80-control.conf": CONTROL_CONF,
        "etc/sysctl.conf": f"# as in the incident write-up\n{BE_LIBERAL} = 1\n",
        "etc/modules": "# /etc/modules: kernel modules to load at boot time.\nnf_conntrack\n",
    },
    symlinks={"etc/sysctl.d/50-pid-max.conf": "/dev/null"},
    extra_probe_keys=("kernel.pid_max",),
)

# Issue 15: lines that never apply. Files left in the image's /run (an empty tmpfs at boot) are never read:
# a /run/sysctl.d/50-pid-max.conf that would shadow systemd's vendor file (on a live host) and a module list in
# /run/modules-load.d; a `-key` line cancels an earlier assignment; a .cfg name is never read; an /etc file of
# the same name shadows procps' vendor 99-protect-links.conf (its other keys keep the kernel default).
NEVER_APPLIED = Scenario(
    "never-applied",
    "runtime-only /run/sysctl.d and /run/modules-load.d, a cancelled assignment, a never-read and a shadowed file",
    {
        **_BASE_FILES,
        "run/sysctl.d/50-pid-max.conf": "# left in the image's /run: never read at boot\nkernel.pid_max = 65536\n",
        "run/sysctl.d/70-runtime.conf": "vm.swappiness = 7\n",
        "run/modules-load.d/nf_conntrack.conf": MODULES_LOAD_CONF,
        "etc/sysctl.d/60-sysrq.conf": "kernel.sysrq = 0\n",
        "etc/sysctl.d/95-local.conf": "# let the default stand\n-kernel.sysrq\n",
        "etc/sysctl.d/40-tuning.cfg": "vm.dirty_ratio = 33\n",
        "etc/sysctl.d/99-protect-links.conf": "fs.protected_fifos = 1\n",
    },
    extra_probe_keys=("kernel.pid_max", "kernel.sysrq", "vm.swappiness", "vm.dirty_ratio", "fs.protected_fifos",
                      "fs.protected_regular", "fs.protected_symlinks"),
)

# Issue 15 item 4: a glob and an interface that systemd-networkd creates after systemd-sysctl (a dummy
# .netdev); the explicit line for dummy0 comes before the glob and still wins.
GLOB_RP = "net.ipv4.conf.*.rp_filter"
GLOB_NETWORKD = Scenario(
    "glob-networkd",
    "net.ipv4.conf.* globs, an explicit dummy0 line before them, and a systemd-networkd dummy0 .netdev",
    {
        **_BASE_FILES,
        "etc/sysctl.d/60-rp.conf": ("net.ipv4.conf.dummy0.rp_filter = 1\n"
                                    f"{GLOB_RP} = 2\n"
                                    "net.ipv4.conf.*.arp_ignore = 1\n"),
        "etc/systemd/network/10-dummy0.netdev": "[NetDev]\nName=dummy0\nKind=dummy\n",
    },
    symlinks={
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service":
            "/lib/systemd/system/systemd-networkd.service",
        "etc/systemd/system/sockets.target.wants/systemd-networkd.socket":
            "/lib/systemd/system/systemd-networkd.socket",
    },
    extra_probe_keys=("net.ipv4.conf.dummy0.rp_filter", "net.ipv4.conf.dummy0.arp_ignore"),
)

# Issue 15 item 5: nftables loads nf_conntrack late (as in nftables-late), but a modprobe.d install command
# writes be_liberal right after the module is inserted, and `options` sets its hash size.
MODPROBE_INSTALL_CONF = (
    "# the common workaround: apply the key as soon as the module is in\n"
    "install nf_conntrack /sbin/modprobe --ignore-install nf_conntrack $CMDLINE_OPTS && "
    f"/sbin/sysctl -w {BE_LIBERAL}=1\n"
    "options nf_conntrack hashsize=65536\n"
)
MODPROBE_INSTALL = Scenario(
    "modprobe-install",
    "nftables-late plus a modprobe.d `install nf_conntrack … && sysctl -w` idiom and `options hashsize=65536`",
    {
        **_BASE_FILES,
        "etc/nftables.conf": NFTABLES_CONF,
        "etc/modprobe.d/nf-conntrack.conf": MODPROBE_INSTALL_CONF,
        "etc/sysctl.d/91-ct-max.conf": "net.netfilter.nf_conntrack_max = 262144\n",
    },
    symlinks=dict(NFTABLES_ENABLED),
    extra_probe_keys=("net.netfilter.nf_conntrack_buckets", "net.netfilter.nf_conntrack_expect_max"),
)

# Issue 15 item 5: `blacklist nf_conntrack` stops systemd-modules-load (KMOD_PROBE_APPLY_BLACKLIST) but not the
# load nftables causes (nf_conntrack comes in as nft_ct's dependency, which the deny-list never checks).
MODPROBE_BLACKLIST = Scenario(
    "modprobe-blacklist",
    "modules-load plus nftables-late with `blacklist nf_conntrack` in modprobe.d",
    {
        **_BASE_FILES,
        "etc/modules-load.d/nf_conntrack.conf": MODULES_LOAD_CONF,
        "etc/nftables.conf": NFTABLES_CONF,
        "etc/modprobe.d/blacklist-ct.conf": "blacklist nf_conntrack\n",
    },
    symlinks=dict(NFTABLES_ENABLED),
)

# Issue 15 item 4 without udev's re-run: /etc/udev/rules.d/99-systemd.rules is Debian's file minus its
# SUBSYSTEM=="net" systemd-sysctl line. dummy0, created by systemd-networkd after systemd-sysctl, starts as a
# copy of `default` (rp_filter 2 from the glob); its own explicit line is never applied.
GLOB_NETWORKD_NO_RERUN = Scenario(
    "glob-networkd-no-rerun",
    "glob-networkd with the 99-systemd.rules net line removed (an /etc copy of the file)",
    {
        **_BASE_FILES,
        "etc/sysctl.d/60-rp.conf": ("net.ipv4.conf.dummy0.rp_filter = 1\n"
                                    f"{GLOB_RP} = 2\n"),
        "etc/systemd/network/10-dummy0.netdev": "[NetDev]\nName=dummy0\nKind=dummy\n",
    },
    symlinks=dict(GLOB_NETWORKD.symlinks),
    derived={"etc/udev/rules.d/99-systemd.rules": ("usr/lib/udev/rules.d/99-systemd.rules", 'SUBSYSTEM=="net"')},
)


# One kernel variable under two names (data/kernel_keys aliases, found by writing one name in a booted
# guest): each is written through both names, the second file's line is the last write and wins for both.
TYPO_KEY = "kernel.sched_cfs_bandwidth_slice_u"
ALIAS_PAIRS = (("fs.inotify.max_user_watches", "524288", "user.max_inotify_watches", "100000"),
               ("net.netfilter.nf_conntrack_max", "131072", "net.nf_conntrack_max", "65000"))
ALIASES_LAST_WRITE = Scenario(
    "aliases-last-write",
    "two names of one kernel variable set in two files (nf_conntrack in modules-load.d): the later write wins",
    {
        **_BASE_FILES,
        "etc/modules-load.d/nf_conntrack.conf": MODULES_LOAD_CONF,
        "etc/sysctl.d/10-first-name.conf": "".join(f"{a} = {av}\n" for a, av, _b, _bv in ALIAS_PAIRS),
        "etc/sysctl.d/20-second-name.conf": "".join(f"{b} = {bv}\n" for _a, _av, b, bv in ALIAS_PAIRS)
        # a typo under a built-in prefix: SD104 offline (the booted key set), absent on the guest
        + f"{TYPO_KEY} = 4000\n",
    },
    extra_probe_keys=tuple(k for a, _av, b, _bv in ALIAS_PAIRS for k in (a, b)) + (TYPO_KEY,),
)


# Issue 15 item 8: dockerd overrides the administrator's ip_forward at start. The root is the base root's
# docker.io variant (docker_root.py: Debian 12's docker.io 20.10 installed by apt, docker.service enabled by its
# postinst); the administrator turns forwarding off in /etc/sysctl.d. Opt-in (SYSCTL_DOCTOR_SLOW_DOCKER=1): the
# variant root is an extra build. In the second root /etc/docker/daemon.json turns dockerd's forwarding off.
IP_FORWARD = "net.ipv4.ip_forward"
NO_FORWARD_CONF = f"# the administrator: this host does not route\n{IP_FORWARD} = 0\n"
DOCKER_UNITS = ("docker.service", "docker.socket", "containerd.service")
DOCKER_JOURNAL = ("dockerd", "docker.service", "Docker daemon", "API listen")
DOCKER_IP_FORWARD = Scenario(
    "docker-ip-forward",
    "docker.io (Debian 12) starts at boot; the administrator sets net.ipv4.ip_forward = 0 in /etc/sysctl.d",
    {**_BASE_FILES, "etc/sysctl.d/60-no-forward.conf": NO_FORWARD_CONF},
    extra_probe_keys=(IP_FORWARD, "net.ipv4.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables"),
    base="docker",
    extra_probe_units=DOCKER_UNITS,
    journal_extra=DOCKER_JOURNAL,
    explain_keys=(IP_FORWARD,),
)
DOCKER_NO_IP_FORWARD = Scenario(
    "docker-no-ip-forward",
    "docker-ip-forward plus /etc/docker/daemon.json {\"ip-forward\": false}",
    {**_BASE_FILES, "etc/sysctl.d/60-no-forward.conf": NO_FORWARD_CONF,
     "etc/docker/daemon.json": '{\n  "ip-forward": false\n}\n'},
    extra_probe_keys=DOCKER_IP_FORWARD.extra_probe_keys,
    base="docker",
    extra_probe_units=DOCKER_UNITS,
    journal_extra=DOCKER_JOURNAL,
    explain_keys=(IP_FORWARD,),
)
# The bridge-nf-call-iptables write: br_netfilter is listed in /etc/modules-load.d, so the administrator's 0 is
# applied by systemd-sysctl; dockerd writes 1 only for a bridge with inter-container communication off
# ("icc": false) and iptables on. The control root has no daemon.json: dockerd leaves the key alone.
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
BRIDGE_FILES = {
    **_BASE_FILES,
    "etc/sysctl.d/60-no-forward.conf": NO_FORWARD_CONF,
    "etc/sysctl.d/61-bridge-nf.conf": f"# the administrator: bridged traffic bypasses iptables\n{BRIDGE_NF} = 0\n",
    "etc/modules-load.d/br_netfilter.conf": "br_netfilter\n",
}
DOCKER_BRIDGE_NF = Scenario(
    "docker-bridge-nf",
    "docker-ip-forward plus bridge-nf-call-iptables = 0 with br_netfilter in /etc/modules-load.d (default daemon)",
    dict(BRIDGE_FILES),
    extra_probe_keys=DOCKER_IP_FORWARD.extra_probe_keys,
    base="docker",
    extra_probe_units=DOCKER_UNITS,
    journal_extra=DOCKER_JOURNAL,
    explain_keys=(IP_FORWARD, BRIDGE_NF),
)
DOCKER_ICC_OFF = Scenario(
    "docker-icc-off",
    "docker-bridge-nf plus /etc/docker/daemon.json {\"icc\": false}",
    {**BRIDGE_FILES, "etc/docker/daemon.json": '{\n  "icc": false\n}\n'},
    extra_probe_keys=DOCKER_IP_FORWARD.extra_probe_keys,
    base="docker",
    extra_probe_units=DOCKER_UNITS,
    journal_extra=DOCKER_JOURNAL,
    explain_keys=(IP_FORWARD, BRIDGE_NF),
)
# The field's usual case: nothing loads br_netfilter before systemd-sysctl; dockerd loads it when it starts (the
# default daemon, no write of its own), so the key appears with the kernel's default 1 and the 0 is never applied.
DOCKER_BRIDGE_NF_LATE = Scenario(
    "docker-bridge-nf-late",
    "docker-ip-forward plus bridge-nf-call-iptables = 0, br_netfilter not listed anywhere (default daemon)",
    {key: value for key, value in BRIDGE_FILES.items() if not key.startswith("etc/modules-load.d/")},
    extra_probe_keys=DOCKER_IP_FORWARD.extra_probe_keys,
    base="docker",
    extra_probe_units=DOCKER_UNITS,
    journal_extra=DOCKER_JOURNAL,
    explain_keys=(IP_FORWARD, BRIDGE_NF),
)
DOCKER = (DOCKER_IP_FORWARD, DOCKER_NO_IP_FORWARD, DOCKER_BRIDGE_NF, DOCKER_ICC_OFF, DOCKER_BRIDGE_NF_LATE)


ALL = (SYSCTL_ONLY, MODULES_LOAD, NFTABLES_LATE, NFTABLES_FIXED, NFTABLES_FIXED_UDEV, UDEV_RULE_LATE, INCIDENT_LAYOUT,
       NEVER_APPLIED, GLOB_NETWORKD, MODPROBE_INSTALL, MODPROBE_BLACKLIST, GLOB_NETWORKD_NO_RERUN, ALIASES_LAST_WRITE)
BY_NAME = {s.name: s for s in ALL + DOCKER}
