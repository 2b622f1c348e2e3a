"""Read the sysctl tables a kernel module registers, straight from its ELF file.

A module's `struct ctl_table` arrays sit in a data section. Their pointers are filled in at load time
from RELA relocations, so the relocations tell the table's shape without the kernel's headers:
an entry has a relocation at +0 to a string (`procname`), a `mode` at +20 (u16), and a relocation
to a function (`proc_handler`: proc_dointvec… or a static handler) at +32 in the 64-byte entry of
5.10-6.10 (include/linux/sysctl.h: procname, data, maxlen, mode, child|type, proc_handler, …) or at
+24 in the 56-byte entry of 6.11+ (child and type removed). A directory entry (6.5 and older) has no
handler but a relocation at +24 to its child table. Each module is tried with both layouts and the
one that finds more entries wins.

Which directory a table lives in is the string passed, in the same function, to the register call
(register_net_sysctl[_sz](net, "net/netfilter", table), register_sysctl[_sz]("fs/nfs", table),
register_sysctl_table(root_table)). A table is tied to the call
it precedes; a call whose first argument is `&init_net` registers an init-netns-only table.

The ELF reader here is deliberately minimal (ELF64 little-endian, RELA): measured on Debian 6.1's
nf_conntrack.ko, iterating its relocations takes 0.6 ms with `struct` against 46 ms with pyelftools
(tests cross-check the two readers on real modules).
"""

from __future__ import annotations

import bisect
import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from sysctl_doctor.kernel.model import ModuleScan, SysctlEntry

SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOBITS = 8
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHF_STRINGS = 0x20
STT_FUNC = 2
STT_SECTION = 3
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00

OFF_MODE = 20


@dataclass(frozen=True)
class TableLayout:
    """Where `struct ctl_table` keeps its pointers (x86-64); the scan picks the one that fits a module."""

    name: str
    size: int
    handler: int
    child: Optional[int]


LAYOUTS = (
    # <= 6.5: procname, data, maxlen, mode, child, proc_handler, poll, extra1, extra2
    # 6.6-6.10: the same size with `enum type` where child was (no child tables any more)
    TableLayout("ctl_table-64", 64, 32, 24),
    # 6.11+: child/type gone: procname, data, maxlen, mode, proc_handler, poll, extra1, extra2
    TableLayout("ctl_table-56", 56, 24, None),
)

REGISTER_NET = ("register_net_sysctl", "register_net_sysctl_sz")
REGISTER_PATH = ("register_sysctl", "register_sysctl_sz", "register_sysctl_init", "__register_sysctl_init")
REGISTER_ROOT = ("register_sysctl_table",)
REGISTER_PATHS = ("register_sysctl_paths",)
REGISTER_ALL = REGISTER_NET + REGISTER_PATH + REGISTER_ROOT + REGISTER_PATHS
TOP_DIRS = ("net", "kernel", "vm", "fs", "dev", "debug", "abi", "user", "sunrpc", "crypto")
PATH_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*$")
NAME_RE = re.compile(r"^[\x21-\x7e]+$")
# x86-64 "mov $sym, %rdi" (48 c7 c7 imm32) / "lea sym(%rip), %rdi" (48 8d 3d rel32): a first argument.
RDI_LOADS = (b"\x48\xc7\xc7", b"\x48\x8d\x3d")
# Cheap pre-filter: a module that registers sysctls names a register function in its string table.
PREFILTER = (b"register_net_sysctl", b"register_sysctl")

# Sections whose relocations are read: ctl_tables live in data/rodata, register calls in text.
SCANNED_SECTIONS = (".data", ".rodata", ".init.data", ".init.rodata", ".ref.data", ".text", ".init.text", ".ref.text")

MAX_MODULE_BYTES = 512 * 1024 * 1024  # the largest Debian module (amdgpu) is ~40 MB uncompressed
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZ_MAGIC = b"\x1f\x8b"


class ModuleReadError(Exception):
    """A module file that cannot be decompressed or parsed."""


