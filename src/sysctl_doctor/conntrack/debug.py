"""Turn conntrack's INVALID logging on, and put everything back afterwards.

What `on` changes (per netns only what is not already so; the host switch is always held):

- ``net.netfilter.nf_log.2`` / ``.10`` → ``nf_log_ipv4`` / ``nf_log_ipv6`` when
  ``NONE`` (bind a logger; built in here, a module elsewhere) — per netns;
- ``net.netfilter.nf_conntrack_log_invalid`` → 255 (every protocol) or 6
  (TCP) — per netns;
- for a namespace other than the host's: ``net.netfilter.nf_log_all_netns`` →
  1 in the init namespace (it exists only there; without it nf_log drops
  lines from other namespaces). Host-global and shared: `on` becomes one of
  its holders in the host-switch record (`sysctl_doctor.host_switches`) —
  the namespace itself without --for, the process with --for — and the
  original value comes back only when the last holder leaves.

Before touching anything, `on` writes the previous values to a state file
``$SYSCTL_DOCTOR_RUN_DIR/conntrack-debug-<netns>.json`` (default /run/sysctl-doctor;
temp file, fsync, rename, directory fsync), so `off` — even after a crash or
a SIGKILL — restores exactly the recorded values and deletes the file. /run
is a tmpfs: after a reboot both the state and the sysctls are gone.

``--for`` (`debug_for`) stays in the foreground and restores everything at
the end, on Ctrl-C and on SIGTERM; the host lock is held only while
switching, never for the duration. A `--for` run killed with SIGKILL is
undone by the next `on` for that namespace (its netns settings) and by any
run (its host switch).
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

from sysctl_doctor import host_switches
from sysctl_doctor.conntrack.stats import in_netns
from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.host_switches import Holder, Notice, SwitchHold, read_value, stderr_notice, write_value

HOST_SCOPE = "host"
NETNS_SCOPE = "netns"
LOGGERS = (("net/netfilter/nf_log/2", "nf_log_ipv4"), ("net/netfilter/nf_log/10", "nf_log_ipv6"))
LOG_INVALID = "net/netfilter/nf_conntrack_log_invalid"
ALL_NETNS = "net/netfilter/nf_log_all_netns"


@dataclass(frozen=True)
class DebugChange:
    scope: str  # "netns" (the target namespace) or "host" (init namespace)
    key: str  # slash path under /proc/sys
    old: str
    new: str

    @property
    def dotted(self) -> str:
        return self.key.replace("/", ".")


@dataclass
class DebugState:
    netns: Optional[str]  # None = the init (host) namespace
    started: float
    until: Optional[float]  # --for deadline (Unix seconds), None = until `off`
    pid: Optional[int]  # the foreground process of --for
    changes: List[DebugChange] = field(default_factory=list)
    holder: Optional[Holder] = None  # this session's hold on the host switch (host changes only)

    def to_json(self) -> dict:
        data = asdict(self)
        data["changes"] = [asdict(c) for c in self.changes]
        data["holder"] = self.holder.to_json() if self.holder is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "DebugState":
        holder = data.get("holder")
        return cls(
            netns=data.get("netns"), started=float(data["started"]), until=data.get("until"),
            pid=data.get("pid"), changes=[DebugChange(**c) for c in data.get("changes", [])],
            holder=Holder.from_json(holder) if holder else None,
        )

    @property
    def host_changes(self) -> List[DebugChange]:
        return [c for c in self.changes if c.scope == HOST_SCOPE]

    @property
    def netns_changes(self) -> List[DebugChange]:
        return [c for c in self.changes if c.scope == NETNS_SCOPE]


def plan_debug_on(netns: Optional[str], read: Callable[[str, str], Optional[str]],
                  log_invalid: str = "255") -> List[DebugChange]:
    """The changes `on` makes, from current values (``read(scope, key)``, None = key missing)."""
    changes: List[DebugChange] = []
    for key, logger in LOGGERS:
        current = read(NETNS_SCOPE, key)
        if current == "NONE":
            changes.append(DebugChange(NETNS_SCOPE, key, current, logger))
    current = read(NETNS_SCOPE, LOG_INVALID)
    if current is None:
        raise DoctorError("net.netfilter.nf_conntrack_log_invalid is missing: conntrack not loaded here "
                          "(load nf_conntrack, or add a rule that uses conntrack)")
    if current != log_invalid:
        changes.append(DebugChange(NETNS_SCOPE, LOG_INVALID, current, log_invalid))
    if netns is not None:
        current = read(HOST_SCOPE, ALL_NETNS)
        if current is not None:  # held even when already 1: another holder may leave before us
            changes.append(DebugChange(HOST_SCOPE, ALL_NETNS, current, "1"))
    return changes


def state_path(netns: Optional[str], state_dir: Optional[str] = None) -> str:
    return os.path.join(state_dir or str(host_switches.run_dir()), f"conntrack-debug-{netns or 'init'}.json")


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_state(netns: Optional[str], state_dir: Optional[str] = None) -> Optional[DebugState]:
    path = state_path(netns, state_dir)
    try:
        with open(path) as fh:
            return DebugState.from_json(json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DoctorError(f"{path}: unreadable debug state ({exc}); restore by hand and delete it") from exc


def _read_sysctl(key: str) -> Optional[str]:
    return read_value(f"/proc/sys/{key}")


def _write_sysctl(key: str, value: str) -> None:
    write_value(f"/proc/sys/{key}", value)


def _reader(netns: Optional[str]) -> Callable[[str, str], Optional[str]]:
    def read(scope: str, key: str) -> Optional[str]:
        if scope == HOST_SCOPE:
            return _read_sysctl(key)
        with in_netns(netns):
            return _read_sysctl(key)
    return read


def _write_state(state: DebugState, state_dir: Optional[str]) -> None:
    path = state_path(state.netns, state_dir)
    try:
        _write_atomic(path, json.dumps(state.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise DoctorError(f"cannot record the current values in {path}: "
                          f"{exc.strerror or exc} (conntrack debug needs root)") from exc


def _unlink_state(netns: Optional[str], state_dir: Optional[str]) -> None:
    try:
        os.unlink(state_path(netns, state_dir))
    except FileNotFoundError:
        pass


def _holder_for(netns: str, until: Optional[float]) -> Holder:
    """With --for the process holds the host switch; without, the namespace does (until `off` or its removal)."""
    if until is not None:
        return Holder.this_process(f"conntrack debug --netns {netns} --for")
    return Holder.namespace(netns, f"conntrack debug --netns {netns}")


def debug_on(netns: Optional[str], log_invalid: str = "255", until: Optional[float] = None,
             state_dir: Optional[str] = None, notice: Notice = stderr_notice) -> DebugState:
    """Record the current values, then switch logging on. Raises if a session is already on.

    A session left by a killed `--for` run (its pid gone) is restored first."""
    existing = read_state(netns, state_dir)
    if existing is not None and existing.pid is not None and not _alive(existing.pid):
        for d in _restore(existing, notice):
            notice(f"warning: {d}")
        _unlink_state(netns, state_dir)
        notice(f"note: restored the settings of a killed `conntrack debug on --for` (pid {existing.pid})")
        existing = None
    if existing is not None:
        raise DoctorError(
            f"conntrack debug is already on for {netns or 'the host namespace'} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(existing.started))} "
            f"({state_path(netns, state_dir)}); run `sysctl-doctor conntrack debug off"
            f"{' --netns ' + netns if netns else ''}` first")
    changes = plan_debug_on(netns, _reader(netns), log_invalid)
    holder = _holder_for(netns, until) if netns is not None and any(c.scope == HOST_SCOPE for c in changes) else None
    state = DebugState(netns=netns, started=time.time(), until=until,
                       pid=os.getpid() if until is not None else None, changes=changes, holder=holder)
    hold = SwitchHold(ALL_NETNS, "1", holder) if holder is not None else None
    _write_state(state, state_dir)  # nothing changed yet
    try:
        if state.netns_changes:
            with in_netns(netns):
                for change in state.netns_changes:
                    _write_sysctl(change.key, change.new)
        if hold is not None:
            original = hold.take(notice)  # Ctrl-C while it waits for the lock: nothing taken
            state.changes = [DebugChange(c.scope, c.key, original, c.new) if c.scope == HOST_SCOPE else c
                             for c in state.changes]
            _write_state(state, state_dir)
    except BaseException:
        _restore_netns(state)
        if hold is not None:
            hold.release(notice)  # only when taken: never waits again for a lock just given up on
        _unlink_state(netns, state_dir)
        raise
    return state


def _restore_netns(state: DebugState) -> List[Diagnostic]:
    diagnostics: List[Diagnostic] = []
    if state.netns_changes:
        try:
            with in_netns(state.netns):
                for change in reversed(state.netns_changes):
                    _write_sysctl(change.key, change.old)
        except DoctorError as exc:
            diagnostics.append(Diagnostic(f"{exc} — its settings went with it" if "not found" in str(exc)
                                          else str(exc)))
    return diagnostics


def _restore(state: DebugState, notice: Notice = stderr_notice) -> List[Diagnostic]:
    """The namespace's recorded values, then this session's hold on the host switch."""
    diagnostics = _restore_netns(state)
    if state.holder is not None:
        host_switches.release_holder(ALL_NETNS, state.holder, notice=notice)
    elif state.host_changes:  # a state file written before the host-switch record existed
        with host_switches.host_lock(notice):
            for change in state.host_changes:
                _write_sysctl(change.key, change.old)
    return diagnostics


def debug_off(netns: Optional[str], state_dir: Optional[str] = None,
              notice: Notice = stderr_notice) -> Tuple[Optional[DebugState], List[Diagnostic]]:
    """Restore exactly what `on` recorded and delete the state. (None, []) when debug was not on.

    The host switch goes back only when no other session or lab run holds it."""
    state = read_state(netns, state_dir)
    if state is None:
        return None, []
    if state.pid is not None and state.pid != os.getpid() and _alive(state.pid):
        raise DoctorError(f"a foreground `debug on --for` (pid {state.pid}) owns this session; "
                          "stop it with Ctrl-C or kill it, it restores on exit")
    diagnostics = _restore(state, notice)
    _unlink_state(netns, state_dir)
    return state, diagnostics


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def debug_for(netns: Optional[str], seconds: float, wait: Callable[[float], None],
              log_invalid: str = "255", state_dir: Optional[str] = None,
              notice: Notice = stderr_notice) -> Tuple[DebugState, List[Diagnostic]]:
    """On for `seconds` in the foreground, then off — also when `wait` raises (Ctrl-C).

    No lock is held while waiting: a `lab` or another session can start meanwhile."""
    until = time.time() + seconds
    state = debug_on(netns, log_invalid, until, state_dir, notice)
    try:
        wait(max(0.0, until - time.time()))
    finally:
        diagnostics = _restore(state, notice)
        _unlink_state(netns, state_dir)
    return state, diagnostics


def parse_duration(text: str) -> float:
    """Seconds of ``10m``, ``30s``, ``2h``, ``1d`` or a bare number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError as exc:
        raise DoctorError(f"--for {text!r}: not a duration (30s, 10m, 2h)") from exc
    if value != value or value in (float("inf"), float("-inf")):  # NaN, inf: would switch on, then crash
        raise DoctorError(f"--for {text!r}: not a duration (30s, 10m, 2h)")
    if value <= 0:
        raise DoctorError(f"--for {text!r}: must be positive")
    if value > 365 * 86400:
        raise DoctorError(f"--for {text!r}: more than a year; use `debug on` without --for and `debug off`")
    return value
