"""SD103: only a udev module rule applies the key, on a kernel where that races the module's init."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import Verdict
from sysctl_doctor.findings.model import ERROR, Example, Finding, Rule

_RULE_TEXT = ('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
              'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"\n')

_DEP_5_10 = (
    "kernel/lib/libcrc32c.ko:\n"
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko:\n"
    "kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko:\n"
    "kernel/net/netfilter/nfnetlink.ko:\n"
    "kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko\n"
    "kernel/net/netfilter/nf_conntrack.ko: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko "
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko\n"
    "kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko "
    "kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko "
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko\n"
    "kernel/net/netfilter/nf_nat.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko "
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko\n"
)

RULE = Rule(
    code="SD103",
    name="udev-module-rule-races-init",
    severity=ERROR,
    title="A udev module rule re-applies the key, but the kernel sends the event before the module's sysctls exist",
    rationale=(
        "Before Linux 5.11 the module \"add\" uevent was sent from mod_sysfs_setup(), before the module's "
        "init function ran and registered its sysctl tables; kernel commit \"module: delay kobject uevent "
        "until after module init call\" (Linux 5.11) moved the event after init, after systemd issue "
        "#17586 showed udev acting on half-initialised modules. A udev rule that runs systemd-sysctl on that "
        "event can therefore run before the keys exist, and the write is skipped: the value is not guaranteed."
    ),
    fix=(
        "On kernels before 5.11 load the module through /etc/modules-load.d/ instead "
        "(`sysctl-doctor fix --method modules-load`); keep the udev rule only as a second line of defence."
    ),
    example=Example(
        "A Debian 11 (kernel 5.10) node where only a udev rule re-applies be_liberal when nf_conntrack loads.",
        files={"/etc/udev/rules.d/90-conntrack.rules": _RULE_TEXT,
               # excerpt of Debian 11's 5.10 modules.dep (the netfilter lines the example needs)
               "/usr/lib/modules/5.10.0-30-amd64/modules.dep": _DEP_5_10,
               "/usr/lib/modules/5.10.0-30-amd64/modules.builtin": "kernel/net/ipv4/tcp_cubic.ko\n"},
        kernel="5.10.0-30-amd64",
    ),
    passing=Example(
        "The same rule on kernel 6.1: the event comes after the module's init.",
        files={"/etc/udev/rules.d/90-conntrack.rules": _RULE_TEXT},
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for p in analysis.fates:
        if p.verdict != Verdict.UDEV_RACE or p.rerun is None:
            continue
        message = (
            f"{p.key} = {p.configured} ({p.file}:{p.line}) relies on the udev rule {p.rerun.rule.where} to be "
            f"applied when {p.module} loads; on kernel {analysis.kernel} the module's add event can come "
            f"before its sysctls exist, so the value is not guaranteed"
        )
        yield Finding(RULE.code, RULE.severity, p.key, message, RULE.fix, p.file, p.line)
