"""Plan the edits that make module keys survive boot, the two ways sysctl.d(5) recommends.

- ``modules-load``: load the module before the sysctl step. systemd: a line per module in
  /etc/modules-load.d/sysctl-doctor.conf (and, when a drop-in broke it, a drop-in putting
  systemd-sysctl back after systemd-modules-load); sysvinit: /etc/modules; OpenRC:
  /etc/conf.d/modules plus ``rc_after="modules"`` in /etc/conf.d/sysctl.
- ``udev``: re-apply the module's keys whenever it loads, with a rule in
  /etc/udev/rules.d/90-sysctl-doctor.rules:
  ``ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"``.

A plan is computed from a `CheckReport` and the files as they are; it is empty when
nothing needs to change (so a second `fix` changes nothing).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from sysctl_doctor.boot.model import AFTER, RACE, Verdict
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.root import PathKind, Root

METHODS = ("modules-load", "udev")
MODULES_LOAD_FILE = "/etc/modules-load.d/sysctl-doctor.conf"
UDEV_RULES_FILE = "/etc/udev/rules.d/90-sysctl-doctor.rules"
SYSCTL_DROPIN = "/etc/systemd/system/systemd-sysctl.service.d/sysctl-doctor-after-modules.conf"
DROPIN_NAME = SYSCTL_DROPIN.rsplit("/", 1)[1]
HEADER = "# Written by sysctl-doctor fix: {why}\n"
FIXABLE = tuple(v for v in Verdict if v.fixable)


@dataclass
class FileEdit:
    path: str  # inside the root
    old: Optional[str]  # None: the file does not exist yet
    new: str
    reason: str

    def diff(self) -> str:
        old_lines = (self.old or "").splitlines(keepends=True)
        new_lines = self.new.splitlines(keepends=True)
        before = f"a{self.path}" if self.old is not None else "/dev/null"
        return "".join(difflib.unified_diff(old_lines, new_lines, before, f"b{self.path}"))


@dataclass
class NowAction:
    """What --now does on a live host: load a module, then write the configured values."""

    module: Optional[str]
    writes: Dict[str, str] = field(default_factory=dict)  # slash key -> value


@dataclass
class FixPlan:
    method: str
    edits: List[FileEdit] = field(default_factory=list)
    now: List[NowAction] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.edits

    def diff(self) -> str:
        return "".join(edit.diff() for edit in self.edits)


def _read(root: Root, path: str) -> Optional[str]:
    kind = root.kind(path)
    if kind is PathKind.NULL:
        raise DoctorError(f"{path} is masked (a link to /dev/null): remove the mask or choose another method")
    if kind is PathKind.MISSING:
        return None
    if kind is not PathKind.FILE:
        raise DoctorError(f"{path}: not a regular file")
    # bytes that are not UTF-8 (a Latin-1 comment) kept as surrogate escapes, so that the file is written
    # back byte for byte and the diff shows them as \xNN; decoding with "replace" changed them to U+FFFD
    # and made every apply fail with "changed since the plan was made"
    return root.read_bytes(path).decode("utf-8", "surrogateescape")


def _append_lines(old: Optional[str], lines: List[str], why: str) -> str:
    text = old if old is not None else HEADER.format(why=why)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(line + "\n" for line in lines)


def _sysctl_binary(root: Root) -> str:
    for path in ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl"):
        if root.kind(path) is PathKind.FILE:
            return path
    return "/usr/lib/systemd/systemd-sysctl"


def _needed(report, notes: List[str]) -> Dict[str, List]:
    """module -> fates of its keys that are not guaranteed after boot (blocked modules go to notes)."""
    out: Dict[str, List] = {}
    for p in report.fates:
        if p.verdict not in FIXABLE or not p.module:
            continue
        if p.blocked:
            why = p.blocked[0].why
            note = f"{p.module} cannot be loaded ({why}): remove that first; fix leaves {p.key} alone"
            if note not in notes:
                notes.append(note)
            continue
        out.setdefault(p.module, []).append(p)
    return out


def _insserv_override(root: Root) -> Optional[FileEdit]:
    """An insserv override header for procps that adds kmod to Should-Start (None if already there)."""
    from sysctl_doctor.boot.initscripts import INSSERV_OVERRIDES, lsb_header

    path = f"{INSSERV_OVERRIDES}/procps"
    old = _read(root, path)
    source = old if old is not None else (_read(root, "/etc/init.d/procps") or "")
    header = lsb_header(source)
    if header is None:
        return None
    lines = header.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# Should-Start:"):
            if "kmod" in line.split():
                return None
            lines[i] = line.rstrip() + " kmod"
            break
    else:
        lines.insert(len(lines) - 1, "# Should-Start:      kmod")
    new = "\n".join(lines) + "\n"
    return FileEdit(path, old, new, "insserv orders procps (sysctl --system) after kmod (/etc/modules)")


def _dropin_names(root: Root, unit: str) -> List[str]:
    """File names of `unit`'s drop-ins, as systemd applies them (sorted by name across directories)."""
    from sysctl_doctor.boot.units import SystemdUnits

    return [path.rsplit("/", 1)[1] for path in SystemdUnits(root).unit(unit).dropins]


