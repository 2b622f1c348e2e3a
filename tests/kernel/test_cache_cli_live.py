"""Cache per kernel build, the `index` command, the bundled example root and this live host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysctl_doctor.kernel import ProviderKind, load_module_index
from sysctl_doctor.kernel.cache import cache_dir
from sysctl_doctor.kernel.curated import curated_rules, parse_providers_tsv
from sysctl_doctor.live import LiveHost
from sysctl_doctor.root import Root

from .test_module_files import KVER, make_tree

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "incident"


def _tree_snapshot(path: Path):
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_cache_is_reused_and_invalidated_by_depmod(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root")
    before = _tree_snapshot(root)
    cold = load_module_index(Root(root), KVER)
    assert not cold.from_cache
    files = list(cache_dir().glob("index-*.json"))
    assert len(files) == 1 and not list(cache_dir().glob(".index-*"))  # atomic: no temp file left
    warm = load_module_index(Root(root), KVER)
    assert warm.from_cache
    assert warm.to_json()["modules"] == cold.to_json()["modules"]
    assert _tree_snapshot(root) == before  # never writes into the root
    # a new depmod run (modules.dep rewritten) builds afresh
    dep = root / "lib/modules" / KVER / "modules.dep"
    dep.write_text(dep.read_text() + "\n")
    again = load_module_index(Root(root), KVER)
    assert not again.from_cache
    assert len(list(cache_dir().glob("index-*.json"))) == 2


def test_corrupt_cache_file_is_rebuilt(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root")
    load_module_index(Root(root), KVER)
    (cache_file,) = cache_dir().glob("index-*.json")
    cache_file.write_text('{"kernel": ')
    index = load_module_index(Root(root), KVER)
    assert not index.from_cache
    assert index.provider("net.sctp.rto_min").module == "sctp"


def test_example_root_works_from_metadata_and_curated_table(private_cache):
    index = load_module_index(Root(EXAMPLE))
    assert index.kernel == "6.1.0-56-amd64"
    assert index.mode == "metadata" and index.partial
    assert not any(p.suffix == ".ko" for p in EXAMPLE.rglob("*"))
    p = index.provider("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert (p.kind, p.module, p.module_file) == (ProviderKind.MODULE, "nf_conntrack", "kernel/net/netfilter/nf_conntrack.ko")
    assert p.evidence.startswith("curated:")
    assert {"nf_nat", "xt_conntrack", "nft_ct"} <= set(p.loaded_by)  # from the real modules.dep
    assert index.provider("net.ipv4.tcp_congestion_control", "bbr").module == "tcp_bbr"
    assert index.provider("net.nf_conntrack_max").init_netns_only
    assert index.is_builtin_module("tcp_cubic")
    size = sum(f.stat().st_size for f in EXAMPLE.rglob("*") if f.is_file())
    assert size < 2 * 1024 * 1024


def test_modprobe_d_install_and_blacklist(tmp_path, private_cache):
    (tmp_path / "etc/modprobe.d").mkdir(parents=True)
    (tmp_path / "etc/modprobe.d/local.conf").write_text(
        "# test\nblacklist br_netfilter\ninstall sctp /bin/true\nsoftdep nf_conntrack pre: nf_log_syslog\nbogus line\n"
    )
    index = load_module_index(Root(tmp_path))
    assert index.blacklisted("br-netfilter") == "/etc/modprobe.d/local.conf:2"
    assert index.install_command("sctp") == ("/bin/true", "/etc/modprobe.d/local.conf:3")
    assert "nf_log_syslog" in index.dependencies("nf_conntrack")
    assert any(d.line == 5 for d in index.diagnostics)
    from sysctl_doctor.kernel import describe_provider

    text = "\n".join(describe_provider(index.provider("net.sctp.rto_min"), index))
    assert "modprobe runs '/bin/true' instead of loading it" in text


def test_live_host_without_modules_uses_proc_sys(private_cache):
    live = LiveHost()
    if not Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal").exists():
        pytest.skip("NEEDS a kernel with conntrack in /proc/sys (this machine's 6.18 has it built in)")
    if Path("/proc/modules").exists():
        pytest.skip("NEEDS a kernel without loadable modules (CONFIG_MODULES off, like this machine's 6.18)")
    if Path("/lib/modules", os.uname().release).is_dir():
        pytest.skip("NEEDS a host without a modules tree: this host has one, the proc-only path is not exercised")
    index = load_module_index(Root("/"), live=live)
    assert index.kernel == os.uname().release and index.mode == "none"
    p = index.provider("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert (p.kind, p.evidence) == (ProviderKind.BUILTIN, "proc")  # built in here: CONFIG_MODULES off
    typo = index.provider("net.ipv4.tcp_sack_typo")
    assert typo.kind is ProviderKind.UNKNOWN and typo.suggestion == "net.ipv4.tcp_sack"
    assert index.provider("net.ipv4.conf.lo.rp_filter").kind is ProviderKind.INTERFACE


def test_curated_table_rows_all_name_a_source():
    rules = curated_rules()
    assert len(rules) > 40
    assert all(r.source and (".c" in r.source or "commit" in r.source) for r in rules)
    with pytest.raises(Exception, match="providers.tsv:1"):
        parse_providers_tsv("net/x\tmodule\tfoo\n")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_index_json_and_text(private_cache, tree_61, tmp_path):
    root = make_tree(tree_61, tmp_path / "root")
    res = _cli("index", "--root", str(root), "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["kernel"] == KVER and data["modules"]["nf_conntrack"]["file"].endswith(".ko.xz")
    assert "net/nf_conntrack_max" in data["modules"]["nf_conntrack"]["init_netns_only"]
    assert "scanning" not in res.stderr  # no progress bar when stderr is not a tty
    text = _cli("index", "--root", str(root))
    assert text.returncode == 0 and "net.bridge.bridge-nf-call-iptables (per netns)" in text.stdout
    bad = _cli("index", "--root", str(root), "--kernel", "0.0-nope")
    assert bad.returncode == 2 and "error: --kernel 0.0-nope" in bad.stderr and "Traceback" not in bad.stderr


def test_a_built_in_modules_keys_are_built_in(tmp_path, private_cache):
    moddir = tmp_path / "usr/lib/modules/6.1.0-custom"
    moddir.mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (moddir / "modules.dep").write_text("kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n")
    (moddir / "modules.builtin").write_text("kernel/net/netfilter/nf_conntrack.ko\n")
    index = load_module_index(Root(tmp_path))
    assert index.kernel == "6.1.0-custom"
    p = index.provider("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert (p.kind, p.module, p.evidence) == (ProviderKind.BUILTIN, "nf_conntrack", "modules.builtin")
    assert p.per_netns
    q = index.provider("net.bridge.bridge-nf-call-iptables")
    assert (q.kind, q.module, q.requires) == (ProviderKind.MODULE, "br_netfilter", ["bridge"])


def test_explain_shows_the_provider(private_cache):
    res = _cli("explain", "net.netfilter.nf_conntrack_tcp_be_liberal", "--root", str(EXAMPLE), "--format", "json")
    assert res.returncode == 0, res.stderr
    section = json.loads(res.stdout)["sections"][-1]
    assert section["data"]["kind"] == "module" and section["data"]["module"] == "nf_conntrack"
    assert section["data"]["kernel"] == "6.1.0-56-amd64"
    assert any(line.startswith("provided by module nf_conntrack (kernel/net/netfilter/nf_conntrack.ko)") for line in section["lines"])
    text = _cli("explain", "net.nf_conntrack_max", "--root", str(EXAMPLE))
    assert text.returncode == 0 and "init network namespace only" in text.stdout


def test_cache_keeps_only_the_newest_indexes(tmp_path, private_cache, monkeypatch):
    from sysctl_doctor.kernel import cache

    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    roots = []
    for i in range(5):
        root = tmp_path / f"r{i}"
        (root / "lib/modules/6.1.0-x").mkdir(parents=True)
        (root / "lib/modules/6.1.0-x/modules.dep").write_text("kernel/a.ko:\n")
        roots.append(root)
        load_module_index(Root(root))
    assert len(list(cache_dir().glob("index-*.json"))) == 3
    assert load_module_index(Root(roots[-1])).from_cache
    assert not load_module_index(Root(roots[0])).from_cache
