"""What happens at boot, in order, read from the root itself; and each key's fate in it.

- `timeline.build_timeline(root)` -> `BootTimeline`: module loads (initramfs, modules-load.d,
  the kernel command line, services that load modules on demand, each with its evidence) placed
  before, after or in a race with the sysctl step, per init system (systemd, sysvinit, OpenRC),
  plus udev rules that re-run systemd-sysctl;
- `predict.predict_keys(settings, index, timeline)` -> one frozen `KeyFate` per configured key
  (types in `model`): the value after boot, after a late module load, and the chain of reasons.
"""

from __future__ import annotations

from sysctl_doctor.boot.model import AFTER, BEFORE, RACE, BootTimeline, KeyFate, ModuleLoad, Verdict
from sysctl_doctor.boot.predict import predict_keys
from sysctl_doctor.boot.timeline import build_timeline, detect_init_system

__all__ = [
    "AFTER", "BEFORE", "RACE", "BootTimeline", "KeyFate", "ModuleLoad",
    "Verdict", "build_timeline", "detect_init_system", "predict_keys",
]
