"""Exact module key lists (data/known_keys) on roots without module files: typos are unknown keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor.kernel import ProviderKind, load_module_index
from sysctl_doctor.kernel import known_keys
from sysctl_doctor.kernel.known_keys_scan import module_keys_of_tree
from sysctl_doctor.root import Root

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "incident"
DATA = REPO / "src" / "sysctl_doctor" / "data" / "known_keys"
TYPO = "net.netfilter.nf_conntrack_tcp_be_liberall"


@pytest.mark.parametrize("series", ["5.10", "6.1", "6.12"])
def test_committed_list_matches_a_fresh_scan(series, session_cache, request):
    """The committed keys are what tools/gen_known_keys.py reads from the real tree.

    The tree is the package the list names in its `# source` line while the archive serves it (else the
    current one: kernel_trees says so). Only keys and their modules are compared — never version
    strings — so a newer package in the archive does not fail the suite unless the keys really changed.
    6.1 is scanned afresh (private index cache); 5.10 and 6.12 reuse the session's index cache, which
    is keyed on the scanner's source, so a scanner change rescans them too.
    """
    if series == "6.1":
        request.getfixturevalue("private_cache")
    from kernel_trees import KernelTreeUnavailable, debian_kernel_tree

    try:
        root = debian_kernel_tree(series)
    except KernelTreeUnavailable as exc:
        pytest.skip(f"NEEDS DEBIAN KERNEL PACKAGE linux-image ({series}) to compare its list: {exc}")
    _, _, keys = module_keys_of_tree(root, root.kver)
    committed = known_keys.parse((DATA / f"{series}.tsv").read_text(encoding="utf-8"), f"{series}.tsv")
    changes = known_keys.key_changes(committed.by_module, keys)
    assert not changes, (
        f"data/known_keys/{series}.tsv differs from the scan of {root.package} "
        f"({len(changes)} keys; + appeared, - went away):\n" + "\n".join(changes[:40])
        + f"\nregenerate: .venv/bin/python tools/gen_known_keys.py {series}")
    if root.note == "":
        assert committed.source == str(root.package)  # the pin is what the list says it came from


def test_lists_are_small_and_hold_the_module_families():
    assert sum(f.stat().st_size for f in DATA.iterdir()) < 1024 * 1024
    lists = {k.series: k for k in known_keys.all_series()}
    assert set(lists) == {"5.10", "6.1", "6.12"}
    for kk in lists.values():
        assert "net/netfilter/nf_conntrack_tcp_be_liberal" in kk.by_module["nf_conntrack"]
        assert {"net/nf_conntrack_max", "net/netfilter/nf_conntrack_max"} <= kk.by_module["nf_conntrack"]
        assert "net/bridge/bridge-nf-call-iptables" in kk.by_module["br_netfilter"]
        assert "net/ipv4/vs/conntrack" in kk.by_module["ip_vs"]
        assert "net/sctp/rto_min" in kk.by_module["sctp"]
        assert "sunrpc/tcp_slot_table_entries" in kk.by_module["sunrpc"]
        assert "fs/nfs/nlm_grace_period" in kk.by_module["lockd"]
        assert "net/ipv4/ip_forward" not in kk.all_keys()  # built in: no module registers it
        assert "parport" not in kk.by_module  # per-device directories: stays pattern-based
    # nf_conntrack_helper: registered by 5.10's nf_conntrack.ko, gone from 6.1's (the scans say so)
    assert "net/netfilter/nf_conntrack_helper" in lists["5.10"].by_module["nf_conntrack"]
    assert "net/netfilter/nf_conntrack_helper" not in lists["6.1"].by_module["nf_conntrack"]


def test_nearest_series():
    near, same = known_keys.nearest("6.1.0-56-amd64")
    assert (near.series, same) == ("6.1", True)
    near, same = known_keys.nearest("6.12.95+deb12-amd64")
    assert (near.series, same) == ("6.12", True)
    near, same = known_keys.nearest("6.18.0")
    assert (near.series, same) == ("6.12", False)
    near, same = known_keys.nearest("5.4.0-1-amd64")
    assert (near.series, same) == ("5.10", False)
    assert known_keys.nearest("unknown") is None


def test_example_root_typo_is_unknown_and_real_keys_keep_their_providers(private_cache):
    index = load_module_index(Root(EXAMPLE))
    assert index.mode == "metadata"
    typo = index.provider(TYPO)
    assert typo.kind is ProviderKind.UNKNOWN
    assert typo.suggestion == "net.netfilter.nf_conntrack_tcp_be_liberal"
    assert typo.evidence == "known-keys:6.1"
    for key, module in [
        ("net.netfilter.nf_conntrack_tcp_be_liberal", "nf_conntrack"),
        ("net.bridge.bridge-nf-call-iptables", "br_netfilter"),
        ("net.ipv4.vs.expire_nodest_conn", "ip_vs"),
        ("net.sctp.rto_min", "sctp"),
        ("net.netfilter.nf_conntrack_frag6_timeout", "nf_defrag_ipv6"),
        ("sunrpc.tcp_slot_table_entries", "sunrpc"),
        ("fs.nfs.nlm_grace_period", "lockd"),
    ]:
        p = index.provider(key)
        assert (p.kind, p.module) == (ProviderKind.MODULE, module), key
    assert index.provider("net.ipv4.ip_forward").kind is ProviderKind.BUILTIN
    init, per = index.provider("net.nf_conntrack_max"), index.provider("net.netfilter.nf_conntrack_max")
    assert init.module == per.module == "nf_conntrack"
    assert init.init_netns_only and per.per_netns and not per.init_netns_only
    for key, fix in [("net.bridge.bridge-nf-call-iptable", "net.bridge.bridge-nf-call-iptables"),
                     ("net.ipv4.vs.conntrak", "net.ipv4.vs.conntrack"),
                     ("net.sctp.rto_minn", "net.sctp.rto_min"),
                     ("sunrpc.tcp_slot_table_entrie", "sunrpc.tcp_slot_table_entries")]:
        p = index.provider(key)
        assert (p.kind, p.suggestion) == (ProviderKind.UNKNOWN, fix), key
    # still pattern-based: per-interface keys and modules whose directories are made at run time
    assert index.provider("net.mpls.conf.eth0.input").kind is ProviderKind.INTERFACE
    assert index.provider("dev.parport.parport0.spintime").module == "parport"
    # removed in 6.0: unknown on this 6.1 root
    assert index.provider("net.netfilter.nf_conntrack_helper").kind is ProviderKind.UNKNOWN


def _metadata_root(tmp_path: Path, kver: str) -> Path:
    """The example root's modules.* metadata, filed under another kernel release."""
    root = tmp_path / "root"
    moddir = root / "usr/lib/modules" / kver
    shutil.copytree(EXAMPLE / "usr/lib/modules/6.1.0-56-amd64", moddir)
    (root / "lib").symlink_to("usr/lib")
    return root