def decompress(raw: bytes, file: str) -> bytes:
    """The ELF bytes of a module file named `file` (.ko, .ko.xz, .ko.zst, .ko.gz).

    Output is bounded by `MAX_MODULE_BYTES` (a crafted file cannot exhaust memory) and a stream
    that ends early is reported as truncated.
    """
    limit = MAX_MODULE_BYTES
    try:
        if file.endswith(".ko"):
            if len(raw) > limit:
                raise ModuleReadError(f"larger than {limit} bytes")
            return raw
        if file.endswith(".ko.xz"):
            if not raw.startswith(XZ_MAGIC):
                raise ModuleReadError("not xz data (bad magic)")
            xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = xz.decompress(raw, max_length=limit + 1)
            if len(out) > limit:
                raise ModuleReadError(f"decompresses to more than {limit} bytes")
            if not xz.eof:
                raise ModuleReadError("truncated xz data")
            return out
        if file.endswith(".ko.zst"):
            if not raw.startswith(ZSTD_MAGIC):
                raise ModuleReadError("not zstd data (bad magic)")
            import zstandard

            size = zstandard.frame_content_size(raw)
            if size > limit or (size < 0 and len(zstandard.ZstdDecompressor().stream_reader(raw).read(limit + 1)) > limit):
                raise ModuleReadError(f"decompresses to more than {limit} bytes")
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out = dobj.decompress(raw)
            if not dobj.eof:
                raise ModuleReadError("truncated zstd data")
            return out
        if file.endswith(".ko.gz"):
            if not raw.startswith(GZ_MAGIC):
                raise ModuleReadError("not gzip data (bad magic)")
            gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = gz.decompress(raw, limit + 1)
            if len(out) > limit:
                raise ModuleReadError(f"decompresses to more than {limit} bytes")
            if not gz.eof:
                raise ModuleReadError("truncated gzip data")
            return out
    except ModuleReadError:
        raise
    except (lzma.LZMAError, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ModuleReadError(f"cannot decompress: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError and friends
        raise ModuleReadError(f"cannot decompress: {type(exc).__name__}: {exc}") from None
    raise ModuleReadError("unknown compression (not .ko, .ko.xz, .ko.zst or .ko.gz)")


@dataclass
class _Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int


def names_a_register_function(data: bytes) -> bool:
    """The pre-filter: whether a register function's name (PREFILTER) is in the string table of the module's
    symbol table, where a module that calls one must name it (~1/7 of a module's bytes: the cold 6.12 index
    searched ~440 MB twice). Searched in the whole file when that table cannot be found (no symbol table,
    headers out of bounds: Elf or check_elf_bounds then says what is wrong). Debian's 5.10, 6.1 and 6.12
    trees (12,139 modules) give the same modules either way."""
    try:
        check_elf_bounds(data)  # ELF64 LE, its section headers inside the file
    except ModuleReadError:
        return any(name in data for name in PREFILTER)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shnum = struct.unpack_from("<H", data, 0x3C)[0]
    types = _section_types(shnum).unpack_from(data, shoff)
    if SHT_SYMTAB in types:
        link = struct.unpack_from("<I", data, shoff + types.index(SHT_SYMTAB) * 64 + 40)[0]
        if link < shnum:
            start, length = struct.unpack_from("<QQ", data, shoff + link * 64 + 24)
            if start + length <= len(data):
                return any(data.find(name, start, start + length) >= 0 for name in PREFILTER)
    return any(name in data for name in PREFILTER)


def _section_types(shnum: int) -> struct.Struct:
    """A Struct reading the sh_type of each of `shnum` section headers at once."""
    reader = _SECTION_TYPES.get(shnum)
    if reader is None:
        if len(_SECTION_TYPES) > 256:
            _SECTION_TYPES.clear()
        reader = _SECTION_TYPES[shnum] = struct.Struct("<" + "4xI56x" * shnum)
    return reader


_SECTION_TYPES: Dict[int, struct.Struct] = {}


def check_elf_bounds(data: bytes) -> None:
    """Cheap sanity check without parsing: ELF64 LE magic, and the section header table inside the file."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ModuleReadError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ModuleReadError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shentsize != 64 or shoff + shnum * 64 > len(data):
        raise ModuleReadError("truncated ELF file (section headers past the end)")


class Elf:
    """The parts of an ELF64 little-endian relocatable file the scan needs."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise ModuleReadError("not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ModuleReadError("not a 64-bit little-endian ELF file")
        self.data = data
        self.machine = struct.unpack_from("<H", data, 18)[0]
        shoff = struct.unpack_from("<Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if shentsize != 64 or shoff + shnum * 64 > len(data) or shstrndx >= shnum:
            raise ModuleReadError("truncated ELF file (section headers past the end)")
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
        for h in raw:
            if h[1] != SHT_NOBITS and h[4] + h[5] > len(data):
                raise ModuleReadError("truncated ELF file (a section runs past the end)")
        strtab_off = raw[shstrndx][4]
        self.sections = [
            _Section(self._cstr(strtab_off + h[0]), h[1], h[2], h[4], h[5], h[6], h[7]) for h in raw
        ]
        self._syms: Optional[List[Tuple[str, int, int, int, int]]] = None

    def _cstr(self, off: int) -> str:
        end = self.data.find(b"\0", off)
        if end < 0:
            raise ModuleReadError("truncated ELF file (unterminated string)")
        return self.data[off:end].decode("latin-1")

    def section(self, name: str) -> Optional[_Section]:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def section_bytes(self, sec: _Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        return self.data[sec.offset : sec.offset + sec.size]

    def symbols(self) -> List[Tuple[str, int, int, int, int]]:
        """(name, type, shndx, value, size) per symbol."""
        if self._syms is None:
            symtab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
            if symtab is None:
                raise ModuleReadError("no symbol table")
            strsec = self.sections[symtab.link]
            strs = self.section_bytes(strsec)
            out = []
            for st_name, st_info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", self.section_bytes(symtab)[: symtab.size // 24 * 24]):
                end = strs.find(b"\0", st_name)
                out.append((strs[st_name:end].decode("latin-1"), st_info & 0xF, shndx, value, size))
            self._syms = out
        return self._syms

    def relocations(self, rela: _Section) -> List[Tuple[int, int, int]]:
        """(offset, symbol index, addend) per relocation."""
        body = self.section_bytes(rela)[: rela.size // 24 * 24]
        return [(off, info >> 32, add) for off, info, add in struct.iter_unpack("<QQq", body)]

    def modinfo(self) -> List[str]:
        sec = self.section(".modinfo")
        if sec is None:
            return []
        return [r.decode("utf-8", "replace") for r in self.section_bytes(sec).split(b"\0") if r]


# A resolved relocation target: ("sec", section index, address) or ("sym", name, 0).
Target = Tuple[str, object, int]


class _Scanner:
    def __init__(self, elf: Elf) -> None:
        self.elf = elf
        self.syms = elf.symbols()
        self.nsec = len(elf.sections)
        self._strings: Dict[int, bytes] = {}

    def target(self, symidx: int, addend: int) -> Optional[Target]:
        if symidx >= len(self.syms):
            return None
        name, typ, shndx, value, _size = self.syms[symidx]
        if shndx == SHN_UNDEF:
            return ("sym", name, addend)
        if shndx >= SHN_LORESERVE or shndx >= self.nsec:
            return None
        if typ == STT_SECTION:
            return ("sec", shndx, addend)
        return ("sec", shndx, value + addend)

    def string_symbols(self) -> Set[int]:
        """Indices of symbols that can point at a C string (read-only, non-code data)."""
        out = set()
        for i, (_n, _t, shndx, _v, _s) in enumerate(self.syms):
            if 0 < shndx < self.nsec:
                sec = self.elf.sections[shndx]
                if sec.flags & SHF_ALLOC and not sec.flags & SHF_EXECINSTR and sec.type != SHT_NOBITS and (
                    sec.flags & SHF_STRINGS or sec.name.startswith(".rodata")
                ):
                    out.add(i)
        return out

    def string(self, tgt: Optional[Target]) -> Optional[str]:
        if tgt is None or tgt[0] != "sec":
            return None
        sec = self.elf.sections[tgt[1]]  # type: ignore[index]
        if not (sec.flags & SHF_ALLOC) or sec.flags & SHF_EXECINSTR or sec.type == SHT_NOBITS:
            return None
        if not (sec.flags & SHF_STRINGS or sec.name.startswith(".rodata")):
            return None
        body = self._strings.get(tgt[1])  # type: ignore[arg-type]
        if body is None:
            body = self._strings[tgt[1]] = self.elf.section_bytes(sec)  # type: ignore[index]
        addr = tgt[2]
        if not 0 <= addr < len(body):
            return None
        end = body.find(b"\0", addr)
        if end <= addr or end - addr > 128:
            return None
        text = body[addr:end].decode("latin-1")
        return text if NAME_RE.match(text) else None

    def is_function(self, tgt: Optional[Target]) -> bool:
        if tgt is None:
            return False
        if tgt[0] == "sym":
            name = str(tgt[1])
            return name.startswith("proc_") or "sysctl" in name or "handler" in name
        return bool(self.elf.sections[tgt[1]].flags & SHF_EXECINSTR)  # type: ignore[index]

    def is_data(self, tgt: Optional[Target]) -> bool:
        if tgt is None or tgt[0] != "sec":
            return False
        sec = self.elf.sections[tgt[1]]  # type: ignore[index]
        return bool(sec.flags & SHF_ALLOC) and not sec.flags & (SHF_EXECINSTR | SHF_STRINGS)


RawRelocs = Dict[int, Dict[int, Tuple[int, int]]]  # data section -> offset -> (symbol index, addend)


def _entries(
    elf: "Elf", sc: "_Scanner", data_relocs: RawRelocs, candidates: Dict[int, List[int]], layout: TableLayout
) -> Dict[Tuple[int, int], Tuple[str, Optional[Tuple[int, int]]]]:
    """ctl_table entries under `layout`; `candidates` are the offsets whose relocation points at a string."""
    entries: Dict[Tuple[int, int], Tuple[str, Optional[Tuple[int, int]]]] = {}
    for secidx, offsets in candidates.items():
        relocs = data_relocs[secidx]
        body = elf.section_bytes(elf.sections[secidx])
        for off in offsets:
            if off + layout.size > len(body):
                continue
            mode = struct.unpack_from("<H", body, off + OFF_MODE)[0]
            if mode == 0 or mode & ~0o777:
                continue
            handler = relocs.get(off + layout.handler)
            child = relocs.get(off + layout.child) if layout.child is not None else None
            if handler is None and child is None:
                continue
            procname = sc.string(sc.target(*relocs[off]))
            if procname is None:
                continue
            if handler is not None and sc.is_function(sc.target(*handler)):
                entries[(secidx, off)] = (procname, None)
            elif child is not None and mode & 0o111:
                ctgt = sc.target(*child)
                if sc.is_data(ctgt):
                    entries[(secidx, off)] = (procname, (ctgt[1], ctgt[2]))  # type: ignore[index,arg-type]
    return entries


def scan_elf(elf: Elf, name: str, file: str) -> ModuleScan:
    """The sysctl keys `elf` registers, with the directories it passes to the register calls."""
    sc = _Scanner(elf)
    scan = ModuleScan(name=name, file=file)
    data_relocs: RawRelocs = {}
    text_raw: List[Tuple[int, List[Tuple[int, int, int]]]] = []
    for rela in elf.sections:
        if rela.type != SHT_RELA or rela.info >= sc.nsec:
            continue
        tsec = elf.sections[rela.info]
        if not tsec.flags & SHF_ALLOC or not tsec.name.startswith(SCANNED_SECTIONS):
            continue  # skip __mcount_loc, .orc_unwind_ip, __jump_table, …: no ctl_table or register call there
        relocs = elf.relocations(rela)
        if tsec.flags & SHF_EXECINSTR:
            text_raw.append((rela.info, relocs))
        else:
            m = data_relocs.setdefault(rela.info, {})
            for off, sym, add in relocs:
                m[off] = (sym, add)
    stringy = sc.string_symbols()
    candidates = {sec: [off for off, (sym, _a) in m.items() if sym in stringy] for sec, m in data_relocs.items()}

    funcs: Dict[int, List[Tuple[int, int]]] = {}
    for _n, typ, shndx, value, size in sc.syms:
        if typ == STT_FUNC and 0 < shndx < sc.nsec:
            funcs.setdefault(shndx, []).append((value, value + size))
    for lst in funcs.values():
        lst.sort()
    # Only the code around register calls matters: the functions that contain one (or, without
    # function symbols, the 512 bytes before the call).
    register_syms = {i for i, (n, _t, shndx, _v, _s) in enumerate(sc.syms) if shndx == SHN_UNDEF and n in REGISTER_ALL}
    text_refs: List[Tuple[int, int, Target]] = []  # (text section, offset, target)
    for tsec, relocs in text_raw:
        calls = [off for off, sym, _a in relocs if sym in register_syms]
        if not calls:
            continue
        fl = funcs.get(tsec, [])
        ranges = []
        for off in calls:
            i = bisect.bisect_right(fl, (off, float("inf"))) - 1
            ranges.append(fl[i] if i >= 0 and fl[i][0] <= off < fl[i][1] else (max(0, off - 512), off + 1))
        ranges.sort()
        for off, sym, add in relocs:
            i = bisect.bisect_right(ranges, (off, float("inf"))) - 1
            if i >= 0 and ranges[i][0] <= off < ranges[i][1]:
                tgt = sc.target(sym, add)
                if tgt is not None:
                    text_refs.append((tsec, off, tgt))
    text_refs.sort(key=lambda r: (r[0], r[1]))

    # Each layout is tried; the one under which the register calls reach more keys wins
    # (a wrong layout also "finds" entries: any struct with a string and a function pointer).
    best: Optional[Tuple[Tuple[int, int], List[SysctlEntry], List[str], List[str]]] = None
    for layout in LAYOUTS:
        entries = _entries(elf, sc, data_relocs, candidates, layout)
        if not entries:
            continue
        keys, loose, dirs = _resolve(elf, sc, text_refs, funcs, entries, layout.size)
        score = (len(keys), len(entries))
        if best is None or score > best[0]:
            best = (score, keys, loose, dirs)
    if best is not None:
        _score, scan.entries, scan.loose_names, scan.loose_dirs = best
    return scan


def _resolve(
    elf: Elf,
    sc: _Scanner,
    text_refs: List[Tuple[int, int, Target]],
    funcs: Dict[int, List[Tuple[int, int]]],
    entries: Dict[Tuple[int, int], Tuple[str, Optional[Tuple[int, int]]]],
    entry_size: int,
) -> Tuple[List[SysctlEntry], List[str], List[str]]:
    # 2. tables: runs of entries one entry apart, split where code or a parent points inside a run
    starts: Set[Tuple[int, int]] = set()
    for (secidx, off), (_p, child) in entries.items():
        if (secidx, off - entry_size) not in entries:
            starts.add((secidx, off))
        if child is not None and child in entries:
            starts.add(child)
    for _tsec, _off, tgt in text_refs:
        if tgt[0] == "sec" and (tgt[1], tgt[2]) in entries:
            starts.add((tgt[1], tgt[2]))  # type: ignore[arg-type]

    def table(start: Tuple[int, int]) -> List[Tuple[str, Optional[Tuple[int, int]]]]:
        out = []
        sec, off = start
        while (sec, off) in entries:
            out.append(entries[(sec, off)])
            off += entry_size
            if (sec, off) in starts:
                break
        return out

    # 3. register calls: which directory each table goes to, per function
    registrations: List[Tuple[Tuple[int, int], str, bool, bool]] = []
    dirs: Set[str] = set()
    window: Dict[str, object] = {}
    current: Tuple[int, int] = (-1, -1)
    text_cache: Dict[int, bytes] = {}
    for tsec, off, tgt in text_refs:
        fl = funcs.get(tsec, [])
        i = bisect.bisect_right(fl, (off, float("inf"))) - 1
        fn = (tsec, fl[i][0]) if i >= 0 and fl[i][0] <= off < fl[i][1] else (tsec, -1)
        if fn != current:
            current, window = fn, {}
        if tgt[0] == "sym":
            sym = str(tgt[1])
            if sym == "init_net":
                body = text_cache.get(tsec)
                if body is None:
                    body = text_cache[tsec] = elf.section_bytes(elf.sections[tsec])
                if off >= 3 and body[off - 3 : off] in RDI_LOADS:
                    window["init_net_at"] = off
            elif sym in REGISTER_ALL:
                init_only = sym in REGISTER_NET and off - int(window.get("init_net_at", -999)) <= 16  # type: ignore[arg-type]
                tbl = window.get("table")
                if sym in REGISTER_ROOT:
                    d: Optional[str] = ""
                elif sym in REGISTER_PATHS:
                    d = None  # a ctl_path array: no Debian 5.10+ module uses it; its tables stay "loose"
                else:
                    d = window.get("path") or window.get("path_other")  # type: ignore[assignment]
                if d:
                    dirs.add(d)
                if tbl is not None and d is not None:
                    registrations.append((tbl, d, sym in REGISTER_NET, init_only))  # type: ignore[arg-type]
                window = {}
            continue
        key = (tgt[1], tgt[2])
        if key in starts:
            window["table"] = key
            continue
        s = sc.string(tgt)
        if s is not None:
            if PATH_RE.match(s):
                # a known top-level directory beats any other word ("coda" is a top-level dir too)
                window["path" if s.split("/", 1)[0] in TOP_DIRS else "path_other"] = s
            continue

    # 4. expand registered tables into keys
    claimed: Set[Tuple[int, int]] = set()
    seen_keys: Dict[str, SysctlEntry] = {}

    def expand(start: Tuple[int, int], prefix: str, per_netns: bool, init_only: bool, depth: int) -> None:
        if depth > 8:
            return
        claimed.add(start)
        for procname, child in table(start):
            path = f"{prefix}/{procname}" if prefix else procname
            if child is None:
                old = seen_keys.get(path)
                if old is None or (old.init_netns_only and not init_only):
                    seen_keys[path] = SysctlEntry(path, per_netns, init_only)
            elif child in entries:
                expand(child, path, per_netns, init_only, depth + 1)

    for start, d, per_netns, init_only in registrations:
        expand(start, d, per_netns, init_only, 0)
    loose: Set[str] = set()
    child_targets = {c for _p, c in entries.values() if c is not None}
    for start in starts:
        if start not in claimed and start not in child_targets:
            loose.update(p for p, c in table(start) if c is None)
    return sorted(seen_keys.values(), key=lambda e: e.path), sorted(loose), sorted(dirs)


def _modinfo_fields(records: List[str], scan: ModuleScan) -> None:
    for rec in records:
        key, _, value = rec.partition("=")
        if key == "depends":
            scan.depends = [d.replace("-", "_") for d in value.split(",") if d]
        elif key == "softdep":
            words = value.split()
            mode = None
            for w in words:
                if w == "pre:":
                    mode = "pre"
                elif w == "post:":
                    mode = "post"
                elif mode == "pre":
                    scan.softdep_pre.append(w.replace("-", "_"))
        elif key == "alias":
            scan.aliases.append(value)
        elif key == "name" and value:
            scan.name = value.replace("-", "_")


def scan_module_bytes(raw: bytes, file: str, name: str, need_modinfo: bool = False) -> Optional[ModuleScan]:
    """Scan one module file's bytes; None when it has nothing the index needs."""
    try:
        data = decompress(raw, file)
        wanted = names_a_register_function(data)
        if not wanted and not need_modinfo:
            check_elf_bounds(data)  # a truncated or foreign file is reported even when skipped
            return None
        elf = Elf(data)
        scan = ModuleScan(name=name, file=file)
        if need_modinfo:
            _modinfo_fields(elf.modinfo(), scan)
        if wanted:
            found = scan_elf(elf, scan.name, file)
            scan.entries, scan.loose_names, scan.loose_dirs = found.entries, found.loose_names, found.loose_dirs
        return scan
    except ModuleReadError as exc:
        return ModuleScan(name=name, file=file, error=str(exc))
    except (struct.error, IndexError, ValueError, KeyError, MemoryError) as exc:
        return ModuleScan(name=name, file=file, error=f"corrupt ELF file: {type(exc).__name__}: {exc}")


def scan_module_file(host_path: str, file: str, name: str, need_modinfo: bool = False) -> Optional[dict]:
    """Process-pool entry point: read and scan one module; JSON-able result or None."""
    try:
        with open(host_path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        return ModuleScan(name=name, file=file, error=f"cannot read: {exc.strerror}").to_json()
    scan = scan_module_bytes(raw, file, name, need_modinfo)
    return scan.to_json() if scan is not None else None