def sysctl_dropin(root: Root, unit: str) -> str:
    """Where fix's `After=systemd-modules-load.service` drop-in must go so that no other drop-in sorts after it.

    Drop-ins apply in file-name order across all directories, and a later `After=` (empty) resets every
    earlier After=: a drop-in that sorts before such a reset is void. The name is the usual one unless another
    drop-in sorts after it; then it gets "z" prefixes until it sorts last."""
    directory = SYSCTL_DROPIN.rsplit("/", 1)[0]
    names = _dropin_names(root, unit)
    for prefix in [""] + ["z" * n + "-" for n in range(1, 65)] + ["~" * n + "-" for n in range(1, 65)]:
        name = prefix + DROPIN_NAME
        if all(other <= name for other in names):
            return f"{directory}/{name}"
    raise DoctorError(f"cannot name a drop-in of {unit} that sorts after all of its drop-ins ({names[-1]})")


def _sysctl_step_not_run(timeline, notes: List[str]) -> None:
    if not timeline.sysctl_runs:
        notes.append(f"{timeline.sysctl_step} does not run at boot ({timeline.sysctl_note}): no sysctl.d setting "
                     "applies, whatever fix writes; make it run first (see SD110)")


def plan_fix(root: Root, report, method: str = "modules-load") -> FixPlan:
    if method not in METHODS:
        raise DoctorError(f"unknown method {method!r} (one of: {', '.join(METHODS)})")
    analysis = report.analysis
    timeline = analysis.timeline
    plan = FixPlan(method=method)
    _sysctl_step_not_run(timeline, plan.notes)
    needed = _needed(report, plan.notes)
    for module, predictions in needed.items():
        plan.now.append(NowAction(module, {p.path: p.configured for p in predictions}))
    for p in report.fates:
        if p.verdict == Verdict.UNKNOWN_KEY:
            plan.notes.append(f"{p.key} ({p.file}:{p.line}): unknown key, not something fix can repair")
    system = analysis.init_system
    if method == "udev":
        from sysctl_doctor.boot.predict import UDEV_MODULE_EVENT_SAFE
        from sysctl_doctor.kernel_version import KernelVersion

        version = KernelVersion.parse(getattr(analysis, "kernel", None))
        if version is not None and version < UDEV_MODULE_EVENT_SAFE and needed:
            plan.notes.append(f"kernel {analysis.kernel} sends the module's add event before its sysctls exist "
                              "(before 5.11): a udev rule is not guaranteed there, prefer --method modules-load")
        if system != "systemd" and root.kind(_sysctl_binary(root)) is not PathKind.FILE:
            raise DoctorError("--method udev needs systemd-sysctl in the root; use --method modules-load")
        if needed:
            old = _read(root, UDEV_RULES_FILE)
            existing = old or ""
            binary = _sysctl_binary(root)
            lines = []
            for module, predictions in needed.items():
                if f'KERNEL=="{module}"' in existing:
                    continue
                prefixes = sorted({"/" + p.path.rsplit("/", 1)[0] for p in predictions})
                args = " ".join(f"--prefix={prefix}" for prefix in prefixes)
                lines.append(f'ACTION=="add", SUBSYSTEM=="module", KERNEL=="{module}", RUN+="{binary} {args}"')
            if lines:
                plan.edits.append(FileEdit(UDEV_RULES_FILE, old, _append_lines(
                    old, lines, "re-apply module keys when the module loads (sysctl.d(5))"),
                    "udev re-runs systemd-sysctl for the module's keys when it loads"))
            if any(p.verdict == Verdict.NEVER_LOADED for ps in needed.values() for p in ps):
                plan.notes.append("a udev rule applies the keys when the module loads, but nothing loads it at boot; "
                                  "use --method modules-load to load it")
        return plan
    # modules-load
    modules = list(needed)
    if system == "systemd":
        if timeline.modules_step_relation == "masked":
            raise DoctorError(f"{timeline.modules_step} is masked ({timeline.modules_step_note}): unmask it, "
                              "or use --method udev")
        if timeline.modules_step_relation == "disabled":
            plan.notes.append(f"{timeline.modules_step} is not started at boot ({timeline.modules_step_note}): "
                              "run `systemctl add-wants sysinit.target systemd-modules-load.service`, or use --method udev")
        if modules:
            old = _read(root, MODULES_LOAD_FILE)
            present = {line.strip().replace("-", "_") for line in (old or "").splitlines()}
            lines = [m for m in modules if m not in present]
            if lines:
                plan.edits.append(FileEdit(MODULES_LOAD_FILE, old, _append_lines(
                    old, lines, "load these modules before systemd-sysctl applies their keys"),
                    "systemd-modules-load loads them before systemd-sysctl"))
        if timeline.modules_step_relation in (RACE, AFTER) and (modules or timeline.modules_load.modules()):
            dropin = sysctl_dropin(root, timeline.sysctl_step)
            old = _read(root, dropin)
            wanted = "[Unit]\nAfter=systemd-modules-load.service\n"
            if old is None or "After=systemd-modules-load.service" not in old:
                plan.edits.append(FileEdit(dropin, old, HEADER.format(
                    why="systemd-sysctl must run after systemd-modules-load") + wanted,
                    "orders systemd-sysctl after systemd-modules-load again"))
    elif system == "sysvinit":
        if modules:
            old = _read(root, "/etc/modules")
            present = {line.split("#")[0].strip().replace("-", "_") for line in (old or "").splitlines()}
            lines = [m for m in modules if m not in present]
            if lines:
                plan.edits.append(FileEdit("/etc/modules", old, _append_lines(
                    old, lines, "modules to load at boot"), "the kmod script loads /etc/modules at boot"))
        if timeline.modules_step_relation != "before" and (modules or timeline.modules_load.modules()):
            edit = _insserv_override(root)
            if edit is not None:
                plan.edits.append(edit)
                plan.notes.append("then run `insserv` (or `update-rc.d procps defaults`) so the boot order is "
                                  "regenerated from the new header")
            else:
                plan.notes.append(f"{timeline.modules_step} is not ordered before {timeline.sysctl_step} "
                                  f"({timeline.modules_step_note}); add kmod to Should-Start of /etc/init.d/procps")
    else:  # openrc
        if modules:
            old = _read(root, "/etc/conf.d/modules")
            lines = [f'modules="${{modules}} {m}"' for m in modules if m not in (old or "")]
            if lines:
                plan.edits.append(FileEdit("/etc/conf.d/modules", old, _append_lines(
                    old, lines, "modules to load at boot"), "OpenRC's modules service loads them"))
        if timeline.modules_step_relation != "before":
            old = _read(root, "/etc/conf.d/sysctl")
            if old is None or 'rc_after="modules"' not in old:
                plan.edits.append(FileEdit("/etc/conf.d/sysctl", old, _append_lines(
                    old, ['rc_after="modules"'], "apply sysctls after modules are loaded"),
                    "orders OpenRC's sysctl service after modules"))
    return plan
