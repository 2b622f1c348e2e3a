"""SD107 (a glob shadowed by an explicit setting) against the REAL systemd-sysctl 252.

systemd-sysctl expands a glob with glob(3) - a `*` never crosses a `/`, braces expand - and logs
"Not setting KEY (explicit setting exists)." for each match that has an explicit line. With every explicit
key present in the fake /proc/sys, SD107 must name exactly those keys (it named `net.*.rp_filter` as
shadowing `net.ipv4.conf.all.rp_filter` before: fnmatch's `*` crossed the slashes).
"""

from __future__ import annotations

import re
from typing import Dict, List, Set

import pytest

from sysctl_doctor.findings.engine import run_check
from sysctl_doctor.root import Root
from tests.config.oracle import Case, build_root, host_snapshot, run_real, why_not_runnable

_KEYS = ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter", "net/ipv4/conf/lo/rp_filter",
         "net/ipv4/conf/eth0.100/rp_filter", "net/ipv4/rp_filter", "net/ipv6/conf/all/forwarding",
         "net/ipv4/conf/all/forwarding", "kernel/x/y"]

CASES: Dict[str, Dict[str, str]] = {
    "star-does-not-cross-slashes": {
        "/etc/sysctl.d/40-x.conf": "net.ipv4.conf.all.rp_filter = 0\n",
        "/etc/sysctl.d/50-g.conf": "net.*.rp_filter = 2\n"},
    "one-component-star": {
        "/etc/sysctl.d/40-x.conf": "net.ipv4.conf.all.rp_filter = 0\nnet.ipv4.conf.eth0/100.rp_filter = 0\n",
        "/etc/sysctl.d/50-g.conf": "net.ipv4.conf.*.rp_filter = 2\n"},
    "braces-and-classes": {
        "/etc/sysctl.d/40-x.conf": "net.ipv6.conf.all.forwarding = 0\nnet.ipv4.conf.all.rp_filter = 0\n",
        "/etc/sysctl.d/50-g.conf": "net.ipv{4,6}.conf.*.forwarding = 1\nnet.ipv[4].conf.a?l.rp_filter = 1\n"},
    "glob-in-earlier-file": {
        "/etc/sysctl.d/10-g.conf": "net.ipv4.conf.*.rp_filter = 2\nkernel.*.y = 1\n",
        "/etc/sysctl.d/90-x.conf": "net.ipv4.conf.lo.rp_filter = 0\nkernel.x.y = 3\n"},
    "slash-form-star": {
        "/etc/sysctl.d/40-x.conf": "net/ipv4/conf/default/rp_filter = 0\n",
        "/etc/sysctl.d/50-g.conf": "net/*/conf/default/rp_filter = 1\nnet/*/rp_filter = 1\n"},
}

_NOT_SETTING = re.compile(r"^Not setting (\S+) \(explicit setting exists\)\.$")


@pytest.fixture(scope="module")
def real() -> Dict[str, Set[str]]:
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    before = host_snapshot()
    jobs = [(Case(name, files, _KEYS, ("systemd",)), "systemd") for name, files in CASES.items()]
    results = run_real(jobs)
    assert host_snapshot() == before, "the oracle changed something on the host"
    out: Dict[str, Set[str]] = {}
    for (case, _), result in zip(jobs, results):
        lines: List[str] = result["stderr"].splitlines()
        out[case.name] = {m.group(1) for m in map(_NOT_SETTING.match, lines) if m}
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_sd107_names_the_keys_real_systemd_sysctl_skips(name: str, real: Dict[str, Set[str]], tmp_path) -> None:
    root = build_root(Case(name, CASES[name], _KEYS, ("systemd",)), tmp_path / "root")
    report = run_check(Root(root), flavor="systemd")
    flagged = {f.key.replace(".", "\0").replace("/", ".").replace("\0", "/") for f in report.findings
               if f.code == "SD107" and f.key}
    assert flagged == real[name], (name, flagged, real[name])
    assert real[name] or name == "star-does-not-cross-slashes"  # each case but one shows a real skip
