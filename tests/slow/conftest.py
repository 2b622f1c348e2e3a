"""Fixtures of the slow tier: the cached base root and one real boot per scenario.

Each scenario boots at most once per session (`booted(name)`); the prediction is
taken from the very root that is imaged, before the probe is added. Consoles
and probe output are kept under `<cache>/slow/logs/<scenario>/`; roots and disk
images are deleted as soon as the boot ends.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from . import base_root as base_root_module
from .prediction import CheckRun, CommandMissing, predicted_keys, run_check, run_explain, run_fix
from .real_boot import BootResult, run_scenario
from .scenarios import BY_NAME


@dataclass
class ScenarioRun:
    boot: Optional[BootResult]         # None when the scenario needs `fix` and the CLI has none
    check: Optional[CheckRun]          # None when the CLI has no `check` (reason in check_missing)
    check_missing: Optional[str]       # why there is no prediction: the CLI lacks the command
    check_error: Optional[str]         # `check` ran and failed (exit 2, not JSON): the comparison fails with it
    fix_output: Optional[str]
    explain: Dict[str, object] = field(default_factory=dict)   # key -> `explain KEY --root --format json`


class _FixMissing(Exception):
    pass


# Every boot of the session, for the summary pytest prints at the end (the figures of the report).
_BOOTS: List[BootResult] = []


def pytest_terminal_summary(terminalreporter) -> None:
    from .test_verify import TIMINGS

    if TIMINGS:
        terminalreporter.section("sysctl-doctor verify boots (qemu, measured)")
        for line in TIMINGS:
            terminalreporter.write_line(line)
    if not _BOOTS:
        return
    terminalreporter.section("real boots (qemu -accel tcg)")
    for boot in _BOOTS:
        report = boot.report
        values = " ".join(f"{k}={v}" for k, v in report.values.items())
        terminalreporter.write_line(
            f"{boot.scenario:15} qemu {boot.seconds:6.1f}s exit={boot.exit_code} "
            f"probe@{report.uptime}s {values} nf_conntrack={report.modules.get('nf_conntrack')}")
    terminalreporter.write_line(f"logs: {_BOOTS[0].console_log.parent.parent}/<scenario>/{{console,probe}}.log")


def _missing_tools() -> Optional[str]:
    reason = base_root_module.missing_reason()
    if reason:
        return reason
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("mke2fs", "e2fsprogs")):
        if shutil.which(tool) is None:
            return f"NEEDS {tool}: apt-get install {package} (or run scripts/test-slow.sh)"
    return None


@pytest.fixture(scope="session")
def base_root() -> base_root_module.BaseRoot:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    base_root_module.remove_stale_work()
    try:
        return base_root_module.ensure_base_root()
    except base_root_module.MirrorUnreachable as exc:
        pytest.skip(f"NEEDS the Debian mirror to build the Debian 12 root: {exc}")


def _variant_root(name: str, base: base_root_module.BaseRoot) -> base_root_module.BaseRoot:
    """The cached root a scenario starts from: the base root, or a variant built (once) on first use."""
    if name == "debian":
        return base
    if name == "docker":
        from .docker_root import ensure_docker_root

        try:
            return ensure_docker_root()
        except base_root_module.MirrorUnreachable as exc:
            pytest.skip(f"NEEDS the Debian mirror to build the docker.io root: {exc}")
    raise ValueError(f"unknown base root variant {name!r}")


@pytest.fixture(scope="session")
def booted(base_root) -> Callable[[str], ScenarioRun]:
    cache = base_root_module.cache_dir()
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=cache))   # same file system as the base root
    logdir = cache / "logs"
    runs: Dict[str, ScenarioRun] = {}
    failures: Dict[str, BaseException] = {}   # a scenario that could not be built/booted is not retried

    def boot(name: str) -> ScenarioRun:
        if name in failures:
            raise failures[name]
        if name in runs:
            return runs[name]
        scenario = BY_NAME[name]
        state: Dict[str, object] = {"check": None, "missing": None, "error": None, "fix": None, "explain": {}}

        def tool_turn(root: Path) -> List[str]:
            if scenario.fix_args is not None:
                try:
                    proc = run_fix(root, list(scenario.fix_args))
                except CommandMissing as exc:
                    raise _FixMissing(str(exc))
                state["fix"] = proc.stdout + proc.stderr
            try:
                check = run_check(root)
            except CommandMissing as exc:
                state["missing"] = str(exc)
                return []
            except AssertionError as exc:    # the boot's facts still count; the comparison reports this
                state["error"] = str(exc)
                return []
            state["check"] = check
            state["explain"] = {key: run_explain(root, key) for key in scenario.explain_keys}
            return predicted_keys(check.document)   # the probe reports every key the tool predicted

        result: Optional[BootResult]
        try:
            result = run_scenario(_variant_root(scenario.base, base_root), scenario, workdir, logdir,
                                  before_image=tool_turn)
        except _FixMissing as exc:   # booting the unfixed root would prove nothing
            result, state["missing"] = None, f"no `fix` command: {exc}"
        except Exception as exc:
            failures[name] = exc
            raise
        if result is not None:
            _BOOTS.append(result)
        runs[name] = ScenarioRun(result, state["check"], state["missing"], state["error"],  # type: ignore[arg-type]
                                 state["fix"], state["explain"])  # type: ignore[arg-type]
        return runs[name]

    try:
        yield boot
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def skip_unless_qemu_can_boot() -> None:
    """Skip (with what is missing) unless the base root can be built and qemu and mke2fs are installed."""
    reason = base_root_module.missing_reason()
    if reason is None:
        for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("mke2fs", "e2fsprogs")):
            if shutil.which(tool) is None:
                reason = f"NEEDS {tool}: apt-get install {package} (or run scripts/test-slow.sh)"
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def matrix_roots():  # type: ignore[no-untyped-def]
    """The kernel-matrix roots (5.10 / 6.1 / 6.12 on the base userland), built once and cached."""
    skip_unless_qemu_can_boot()
    from .matrix_root import ensure_matrix_root

    try:
        return ensure_matrix_root()
    except Exception as exc:
        if type(exc).__name__ in ("KernelTreeUnavailable", "MirrorUnreachable"):
            pytest.skip(f"NEEDS Debian's kernel packages and mirror: {exc}")
        raise
