"""Build a scenario's root and disk image, boot it under qemu, read what it shows.

Steps, each a plain function; the image builder and the qemu harness are `sysctl-doctor verify`'s own
(sysctl_doctor.verify.image / .qemu), so the tier and the command boot the same way:
  prepare_root   copy the cached base root (cp -a) and write the scenario's files and symlinks
  build_image    `mke2fs -t ext4 -d ROOT img SIZE` (no loop mount, no mount at all)
  boot_image     `qemu-system-x86_64 -accel tcg` with the root's own kernel and initrd, a hard timeout;
                 serial 0 (kernel + systemd console) and serial 1 (the probe) go to log files
  parse_probe    the probe's `SDPROBE ...` lines -> ProbeReport

KVM is not used: under this VM it hangs, so the tier uses software emulation (TCG) only.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from sysctl_doctor.verify.image import build_image as build_ext4, copy_tree
from sysctl_doctor.verify.qemu import ACCEL_ENV, BootFiles, boot
from sysctl_doctor.verify.serial import marker_lines

from .base_root import BaseRoot
from .scenarios import Scenario

BOOT_TIMEOUT = float(os.environ.get("SYSCTL_DOCTOR_BOOT_TIMEOUT", "420"))
ACCEL = os.environ.get(ACCEL_ENV, "").strip().lower() or "tcg"   # software emulation unless told otherwise


@dataclass
class UnitTiming:
    state: str
    start_us: Optional[int]        # ExecMainStartTimestampMonotonic (µs since boot), None when it never ran
    exit_us: Optional[int]


@dataclass
class ProbeReport:
    values: Dict[str, str]                 # dotted key -> value, or "absent"
    modules: Dict[str, str]                # module -> "loaded" | "absent"
    units: Dict[str, UnitTiming]
    chain: List[str]                       # systemd-analyze critical-chain systemd-sysctl.service
    journal: List[str]                     # this boot's journal lines about sysctl, modules, nftables, conntrack
    after: Dict[str, List[str]]            # unit -> its After= list as systemd resolved it
    uptime: Optional[float]                # seconds since boot when the probe read the values
    complete: bool                         # the END marker was seen
    active: Dict[str, str] = field(default_factory=dict)   # unit -> `systemctl is-active` (scenario's extra units)

    def started_before(self, first: str, second: str) -> Optional[bool]:
        a, b = self.units.get(first), self.units.get(second)
        if a is None or b is None or a.start_us is None or b.start_us is None:
            return None
        return a.start_us < b.start_us


@dataclass
class BootResult:
    scenario: str
    console_log: Path
    probe_log: Path
    seconds: float                         # wall time of the qemu process
    exit_code: Optional[int]               # None when killed at the timeout
    report: ProbeReport
    command: List[str] = field(default_factory=list)


def _copy_tree(src: Path, dst: Path) -> None:
    copy_tree(src, dst)


def _write(root: Path, rel: str, content: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".sdtmp")
    tmp.write_text(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _symlink(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    os.symlink(target, path)


def prepare_root(base: BaseRoot, scenario: Scenario, dest: Path) -> Path:
    """A fresh copy of the base root with the scenario's configuration and the probe."""
    dest.mkdir(parents=True)
    _copy_tree(base.path, dest)
    for rel, content in scenario.files.items():
        _write(dest, rel, content)
    for rel, target in scenario.symlinks.items():
        _symlink(dest, rel, target)
    for rel, (source, dropped) in scenario.derived.items():
        kept = [line for line in (dest / source).read_text().splitlines(keepends=True) if dropped not in line]
        _write(dest, rel, "".join(kept))
    return dest


def install_probe(root: Path, scenario: Scenario, extra_keys: Iterable[str] = ()) -> None:
    """The probe goes in after the tool has looked at the root, so it never influences a prediction."""
    for rel, content in scenario.probe_files(extra_keys).items():
        _write(root, rel, content, 0o755 if rel.startswith("usr/local/sbin/") else 0o644)
    for rel, target in scenario.probe_symlinks().items():
        _symlink(root, rel, target)


def build_image(root: Path, image: Path) -> None:
    """An ext4 image of `root`, populated by mke2fs itself (ownership and modes kept): verify's own builder."""
    build_ext4(root, image)


# The guest's interface names stay eth0… (the scenarios' keys name none; kept as the tier always booted)
CMDLINE_EXTRA = "net.ifnames=0"


def boot_files_of(base: BaseRoot) -> BootFiles:
    return BootFiles(base.kernel, base.vmlinuz, base.initrd)


def boot_image(base: BaseRoot, image: Path, logdir: Path, scenario: str,
               timeout: float = BOOT_TIMEOUT, cmdline_extra: str = "") -> BootResult:
    """Boot the image until the guest powers off (or the timeout kills qemu) with verify's harness."""
    run = boot(boot_files_of(base), image, logdir, timeout, ACCEL, f"{CMDLINE_EXTRA} {cmdline_extra}".strip())
    text = run.probe_log.read_text(errors="replace") if run.probe_log.exists() else ""
    return BootResult(scenario, run.console_log, run.probe_log, run.seconds, run.exit_code, parse_probe(text),
                      run.command)


def _int_or_none(text: str) -> Optional[int]:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def parse_probe(text: str) -> ProbeReport:
    report = ProbeReport({}, {}, {}, [], [], {}, None, False)
    for kind, rest in marker_lines([raw.rstrip("\r") for raw in text.splitlines()], "SDPROBE"):
        if kind == "value" and "=" in rest:
            key, _, value = rest.partition("=")
            report.values[key] = value.strip()
        elif kind == "module" and "=" in rest:
            name, _, state = rest.partition("=")
            report.modules[name] = state.strip()
        elif kind == "unit":
            name, *pairs = rest.split()
            fields = dict(p.split("=", 1) for p in pairs if "=" in p)
            report.units[name] = UnitTiming(fields.get("state", ""), _int_or_none(fields.get("start", "")),
                                            _int_or_none(fields.get("exit", "")))
        elif kind == "active" and "=" in rest:
            unit, _, state = rest.partition("=")
            report.active[unit] = state.strip()
        elif kind == "chain":
            report.chain.append(rest)
        elif kind == "journal":
            report.journal.append(rest)
        elif kind == "after":
            unit, _, after = rest.partition(" ")
            report.after[unit] = after.split()
        elif kind == "uptime":
            try:
                report.uptime = float(rest)
            except ValueError:
                pass
        elif kind == "END":
            report.complete = True
    return report


def run_scenario(base: BaseRoot, scenario: Scenario, workdir: Path, logdir: Path,
                 before_image=None) -> BootResult:
    """prepare -> before_image(root) -> probe -> image -> boot; removes root and image.

    `before_image` is the tool's turn (fix, check); it returns extra keys for the probe to report.
    """
    root = workdir / scenario.name / "root"
    image = workdir / scenario.name / "disk.img"
    try:
        prepare_root(base, scenario, root)
        extra_keys = before_image(root) if before_image is not None else ()
        install_probe(root, scenario, extra_keys or ())
        build_image(root, image)
        shutil.rmtree(root)
        return boot_image(base, image, logdir / scenario.name, scenario.name,
                          cmdline_extra=scenario.cmdline_extra)
    finally:
        shutil.rmtree(workdir / scenario.name, ignore_errors=True)
