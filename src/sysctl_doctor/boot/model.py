"""The boot model's types, declared once: the `BootTimeline` (each `ModuleLoad` placed before, after or in a
race with the sysctl step), each configured key's `KeyFate`, and the vocabulary of fates: every `Verdict` with
its table label and colour, the phrase `explain` uses, whether the key is at risk, and the finding code that
reports it.

`Verdict` is a str enum: it compares, hashes, formats and serialises (JSON) as its value ("race"), so the
JSON contract and every text stay as they were; renderers ask the member for its words instead of keeping
their own tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from sysctl_doctor.boot.cmdline import KernelCmdline
from sysctl_doctor.boot.initramfs import InitramfsModules
from sysctl_doctor.boot.loaders import OnDemandLoader
from sysctl_doctor.boot.modprobe_d import InstallCommand
from sysctl_doctor.boot.modules_load import ModulesLoadConfig
from sysctl_doctor.boot.network import NetworkInterfaces
from sysctl_doctor.boot.service_writes import ModuleUnload, ServiceWrite
from sysctl_doctor.boot.udev import SysctlRerun, command_covers
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.kernel.model import KeyProvider


class _Words(NamedTuple):
    label: str  # the `check` table's verdict column
    style: str  # its colour
    phrase: str  # `explain`'s boot section
    at_risk: bool  # the configured value may not hold after boot (the initramfs image is read for these)
    code: Optional[str]  # the finding code that names this fate in NAT advice ("see SD101")
    fixable: bool  # `fix` can make it apply (load the module early, or re-apply on load)


class Verdict(str, Enum):
    APPLIED = "applied"
    APPLIED_BY_UDEV = "applied-by-udev"
    APPLIED_ON_HOTPLUG = "applied-on-hotplug"
    RACE_LOST = "race"  # not guaranteed: a loader races the sysctl step
    LOADED_LATE = "loaded-late"
    NEVER_LOADED = "never-loaded"
    UDEV_RACE = "udev-race"  # only a udev rule, on a kernel before 5.11
    UNKNOWN_KEY = "unknown-key"
    NO_HOTPLUG = "interface-not-reapplied"
    NOT_RUN = "sysctl-step-not-run"
    GLOB = "glob"
    APPLIED_BY_REAPPLY = "applied-by-later-unit"  # a unit ordered after the loaders runs the sysctl step again
    DEFAULT_MATCHES = "default-matches"  # not written in time, but the kernel default is the configured value
    VALUE_REJECTED = "value-rejected"  # the kernel refuses the value (no such congestion control, qdisc, logger)
    APPLIED_BY_INSTALL = "applied-by-modprobe-install"  # a modprobe.d install command writes it after insertion
    OVERRIDDEN_BY_SERVICE = "overridden-by-service"  # a service writes another value when it starts
    ALIAS_OVERRIDDEN = "alias-overridden"  # a later write through another name of the same kernel variable wins

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def words(self) -> _Words:
        return _WORDS[self]

    @property
    def label(self) -> str:
        return self.words.label

    @property
    def style(self) -> str:
        return self.words.style

    @property
    def phrase(self) -> str:
        return self.words.phrase

    @property
    def at_risk(self) -> bool:
        return self.words.at_risk

    @property
    def code(self) -> Optional[str]:
        return self.words.code

    @property
    def fixable(self) -> bool:
        return self.words.fixable


_WORDS = {
    Verdict.APPLIED: _Words("applied", "green", "applied", False, None, False),
    Verdict.APPLIED_BY_UDEV: _Words("applied (udev rule)", "green", "applied by a udev rule", False, None, False),
    Verdict.APPLIED_ON_HOTPLUG: _Words("applied when the interface appears", "green",
                                       "applied when the interface appears", False, None, False),
    Verdict.RACE_LOST: _Words("NOT GUARANTEED (race)", "red", "not guaranteed: a module load races the sysctl step",
                              True, "SD101", True),
    Verdict.LOADED_LATE: _Words("NOT APPLIED (module loaded late)", "red",
                                "not applied: its module is loaded after the sysctl step", True, "SD101", True),
    Verdict.NEVER_LOADED: _Words("not applied (module never loaded)", "yellow",
                                 "not applied: its module is not loaded at boot", True, "SD102", True),
    Verdict.UDEV_RACE: _Words("NOT GUARANTEED (udev rule, kernel < 5.11)", "red",
                              "not guaranteed: only a udev rule, on a kernel before 5.11", True, "SD103", True),
    Verdict.UNKNOWN_KEY: _Words("UNKNOWN KEY", "red", "not applied: the kernel has no such key", False, None, False),
    Verdict.NO_HOTPLUG: _Words("only if the interface exists at boot", "yellow",
                               "not applied: nothing reapplies it when the interface appears", False, None, False),
    Verdict.NOT_RUN: _Words("NOT APPLIED (sysctl step does not run)", "red",
                            "not applied: no sysctl step runs at boot", False, None, False),
    Verdict.GLOB: _Words("glob (expanded at boot)", "cyan", "applied to every match of the pattern", False, None,
                         False),
    Verdict.APPLIED_BY_REAPPLY: _Words("applied (re-run by a later unit)", "green",
                                       "applied by a later unit that runs the sysctl step again", False, None, False),
    Verdict.DEFAULT_MATCHES: _Words("kernel default = configured", "green", "kernel default already is the value",
                                    False, None, False),
    Verdict.VALUE_REJECTED: _Words("NOT APPLIED (value rejected)", "red",
                                   "not applied: the kernel refuses the value, the write fails", False, None, False),
    Verdict.APPLIED_BY_INSTALL: _Words("written by modprobe.d install", "green",
                                       "written by a modprobe.d install command right after the module is inserted",
                                       False, None, False),
    Verdict.OVERRIDDEN_BY_SERVICE: _Words("OVERRIDDEN by a service at start", "red",
                                          "overridden: a service writes another value when it starts", False, None,
                                          False),
    Verdict.ALIAS_OVERRIDDEN: _Words("overridden through its alias", "yellow",
                                     "overridden: a later line writes the same kernel variable under another name",
                                     False, None, False),
}
assert set(_WORDS) == set(Verdict), "every verdict is described"


BEFORE = "before"  # guaranteed to happen before the sysctl step
RACE = "race"  # started at boot with no ordering against the sysctl step
AFTER = "after"  # ordered after the sysctl step


@dataclass(frozen=True)
class ModuleLoad:
    """A module the boot loads, by whom, and where that happens relative to the sysctl step."""

    module: str  # canonical name as requested (its dependencies load with it)
    by: str  # "initramfs", "systemd-modules-load.service", "nftables.service"
    relation: str  # BEFORE | RACE | AFTER
    evidence: str  # "/etc/nftables.conf:9 `ct state established,related accept`"
    why: str  # what makes the load happen
    ordering: str  # the ordering (or its absence) that places it


@dataclass(frozen=True)
class ReapplyStep:
    """A unit started at boot that runs systemd-sysctl or `sysctl --system`/`-p` again."""

    unit: str
    evidence: str  # "file:line ExecStart=..."
    prefixes: Tuple[str, ...]
    only_keys: Optional[FrozenSet[str]]
    after_units: FrozenSet[str]  # loader units it is ordered after

    def covers_key(self, slash_key: str) -> bool:
        return command_covers(self.prefixes, self.only_keys, slash_key)


@dataclass
class BootTimeline:
    init_system: str
    sysctl_step: str  # "systemd-sysctl.service", "procps", "sysctl"
    sysctl_runs: bool
    sysctl_note: str  # why it does not run, or how it is started
    modules_step: str
    modules_step_relation: str  # BEFORE | RACE | AFTER | "masked" | "disabled"
    modules_step_note: str
    loads: List[ModuleLoad] = field(default_factory=list)
    reruns: List[SysctlRerun] = field(default_factory=list)
    modules_load: ModulesLoadConfig = field(default_factory=ModulesLoadConfig)
    initramfs: InitramfsModules = field(default_factory=InitramfsModules)
    cmdline: KernelCmdline = field(default_factory=lambda: KernelCmdline("", ""))
    loaders: List[OnDemandLoader] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)
    # (module, where it is listed, image) for modules listed for the initramfs that its image does not load
    stale_initramfs: List[tuple] = field(default_factory=list)
    reapply: List[ReapplyStep] = field(default_factory=list)
    network: NetworkInterfaces = field(default_factory=NetworkInterfaces)  # interfaces the configuration names
    installs: Dict[str, InstallCommand] = field(default_factory=dict)  # modprobe.d install lines by "file:line"
    service_writes: List[ServiceWrite] = field(default_factory=list)  # keys services write when they start
    unloads: List[ModuleUnload] = field(default_factory=list)  # services that unload modules on stop/restart

    def events(self) -> List[str]:
        """The timeline as ordered one-line events (for display), one per loader and relation."""
        groups: Dict[tuple, List[ModuleLoad]] = {}
        for load in self.loads:
            groups.setdefault((load.relation, load.by), []).append(load)

        def line(relation: str) -> List[str]:
            out = []
            for (rel, by), loads in groups.items():
                if rel != relation:
                    continue
                modules = ", ".join(dict.fromkeys(item.module for item in loads))
                evidence = "; ".join(dict.fromkeys(item.evidence for item in loads))
                how = {BEFORE: "before", RACE: "in a RACE with", AFTER: "after"}[relation]
                out.append(f"{by}: loads {modules} {how} {self.sysctl_step} ({evidence})")
            return out

        out = line(BEFORE)
        if not any(load.by == self.modules_step for load in self.loads):
            files = ", ".join(self.modules_load.files) or "no modules-load.d files"
            place = {BEFORE: "before", RACE: "unordered with", AFTER: "after"}.get(self.modules_step_relation)
            where = f"{place} {self.sysctl_step}" if place else self.modules_step_relation
            out.append(f"{self.modules_step} ({where}): loads nothing ({files})")
        state = "runs" if self.sysctl_runs else "DOES NOT RUN"
        out.append(f"{self.sysctl_step}: {state}: applies sysctl.d ({self.sysctl_note})")
        out += line(RACE) + line(AFTER)
        for step in self.reapply:
            after = f" after {', '.join(sorted(step.after_units))}" if step.after_units else ""
            out.append(f"{step.unit}: runs the sysctl step again{after} ({step.evidence})")
        for rerun in self.reruns:
            what = rerun.rule.matches("KERNEL")
            if rerun.subsystem == "net":
                target = "each new interface"
            else:
                target = f"module {what[0].value}" if what else "any module"
            out.append(f"udev ({rerun.rule.where}): re-runs systemd-sysctl for {target}")
        return out


@dataclass(frozen=True)
class BlockedLoad:
    """A boot load that would bring a key's module in, and why it does nothing."""

    load: ModuleLoad
    why: str


@dataclass(frozen=True)
class KeyFate:
    """What happens at boot to one configured key: its value after boot and after a late module load, the
    verdict, and the chain of reasons with their evidence. Built once by `boot.predict.predict_keys`."""

    key: str  # concrete dotted key
    path: str  # slash form
    configured: str
    file: str
    line: int
    provider: KeyProvider
    applied: bool
    boot_value: Optional[str]
    after_late_load: Optional[str]
    live: Optional[str]
    verdict: Verdict
    chain: Tuple[str, ...] = ()
    module: Optional[str] = None
    early: Tuple[ModuleLoad, ...] = ()
    racing: Tuple[ModuleLoad, ...] = ()
    late: Tuple[ModuleLoad, ...] = ()
    rerun: Optional[SysctlRerun] = None
    blocked: Tuple[BlockedLoad, ...] = ()
    setting: object = None  # the config.model.EffectiveSetting that wrote it
    modprobe: Tuple[str, ...] = ()  # modprobe.d lines (file:line `text`) that changed this prediction
    service: Optional[str] = None  # a service that writes the key when it starts ("unit: file:line `text`")
