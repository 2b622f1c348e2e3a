"""The minimal ELF reader agrees with pyelftools on real modules (it exists only because it is faster)."""

from __future__ import annotations

import io
import lzma
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from sysctl_doctor.kernel.elf_scan import Elf

MODULES_61 = ["kernel/net/netfilter/nf_conntrack.ko", "kernel/net/sunrpc/sunrpc.ko", "kernel/net/bridge/br_netfilter.ko"]
MODULES_612 = ["kernel/net/netfilter/nf_conntrack.ko.xz", "kernel/net/sctp/sctp.ko.xz"]


def _check(data: bytes) -> None:
    mine = Elf(data)
    ref = ELFFile(io.BytesIO(data))
    ref_sections = list(ref.iter_sections())
    assert [s.name for s in mine.sections] == [s.name for s in ref_sections]
    ref_syms = list(ref.get_section_by_name(".symtab").iter_symbols())
    assert [(n, v) for n, _t, _x, v, _s in mine.symbols()] == [(s.name, s["st_value"]) for s in ref_syms]
    special = {"SHN_UNDEF": 0, "SHN_ABS": 0xFFF1, "SHN_COMMON": 0xFFF2}
    assert [x for _n, _t, x, _v, _s in mine.symbols()] == [
        s["st_shndx"] if isinstance(s["st_shndx"], int) else special[s["st_shndx"]] for s in ref_syms
    ]
    for sec, rsec in zip(mine.sections, ref_sections):
        if isinstance(rsec, RelocationSection):
            got = mine.relocations(sec)
            want = [(r["r_offset"], r["r_info_sym"], r["r_addend"]) for r in rsec.iter_relocations()]
            assert got == want, sec.name
    info = dict(r.split("=", 1) for r in mine.modinfo() if "=" in r)
    assert info.get("license") and "vermagic" in info


def test_reader_matches_pyelftools_61(tree_61):
    base = Path(tree_61) / "lib/modules" / tree_61.kver
    for rel in MODULES_61:
        _check((base / rel).read_bytes())


def test_reader_matches_pyelftools_612(tree_612):
    base = Path(tree_612) / "lib/modules" / tree_612.kver
    for rel in MODULES_612:
        _check(lzma.decompress((base / rel).read_bytes()))
