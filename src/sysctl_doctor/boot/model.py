"""The vocabulary of a key's fate at boot, declared once: every verdict with its table label and colour,
the phrase `explain` uses, whether the key is at risk, and the finding code that reports it.

`Verdict` is a str enum: it compares, hashes, formats and serialises (JSON) as its value ("race"), so the
JSON contract and every text stay as they were; renderers ask the member for its words instead of keeping
their own tables.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Optional


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
}
assert set(_WORDS) == set(Verdict), "every verdict is described"
