"""`ModuleIndex`: for one kernel build in a root, which provider makes each sysctl key exist.

Sources, strongest first: the module files' ELF sysctl tables (`elf_scan`), the live /proc/sys (only
for the running kernel on `/`), modules.builtin(.modinfo), then the curated table (data/providers.tsv).
"""

from __future__ import annotations

import fnmatch

import os
import re
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from sysctl_doctor.config.model import key_to_path, path_to_key
from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.kernel import curated, kernel_keys, known_keys
from sysctl_doctor.kernel.model import (
    MODE_ELF, MODE_NONE, IndexData, KeyProvider, ProviderKind, SysctlEntry,
)
from sysctl_doctor.kernel.modules_tree import (
    ModprobeConfig,
    available_kernels,
    modules_dir,
    read_modprobe_config,
    resolve_alias,
)
from sysctl_doctor.live import LiveHost
from sysctl_doctor.root import Root

Progress = Callable[[int, int], None]

# Values the kernel knows without loading anything (registered by code that is never a module), per slash path:
# net/ipv4/tcp_cong.c (tcp_reno is always built in); net/sched/sch_api.c pktsched_init() registers
# pfifo_fast, pfifo, bfifo, pfifo_head_drop, mq and noqueue.
IN_CORE_VALUES: Dict[str, Tuple[str, ...]] = {
    "net/ipv4/tcp_congestion_control": ("reno",),
    "net/core/default_qdisc": ("pfifo_fast", "pfifo", "bfifo", "pfifo_head_drop", "mq", "noqueue"),
}
# A value that can name a congestion control, a qdisc or a logger (module names: letters, digits, _ and -).
_NAME_VALUE = re.compile(r"[A-Za-z0-9_-]+")


def _rejected_value(path: str, value: str, source: str, scope: str) -> KeyProvider:
    """A value no kernel accepts for a name key: systemd-sysctl and sysctl --system write it as it is."""
    why = (f"{value} is not a name the kernel knows: sysctl.d values are written exactly as they are "
           "(quotes included), so no module can provide it")
    return KeyProvider(kind=ProviderKind.AUTOLOAD, per_netns=scope == "netns", init_netns_only=scope == "init",
                       evidence=f"curated:{source}", key=path, note=f"{why}: the write will fail",
                       value_rejected=why)


SUGGEST_MAX_LEN = 256
# Keys under these prefixes exist or not with the machine (dev/parport/<port>, dev/hpet, one
# kernel/sched_domain/cpuN per CPU on 5.10) or are a filesystem mounted there (fs/binfmt_misc): never
# "unknown" for lack of them in the booted guest.
EXACT_CHECK_EXEMPT = ("dev/", "debug/", "kernel/sched_domain/", "fs/binfmt_misc/")


