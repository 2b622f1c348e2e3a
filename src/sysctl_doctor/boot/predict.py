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
from sysctl_doctor.boot.modules_load import module_name
from sysctl_doctor.boot.udev import SysctlRerun
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
        )


def _values_equal(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a is b
    return a.split() == b.split()


NO_OP_COMMANDS = ("true", "false")


class _Loads:
    """Which boot loads bring a module in (directly or through their dependency closure), and
    which loads are stopped by modprobe.d or the kernel command line."""

    def __init__(self, timeline: BootTimeline, index) -> None:
        self.timeline = timeline
        self.index = index
        self._closure: Dict[str, List[str]] = {}
        self.kernel_blacklist = set()
        value = timeline.cmdline.value("module_blacklist")
        if value:
            self.kernel_blacklist = {module_name(m) for m in value.split(",") if m}

    def stopped(self, module: str) -> Optional[str]:
        """Why every load of `module` fails (kernel module_blacklist=, modprobe.d install /bin/true)."""
        if module in self.kernel_blacklist:
            return f"the kernel command line has module_blacklist={module} ({self.timeline.cmdline.source})"
        install = self.index.install_command(module) if self.index is not None else None
        if install and install[0].split() and install[0].split()[0].rsplit("/", 1)[-1] in NO_OP_COMMANDS:
            return f"modprobe.d `install {module} {install[0]}` ({install[1]}) runs instead of loading it"
        return None

    def load_blocked(self, load: ModuleLoad) -> Optional[str]:
        """Why this one load does nothing (systemd-modules-load applies modprobe.d blacklists)."""
        for module in self.closure(load.module):
            reason = self.stopped(module)
            if reason:
                return reason
        if load.by == "systemd-modules-load.service" and self.index is not None:
            where = self.index.blacklisted(load.module)
            if where:
                return (f"systemd-modules-load skips deny-listed modules: `blacklist {load.module}` ({where})")
        return None

    def closure(self, module: str) -> List[str]:
        if module not in self._closure:
            deps: List[str] = []
            canonical = module
            if self.index is not None:
                canonical = module_name(self.index.normalize_module(module))  # aliases, "-"/"_"
                deps = [module_name(d) for d in self.index.dependencies(module)]
            self._closure[module] = list(dict.fromkeys([module, canonical] + deps))
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
    aliased = []
    for setting in settings:
        if not getattr(setting, "final", True):
            if getattr(setting, "alias_winner", None):
                aliased.append(setting)
            continue
        prediction = _predict_one(setting, index, timeline, loads, version, live_values).fate()
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


def _predict_one(setting, index, timeline: BootTimeline, loads: _Loads, version, live_values) -> _Draft:
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
        iface = provider.interface or ""
        p.module = provider.module
        rerun = next((r for r in timeline.reruns if r.subsystem == "net" and r.covers_key(path, iface)
                      and r.rule.matches_value("KERNEL", iface) is not False), None)
        if iface == "lo":
            p.applies(Verdict.APPLIED)
            p.chain = ["lo exists in every network namespace from its creation, before the sysctl step", written]
        elif rerun is not None:
            p.rerun = rerun
            p.applies(Verdict.APPLIED_ON_HOTPLUG)
            p.chain = [f"{key} exists once interface {iface} appears",
                       f"udev ({rerun.rule.where}) re-runs systemd-sysctl for each new interface",
                       f"value {setting.value} is applied when {iface} appears"]
        else:
            p.verdict = Verdict.NO_HOTPLUG
            p.chain = [f"{key} exists only once interface {iface} appears",
                       "no udev rule re-runs systemd-sysctl for new interfaces",
                       f"applied only if {iface} already exists when {step} runs"]
        return p
    # MODULE
    module = module_name(provider.module or "")
    p.module = module
    default = kernel_default(path, kernel) or UNKNOWN_DEFAULT
    default_text = _default_text(path, kernel)
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
    constant = kernel_default(path, kernel)
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