def test_the_roots_kernel_picks_the_list(tmp_path, private_cache):
    old = load_module_index(Root(_metadata_root(tmp_path / "a", "5.10.0-32-amd64")))
    assert old.kernel == "5.10.0-32-amd64"
    assert old.provider("net.netfilter.nf_conntrack_helper").module == "nf_conntrack"  # 5.10 has it
    # a release between the lists: a key any list knows is known, a typo in none is unknown
    mid = load_module_index(Root(_metadata_root(tmp_path / "b", "6.6.0-1-amd64")))
    assert mid.provider("net.netfilter.nf_conntrack_helper").module == "nf_conntrack"
    assert mid.provider(TYPO).kind is ProviderKind.UNKNOWN


def test_check_reports_the_typo_as_sd104(tmp_path, private_cache):
    root = tmp_path / "incident"
    shutil.copytree(EXAMPLE, root, symlinks=True)
    conf = root / "etc" / "sysctl.conf"
    text = conf.read_text()
    assert "net.netfilter.nf_conntrack_tcp_be_liberal = 1" in text
    conf.write_text(text.replace("net.netfilter.nf_conntrack_tcp_be_liberal = 1", f"{TYPO} = 1"))
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    [entry] = [k for k in report["keys"] if k["key"] == TYPO]
    assert entry["provider"]["kind"] == "unknown"
    assert "SD104" in entry["findings"] and "SD101" not in entry["findings"]
    [finding] = [f for f in report["findings"] if f["key"] == TYPO and f["code"] == "SD104"]
    assert "did you mean net.netfilter.nf_conntrack_tcp_be_liberal?" in finding["message"]


def test_explain_says_where_the_answer_comes_from(private_cache):
    from sysctl_doctor.kernel import describe_provider

    index = load_module_index(Root(EXAMPLE))
    text = "\n".join(describe_provider(index.provider(TYPO), index))
    assert "not among the keys its module registers" in text
    assert "did you mean net.netfilter.nf_conntrack_tcp_be_liberal?" in text
    assert "nf_conntrack registers no such key in Debian 6.1.0-56-amd64" in text
    assert "evidence: known-keys:6.1" in text