class ModuleIndex:
    """Key -> provider for one kernel build."""

    def __init__(
        self,
        data: IndexData,
        modprobe: Optional[ModprobeConfig] = None,
        proc_keys: Optional[FrozenSet[str]] = None,
        loaded_modules: FrozenSet[str] = frozenset(),
        from_cache: bool = False,
    ) -> None:
        self.data = data
        self.kernel = data.kernel
        self.mode = data.mode
        self.modprobe = modprobe or ModprobeConfig()
        self.proc_keys = proc_keys  # slash paths present in the live /proc/sys, None offline
        self.loaded_modules = frozenset(m.replace("-", "_") for m in loaded_modules)
        self.from_cache = from_cache
        self.diagnostics: List[Diagnostic] = list(data.diagnostics) + list(self.modprobe.diagnostics)
        self.partial = data.partial or data.mode != MODE_ELF
        self._owner: Dict[str, Tuple[str, SysctlEntry]] = {}
        self._module_keys: Dict[str, Set[str]] = {}
        for name, scan in sorted(data.scans.items()):
            for entry in scan.entries:
                self._owner.setdefault(entry.path, (name, entry))
                self._module_keys.setdefault(name, set()).add(entry.path)
        self._alias_exact = {a: m for a, m in data.aliases + self.modprobe.aliases if "*" not in a and "?" not in a and "[" not in a}
        self._dependents: Optional[Dict[str, List[str]]] = None

    # --- modules
    def normalize_module(self, name: str) -> str:
        norm = name.strip().replace("-", "_")
        if norm in self.data.files or norm in self.data.builtin:
            return norm
        alias = self._alias_exact.get(name.strip()) or self._alias_exact.get(norm)
        if alias is None:
            alias = resolve_alias(name.strip(), [a for a in self.data.aliases + self.modprobe.aliases if a[0] not in self._alias_exact])
        return alias.replace("-", "_") if alias else norm

    def has_module(self, module: str) -> bool:
        mod = self.normalize_module(module)
        return mod in self.data.files or mod in self.data.builtin

    def is_builtin_module(self, module: str) -> bool:
        return self.normalize_module(module) in self.data.builtin

    def module_file(self, module: str) -> Optional[str]:
        mod = self.normalize_module(module)
        return self.data.files.get(mod) or self.data.builtin.get(mod)

    def dependencies(self, module: str) -> List[str]:
        """What loading `module` loads first: modules.dep closure plus softdep "pre:" (modules.softdep, modprobe.d)."""
        mod = self.normalize_module(module)
        out: List[str] = []
        seen = {mod}
        todo = [mod]
        while todo:
            cur = todo.pop(0)
            pre = self.data.softdep_pre.get(cur, []) + self.modprobe.softdep_pre.get(cur, [])
            for dep in [self.normalize_module(p) for p in pre] + self.data.deps.get(cur, []):
                if dep not in seen:
                    seen.add(dep)
                    out.append(dep)
                    todo.append(dep)
        return out

    def dependents(self, module: str) -> List[str]:
        """Modules whose loading loads `module` (it is in their modules.dep closure); closest first."""
        if self._dependents is None:
            rev: Dict[str, List[str]] = {}
            for name, deps in self.data.deps.items():
                for dep in deps:
                    rev.setdefault(dep, []).append(name)
            self._dependents = rev
        mod = self.normalize_module(module)
        users = self._dependents.get(mod, [])
        rev = self._dependents
        user_set = set(users)
        # Direct users first (no other user of `mod` in between), busiest first: nf_nat before act_ct.
        def rank(m: str) -> Tuple[int, int, str]:
            direct = not any(d in user_set for d in self.data.deps.get(m, []))
            return (0 if direct else 1, -len(rev.get(m, [])), m)

        return sorted(users, key=rank)

    def blacklisted(self, module: str) -> Optional[str]:
        """modprobe.d "blacklist" line (file:line) for `module`: stops alias autoloads, not explicit loads."""
        return self.modprobe.blacklist.get(self.normalize_module(module))

    def install_command(self, module: str) -> Optional[Tuple[str, str]]:
        """modprobe.d "install" (command, file:line): modprobe runs it instead of loading `module` (the first
        line whose pattern matches, as libkmod takes it)."""
        mod = self.normalize_module(module)
        for pattern, command, where in self.modprobe.install_lines:
            if fnmatch.fnmatchcase(mod, pattern):
                return command, where
        return self.modprobe.install.get(mod)

    def post_softdeps(self, module: str) -> List[Tuple[str, str]]:
        """(module, "file:line") of the modprobe.d ``softdep M post: ...`` modules libkmod loads after `module`
        (the first matching softdep line only)."""
        mod = self.normalize_module(module)
        for pattern, _pre, post, where in self.modprobe.softdep_lines:
            if fnmatch.fnmatchcase(mod, pattern):
                return [(self.normalize_module(p), where) for p in post]
        return []

    def module_options(self, module: str) -> List[Tuple[str, str]]:
        """(options, "file:line") of every modprobe.d ``options`` line for `module`, in order (libkmod joins them;
        a later value of the same parameter wins when the kernel parses them)."""
        mod = self.normalize_module(module)
        return [(text, where) for pattern, text, where in self.modprobe.options_lines
                if fnmatch.fnmatchcase(mod, pattern)]

    # --- keys
    def module_keys(self, module: str) -> FrozenSet[str]:
        return frozenset(self._module_keys.get(self.normalize_module(module), ()))

    def elf_keys(self) -> FrozenSet[str]:
        return frozenset(self._owner)

    def builtin_keys(self) -> FrozenSet[str]:
        """Keys known to be built in: the live /proc/sys keys no module file claims, or curated literal rows."""
        keys: Set[str] = set()
        if self.proc_keys is not None:
            keys.update(k for k in self.proc_keys if k not in self._owner)
        for rule in curated.curated_rules():
            if rule.kind is ProviderKind.BUILTIN and not any(c in rule.pattern for c in "*?[<"):
                keys.add(rule.pattern)
        return frozenset(keys)

    def known_keys(self) -> FrozenSet[str]:
        keys = set(self._owner) | set(self.builtin_keys())
        exact = self.exact_keys()
        if exact is not None:
            keys.update(exact.names())
        for rule in curated.curated_rules():
            if not any(c in rule.pattern for c in "*?[<"):
                keys.add(rule.pattern)
        return frozenset(keys)

    def suggest(self, path: str, among: Optional[Iterable[str]] = None) -> Optional[str]:
        """The nearest known key (dotted), or None. No real key is longer than SUGGEST_MAX_LEN and
        difflib's cost grows with the length: longer paths get no suggestion (issue 16: random
        input spent most of `check` here)."""
        if len(path) > SUGGEST_MAX_LEN:
            return None
        if among is None:  # the whole known pool: sorted once per index, not per key
            pool = self.__dict__.get("_known_sorted")
            if pool is None:
                pool = self.__dict__["_known_sorted"] = sorted(self.known_keys())
        else:
            pool = sorted(among)
        import difflib  # lazy: only a did-you-mean needs it (a start-up cost of every check)

        best = difflib.get_close_matches(path, pool, n=1, cutoff=0.75)
        if not best:
            leaf = path.rsplit("/", 1)[-1]
            by_leaf: Dict[str, str] = {}
            for k in pool:
                by_leaf.setdefault(k.rsplit("/", 1)[-1], k)
            hit = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
            best = [by_leaf[hit[0]]] if hit else []
        return path_to_key(best[0]) if best else None

    def _module_provider(self, kind: ProviderKind, module: str, path: str, evidence: str, per_netns: bool, init_only: bool) -> KeyProvider:
        mod = self.normalize_module(module)
        return KeyProvider(
            kind=kind,
            module=mod,
            module_file=self.module_file(mod),
            requires=self.dependencies(mod),
            loaded_by=self.dependents(mod),
            per_netns=per_netns,
            init_netns_only=init_only,
            evidence=evidence,
            key=path,
        )

    def provider(self, key: str, value: Optional[str] = None) -> KeyProvider:
        path = key_to_path(key)
        rules = curated.matching_rules(path)

        # 1. a value that makes the kernel load a module (tcp_congestion_control=bbr -> tcp_bbr)
        if value is not None:
            for rule, _iface in rules:
                if rule.kind is not ProviderKind.AUTOLOAD or not rule.module:
                    continue
                val = value.strip()
                if not val or val.upper() == "NONE" or val in IN_CORE_VALUES.get(path, ()):
                    break
                if not _NAME_VALUE.fullmatch(val):
                    return _rejected_value(path, val, rule.source, rule.scope)
                mod = self.normalize_module(rule.module.format(value=val))
                if self.is_builtin_module(mod):
                    break  # already in the kernel: nothing to load
                prov = self._module_provider(ProviderKind.AUTOLOAD, mod, path, f"curated:{rule.source}", rule.scope == "netns", rule.scope == "init")
                if self.mode != MODE_NONE and not self.has_module(mod):
                    prov.note = f"no module {mod!r} in kernel {self.kernel}: the write will fail"
                    if not path.startswith("net/netfilter/nf_log/"):
                        prov.value_rejected = f"no module {mod} in kernel {self.kernel}"
                elif path.startswith("net/netfilter/nf_log/"):
                    prov.note = "the kernel does not load the logger on write: it must already be loaded"
                return prov

        # 2. the module files' own sysctl tables
        owner = self._owner.get(path)
        if owner is not None:
            mod, entry = owner
            return self._module_provider(
                ProviderKind.MODULE, mod, path, f"elf:{self.data.files.get(mod, mod)}", entry.per_netns, entry.init_netns_only
            )

        # 3. per-interface keys
        for rule, iface in rules:
            if rule.kind is ProviderKind.INTERFACE and iface:
                prov = KeyProvider(kind=ProviderKind.INTERFACE, interface=iface,
                                   per_netns=True, evidence=f"curated:{rule.source}", key=path)
                if rule.module:
                    prov.module = self.normalize_module(rule.module)
                    prov.module_file = self.module_file(prov.module)
                    prov.requires = self.dependencies(prov.module)
                return prov

        static = [(r, i) for r, i in rules if r.kind in (ProviderKind.BUILTIN, ProviderKind.MODULE)]
        rule = static[0][0] if static else None
        per_netns = rule is not None and rule.scope in ("netns", "init") and path.startswith("net/")
        init_only = rule is not None and rule.scope == "init"

        # 4. the running kernel's /proc/sys
        if self.proc_keys is not None and path in self.proc_keys:
            if rule is not None and rule.kind is ProviderKind.MODULE and rule.module and self.normalize_module(rule.module) in self.loaded_modules:
                return self._module_provider(ProviderKind.MODULE, rule.module, path, f"proc+curated:{rule.source}", per_netns, init_only)
            return KeyProvider(kind=ProviderKind.BUILTIN, per_netns=per_netns, init_netns_only=init_only, evidence="proc", key=path)

        if rule is None or rule.kind is ProviderKind.BUILTIN:
            removed = self._not_in_booted_kernel(path)
            if removed is not None:
                return removed

        if rule is not None and rule.kind is ProviderKind.MODULE and rule.module:
            mod = self.normalize_module(rule.module)
            if self.mode != MODE_ELF:
                typo = self._not_a_known_key(path, mod)
                if typo is not None:
                    return typo
            if self.is_builtin_module(mod):
                return KeyProvider(kind=ProviderKind.BUILTIN, module=mod, module_file=self.data.builtin.get(mod),
                                   per_netns=per_netns, init_netns_only=init_only, evidence="modules.builtin", key=path)
            scan = self.data.scans.get(mod)
            if self.mode == MODE_ELF and mod in self.data.files and (scan is None or scan.error is None):
                # The module file was read and does not register this key.
                leaf, _, parent = path.rpartition("/")[2], None, path.rpartition("/")[0]
                if scan is not None and leaf in scan.loose_names and parent in scan.loose_dirs:
                    return self._module_provider(ProviderKind.MODULE, mod, path, f"elf-loose+curated:{self.data.files[mod]}", per_netns, init_only)
                if self._module_keys.get(mod):
                    return KeyProvider(kind=ProviderKind.UNKNOWN, evidence=f"elf:{self.data.files[mod]}", key=path,
                                       suggestion=self.suggest(path, self._module_keys[mod]),
                                       note=f"{mod} registers no such key")
            prov = self._module_provider(ProviderKind.MODULE, mod, path, f"curated:{rule.source}", per_netns, init_only)
            if self.mode != MODE_NONE and not self.has_module(mod):
                prov.note = f"module {mod!r} is not part of kernel {self.kernel}"
            return prov

        if rule is not None and self.proc_keys is None:
            return KeyProvider(kind=ProviderKind.BUILTIN, per_netns=per_netns, init_netns_only=init_only,
                               evidence=f"curated:{rule.source}", key=path)

        # 5. nobody provides it: a typo, or a module that is not in this kernel
        return KeyProvider(kind=ProviderKind.UNKNOWN, evidence="proc" if self.proc_keys is not None else "none",
                           suggestion=self.suggest(path), key=path)

    def exact_keys(self) -> Optional["kernel_keys.KernelKeys"]:
        """The keys and defaults read from a real boot of this kernel's series (None: not a supported series)."""
        return kernel_keys.for_kernel(self.kernel)

    def aliases(self) -> Dict[str, str]:
        """slash path -> one name of its kernel variable, for the keys of this kernel that have two names
        (data/kernel_keys; {} for a kernel without data)."""
        exact = self.exact_keys()
        return exact.alias_map() if exact is not None else {}

    def _not_in_booted_kernel(self, path: str) -> Optional[KeyProvider]:
        """UNKNOWN when a real boot of this kernel's series (data/kernel_keys) has no such key.

        Offline only (a live /proc/sys answers first), and only under a built-in prefix outside dev/ and
        debug/ (keys there come and go with hardware); a key a scanned module file registers is known."""
        if self.proc_keys is not None or path.startswith(EXACT_CHECK_EXEMPT) or path in self._owner:
            return None
        exact = self.exact_keys()
        if exact is None or path in exact.keys:
            return None
        return KeyProvider(kind=ProviderKind.UNKNOWN, evidence=f"kernel-keys:{exact.series}", key=path,
                           suggestion=self.suggest(path),
                           note=f"a real boot of Debian {exact.kernel} has no such key (every module with "
                                "sysctls loaded)")

    def _not_a_known_key(self, path: str, module: str) -> Optional[KeyProvider]:
        """No module files were scanned: UNKNOWN if `module`'s exact key list (data/known_keys) lacks `path`.

        Only for a key in a directory where the module registers its keys in the nearest kernel series;
        when the root's kernel is not one of the listed series, a key any series knows counts as known.
        """
        found = known_keys.nearest(self.kernel)
        if found is None:
            return None
        near, same_series = found
        lists = [near] if same_series else list(known_keys.all_series())
        keys: Set[str] = set()
        dirs: Set[str] = set()
        for kk in lists:
            keys.update(kk.by_module.get(module, ()))
            dirs.update(kk.module_dirs(module))
        parent = path.rpartition("/")[0]
        if not keys or parent not in dirs or path in keys:
            return None
        if any(path in kk.all_keys() for kk in lists):
            return None  # registered by another module of the family
        family = sorted(k for k in near.all_keys() if k.rpartition("/")[0] == parent) or sorted(keys)
        where = f"Debian {near.kernel}" if same_series else f"Debian kernels {', '.join(k.series for k in lists)}"
        return KeyProvider(kind=ProviderKind.UNKNOWN, evidence=f"known-keys:{near.series}", key=path,
                           suggestion=self.suggest(path, family),
                           note=f"{module} registers no such key in {where}")

    def to_json(self) -> dict:
        modules = {}
        for name in sorted(self._module_keys):
            modules[name] = {
                "file": self.data.files.get(name),
                "keys": sorted(self._module_keys[name]),
                "per_netns": sorted(e.path for e in self.data.scans[name].entries if e.per_netns),
                "init_netns_only": sorted(e.path for e in self.data.scans[name].entries if e.init_netns_only),
                "requires": self.dependencies(name),
                "loaded_by": self.dependents(name),
            }
        return {
            "kernel": self.kernel,
            "mode": self.mode,
            "partial": self.partial,
            "from_cache": self.from_cache,
            "modules_scanned": self.data.scanned,
            "modules": modules,
            "builtin_modules": sorted(self.data.builtin),
            "diagnostics": [{"message": d.message, "file": d.file, "line": d.line} for d in self.diagnostics],
        }


