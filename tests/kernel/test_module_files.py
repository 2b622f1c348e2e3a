"""Real module files in every compression the kernel supports, and broken ones that must not break the index."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from sysctl_doctor.kernel import ProviderKind, load_module_index
from sysctl_doctor.kernel.elf_scan import scan_module_bytes
from sysctl_doctor.root import Root

KVER = "6.1.0-test"
PICK = {  # module -> (real path in the 6.1 tree, compression to store it with)
    "nf_conntrack": ("kernel/net/netfilter/nf_conntrack.ko", "xz"),
    "br_netfilter": ("kernel/net/bridge/br_netfilter.ko", "zst"),
    "ip_vs": ("kernel/net/netfilter/ipvs/ip_vs.ko", "gz"),
    "sctp": ("kernel/net/sctp/sctp.ko", None),
    "nf_nat": ("kernel/net/netfilter/nf_nat.ko", "xz"),
}
TOOLS = {"xz": ["xz", "--check=crc32", "-T1", "-c"], "zst": ["zstd", "-q", "-c"], "gz": ["gzip", "-9", "-n", "-c"]}


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"NEEDS {tool}: to recompress real modules (apt-get install xz-utils zstd gzip)")


def _suffix(comp):
    return ".ko" + (f".{comp}" if comp else "")


def make_tree(tree_61, dest: Path, write_dep: bool = True) -> Path:
    """A root with five real 6.1 modules stored as .ko.xz/.ko.zst/.ko.gz/.ko, and a matching modules.dep."""
    src = Path(tree_61) / "lib/modules" / tree_61.kver
    moddir = dest / "lib/modules" / KVER
    real_dep = {}
    for line in (src / "modules.dep").read_text().splitlines():
        head, _, tail = line.partition(":")
        real_dep[head] = tail.split()
    new_name = {}
    for rel, comp in PICK.values():
        new_name[rel] = rel[: -len(".ko")] + _suffix(comp)
    dep_lines = []
    for rel, comp in PICK.values():
        target = moddir / new_name[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        if comp is None:
            shutil.copyfile(src / rel, target)
        else:
            _need(TOOLS[comp][0])
            with open(target, "wb") as out:
                subprocess.run(TOOLS[comp] + [str(src / rel)], stdout=out, check=True)
        deps = [new_name.get(d, d) for d in real_dep[rel]]
        dep_lines.append(f"{new_name[rel]}: {' '.join(deps)}")
    if write_dep:
        (moddir / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    shutil.copyfile(src / "modules.builtin", moddir / "modules.builtin")
    return dest


def test_all_compressions_read_from_real_modules(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root")
    index = load_module_index(Root(root), KVER)
    assert index.mode == "elf" and not index.partial, index.diagnostics
    cases = {
        "net.netfilter.nf_conntrack_tcp_be_liberal": ("nf_conntrack", ".ko.xz"),
        "net.bridge.bridge-nf-call-iptables": ("br_netfilter", ".ko.zst"),
        "net.ipv4.vs.expire_nodest_conn": ("ip_vs", ".ko.gz"),
        "net.sctp.rto_min": ("sctp", ".ko"),
    }
    for key, (mod, suffix) in cases.items():
        p = index.provider(key)
        assert (p.kind, p.module) == (ProviderKind.MODULE, mod), key
        assert p.evidence.startswith("elf:") and p.evidence.endswith(suffix), p.evidence
    assert "nf_conntrack" in index.dependencies("nf_nat")


def test_missing_modules_dep_falls_back_to_modinfo(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root", write_dep=False)
    index = load_module_index(Root(root), KVER)
    assert index.partial
    assert any("modules.dep" in str(d) and "missing" in str(d) for d in index.diagnostics)
    assert index.provider("net.netfilter.nf_conntrack_tcp_be_liberal").module == "nf_conntrack"
    # depends= from each module's .modinfo, closed transitively
    assert "nf_conntrack" in index.dependencies("nf_nat")
    assert "nf_defrag_ipv4" in index.dependencies("nf_nat")


def test_corrupt_truncated_and_unknown_modules_are_diagnostics(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root")
    moddir = root / "lib/modules" / KVER / "kernel/broken"
    moddir.mkdir(parents=True)
    real = (Path(tree_61) / "lib/modules" / tree_61.kver / "kernel/net/netfilter/nf_conntrack.ko").read_bytes()
    (moddir / "truncated.ko").write_bytes(real[:4096])
    (moddir / "not_elf.ko").write_bytes(b"this is not a module\n" * 10)
    (moddir / "bad_xz.ko.xz").write_bytes(b"\xfd7zXZ\x00" + bytes(200))
    xz = (root / "lib/modules" / KVER / "kernel/net/netfilter/nf_conntrack.ko.xz").read_bytes()
    (moddir / "cut.ko.xz").write_bytes(xz[: len(xz) // 2])
    (moddir / "weird.ko.bz2").write_bytes(b"BZh91AY&SY")
    (moddir / "empty.ko.zst").write_bytes(b"")
    index = load_module_index(Root(root), KVER)
    assert index.partial
    text = "\n".join(str(d) for d in index.diagnostics)
    for name in ("truncated.ko", "not_elf.ko", "bad_xz.ko.xz", "cut.ko.xz", "weird.ko.bz2", "empty.ko.zst"):
        assert name in text, (name, text)
    assert "unknown module compression" in text
    # the good modules are still indexed
    assert index.provider("net.bridge.bridge-nf-call-iptables").module == "br_netfilter"
    assert index.provider("net.netfilter.nf_conntrack_tcp_be_liberal").evidence.startswith("elf:")


def test_random_byte_damage_never_raises(tree_61):
    real = (Path(tree_61) / "lib/modules" / tree_61.kver / "kernel/net/bridge/br_netfilter.ko").read_bytes()
    rng = random.Random(20261126)
    outcomes = set()
    for _ in range(300):
        data = bytearray(real)
        for _ in range(rng.choice((1, 8, 64))):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        scan = scan_module_bytes(bytes(data), "kernel/net/bridge/br_netfilter.ko", "br_netfilter")
        outcomes.add("none" if scan is None else ("error" if scan.error else "ok"))
    assert "ok" in outcomes  # most single-byte hits leave the tables readable


def test_no_modules_tree_uses_curated_table(tmp_path, private_cache):
    (tmp_path / "etc").mkdir()
    index = load_module_index(Root(tmp_path))
    assert index.mode == "none" and index.partial
    assert any("curated table only" in str(d) for d in index.diagnostics)
    p = index.provider("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert (p.kind, p.module) == (ProviderKind.MODULE, "nf_conntrack")
    assert p.evidence.startswith("curated:net/netfilter/nf_conntrack_standalone.c")
    assert not list(tmp_path.rglob("*.json"))  # nothing written into the root


def test_unknown_kernel_version_is_an_error_when_others_exist(tree_61, tmp_path, private_cache):
    from sysctl_doctor.errors import DoctorError

    root = make_tree(tree_61, tmp_path / "root")
    with pytest.raises(DoctorError, match="no /lib/modules/9.9"):
        load_module_index(Root(root), "9.9")


def test_module_links_are_followed_inside_the_root_only(tree_61, tmp_path, private_cache):
    root = make_tree(tree_61, tmp_path / "root")
    store = root / "var/lib/dkms"
    store.mkdir(parents=True)
    real = Path(tree_61) / "lib/modules" / tree_61.kver / "kernel/net/netfilter/ipvs/ip_vs_lblc.ko"
    shutil.copyfile(real, store / "ip_vs_lblc.ko")
    updates = root / "lib/modules" / KVER / "updates"
    updates.mkdir()
    (updates / "ip_vs_lblc.ko").symlink_to("/var/lib/dkms/ip_vs_lblc.ko")  # absolute: re-rooted
    outside = tmp_path / "outside.ko"
    shutil.copyfile(real, outside)
    (updates / "escape.ko").symlink_to("../../../../../outside.ko")  # ".." stops at the root
    index = load_module_index(Root(root), KVER)
    assert index.provider("net.ipv4.vs.lblc_expiration").module == "ip_vs_lblc"
    assert any("escape.ko" in str(d) and "leads nowhere" in str(d) for d in index.diagnostics)


@pytest.mark.parametrize("comp", ["xz", "zst", "gz"])
def test_truncated_and_oversized_compressed_modules(tree_61, tmp_path, comp, monkeypatch):
    from sysctl_doctor.kernel import elf_scan

    _need(TOOLS[comp][0])
    real = Path(tree_61) / "lib/modules" / tree_61.kver / "kernel/net/bridge/br_netfilter.ko"
    packed = subprocess.run(TOOLS[comp] + [str(real)], stdout=subprocess.PIPE, check=True).stdout
    name = f"kernel/net/bridge/br_netfilter.ko.{comp}"
    whole = scan_module_bytes(packed, name, "br_netfilter")
    assert whole is not None and whole.error is None and whole.entries
    cut = scan_module_bytes(packed[: len(packed) // 2], name, "br_netfilter")
    assert cut is not None and cut.error and ("truncated" in cut.error or "decompress" in cut.error), cut
    monkeypatch.setattr(elf_scan, "MAX_MODULE_BYTES", len(real.read_bytes()) // 2)
    big = scan_module_bytes(packed, name, "br_netfilter")
    assert big is not None and big.error and "more than" in big.error


@pytest.mark.parametrize("series", ["5.10", "6.1", "6.12"])
def test_the_prefilter_finds_the_modules_the_whole_file_search_finds(series, request):
    """The pre-filter searches the string table of a module's symbol table (where a call names a register
    function); on every module of the real trees it picks the modules a search of the whole file picks."""
    from sysctl_doctor.kernel.elf_scan import PREFILTER, decompress, names_a_register_function

    tree = request.getfixturevalue({"5.10": "tree_510", "6.1": "tree_61", "6.12": "tree_612"}[series])
    base = Path(tree) / "lib/modules" / tree.kver
    picked = 0
    for path in sorted(base.rglob("*.ko*")):
        data = decompress(path.read_bytes(), path.name)
        whole = any(name in data for name in PREFILTER)
        assert names_a_register_function(data) == whole, path
        picked += whole
    assert picked >= 30  # nf_conntrack, br_netfilter, ipv6, sunrpc, ... register sysctls


def test_the_prefilter_searches_the_whole_file_when_the_symbol_table_cannot_be_found(tree_61):
    """No symbol table, or section headers that point outside the file: the whole file is searched (and
    the scan then reports what is wrong), so damage never hides a module."""
    import struct

    from sysctl_doctor.kernel.elf_scan import names_a_register_function

    real = (Path(tree_61) / "lib/modules" / tree_61.kver / "kernel/net/bridge/br_netfilter.ko").read_bytes()
    assert names_a_register_function(real)
    shoff = struct.unpack_from("<Q", real, 0x28)[0]
    shnum = struct.unpack_from("<H", real, 0x3C)[0]
    no_symtab = bytearray(real)
    for i in range(shnum):
        if struct.unpack_from("<I", real, shoff + i * 64 + 4)[0] == 2:
            struct.pack_into("<I", no_symtab, shoff + i * 64 + 4, 1)  # SHT_SYMTAB -> SHT_PROGBITS
    assert names_a_register_function(bytes(no_symtab))
    outside = bytearray(real)
    struct.pack_into("<Q", outside, 0x28, len(real))  # section headers past the end
    assert names_a_register_function(bytes(outside))
    strtab_gone = bytearray(real)
    for i in range(shnum):
        if struct.unpack_from("<I", real, shoff + i * 64 + 4)[0] == 2:
            link = struct.unpack_from("<I", real, shoff + i * 64 + 40)[0]
            struct.pack_into("<Q", strtab_gone, shoff + link * 64 + 24, len(real))  # the string table past the end
    assert names_a_register_function(bytes(strtab_gone))
    assert not names_a_register_function(b"\x7fELF" + bytes(200))
