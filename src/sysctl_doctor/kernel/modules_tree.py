"""The text metadata of a modules tree (/lib/modules/<kver>/modules.*) and modprobe.d, read through `Root`.

Formats follow kmod's depmod output and libkmod's readers:
- modules.dep: ``kernel/a.ko: kernel/b.ko kernel/c.ko`` — the full load-order closure of each module;
- modules.builtin: one ``kernel/x/y.ko`` path per built-in module;
- modules.builtin.modinfo: NUL-separated ``module.key=value`` records of built-in modules;
- modules.softdep / modprobe.d ``softdep M pre: a b post: c`` (tokens before ``pre:``/``post:`` are ignored);
- modules.alias / modprobe.d ``alias PATTERN MODULE`` (fnmatch patterns);
- modprobe.d ``blacklist M`` (only alias lookups) and ``install M CMD`` (replaces loading M).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
MODULES_DIRS = ("/lib/modules", "/usr/lib/modules")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d")


def module_name(path: str) -> str:
    """``kernel/net/netfilter/nf_conntrack.ko.xz`` -> ``nf_conntrack`` (kmod: "-" becomes "_")."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _kver_key(kver: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", kver))


def available_kernels(root: Root) -> List[str]:
    """Kernel builds with a modules directory in the root, oldest first."""
    found = set()
    for base in MODULES_DIRS:
        for name in root.listdir(base):
            if root.kind(f"{base}/{name}") is PathKind.DIR:
                found.add(name)
    return sorted(found, key=lambda k: (_kver_key(k), k))


def modules_dir(root: Root, kver: str) -> Optional[str]:
    for base in MODULES_DIRS:
        path = f"{base}/{kver}"
        if root.kind(path) is PathKind.DIR:
            return path
    return None


@dataclass
class ModulesMetadata:
    """What depmod wrote for one kernel build."""

    files: Dict[str, str] = field(default_factory=dict)  # module name -> path relative to the tree
    deps: Dict[str, List[str]] = field(default_factory=dict)  # module -> modules.dep closure (names)
    builtin: Dict[str, str] = field(default_factory=dict)  # built-in module name -> path
    softdep_pre: Dict[str, List[str]] = field(default_factory=dict)
    aliases: List[Tuple[str, str]] = field(default_factory=list)  # (pattern, module)
    has_dep: bool = False
    diagnostics: List[Diagnostic] = field(default_factory=list)


def _read(root: Root, path: str, diags: List[Diagnostic], required: bool) -> Optional[bytes]:
    try:
        return root.read_bytes(path)
    except FileNotFoundError:
        if required:
            diags.append(Diagnostic("missing: the index falls back to each module's .modinfo (depmod not run?)", path))
        return None
    except OSError as exc:
        diags.append(Diagnostic(f"cannot read: {exc.strerror}", path))
        return None


