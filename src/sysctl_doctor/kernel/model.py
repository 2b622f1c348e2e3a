"""Plain data of the kernel index: who provides a sysctl key, and what a module declares."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.errors import Diagnostic


class ProviderKind(str, enum.Enum):
    BUILTIN = "builtin"
    MODULE = "module"
    INTERFACE = "interface"
    AUTOLOAD = "autoload"
    UNKNOWN = "unknown"


@dataclass
class KeyProvider:
    """Who makes a sysctl key exist (or, for AUTOLOAD, which module its value pulls in)."""

    kind: ProviderKind
    module: Optional[str] = None  # MODULE: registering module; AUTOLOAD: module the value loads
    module_file: Optional[str] = None  # "kernel/net/netfilter/nf_conntrack.ko.xz"
    requires: List[str] = field(default_factory=list)  # loaded before `module` (deps + softdep pre)
    loaded_by: List[str] = field(default_factory=list)  # modules that depend on `module`
    interface: Optional[str] = None  # INTERFACE: the interface named in the key
    per_netns: bool = False
    init_netns_only: bool = False
    evidence: str = ""  # "elf:<file>", "modules.builtin", "curated:<source>", "proc"
    suggestion: Optional[str] = None  # UNKNOWN: nearest known key (dotted)
    key: str = ""  # the slash path asked about (additive field)
    note: Optional[str] = None  # e.g. "the kernel does not load the logger on write" (additive)
    value_rejected: Optional[str] = None  # AUTOLOAD: why the kernel refuses the value (the write fails) (additive)


@dataclass(frozen=True)
class SysctlEntry:
    """One key a module registers, as read from its ELF file."""

    path: str  # slash path under /proc/sys, "net/netfilter/nf_conntrack_max"
    per_netns: bool  # registered with register_net_sysctl*() for each netns
    init_netns_only: bool  # registered with register_net_sysctl*(&init_net, ...)


@dataclass
class ModuleScan:
    """What one module file declares: sysctl tables, dependencies, aliases (from .modinfo)."""

    name: str  # "nf_conntrack"
    file: str  # "kernel/net/netfilter/nf_conntrack.ko"
    entries: List[SysctlEntry] = field(default_factory=list)
    # procnames from tables whose directory could not be tied to one register call,
    # with the directories the module registers: the index matches them against the curated table.
    loose_names: List[str] = field(default_factory=list)
    loose_dirs: List[str] = field(default_factory=list)
    depends: List[str] = field(default_factory=list)  # modinfo depends=
    softdep_pre: List[str] = field(default_factory=list)  # modinfo softdep= pre:
    aliases: List[str] = field(default_factory=list)
    error: Optional[str] = None  # corrupt/truncated/unknown compression: why it could not be read

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "file": self.file,
            "entries": [[e.path, e.per_netns, e.init_netns_only] for e in self.entries],
            "loose_names": self.loose_names,
            "loose_dirs": self.loose_dirs,
            "depends": self.depends,
            "softdep_pre": self.softdep_pre,
            "aliases": self.aliases,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict) -> "ModuleScan":
        return cls(
            name=data["name"],
            file=data["file"],
            entries=[SysctlEntry(p, bool(n), bool(i)) for p, n, i in data["entries"]],
            loose_names=list(data["loose_names"]),
            loose_dirs=list(data["loose_dirs"]),
            depends=list(data["depends"]),
            softdep_pre=list(data["softdep_pre"]),
            aliases=list(data["aliases"]),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class CuratedRule:
    """One row of data/providers.tsv."""

    pattern: str  # slash path, fnmatch glob; "<if>" stands for an interface name
    kind: ProviderKind
    module: Optional[str]
    scope: str  # "netns" | "init" | "global"
    source: str  # kernel file or commit the row was read from


# How the index knows what it knows (IndexData.mode).
MODE_ELF = "elf"  # module files scanned
MODE_METADATA = "metadata"  # modules.* metadata only (no module files): keys from the curated table
MODE_NONE = "none"  # no modules tree at all (CONFIG_MODULES off, or not installed)


@dataclass
class IndexData:
    """The cacheable part of an index: everything read from the modules tree."""

    kernel: str
    mode: str
    files: Dict[str, str] = field(default_factory=dict)  # module -> path relative to the tree
    deps: Dict[str, List[str]] = field(default_factory=dict)
    builtin: Dict[str, str] = field(default_factory=dict)
    softdep_pre: Dict[str, List[str]] = field(default_factory=dict)
    aliases: List[Tuple[str, str]] = field(default_factory=list)  # non-device aliases only
    scans: Dict[str, ModuleScan] = field(default_factory=dict)  # modules with sysctl tables or errors
    scanned: int = 0  # module files looked at
    diagnostics: List[Diagnostic] = field(default_factory=list)
    partial: bool = False

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "mode": self.mode,
            "files": self.files,
            "deps": self.deps,
            "builtin": self.builtin,
            "softdep_pre": self.softdep_pre,
            "aliases": self.aliases,
            "scans": {k: v.to_json() for k, v in self.scans.items()},
            "scanned": self.scanned,
            "diagnostics": [[d.message, d.file, d.line] for d in self.diagnostics],
            "partial": self.partial,
        }

    @classmethod
    def from_json(cls, data: dict) -> "IndexData":
        return cls(
            kernel=data["kernel"],
            mode=data["mode"],
            files=dict(data["files"]),
            deps={k: list(v) for k, v in data["deps"].items()},
            builtin=dict(data["builtin"]),
            softdep_pre={k: list(v) for k, v in data["softdep_pre"].items()},
            aliases=[(a, b) for a, b in data["aliases"]],
            scans={k: ModuleScan.from_json(v) for k, v in data["scans"].items()},
            scanned=int(data["scanned"]),
            diagnostics=[Diagnostic(m, f, ln) for m, f, ln in data["diagnostics"]],
            partial=bool(data["partial"]),
        )
