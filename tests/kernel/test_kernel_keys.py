"""The shipped keys, defaults and aliases of the Debian kernels (data/kernel_keys, from real qemu boots), and
what the tool does with them: SD104 with a "did you mean" for a key the kernel does not have, a default in
every prediction, and one value for two names of one kernel variable (issue 15, items 2 and 6).

Roots are the real Debian 12 root the slow tier builds (mmdebstrap; its kernel's module metadata, no module
files: the pattern rules would call every kernel.* key built in) — see tests/boot/test_debian_root.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor.kernel import kernel_keys
from sysctl_doctor.kernel.model import ProviderKind

REPO = Path(__file__).resolve().parents[2]
SERIES = ("5.10", "6.1", "6.12")


def _data(series: str) -> kernel_keys.KernelKeys:
    data = kernel_keys.for_kernel(series)
    assert data is not None, f"no data/kernel_keys for {series}"
    return data


def test_the_maintainer_check_passes() -> None:
    """tools/gen_kernel_keys.py --check: each file parses, was booted from the kernel data/known_keys pins,
    and holds every key known_keys gives that kernel's modules (they were all loaded in the guest)."""
    proc = subprocess.run([sys.executable, str(REPO / "tools/gen_kernel_keys.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": current") == len(SERIES), proc.stdout


@pytest.mark.parametrize("series", SERIES)
def test_each_series_is_whole_and_small(series: str) -> None:
    path = REPO / f"src/sysctl_doctor/data/kernel_keys/{series}.json.gz"
    assert path.stat().st_size < 64 * 1024, "sized for a wheel"
    data = _data(series)
    assert data.kernel.startswith(series + "."), data.kernel
    assert len(data.builtin_keys()) > 700 and len(data.keys) > 1000
    # built in, with its default (kernel source: net/ipv4/tcp_ipv4.c, kernel/sysctl.c)
    assert data.keys["net/ipv4/tcp_syncookies"].value == "1" and not data.keys["net/ipv4/tcp_syncookies"].module
    assert data.keys["kernel/sched_cfs_bandwidth_slice_us"].value == "5000"
    # a module's key, with its module and its default
    assert data.keys["net/netfilter/nf_conntrack_tcp_be_liberal"].module == "nf_conntrack"
    assert data.keys["net/bridge/bridge-nf-call-iptables"].value == "1"
    # removed in 4.12: no Debian kernel has it
    assert "net/ipv4/tcp_tw_recycle" not in data.keys


# Keys the kernel's history moved or removed (kernel version named), as the booted data must show them.
HISTORY = [
    ("kernel/sched_migration_cost_ns", {"5.10"}),   # 5.13: moved to debugfs
    ("kernel/sched_min_granularity_ns", {"5.10"}),  # 5.13: moved to debugfs
    ("vm/block_dump", {"5.10"}),                    # 5.12: removed
    ("vm/percpu_pagelist_fraction", {"5.10"}),      # 5.14: replaced by percpu_pagelist_high_fraction
    ("vm/percpu_pagelist_high_fraction", {"6.1", "6.12"}),
    ("kernel/io_uring_disabled", {"6.12"}),         # 6.6: added
    ("kernel/sched_child_runs_first", {"5.10", "6.1"}),  # 6.6: removed
    ("net/ipv4/tcp_tw_recycle", set()),             # 4.12: removed
]


@pytest.mark.parametrize("key,present_in", HISTORY, ids=[k for k, _s in HISTORY])
def test_keys_the_kernel_history_moved_or_removed(key: str, present_in: set) -> None:
    assert {s for s in SERIES if key in _data(s).keys} == present_in


@pytest.mark.parametrize("series", SERIES)
def test_defaults_computed_from_the_machine_are_marked_with_their_formula(series: str) -> None:
    data = _data(series)
    for key in ("fs/file-max", "kernel/threads-max", "net/netfilter/nf_conntrack_max", "net/ipv4/tcp_mem",
                "net/netfilter/nf_conntrack_buckets"):
        info = data.keys[key]
        assert info.sized and info.formula and info.constant is None, info
    assert not data.keys["net/ipv4/tcp_syncookies"].sized


@pytest.mark.parametrize("series", SERIES)
def test_the_booted_defaults_agree_with_the_hand_table_from_the_kernel_source(series: str) -> None:
    """Differential: the hand table (kernel source, 6.1) against what the booted kernels show."""
    from sysctl_doctor.boot.kernel_defaults import KERNEL_DEFAULTS

    data = _data(series)
    differ = {k: (v, data.keys[k].value) for k, (v, _src) in KERNEL_DEFAULTS.items()
              if k in data.keys and data.keys[k].value != v}
    assert not differ
    # 32 rows; 5.10 lacks tcp_ignore_invalid_rst (5.14), 6.1+ lack nf_conntrack_helper (removed in 6.0)
    assert len([k for k in KERNEL_DEFAULTS if k in data.keys]) == len(KERNEL_DEFAULTS) - 1


@pytest.mark.parametrize("series", SERIES)
def test_aliases_found_by_writing_in_the_guest(series: str) -> None:
    data = _data(series)
    groups = {tuple(sorted(g)) for g in data.aliases}
    assert ("net/netfilter/nf_conntrack_max", "net/nf_conntrack_max") in groups
    assert ("net/ipv4/conf/all/forwarding", "net/ipv4/ip_forward") in groups
    assert ("fs/inotify/max_user_watches", "user/max_inotify_watches") in groups
    # all -> default propagation is one-way (writing default does not change all): not an alias
    assert not any("net/ipv4/conf/default/forwarding" in g for g in groups)


def test_module_aliases_of_the_real_package_are_shipped(tree_61, session_cache) -> None:
    """Differential: the .ko ctl_table relocations of the pinned 6.1 package (entries whose .data point at
    one symbol + offset) against the shipped groups (which also hold what the guest probe found)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from gen_kernel_keys import elf_aliases
    finally:
        sys.path.pop(0)
    found = elf_aliases(Path(tree_61), tree_61.kver)
    shipped = {tuple(sorted(g)) for g in _data("6.1").aliases}
    assert ["net/netfilter/nf_conntrack_max", "net/nf_conntrack_max"] in found
    assert ["fs/xfs/speculative_cow_prealloc_lifetime", "fs/xfs/speculative_prealloc_lifetime"] in found
    assert all(tuple(g) in shipped for g in found), (found, shipped)


def test_unknown_kernels_get_no_exact_data() -> None:
    assert kernel_keys.for_kernel("6.18.0-1-amd64") is None
    assert kernel_keys.for_kernel("unknown") is None
    assert kernel_keys.for_kernel("6.1.0-50-amd64").series == "6.1"


# --- the tool on a real Debian 12 root ---------------------------------------------------------------

@pytest.fixture(scope="module")
def debian12(tmp_path_factory) -> Path:
    from boot.test_debian_root import _copy_boot_parts, require_debian_root

    found = require_debian_root()
    return _copy_boot_parts(found, tmp_path_factory.mktemp("kk") / "debian")


def _index(root: Path):
    from sysctl_doctor.kernel.index import load_module_index
    from sysctl_doctor.root import Root

    return load_module_index(Root(root), use_cache=False)


def test_typos_and_removed_keys_are_unknown_with_a_suggestion(debian12: Path) -> None:
    index = _index(debian12)
    assert index.kernel.startswith("6.1.")
    typo = index.provider("kernel.sched_cfs_bandwidth_slice_u")
    assert typo.kind is ProviderKind.UNKNOWN and typo.suggestion == "kernel.sched_cfs_bandwidth_slice_us", typo
    removed = index.provider("net.ipv4.tcp_tw_recycle")
    assert removed.kind is ProviderKind.UNKNOWN and removed.suggestion == "net.ipv4.tcp_tw_reuse", removed
    assert index.provider("abi.vsyscall33").kind is ProviderKind.UNKNOWN
    # real keys, interfaces and hardware-dependent directories are left as they were
    assert index.provider("kernel.pid_max").kind is ProviderKind.BUILTIN
    assert index.provider("net.ipv4.conf.eth0.rp_filter").kind is ProviderKind.INTERFACE
    assert index.provider("dev.hpet.max-user-freq").kind is ProviderKind.BUILTIN
    assert index.provider("fs.binfmt_misc.status").kind is ProviderKind.BUILTIN  # a filesystem mounted there
    assert index.provider("kernel.io_uring_disabled").kind is ProviderKind.UNKNOWN  # added in 6.6
    assert index.provider("net.netfilter.nf_conntrack_tcp_be_liberal").kind is ProviderKind.MODULE


def test_a_kernel_without_data_keeps_the_prefix_rules(debian12: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(debian12, other, symlinks=True)
    modules = other / "usr/lib/modules"
    (modules / next(iter(os.listdir(modules)))).rename(modules / "6.18.0-1-amd64")
    index = _index(other)
    assert index.kernel == "6.18.0-1-amd64"
    assert index.provider("net.ipv4.tcp_tw_recycle").kind is ProviderKind.BUILTIN
    assert index.aliases() == {}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True, timeout=300)


def test_check_show_and_explain_on_debian12(debian12: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(debian12, root, symlinks=True)
    (root / "etc/sysctl.d/10-first.conf").write_text(
        "fs.inotify.max_user_watches = 524288\nkernel.sched_cfs_bandwidth_slice_u = 4000\n"
        "net.ipv4.tcp_tw_recycle = 1\nnet.netfilter.nf_conntrack_tcp_loose = 0\nfs.file-max = 500000\n")
    (root / "etc/sysctl.d/20-second.conf").write_text("user.max_inotify_watches = 100000\n")
    proc = _cli("check", "--root", str(root), "--format", "json")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    keys = {k["key"]: k for k in doc["keys"]}

    # item 2: the later write, through the other name, is the value of both names
    first, second = keys["fs.inotify.max_user_watches"], keys["user.max_inotify_watches"]
    assert first["boot"] == {"applied": False, "value": "100000"}, first
    assert second["boot"] == {"applied": True, "value": "100000"}, second
    assert first["aliases"] == ["user.max_inotify_watches"] and second["aliases"] == ["fs.inotify.max_user_watches"]
    line = next(a for a in doc["assignments"] if a["key"] == "fs.inotify.max_user_watches")
    assert line["fate"] == "overridden" and line["by"] == {"file": "/etc/sysctl.d/20-second.conf", "line": 1}, line

    # item 6: unknown keys with a suggestion from the booted key set
    sd104 = {f["key"]: f for f in doc["findings"] if f["code"] == "SD104"}
    assert "kernel.sched_cfs_bandwidth_slice_us" in sd104["kernel.sched_cfs_bandwidth_slice_u"]["message"]
    assert "net.ipv4.tcp_tw_reuse" in sd104["net.ipv4.tcp_tw_recycle"]["message"]
    # a module key nothing loads: the value it gets once loaded is the booted default
    loose = keys["net.netfilter.nf_conntrack_tcp_loose"]
    assert loose["kernel_default"] == {"value": "1", "sized": False, "formula": None}, loose
    assert loose["after_late_load"]["value"] == "1"
    filemax = keys["fs.file-max"]["kernel_default"]
    assert filemax["sized"] is True and filemax["value"] is None and "NR_FILE" in filemax["formula"]

    shown = json.loads(_cli("show", "--root", str(root), "--format", "json").stdout)
    row = next(s for s in shown["settings"] if s["key"] == "fs.inotify.max_user_watches")
    assert row["final"] is False and row["alias_winner"] == "user.max_inotify_watches", row

    explained = _cli("explain", "fs.inotify.max_user_watches", "--root", str(root))
    assert explained.returncode in (0, 1), explained.stderr
    assert "fs.inotify.max_user_watches = 100000" in explained.stdout, explained.stdout
    assert "same kernel variable" in explained.stdout, explained.stdout
    fin = _cli("explain", "net.ipv4.tcp_fin_timeout", "--root", str(root)).stdout
    assert "default: 60 (a real boot of Debian 6.1." in fin, fin
    sized = _cli("explain", "kernel.threads-max", "--root", str(root)).stdout
    assert "default: computed from RAM/CPUs: RAM / (8 x THREAD_SIZE" in sized, sized
