"""Facts about real Debian kernels (5.10 and 6.1 .ko, 6.12 .ko.xz), read from their own module files."""

from __future__ import annotations

from sysctl_doctor.kernel import ProviderKind, describe_provider


def test_index_is_complete_and_read_from_elf(real_index):
    assert real_index.mode == "elf"
    assert not real_index.partial, real_index.diagnostics
    assert real_index.data.scanned > 3500
    assert len(real_index.elf_keys()) > 200


def test_be_liberal_is_nf_conntrack_per_netns(real_index):
    p = real_index.provider("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert p.kind is ProviderKind.MODULE and p.module == "nf_conntrack"
    assert p.evidence.startswith("elf:kernel/net/netfilter/nf_conntrack.ko")
    assert p.per_netns and not p.init_netns_only
    assert {"nf_defrag_ipv4", "nf_defrag_ipv6"} <= set(p.requires)
    assert {"nf_nat", "xt_conntrack", "nft_ct"} <= set(p.loaded_by)


def test_bridge_nf_call_iptables_is_br_netfilter(real_index):
    p = real_index.provider("net.bridge.bridge-nf-call-iptables")
    assert (p.kind, p.module) == (ProviderKind.MODULE, "br_netfilter")
    assert p.evidence.startswith("elf:kernel/net/bridge/br_netfilter.ko")
    assert "bridge" in p.requires


def test_ipvs_and_sctp(real_index):
    for key in ("net.ipv4.vs.expire_nodest_conn", "net.ipv4.vs.conntrack"):
        p = real_index.provider(key)
        assert (p.kind, p.module) == (ProviderKind.MODULE, "ip_vs"), key
        assert p.evidence.startswith("elf:")
    for key in ("net.sctp.rto_min", "net.sctp.addip_enable"):
        p = real_index.provider(key)
        assert (p.kind, p.module) == (ProviderKind.MODULE, "sctp"), key
        assert p.per_netns


def test_ip_forward_is_built_in(real_index):
    p = real_index.provider("net.ipv4.ip_forward")
    assert p.kind is ProviderKind.BUILTIN
    assert "net/ipv4/ip_forward" not in real_index.elf_keys()  # no module claims it


def test_nf_conntrack_max_in_both_places(real_index):
    init = real_index.provider("net.nf_conntrack_max")
    per = real_index.provider("net.netfilter.nf_conntrack_max")
    assert init.module == per.module == "nf_conntrack"
    assert init.evidence.startswith("elf:") and per.evidence.startswith("elf:")
    assert init.init_netns_only and not per.init_netns_only and per.per_netns
    keys = real_index.module_keys("nf_conntrack")
    assert {"net/nf_conntrack_max", "net/netfilter/nf_conntrack_max"} <= keys


def test_nf_nat_depends_on_nf_conntrack(real_index):
    assert "nf_conntrack" in real_index.dependencies("nf_nat")
    assert "nf_nat" in real_index.dependents("nf_conntrack")
    assert real_index.has_module("nf-nat") and real_index.normalize_module("nf-nat") == "nf_nat"


def test_sunrpc_and_nfs_child_or_flat_tables(real_index):
    # 6.1 registers these through nested child tables, 6.12 through register_sysctl("fs/nfs", ...)
    assert real_index.provider("sunrpc.tcp_slot_table_entries").module == "sunrpc"
    assert real_index.provider("fs.nfs.nlm_grace_period").module == "lockd"
    assert real_index.provider("fs.nfs.nfs_mountpoint_timeout").module == "nfs"


def test_value_triggered_autoloads(real_index):
    bbr = real_index.provider("net.ipv4.tcp_congestion_control", "bbr")
    assert (bbr.kind, bbr.module) == (ProviderKind.AUTOLOAD, "tcp_bbr")
    assert bbr.module_file and "tcp_bbr.ko" in bbr.module_file
    cubic = real_index.provider("net.ipv4.tcp_congestion_control", "cubic")
    assert cubic.kind is ProviderKind.BUILTIN  # tcp_cubic is in modules.builtin
    assert real_index.is_builtin_module("tcp_cubic")
    fq = real_index.provider("net.core.default_qdisc", "fq")
    assert (fq.kind, fq.module) == (ProviderKind.AUTOLOAD, "sch_fq")
    log = real_index.provider("net.netfilter.nf_log.2", "nf_log_ipv4")
    # 5.12 merged the loggers into nf_log_syslog, which keeps "nf_log_ipv4" as a modules.alias
    expected = "nf_log_ipv4" if real_index.kernel.startswith("5.10") else "nf_log_syslog"
    assert (log.kind, log.module) == (ProviderKind.AUTOLOAD, expected)


def test_interface_keys(real_index):
    p = real_index.provider("net.ipv4.conf.eth0/100.rp_filter")
    assert p.kind is ProviderKind.INTERFACE and p.interface == "eth0.100"
    assert real_index.provider("net.ipv6.neigh.ens3.base_reachable_time_ms").interface == "ens3"
    assert real_index.provider("net.ipv4.conf.all.rp_filter").kind is ProviderKind.BUILTIN


def test_typo_in_a_module_key_is_unknown_with_suggestion(real_index):
    p = real_index.provider("net.netfilter.nf_conntrack_tcp_be_liberl")
    assert p.kind is ProviderKind.UNKNOWN
    assert p.suggestion == "net.netfilter.nf_conntrack_tcp_be_liberal"
    q = real_index.provider("nett.bridge.bridge-nf-call-iptables")
    assert q.kind is ProviderKind.UNKNOWN and q.suggestion == "net.bridge.bridge-nf-call-iptables"


def test_describe_provider_names_module_file_and_dependents(real_index):
    lines = describe_provider(real_index.provider("net.netfilter.nf_conntrack_tcp_be_liberal"), real_index)
    text = "\n".join(lines)
    assert "provided by module nf_conntrack (kernel/net/netfilter/nf_conntrack.ko" in text
    assert "also loaded as a dependency of nf_nat" in text
    assert "per network namespace" in text


def test_driver_and_top_level_directories(real_index):
    # 6.12 registers these with register_sysctl_sz("dev/i915", …) and register_sysctl("coda", …) and a
    # 56-byte ctl_table; 6.1 with child tables under a root table
    p = real_index.provider("dev.i915.perf_stream_paranoid")
    assert (p.module, p.evidence[:4]) == ("i915", "elf:")
    assert real_index.provider("coda.timeout").module == "coda"
    assert real_index.provider("dev.raid.speed_limit_min").module == "md_mod"


def test_curated_table_agrees_with_the_module_files(real_index):
    """Where a root ships no module files the curated table answers: it must say what the ELF scan says."""
    from sysctl_doctor.kernel.curated import matching_rules

    disagree = []
    for path in sorted(real_index.elf_keys()):
        mod = real_index.provider(path).module
        entry = next(e for e in real_index.data.scans[mod].entries if e.path == path)
        scope = "init" if entry.init_netns_only else ("netns" if entry.per_netns else "global")
        rules = [r for r, _i in matching_rules(path) if r.kind in (ProviderKind.MODULE, ProviderKind.BUILTIN)]
        got = (rules[0].module, rules[0].scope) if rules else (None, None)
        if got != (mod, scope):
            disagree.append((path, (mod, scope), got))
    assert not disagree, disagree[:10]
