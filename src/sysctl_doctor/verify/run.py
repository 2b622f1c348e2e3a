"""The verify job: predict (check, on the root as it is), build one image, boot it N times, compare.

Nothing is written in the root: the image is made from a copy in a work directory (removed at the end;
`log_dir` keeps each boot's console and reporter logs).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.root import PathKind, Root
from sysctl_doctor.verify.compare import (GlobLine, KeyOutcome, Predicted, RaceTally, compare, fates_of, globs_from,
                                          key_fates, named_keys, predictions_from, tally_races)
from sysctl_doctor.verify.image import Injection, boot_files, has_kernel, image_of
from sysctl_doctor.verify.qemu import BootFiles, BootRun, SigtermRaises, boot, choose_accel
from sysctl_doctor.verify.reporter import (DEPEND_START, Observation, depend_start_with_reporter, parse_report,
                                           reporter_injection)
from sysctl_doctor.verify.tools import MKE2FS, QEMU, require

DEFAULT_TIMEOUT = 600.0
MAX_BOOTS = 50
# kernel command line words of the root that belong to the boot loader's own set-up, not to the prediction
_LOADER_WORDS = ("root=", "ro", "rw", "console=", "BOOT_IMAGE=", "initrd=", "resume=", "quiet", "splash",
                 "init=", "rootflags=", "rootfstype=")


@dataclass
class BootOutcome:
    number: int
    run: BootRun
    observation: Observation
    outcomes: List[KeyOutcome]
    failure: Optional[str] = None  # why this boot proves nothing (timeout, no report, qemu error)
    console_tail: List[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    root: str
    kernel: str
    init_system: str
    accel: str
    accel_why: str
    cmdline: str
    late_load: List[str]
    predicted: List[Predicted]
    boots: List[BootOutcome]
    image_seconds: float
    diagnostics: List[str] = field(default_factory=list)

    @property
    def boot_failed(self) -> bool:
        return any(b.failure for b in self.boots)

    @property
    def differing(self) -> List[KeyOutcome]:
        return [o for b in self.boots for o in b.outcomes if not o.agree]

    @property
    def races(self) -> List[RaceTally]:
        return tally_races(self.predicted, [b.outcomes for b in self.boots])

    @property
    def status(self) -> str:
        if self.boot_failed:
            return "boot-failed"
        return "differ" if self.differing else "agree"


def guest_cmdline(root_cmdline: str) -> str:
    """The words of the root's own kernel command line the guest boots with (not the boot loader's)."""
    words = [w for w in root_cmdline.split() if not any(w == p or (p.endswith("=") and w.startswith(p))
                                                         for p in _LOADER_WORDS)]
    return " ".join(words)


def _boot_failure(run: BootRun, seen: Observation, timeout: float) -> Optional[str]:
    if run.timed_out:
        what = "the reporter finished but the guest did not power off" if seen.complete else (
            "the reporter started but did not finish" if seen.begun else "the reporter never ran")
        return f"no power-off within {timeout:.0f} s ({what})"
    if not seen.complete:
        return (f"qemu exited {run.exit_code} after {run.seconds:.0f} s without a complete report "
                f"({'it began' if seen.begun else 'the reporter never ran'})")
    if run.exit_code != 0:
        return f"qemu exited {run.exit_code}"
    return None


def _pick_kernel(root: Path, wanted: Optional[str], predicted_for: str) -> BootFiles:
    if wanted is not None:
        return boot_files(root, wanted)
    if has_kernel(root, predicted_for):
        return boot_files(root, predicted_for)
    files = boot_files(root, None)
    if predicted_for not in ("", "unknown") and files.kernel != predicted_for:
        raise DoctorError(f"check predicts for kernel {predicted_for} (/lib/modules) but {root}/boot has no "
                          f"vmlinuz-{predicted_for} (newest there: {files.kernel}); pass --kernel")
    return files


def _sysvinit_order(root: Root) -> Injection:
    """The root's insserv order file with the reporter added last (read only when a regular file inside the
    root, its links followed inside it; at most 1 MiB)."""
    if root.kind("/" + DEPEND_START) is not PathKind.FILE:
        return Injection()
    try:
        text = root.read_bytes("/" + DEPEND_START, 1 << 20).decode("utf-8", errors="replace")
    except (OSError, DoctorError):
        return Injection()
    return Injection({DEPEND_START: (depend_start_with_reporter(text), 0o644)})


def verify_root(root_dir: str, kernel: Optional[str] = None, late_load: Sequence[str] = (),
                timeout: float = DEFAULT_TIMEOUT, boots: int = 1, cmdline: Optional[str] = None,
                log_dir: Optional[Path] = None, workdir_parent: Optional[Path] = None,
                progress: Optional[Callable[[str], None]] = None) -> VerifyResult:
    from sysctl_doctor.findings.engine import run_check
    from sysctl_doctor.report.json_report import check_to_dict
    from sysctl_doctor.root import root_for_cli

    if not 1 <= boots <= MAX_BOOTS:
        raise DoctorError(f"--boots {boots}: between 1 and {MAX_BOOTS}")
    say = progress or (lambda _message: None)
    require(QEMU)
    require(MKE2FS)  # both before anything is copied: a missing tool is said at once
    root = root_for_cli(root_dir)
    if root.is_live:
        raise DoctorError("verify boots an image of a root directory: pass --root DIR (not the running host /)")
    report = run_check(root, kernel=kernel, cmdline=cmdline)
    root.raise_if_unreadable()
    analysis = report.analysis
    document = check_to_dict(report)
    predicted = predictions_from(document, fates_of(key_fates(analysis)))
    # glob lines: their matches are compared under systemd-sysctl's rules (procps applies them otherwise)
    globs = globs_from(document) if analysis.flavor == "systemd" else []
    named = named_keys(document)
    root_path = Path(root.path)
    files = _pick_kernel(root_path, kernel, analysis.kernel)
    root_cmdline = cmdline if cmdline is not None else getattr(getattr(analysis.timeline, "cmdline", None), "text", "")
    extra = guest_cmdline(root_cmdline or "")
    modules = [p.module for p in predicted if p.module]
    injection = reporter_injection(analysis.init_system, [p.key for p in predicted], late_load, modules,
                                   [g.pattern for g in globs])
    if analysis.init_system == "sysvinit":
        injection = injection.merged(_sysvinit_order(root))
    with SigtermRaises():  # SIGTERM as Ctrl-C: qemu killed, the work directory removed
        results, accel, accel_why, image_seconds = _build_and_boot(
            root_path, files, analysis.init_system, predicted, globs, named, injection, extra, boots, timeout, log_dir,
            workdir_parent, say)
    return VerifyResult(str(root_path), files.kernel, analysis.init_system, accel, accel_why, extra,
                        list(late_load), predicted, results, image_seconds,
                        [str(d) for d in analysis.diagnostics])


def _build_and_boot(root_path: Path, files: BootFiles, init_system: str, predicted: List[Predicted],
                    globs: List[GlobLine], named: Set[str], injection: Injection, extra: str, boots: int, timeout: float, log_dir: Optional[Path],
                    workdir_parent: Optional[Path], say: Callable[[str], None]):
    """One image (from a copy of the root), N boots of fresh copies of it, each report compared."""
    work = Path(tempfile.mkdtemp(prefix="sysctl-doctor-verify-", dir=workdir_parent))
    results: List[BootOutcome] = []
    try:
        accel, accel_why = choose_accel(files, work)
        say(f"building the image of {root_path} (kernel {files.kernel}, init {init_system})")
        started = time.monotonic()
        pristine = image_of(root_path, injection, work)
        image_seconds = time.monotonic() - started
        for number in range(1, boots + 1):
            disk = work / f"boot-{number}.img"
            copied = subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(pristine), str(disk)],
                                    capture_output=True, text=True)
            if copied.returncode != 0:
                raise DoctorError(f"cannot copy the image for boot {number}: {copied.stderr.strip()[-300:]}")
            logs = (log_dir / f"boot-{number}") if log_dir is not None else work / f"logs-{number}"
            say(f"boot {number}/{boots}: qemu -accel {accel} (timeout {timeout:.0f} s)")
            try:
                run = boot(files, disk, logs, timeout, accel, extra)
            finally:
                disk.unlink(missing_ok=True)
            seen = parse_report(run.probe_lines())
            failure = _boot_failure(run, seen, timeout)
            outcomes = [] if failure else compare(predicted, seen, globs, named)
            results.append(BootOutcome(number, run, seen, outcomes, failure,
                                       run.console_tail() if failure else []))
            say(f"boot {number}/{boots}: {run.seconds:.1f} s" + (f", FAILED: {failure}" if failure else ""))
            if failure:
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results, accel, accel_why, image_seconds