def choose_kernel(root: Root, kernel: Optional[str], live: Optional[LiveHost]) -> str:
    if kernel:
        return kernel
    if root.is_live and live is not None:
        return live.kernel_release()
    kernels = available_kernels(root)
    return kernels[-1] if kernels else "unknown"


def _proc_keys(live: LiveHost) -> FrozenSet[str]:
    base = str(live.proc_sys)
    keys = set()
    for dirpath, _dirs, files in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        for name in files:
            keys.add(name if rel == "." else f"{rel}/{name}")
    return frozenset(keys)


def load_module_index(
    root: Root,
    kernel: Optional[str] = None,
    live: Optional[LiveHost] = None,
    progress: Optional[Progress] = None,
    use_cache: bool = True,
) -> ModuleIndex:
    """The index for `kernel` (default: the running one on a live root, else the newest in the root)."""
    from sysctl_doctor.kernel.build import build_index_data

    kver = choose_kernel(root, kernel, live)
    is_running = root.is_live and live is not None and kver == live.kernel_release()
    moddir = modules_dir(root, kver)
    if moddir is None and kernel and available_kernels(root):
        raise DoctorError(f"--kernel {kver}: no /lib/modules/{kver} in {root.path} (have: {', '.join(available_kernels(root))})")
    data, from_cache = build_index_data(root, kver, moddir, progress=progress, use_cache=use_cache)
    proc_keys = _proc_keys(live) if is_running and live is not None else None
    loaded = live.loaded_modules() if is_running and live is not None else frozenset()
    if data.mode == MODE_NONE:
        if proc_keys is not None:
            data.diagnostics.append(Diagnostic(
                f"no /lib/modules/{kver}: keys present in /proc/sys count as built in, the rest come from the curated table"))
        else:
            data.diagnostics.append(Diagnostic(
                f"no modules tree for kernel {kver} in the root: providers come from the curated table only"))
    return ModuleIndex(data, read_modprobe_config(root), proc_keys, loaded, from_cache)
