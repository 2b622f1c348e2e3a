"""Two names of one kernel variable against the real systemd-sysctl and procps (issue 15 item 2).

The private-namespace oracle (oracle.py) lays the second name out as a symlink to the first in its tmpfs
/proc/sys, so a write through either name lands in one file as in the kernel; the real programs then show
which write is last, and the model (effective_settings with the kernel's alias map) must say the same
value for both names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.oracle import Case, build_key_dir, build_root, run_real, why_not_runnable
from sysctl_doctor.config.sysctl_d import effective_settings, load_sysctl_config
from sysctl_doctor.kernel import kernel_keys
from sysctl_doctor.root import Root

ALIASES = kernel_keys.for_kernel("6.1").alias_map()

CASES = [
    Case("later file, other name", {
        "/usr/lib/sysctl.d/10-vendor.conf": "net.netfilter.nf_conntrack_max = 131072\nfs.inotify.max_user_watches = 524288\n",
        "/etc/sysctl.d/20-admin.conf": "net.nf_conntrack_max = 65000\n",
        "/etc/sysctl.d/05-early.conf": "user.max_inotify_watches = 100000\n",
    }, ["net/netfilter/nf_conntrack_max", "fs/inotify/max_user_watches", "net/ipv4/ip_forward"],
        links={"net/nf_conntrack_max": "net/netfilter/nf_conntrack_max",
               "user/max_inotify_watches": "fs/inotify/max_user_watches",
               "net/ipv4/conf/all/forwarding": "net/ipv4/ip_forward"}),
    Case("same file, both orders", {
        "/etc/sysctl.d/50-a.conf": "net.ipv4.conf.all.forwarding = 1\nnet.ipv4.ip_forward = 0\n"
                                   "net.nf_conntrack_max = 1\nnet.netfilter.nf_conntrack_max = 2\nnet.nf_conntrack_max = 3\n",
    }, ["net/netfilter/nf_conntrack_max", "net/ipv4/ip_forward"],
        links={"net/nf_conntrack_max": "net/netfilter/nf_conntrack_max",
               "net/ipv4/conf/all/forwarding": "net/ipv4/ip_forward"}),
]
CASES.append(Case("a repeat keeps its place in systemd's map, procps writes it again", {
    "/etc/sysctl.d/50-a.conf": "net.nf_conntrack_max = 3\nnet.netfilter.nf_conntrack_max = 2\nnet.nf_conntrack_max = 3\n",
}, ["net/netfilter/nf_conntrack_max"], links={"net/nf_conntrack_max": "net/netfilter/nf_conntrack_max"},
    why="systemd: 2 (the repeated line stays first, the other name is written after it); procps: 3"))
JOBS = [(case, flavor) for case in CASES for flavor in case.flavors]


@pytest.fixture(scope="module")
def real_results():
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    return dict(zip(range(len(JOBS)), run_real(JOBS)))


def _model(case: Case, flavor: str, tmp_path: Path):
    root = build_root(case, tmp_path / "root")
    keys = build_key_dir(list(case.keys) + list(case.links), tmp_path / "keys")
    config = load_sysctl_config(Root(root), flavor)  # type: ignore[arg-type]
    final = {}
    for s in effective_settings(config, keys, aliases=ALIASES):
        if s.exists and s.final:
            for name in kernel_keys.for_kernel("6.1").alias_group(s.path):
                final[name] = s.value
    return final


@pytest.mark.parametrize("job", range(len(JOBS)), ids=[f"{c.name}-{f}" for c, f in JOBS])
def test_both_names_show_the_last_write(job, real_results, tmp_path) -> None:
    case, flavor = JOBS[job]
    real = real_results[job]["written"]
    model = _model(case, flavor, tmp_path)
    names = set(case.links) | set(case.links.values())
    assert {n: real.get(n) for n in names} == {n: model.get(n) for n in names}, real_results[job]["stderr"]
