"""Replay the boot timeline for each configured key: its value after boot, and why.

For every concrete write the sysctl step performs (`EffectiveSetting`), the key's
provider (from the kernel `ModuleIndex`) decides what can happen:

- built in / value-triggered autoload: the key exists when the sysctl step runs;
- a module's key: it exists only if that module (or one whose dependency closure
  contains it) is loaded *before* the sysctl step. A loader in a race with the step,
  or ordered after it, leaves the kernel default; nothing loading it leaves the key
  absent. A udev rule that re-runs systemd-sysctl on the module's "add" event
  re-applies it whenever it loads (not guaranteed before Linux 5.11, where the event
  could precede the module's init and so its sysctls);
- an interface's key: applied when the interface appears if udev re-runs
  systemd-sysctl for it (99-systemd.rules);
- unknown: nothing provides it; the write fails.

"boot" is the state once boot has settled (every loader started at boot has run),
under the worst ordering a race allows; "after_late_load" is the value once the
module is in (loaded later by whatever needs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from sysctl_doctor.boot.kernel_defaults import UNKNOWN_DEFAULT, default_text as _default_text, kernel_default
from sysctl_doctor.boot.model import AFTER, BEFORE, RACE, BlockedLoad, BootTimeline, KeyFate, ModuleLoad, Verdict
from sysctl_doctor.boot.modprobe_d import InstallCommand, option_default, parse_install, requested_by_alias
from sysctl_doctor.boot.modules_load import module_name
from sysctl_doctor.boot.udev import SysctlRerun
from sysctl_doctor.config.model import path_to_key
from sysctl_doctor.kernel.model import KeyProvider
from sysctl_doctor.kernel_version import KernelVersion

UDEV_MODULE_EVENT_SAFE = (5, 11)  # module "add" uevent after the module's init since Linux 5.11


@dataclass
class _Draft:
    """A `KeyFate` while `_predict_one` decides it (the one mutable step); `fate()` freezes it."""

    key: str
    path: str
    configured: str
    file: str
    line: int
    provider: KeyProvider
    live: Optional[str]
    setting: object
    applied: bool = False
    boot_value: Optional[str] = None
    after_late_load: Optional[str] = None
    verdict: Optional[Verdict] = None
    chain: List[str] = field(default_factory=list)
    module: Optional[str] = None
    early: List[ModuleLoad] = field(default_factory=list)
    racing: List[ModuleLoad] = field(default_factory=list)
    late: List[ModuleLoad] = field(default_factory=list)
    rerun: Optional[SysctlRerun] = None
    blocked: List[BlockedLoad] = field(default_factory=list)
    modprobe: List[str] = field(default_factory=list)  # modprobe.d lines that changed the prediction
    service: Optional[str] = None  # "unit: file:line `text`" of a service that writes the key at start

    def applies(self, verdict: Verdict) -> None:
        """The configured value holds after boot and after a late load."""
        self.applied, self.boot_value, self.after_late_load, self.verdict = True, self.configured, self.configured, verdict

    def fate(self) -> KeyFate:
        assert self.verdict is not None, f"no verdict decided for {self.key}"
        return KeyFate(
            key=self.key, path=self.path, configured=self.configured, file=self.file, line=self.line,
            provider=self.provider, applied=self.applied, boot_value=self.boot_value,
            after_late_load=self.after_late_load, live=self.live, verdict=self.verdict, chain=tuple(self.chain),
            module=self.module, early=tuple(self.early), racing=tuple(self.racing), late=tuple(self.late),
            rerun=self.rerun, blocked=tuple(self.blocked), setting=self.setting,
            modprobe=tuple(dict.fromkeys(self.modprobe)), service=self.service,
        )


def _values_equal(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a is b
    return a.split() == b.split()


class _Loads:
    """Which boot loads bring a module in (directly, through their dependency closure or a modprobe.d
    ``softdep … post:``), and which loads are stopped by modprobe.d or the kernel command line
    (boot.modprobe_d has each loader's rules)."""

    def __init__(self, timeline: BootTimeline, index) -> None:
        self.timeline = timeline
        self.index = index
        self._closure: Dict[str, List[str]] = {}
        self._hard: Dict[str, List[str]] = {}
        self.kernel_blacklist = set()
        value = timeline.cmdline.value("module_blacklist")
        if value:
            self.kernel_blacklist = {module_name(m) for m in value.split(",") if m}

    def install(self, module: str) -> Optional[InstallCommand]:
        """The modprobe.d install line libkmod runs instead of inserting `module` (first match)."""
        found = self.index.install_command(module) if self.index is not None else None
        if not found:
            return None
        parsed = self.timeline.installs.get(found[1])
        return parsed if parsed is not None else parse_install(module, found[0], found[1])

    def stopped(self, module: str) -> Optional[str]:
        """Why every load of `module` fails (kernel module_blacklist=, a modprobe.d install command that does
        not insert it: /bin/true, /bin/false, anything without `modprobe --ignore-install`/insmod)."""
        if module in self.kernel_blacklist:
            return f"the kernel command line has module_blacklist={module} ({self.timeline.cmdline.source})"
        install = self.install(module)
        if install is not None and not install.loads:
            return f"modprobe.d `install {module} {install.command}` ({install.where}) runs instead of loading it"
        return None

    def load_blocked(self, load: ModuleLoad) -> Optional[str]:
        """Why this one load does nothing: a stopped module in its dependency closure; the deny-list for the
        loaders that apply it to the module they ask for (systemd-modules-load: KMOD_PROBE_APPLY_BLACKLIST;
        the kernel's request_module of an nf_tables alias such as nft-expr-ct: modprobe's
        KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY). An explicit `modprobe M` and dependencies ignore it."""
        for module in self.hard_closure(load.module):
            reason = self.stopped(module)
            if reason:
                return reason
        if self.index is None:
            return None
        where = self.index.blacklisted(load.module)
        if where and load.by == "systemd-modules-load.service":
            return f"systemd-modules-load skips deny-listed modules: `blacklist {load.module}` ({where})"
        if where and requested_by_alias(load):
            return (f"the kernel asks modprobe for it by an alias ({requested_by_alias(load)}), and modprobe skips "
                    f"a deny-listed module found through an alias: `blacklist {load.module}` ({where})")
        return None

    def hard_closure(self, module: str) -> List[str]:
        if module not in self._hard:
            deps: List[str] = []
            canonical = module
            if self.index is not None:
                canonical = module_name(self.index.normalize_module(module))  # aliases, "-"/"_"
                deps = [module_name(d) for d in self.index.dependencies(module)]
            self._hard[module] = list(dict.fromkeys([module, canonical] + deps))
        return self._hard[module]

    def closure(self, module: str) -> List[str]:
        """What loading `module` loads: its dependencies, then its `softdep … post:` modules (libkmod loads
        those after it; one that cannot be loaded is skipped)."""
        if module not in self._closure:
            out = list(self.hard_closure(module))
            todo = list(out)
            while todo and self.index is not None and hasattr(self.index, "post_softdeps"):
                current = todo.pop(0)
                for post, _where in self.index.post_softdeps(current):
                    post = module_name(post)
                    if post in out or self.stopped(post):
                        continue
                    for item in self.hard_closure(post):
                        if item not in out:
                            out.append(item)
                            todo.append(item)
            self._closure[module] = out
        return self._closure[module]

    def loading(self, module: str) -> List[ModuleLoad]:
        """Effective loads of `module` (blocked ones are left out; see `blocked_loads`)."""
        return [load for load in self.timeline.loads
                if module in self.closure(load.module) and self.load_blocked(load) is None]

    def blocked_loads(self, module: str) -> List[BlockedLoad]:
        out = []
        for load in self.timeline.loads:
            if module in self.closure(load.module):
                why = self.load_blocked(load)
                if why is not None:
                    out.append(BlockedLoad(load, why))
        return out


def _install_writes(p: _Draft, loads: _Loads, module: str, found: List[ModuleLoad], absent: str) -> bool:
    """A modprobe.d install command that writes the key right after inserting the module (`modprobe
    --ignore-install M && sysctl -w KEY=V`): whenever a boot loader brings the module in, the key gets the
    command's value with no race against the sysctl step. Decides the fate (True) or leaves it (False)."""
    from sysctl_doctor.boot.udev import command_covers

    late = p.racing + p.late
    for name in dict.fromkeys([module] + [load.module for load in found]):
        install = loads.install(name)
        if install is None or not install.loads:
            continue
        value = install.value_after_load(p.path, p.configured, command_covers)
        if value is None:
            continue
        p.modprobe.append(install.evidence)
        if not late:  # never loaded at boot: the value once something loads it
            p.verdict = Verdict.NEVER_LOADED
            p.boot_value, p.after_late_load = None, value
            p.chain = [absent, f"nothing loads {module} at boot",
                       f"when something loads it, modprobe.d runs `{install.command}` ({install.where}): "
                       f"{p.key} = {value}"]
            return True
        load = late[0]
        p.chain = [absent, f"{load.module} loaded by {_load_text(load)}",
                   f"modprobe.d runs `{install.command}` ({install.where}) instead of a plain insert: it writes "
                   f"{p.key} = {value} right after {name} is inserted"]
        if _values_equal(value, p.configured):
            p.applies(Verdict.APPLIED_BY_INSTALL)
        else:
            p.verdict = Verdict.APPLIED_BY_INSTALL
            p.boot_value = p.after_late_load = value
            p.chain.append(f"so {p.key} ends up {value}, not the configured {p.configured}")
        return True
    return False


def _load_text(load: ModuleLoad) -> str:
    return f"{load.by} ({load.evidence})"


def predict_keys(
    settings: Sequence,
    index,
    timeline: BootTimeline,
    live_values: Optional[Dict[str, Optional[str]]] = None,
    kernel_release: Optional[str] = None,
) -> List[KeyFate]:
    """One fate per configured key (its final write by the sysctl step), in apply order."""
    loads = _Loads(timeline, index)
    version = KernelVersion.parse(kernel_release or getattr(index, "kernel", None))
    out: List[KeyFate] = []
    seen: Dict[str, int] = {}
    defaults = _default_settings(settings)
    aliased = []
    for setting in settings:
        if not getattr(setting, "final", True):
            if getattr(setting, "alias_winner", None):
                aliased.append(setting)
            continue
        draft = _predict_one(setting, index, timeline, loads, version, live_values, defaults)
        _service_effects(draft, timeline)
        prediction = draft.fate()
        if prediction.key in seen:  # a later write of the same key replaces the earlier row
            out[seen[prediction.key]] = prediction
            continue
        seen[prediction.key] = len(out)
        out.append(prediction)
    for setting in aliased:  # one kernel variable, two names: the name written earlier shows the winner's value
        winner = next((p for p in out if p.path == setting.alias_winner), None)
        if winner is None:
            continue
        row = _alias_row(setting, winner, timeline)
        if row.key in seen:
            out[seen[row.key]] = row
        else:
            seen[row.key] = len(out)
            out.append(row)
    return out


def _alias_row(setting, winner: KeyFate, timeline: BootTimeline) -> KeyFate:
    from dataclasses import replace

    origin = setting.assignment.origin
    chain = (f"{setting.key} and {winner.key} are one kernel variable under two names",
             f"{timeline.sysctl_step} writes {setting.key} = {setting.value} ({origin.file}:{origin.line}), "
             f"later {winner.key} = {winner.configured} ({winner.file}:{winner.line}): the later write wins",
             *winner.chain)
    return replace(winner, key=setting.key, path=setting.path, configured=setting.value, file=origin.file,
                   line=origin.line, applied=winner.applied and _values_equal(winner.boot_value, setting.value),
                   verdict=Verdict.ALIAS_OVERRIDDEN, chain=chain, setting=setting)


def _provider(index, key: str, value: str):
    from sysctl_doctor.kernel.model import KeyProvider, ProviderKind

    if index is None:
        return KeyProvider(kind=ProviderKind.UNKNOWN, evidence="none")
    return index.provider(key, value)


def _predict_one(setting, index, timeline: BootTimeline, loads: _Loads, version, live_values,
                 defaults: Optional[Dict[str, object]] = None) -> _Draft:
    from sysctl_doctor.kernel.model import ProviderKind

    assignment = setting.assignment
    key = setting.key
    path = setting.path
    provider = _provider(index, key, setting.value)
    kernel = getattr(index, "kernel", None)  # the defaults of this kernel's series (data/kernel_keys)
    live = None
    if live_values is not None:
        live = live_values.get(path)
    p = _Draft(key=key, path=path, configured=setting.value, file=assignment.origin.file,
               line=assignment.origin.line, provider=provider, live=live, setting=setting)
    step = timeline.sysctl_step
    written = f"{step} writes {key} = {setting.value} ({p.file}:{p.line})"
    kind = provider.kind
    if getattr(assignment, "is_glob", False) and setting.key == assignment.key:
        p.applies(Verdict.GLOB)
        p.chain = [f"{step} expands the glob against the keys that exist when it runs", written]
        _glob_chain(p, timeline)
        return p
    if not timeline.sysctl_runs:
        p.verdict = Verdict.NOT_RUN
        p.chain = [f"{step} does not run at boot ({timeline.sysctl_note})", "nothing applies this setting"]
        default = kernel_default(path, kernel)
        p.boot_value = default if kind is not ProviderKind.UNKNOWN else None
        p.after_late_load = p.boot_value
        return p
    if kind is ProviderKind.UNKNOWN:
        p.verdict = Verdict.UNKNOWN_KEY
        hint = f"; did you mean {provider.suggestion}?" if getattr(provider, "suggestion", None) else ""
        p.chain = [f"no built-in code, module or interface of kernel {getattr(index, 'kernel', '?')} provides {key}{hint}",
                   f"{step} cannot write it: key absent"]
        return p
    if kind is ProviderKind.AUTOLOAD and getattr(provider, "value_rejected", None):
        p.verdict = Verdict.VALUE_REJECTED
        p.boot_value = p.after_late_load = kernel_default(path, kernel) or UNKNOWN_DEFAULT
        p.chain = [f"{step} writes {key} = {setting.value} ({p.file}:{p.line})",
                   f"the kernel refuses it: {provider.value_rejected}",
                   "the write fails and the key keeps its previous value"]
        return p
    if kind in (ProviderKind.BUILTIN, ProviderKind.AUTOLOAD):
        p.applies(Verdict.APPLIED)
        if kind is ProviderKind.AUTOLOAD:
            p.chain = [f"writing {setting.value} makes the kernel load {provider.module}", written]
        else:
            p.chain = [f"{key} is built into the kernel: it exists when {step} runs", written]
        return p
    if kind is ProviderKind.INTERFACE:
        _interface_fate(p, provider, timeline, written, defaults)
        return p
    # MODULE
    module = module_name(provider.module or "")
    p.module = module
    option = option_default(index, module, path, timeline.cmdline)
    default = option[0] if option else (kernel_default(path, kernel) or UNKNOWN_DEFAULT)
    default_text = _default_text(path, kernel)
    if option:
        default_text = f"{default}, its starting value from modprobe.d: {option[1]}"
        p.modprobe.append(option[1].rsplit(" (", 1)[-1].rstrip(")"))
    if index is not None and getattr(index, "is_builtin_module", None) and index.is_builtin_module(module):
        p.applies(Verdict.APPLIED)
        p.chain = [f"{module} is built into this kernel: {key} exists when {step} runs", written]
        return p
    found = loads.loading(module)
    p.blocked = loads.blocked_loads(module)
    grouped: Dict[tuple, List[ModuleLoad]] = {}
    for blocked in p.blocked:
        grouped.setdefault((blocked.load.by, blocked.why), []).append(blocked.load)
    blocked_text = [
        f"{by} would load {', '.join(dict.fromkeys(x.module for x in group))} ({group[0].evidence}) but {why}"
        for (by, why), group in grouped.items()
    ]
    p.early = [item for item in found if item.relation == BEFORE]
    p.racing = [item for item in found if item.relation == RACE]
    p.late = [item for item in found if item.relation == AFTER]
    loaded_names = {item.module for item in found} | {module}
    rerun = next((r for r in timeline.reruns if r.subsystem == "module"
                  and any(r.matches_module(m) for m in loaded_names) and r.covers_key(path, module)), None)
    p.rerun = rerun
    if p.early:
        first = p.early[0]
        via = "" if first.module == module else f" (it needs {module})"
        p.applies(Verdict.APPLIED)
        p.chain = [f"{first.module} loaded by {_load_text(first)}{via} before {step} ({first.ordering})", written]
        return p
    absent = f"{step} could not write {key}: key absent ({module} not loaded yet)"
    if blocked_text:
        absent = "; ".join(blocked_text) + " → " + absent
    if _install_writes(p, loads, module, found, absent):
        return p
    if p.racing or p.late:
        loaders = {load.by for load in p.racing + p.late}
        again = next((r for r in timeline.reapply if loaders <= r.after_units and r.covers_key(path)), None)
        if again is not None:
            load = (p.racing or p.late)[0]
            p.applies(Verdict.APPLIED_BY_REAPPLY)
            p.chain = [absent, f"{module} loaded by {_load_text(load)}",
                       f"{again.unit} ({again.evidence}) is ordered after {', '.join(sorted(loaders))} and writes "
                       f"{key} = {setting.value} again"]
            return p
    constant = option[0] if option else kernel_default(path, kernel)
    if (p.racing or p.late) and constant is not None and _values_equal(constant, setting.value):
        load = (p.racing or p.late)[0]
        p.applies(Verdict.DEFAULT_MATCHES)
        p.chain = [absent, f"{module} loaded by {_load_text(load)}",
                   f"its kernel default is already {constant}, the configured value"]
        return p
    if rerun is not None and (p.racing or p.late):
        trigger = (p.racing or p.late)[0]
        safe = version is None or version >= UDEV_MODULE_EVENT_SAFE
        p.chain = [absent, f"{module} loaded by {_load_text(trigger)}",
                   f"udev ({rerun.rule.where}) re-runs systemd-sysctl when {module} appears"]
        if safe:
            p.applies(Verdict.APPLIED_BY_UDEV)
            p.chain.append(f"value {setting.value} applied")
        else:
            p.verdict = Verdict.UDEV_RACE
            p.boot_value, p.after_late_load = default, setting.value
            p.chain.append(f"on kernel {'.'.join(map(str, version))} the module's add event can come before its "
                           f"sysctls exist: not guaranteed, may stay {default_text}")
        return p
    if p.racing:
        racer = p.racing[0]
        p.verdict = Verdict.RACE_LOST
        p.boot_value, p.after_late_load = default, default
        p.chain = [absent,
                   f"{module} loaded by {_load_text(racer)}; {racer.ordering}",
                   f"not guaranteed: if {racer.by} wins the race the value is applied, otherwise it stays {default_text}"]
        return p
    if p.late:
        late = p.late[0]
        p.verdict = Verdict.LOADED_LATE
        p.boot_value, p.after_late_load = default, default
        p.chain = [absent, f"{module} loaded by {_load_text(late)} after {step} ({late.ordering})",
                   f"value stays {default_text}"]
        return p
    p.verdict = Verdict.NEVER_LOADED
    p.boot_value = None
    p.after_late_load = default if rerun is None else setting.value
    tail = (f"udev ({rerun.rule.where}) will apply {setting.value} when it is loaded" if rerun is not None
            else f"once something loads it the value is {default_text}")
    never = loads.stopped(module)
    if never:
        p.after_late_load = None
        tail = f"it cannot be loaded at all: {never}"
    p.chain = [absent, f"nothing loads {module} at boot", tail]
    return p




# --------------------------------------------------------------------------- interface keys


def _default_settings(settings: Sequence) -> Dict[str, object]:
    """The final write of each `<dir>/default/<leaf>` key: what an interface created later starts with."""
    from sysctl_doctor.boot.network import interface_of

    out: Dict[str, object] = {}
    for setting in settings:
        where = interface_of(setting.path)
        if where is not None and where[1] == "default" and getattr(setting, "final", True):
            out[f"{where[0]}/{where[2]}"] = setting
    return out


def _interface_fate(p: _Draft, provider: KeyProvider, timeline: BootTimeline, written: str,
                    defaults: Optional[Dict[str, object]]) -> None:
    """An interface's key: it exists once the interface does. `lo` exists before the sysctl step; others are
    written when udev re-runs systemd-sysctl for the new interface (99-systemd.rules), else they start with the
    value of `<dir>/default/<leaf>` (the kernel copies `default` into a new interface: devinet.c inetdev_init,
    addrconf.c ipv6_add_dev, neighbour.c neigh_parms_alloc)."""
    from sysctl_doctor.boot.network import interface_of

    iface = provider.interface or ""
    p.module = provider.module
    step = timeline.sysctl_step
    configured = timeline.network.find(iface)
    origin = [configured.describe()] if configured is not None else []
    rerun = next((r for r in timeline.reruns if r.subsystem == "net" and r.covers_key(p.path, iface)
                  and r.rule.matches_value("KERNEL", iface) is not False), None)
    if iface == "lo":
        p.applies(Verdict.APPLIED)
        p.chain = ["lo exists in every network namespace from its creation, before the sysctl step", written]
        return
    if rerun is not None:
        p.rerun = rerun
        p.applies(Verdict.APPLIED_ON_HOTPLUG)
        p.chain = origin + [f"{p.key} exists once interface {iface} appears",
                            f"udev ({rerun.rule.where}) re-runs systemd-sysctl for each new interface",
                            f"value {p.configured} is applied when {iface} appears"]
        return
    where = interface_of(p.path)
    inherited = defaults.get(f"{where[0]}/{where[2]}") if defaults and where else None
    p.verdict = Verdict.NO_HOTPLUG
    p.chain = origin + [f"{p.key} exists only once interface {iface} appears",
                        "no udev rule re-runs systemd-sysctl for new interfaces",
                        f"applied only if {iface} already exists when {step} runs"]
    if configured is not None and configured.created and inherited is not None and timeline.sysctl_runs:
        # created by the network configuration after the sysctl step: it starts as a copy of `default`
        value = inherited.value
        origin_line = f"{inherited.assignment.origin.file}:{inherited.assignment.origin.line}"
        p.chain[-1] = (f"{iface} is created after {step}, so it starts with "
                       f"{path_to_key(where[0])}.default.{where[2]} = {value} ({origin_line}), which the kernel "
                       "copies into every new interface")
        p.boot_value = p.after_late_load = value
        if _values_equal(value, p.configured):
            chain = p.chain
            p.applies(Verdict.APPLIED)
            p.chain = chain


def _glob_chain(p: _Draft, timeline: BootTimeline) -> None:
    """What a glob row adds offline: which interfaces got rows, which cannot be known, and what interfaces that
    appear later (container veths, CNI bridges) get."""
    from sysctl_doctor.boot.network import is_interface_glob

    if not is_interface_glob(p.setting.assignment.path, braces=True):
        return
    p.chain.append(timeline.network.note + " (rows for the known ones follow)")
    rerun = next((r for r in timeline.reruns if r.subsystem == "net"), None)
    if rerun is not None:
        p.chain.append(f"interfaces created later (container veths, CNI bridges) get it too: udev "
                       f"({rerun.rule.where}) re-runs systemd-sysctl for each new interface")
    else:
        p.chain.append("interfaces created later (container veths, CNI bridges) do not get it: no udev rule re-runs "
                       "systemd-sysctl for new interfaces (they start with the `default` value)")


# --------------------------------------------------------------------------- services that write keys at start


def _service_effects(p: _Draft, timeline: BootTimeline) -> None:
    """A service started at boot that writes the key itself (dockerd, k3s/rke2, kube-proxy) after the sysctl
    step wins over the configured value; firewalld's CleanupModulesOnExit loses module keys on restart."""
    if p.verdict in (Verdict.GLOB, Verdict.UNKNOWN_KEY, Verdict.VALUE_REJECTED):
        return
    write = next((w for w in reversed(timeline.service_writes) if w.path == p.path and w.relation != BEFORE), None)
    if write is not None:
        when = "after" if write.relation == AFTER else "unordered with (so possibly after)"
        p.chain.append(f"{write.unit} writes {p.key} = {write.value} when it starts, {when} {timeline.sysctl_step}: "
                       f"{write.why} ({write.evidence})")
        if not _values_equal(write.value, p.configured):
            p.verdict = Verdict.OVERRIDDEN_BY_SERVICE
            p.applied = False
            p.boot_value = p.after_late_load = write.value
        p.service = f"{write.unit}: {write.evidence}"
    if p.module:
        needs = {p.module, *(getattr(p.provider, "requires", None) or [])}
        for unload in timeline.unloads:
            if needs & set(unload.modules):
                p.chain.append(f"{unload.unit}: {unload.why} ({unload.evidence})")