def parse_modules_dep(text: str, path: str, diags: List[Diagnostic]) -> Tuple[Dict[str, str], Dict[str, List[str]]]:
    files: Dict[str, str] = {}
    deps: Dict[str, List[str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        head, sep, tail = line.partition(":")
        if not sep or not head.strip():
            diags.append(Diagnostic(f"not a 'module: deps' line: {line[:60]!r}", path, lineno))
            continue
        name = module_name(head.strip())
        files[name] = head.strip()
        deps[name] = [module_name(p) for p in tail.split()]
    return files, deps


def parse_builtin(text: str) -> Dict[str, str]:
    return {module_name(p.strip()): p.strip() for p in text.splitlines() if p.strip() and not p.startswith("#")}


def parse_builtin_modinfo(data: bytes) -> Dict[str, List[str]]:
    """Built-in module name -> its modinfo records ("file=net/ipv4/tcp_cubic", ...)."""
    out: Dict[str, List[str]] = {}
    for record in data.split(b"\0"):
        text = record.decode("utf-8", "replace")
        mod, dot, rest = text.partition(".")
        if dot and "=" in rest:
            out.setdefault(mod.replace("-", "_"), []).append(rest)
    return out


def parse_softdep_line(words: List[str]) -> Tuple[str, List[str], List[str]]:
    """``softdep M pre: a b post: c`` words (without "softdep") -> (M, pre, post)."""
    mod = words[0].replace("-", "_")
    pre: List[str] = []
    post: List[str] = []
    mode = None
    for word in words[1:]:
        if word == "pre:":
            mode = pre
        elif word == "post:":
            mode = post
        elif mode is not None:
            mode.append(word.replace("-", "_"))
    return mod, pre, post


def parse_alias_lines(text: str) -> List[Tuple[str, str]]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "alias":
            out.append((words[1], words[2].replace("-", "_")))
    return out


def read_modules_metadata(root: Root, moddir: str) -> ModulesMetadata:
    meta = ModulesMetadata()
    diags = meta.diagnostics
    dep = _read(root, f"{moddir}/modules.dep", diags, required=True)
    if dep is not None:
        meta.files, meta.deps = parse_modules_dep(dep.decode("utf-8", "replace"), f"{moddir}/modules.dep", diags)
        meta.has_dep = True
    builtin = _read(root, f"{moddir}/modules.builtin", diags, required=False)
    if builtin is not None:
        meta.builtin = parse_builtin(builtin.decode("utf-8", "replace"))
    modinfo = _read(root, f"{moddir}/modules.builtin.modinfo", diags, required=False)
    if modinfo is not None:
        for mod, records in parse_builtin_modinfo(modinfo).items():
            if mod not in meta.builtin:
                files = [r[5:] for r in records if r.startswith("file=")]
                meta.builtin[mod] = (f"kernel/{files[0]}.ko" if files else mod)
    softdep = _read(root, f"{moddir}/modules.softdep", diags, required=False)
    if softdep is not None:
        for line in softdep.decode("utf-8", "replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "softdep":
                mod, pre, _post = parse_softdep_line(words[1:])
                meta.softdep_pre.setdefault(mod, []).extend(pre)
    alias = _read(root, f"{moddir}/modules.alias", diags, required=False)
    if alias is not None:
        meta.aliases = parse_alias_lines(alias.decode("utf-8", "replace"))
    return meta


@dataclass
class ModprobeConfig:
    """modprobe.d lines that change what loading a module does."""

    softdep_pre: Dict[str, List[str]] = field(default_factory=dict)
    blacklist: Dict[str, str] = field(default_factory=dict)  # module -> "file:line"
    install: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # module -> (command, "file:line")
    aliases: List[Tuple[str, str]] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)
    # In file order, as libkmod keeps them; the names are fnmatch patterns. libkmod takes the FIRST matching
    # install and softdep line (kmod_module_get_install_commands / get_softdeps: "find only the first command,
    # as modprobe from module-init-tools does") and every matching options line (joined in order).
    install_lines: List[Tuple[str, str, str]] = field(default_factory=list)  # (pattern, command, "file:line")
    softdep_lines: List[Tuple[str, List[str], List[str], str]] = field(default_factory=list)  # pattern, pre, post, where
    options_lines: List[Tuple[str, str, str]] = field(default_factory=list)  # (pattern, options, "file:line")


def read_modprobe_config(root: Root) -> ModprobeConfig:
    """modprobe.d/*.conf; a file name in an earlier directory hides the same name in later ones (libkmod)."""
    cfg = ModprobeConfig()
    chosen: Dict[str, str] = {}
    for base in MODPROBE_DIRS:
        if root.empty_at_boot(base):  # an offline root's /run/modprobe.d is a tmpfs at boot: never read
            continue
        for name in root.listdir(base):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{base}/{name}"
    for name in sorted(chosen):
        path = chosen[name]
        if root.kind(path) is PathKind.NULL:
            continue
        try:
            text = root.read_text(path)
        except OSError as exc:
            cfg.diagnostics.append(Diagnostic(f"cannot read: {exc.strerror}", path))
            continue
        parse_modprobe_text(text, path, cfg)
    return cfg


def parse_modprobe_text(text: str, path: str, cfg: ModprobeConfig) -> None:
    """Add one modprobe.d file's commands to `cfg` (unknown commands become diagnostics)."""
    # Backslash-newline continues a line (libkmod getline_wrapped).
    logical: List[Tuple[int, str]] = []
    buf, start = "", 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = lineno
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    for lineno, line in logical:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{lineno}"
        cmd = words[0]
        if cmd == "softdep" and len(words) >= 2:
            mod, pre, post = parse_softdep_line(words[1:])
            if not any(fnmatch.fnmatchcase(mod, line[0]) for line in cfg.softdep_lines):  # the first one counts
                cfg.softdep_pre.setdefault(mod, []).extend(pre)
            cfg.softdep_lines.append((mod, pre, post, where))
        elif cmd == "blacklist" and len(words) >= 2:
            cfg.blacklist.setdefault(words[1].replace("-", "_"), where)
        elif cmd == "install" and len(words) >= 3:
            command = line.split(None, 2)[2].strip()  # the rest of the line as written (the shell reads it)
            cfg.install.setdefault(words[1].replace("-", "_"), (command, where))
            cfg.install_lines.append((words[1].replace("-", "_"), command, where))
        elif cmd == "options" and len(words) >= 3:
            cfg.options_lines.append((words[1].replace("-", "_"), " ".join(words[2:]), where))
        elif cmd == "alias" and len(words) >= 3:
            cfg.aliases.append((words[1], words[2].replace("-", "_")))
        elif cmd in ("options", "remove", "include", "softdep", "blacklist", "install", "alias", "weakdep"):
            continue
        else:
            cfg.diagnostics.append(Diagnostic(f"unknown modprobe.d command {cmd!r}", path, lineno))


def resolve_alias(name: str, aliases: List[Tuple[str, str]]) -> Optional[str]:
    for pattern, mod in aliases:
        if pattern == name or fnmatch.fnmatchcase(name, pattern):
            return mod
    return None
