"""Host-global sysctls switched on by several runs at once, and always put back.

``net.netfilter.nf_log_all_netns`` exists only in the init namespace and is shared by every `lab` run,
every `conntrack debug` session and every test on the machine. One persistent record,
``$SYSCTL_DOCTOR_RUN_DIR/host-switches.json`` (default ``/run/sysctl-doctor``), holds per switch the
original value and who holds it now:

    {"version": 1, "switches": {"/proc/sys/net/netfilter/nf_log_all_netns": {
        "original": "0", "value": "1", "holders": [
            {"what": "lab", "pid": 4242, "start": 918273, "token": "…"},
            {"what": "conntrack debug --netns pod", "netns": "pod", "inode": 4026532301}]}}}

- `take` writes the record (temp file, fsync, rename, directory fsync) BEFORE it writes the value;
- `release` writes the original back when the last holder leaves, then updates the record;
- `recover` — run first by every entry point (inside `take`/`release`, and by `conntrack debug status`) —
  drops the holders that are gone (a process holder whose pid is gone or now another process; a
  namespace holder whose namespace was removed or replaced) and restores each switch nobody holds.
So a SIGKILLed run is undone by the next run, and the value it left is never taken for the original.

The flock on `HOST_LOCK` is held only while the record is read, changed and the value switched —
never for a whole run. A run that has to wait says so (``notice``) and the wait stays interruptible.
A flock belongs to the open file, not the process: a child forked (without exec) while it is held would
keep it after the parent dies. So the lock's descriptor is O_CLOEXEC and closed in every forked child
(`os.register_at_fork`), and a forked child never takes or releases its parent's holds. Whoever drops a
dead holder says so (``notice``) — `take`, `release`, `recover` and `resting_value` alike — and appends it
to ``$SYSCTL_DOCTOR_RUN_DIR/host-switches.recovered`` (`recovery_journal`), so a killed run's switch is
never put back silently, whichever run on the host happens to do it.
/run is a tmpfs: after a reboot the record and the switched values are gone together.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, TextIO

from sysctl_doctor.errors import DoctorError

RUN_DIR_ENV = "SYSCTL_DOCTOR_RUN_DIR"
DEFAULT_RUN_DIR = "/run/sysctl-doctor"
RECORD_NAME = "host-switches.json"
JOURNAL_NAME = "host-switches.recovered"  # what recovery did, and which run did it (the last JOURNAL_LINES)
JOURNAL_LINES = 200
NETNS_DIR = "/run/netns"
PROC_SYS = Path("/proc/sys")

Notice = Callable[[str], None]


def stderr_notice(message: str) -> None:
    """The default `Notice`: one line on stderr (what the CLI shows while it waits)."""
    stream: TextIO = sys.stderr
    try:
        stream.write(message + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def run_dir() -> Path:
    """Where run state lives: ``$SYSCTL_DOCTOR_RUN_DIR`` or /run/sysctl-doctor."""
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def record_path() -> Path:
    return run_dir() / RECORD_NAME


def journal_path() -> Path:
    return run_dir() / JOURNAL_NAME


def recovery_journal() -> List[str]:
    """What recovery did lately, one line each: ``<UTC time> pid <run>: <message>`` (oldest first).

    The `note:` goes to the stderr of whichever run recovers — with many runs on a host often not the one
    a person watches; this journal keeps it."""
    try:
        return journal_path().read_text().splitlines()
    except OSError:
        return []


def _journal_locked(messages: List[str]) -> None:
    """Append to the journal (under the host lock; best effort: it never stops a recovery)."""
    path = journal_path()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = (recovery_journal() + [f"{stamp} pid {os.getpid()}: {m}" for m in messages])[-JOURNAL_LINES:]
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


HOST_LOCK = Path("/run/lock/sysctl-doctor.lock")  # flock'ed while a host switch is read or changed


def host_lock_path() -> Path:
    return HOST_LOCK


def dotted(path: str) -> str:
    """``/proc/sys/net/a/b`` → ``net.a.b`` (other paths as they are)."""
    prefix = str(PROC_SYS) + "/"
    return path[len(prefix):].replace("/", ".") if path.startswith(prefix) else path


def process_start(pid: int) -> Optional[int]:
    """The process's start time (clock ticks after boot, /proc/<pid>/stat field 22); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def netns_inode(name: str) -> Optional[int]:
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Holder:
    """Who keeps a switch on: a running process, or a network namespace (a `debug on` without --for)."""

    what: str  # for people: "lab", "conntrack debug --netns pod"
    pid: Optional[int] = None
    start: Optional[int] = None
    token: Optional[str] = None  # tells apart two holds of one process
    netns: Optional[str] = None
    inode: Optional[int] = None

    @classmethod
    def this_process(cls, what: str) -> "Holder":
        pid = os.getpid()
        return cls(what=what, pid=pid, start=process_start(pid), token=uuid.uuid4().hex)

    @classmethod
    def namespace(cls, name: str, what: str) -> "Holder":
        inode = netns_inode(name)
        if inode is None:
            raise DoctorError(f"network namespace {name!r} not found (no {NETNS_DIR}/{name}; see `ip netns list`)")
        return cls(what=what, netns=name, inode=inode)

    def alive(self) -> bool:
        if self.pid is not None:
            return self.start is not None and process_start(self.pid) == self.start
        if self.netns is not None:
            return netns_inode(self.netns) == self.inode
        return False

    def same(self, other: "Holder") -> bool:
        if self.pid is not None:
            return (self.pid, self.start, self.token) == (other.pid, other.start, other.token)
        return self.netns is not None and self.netns == other.netns and other.pid is None

    def describe(self) -> str:
        return f"{self.what} (pid {self.pid})" if self.pid is not None else self.what

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> "Holder":
        return cls(what=str(data.get("what", "?")), pid=data.get("pid"), start=data.get("start"),
                   token=data.get("token"), netns=data.get("netns"), inode=data.get("inode"))


@dataclass
class Switch:
    original: str
    value: str
    holders: List[Holder] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"original": self.original, "value": self.value, "holders": [h.to_json() for h in self.holders]}

    @classmethod
    def from_json(cls, data: dict) -> "Switch":
        return cls(original=str(data["original"]), value=str(data["value"]),
                   holders=[Holder.from_json(h) for h in data.get("holders", [])])


Record = Dict[str, Switch]  # absolute /proc/sys path → switch


def load_record(path: Path) -> Record:
    try:
        data = json.loads(path.read_text())
        return {key: Switch.from_json(value) for key, value in data["switches"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DoctorError(f"{path}: unreadable host-switch record ({exc}); restore the values it names "
                          "by hand and delete it") from exc


def save_record(path: Path, record: Record) -> None:
    """Atomically: temp file, fsync, rename, directory fsync; no switches → no file. Under the host lock."""
    try:
        _save_record(path, record)
    except OSError as exc:
        raise DoctorError(f"cannot write the host-switch record {path}: {exc.strerror or exc} "
                          "(changing host settings needs root)") from exc


def _stale_temps(path: Path) -> List[Path]:
    return list(path.parent.glob(f"{path.name}.tmp.*"))


def _remove_stale_temps(path: Path) -> None:
    """Saves run under the host lock: a temp file seen while holding it was left by a killed save."""
    for stale in _stale_temps(path):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass


def _save_record(path: Path, record: Record) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _remove_stale_temps(path)
    if not record:
        try:
            path.unlink()
        except FileNotFoundError:
            return
    else:
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
        data = {"version": 1, "switches": {k: v.to_json() for k, v in record.items()}}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def flock_pids(lock_path: Path, waiting: bool = False) -> List[int]:
    """Pids holding (or, with `waiting`, blocked on) a flock of the lock file, from /proc/locks
    (empty when unknown). Holder lines read "N: FLOCK ADVISORY WRITE pid maj:min:ino …"; a waiter's
    line has "->" after the number."""
    try:
        ino = os.stat(lock_path).st_ino
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        blocked = len(parts) > 1 and parts[1] == "->"
        if blocked != waiting:
            continue
        if blocked:
            parts = parts[:1] + parts[2:]
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(ino):
            if parts[4].isdigit():
                pids.append(int(parts[4]))
    return pids


def _processes_with_open(lock_path: Path) -> List[int]:
    """Pids with a descriptor on the lock file (a flock is kept by every descriptor of its open file)."""
    try:
        st = os.stat(lock_path)
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                fst = os.stat(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                pids.append(int(entry))
                break
    return pids


def _describe_lock_holders(lock_path: Path) -> str:
    """For the waiting notice. /proc/locks names the process that took the flock; when it is gone, the
    lock is kept by a descriptor it passed on (a child forked while it held it): name those processes."""
    takers = flock_pids(lock_path)
    if not takers:
        return "another process"
    parts = []
    for pid in takers:
        if process_start(pid) is not None:
            parts.append(str(pid))
            continue
        keepers = [p for p in _processes_with_open(lock_path) if p != os.getpid()]
        parts.append(f"{pid} (gone; its descriptor is kept by "
                     + (", ".join(f"pid {p}" for p in keepers) or "another process") + ")")
    return ", ".join(parts)


_LOCK_FDS: Dict[int, int] = {}  # host-lock descriptor → pid that opened it


def _close_inherited_lock_fds() -> None:
    """In a forked child: close the host-lock descriptors of the parent, so a child that outlives its
    parent (SIGKILLed while switching) can never keep the lock. Closing a copy leaves the parent's lock."""
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_lock_fds)


@contextmanager
def host_lock(notice: Notice = stderr_notice, hint: str = "Ctrl-C gives up, nothing changed") -> Iterator[None]:
    """The host lock for the block. Waiting says so (with `hint`); a signal whose handler raises
    (Ctrl-C: KeyboardInterrupt) ends the wait. The descriptor is never inherited: O_CLOEXEC for exec,
    closed in forked children (`_close_inherited_lock_fds`)."""
    lock_path = host_lock_path()
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DoctorError(f"cannot open the host lock {lock_path}: {exc.strerror or exc} "
                          "(changing host settings needs root)") from exc
    owner = os.getpid()
    _LOCK_FDS[fd] = owner
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            notice(f"waiting for the host lock {lock_path} (held by {_describe_lock_holders(lock_path)}); {hint}")
            fcntl.flock(fd, fcntl.LOCK_EX)  # interruptible: a signal handler's exception ends the wait
        yield
    finally:
        # in a forked child unwinding its parent's stack the descriptor is already closed (and its number
        # may be reused): close only our own
        if os.getpid() == owner and _LOCK_FDS.pop(fd, None) == owner:
            os.close(fd)  # releases the flock


def read_value(path: str) -> Optional[str]:
    """A /proc/sys file's value (None when it does not exist)."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DoctorError(f"{path}: {exc.strerror or exc}") from exc


def write_value(path: str, value: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value + "\n")
    except OSError as exc:
        raise DoctorError(f"cannot set {dotted(path)}={value}: {exc.strerror or exc}") from exc


def _write_if_changed(path: str, value: str) -> None:
    try:
        current = read_value(path)
    except DoctorError:
        current = None
    if current != value:
        write_value(path, value)


def _recover_locked(record: Record) -> List[str]:
    """Drop dead holders; restore and forget switches nobody holds. Returns what was done, for people."""
    done: List[str] = []
    for path in list(record):
        switch = record[path]
        gone = [h for h in switch.holders if not h.alive()]
        if not gone:
            continue
        switch.holders = [h for h in switch.holders if h.alive()]
        who = ", ".join(h.describe() for h in gone)
        if switch.holders:
            done.append(f"{dotted(path)}: dropped {who} (gone); still held by "
                        + ", ".join(h.describe() for h in switch.holders))
            continue
        del record[path]  # also when the write fails: a record nobody can act on would block every run
        try:
            _write_if_changed(path, switch.original)
        except DoctorError as exc:
            done.append(f"{dotted(path)}: left by {who} (gone); {exc}")
            continue
        done.append(f"{dotted(path)}: restored to {switch.original}, left by {who} (gone)")
    if done:
        _journal_locked(done)
    return done


def recover(notice: Notice = stderr_notice) -> List[str]:
    """Restore what dead runs left (under the lock); the messages also go to `notice`."""
    path = record_path()
    if not path.exists() and not _stale_temps(path):
        return []
    with host_lock(notice):
        record = load_record(path)
        done = _recover_locked(record)
        if done or _stale_temps(path):
            save_record(path, record)
    for message in done:
        notice(f"note: {message}")
    return done


def resting_value(key: str, proc_sys: Path = PROC_SYS, notice: Notice = stderr_notice) -> Optional[str]:
    """The value `key` has when no run holds it (the recorded original, else the current value)."""
    path = str(proc_sys / key)
    with host_lock(notice):
        record = load_record(record_path())
        recovered = _recover_locked(record)
        if recovered:
            save_record(record_path(), record)
        switch = record.get(path)
        value = switch.original if switch is not None else read_value(path)
    for message in recovered:
        notice(f"note: {message}")
    return value


def holders(key: str, proc_sys: Path = PROC_SYS) -> List[Holder]:
    """Who holds `key` now, as recorded (no lock, no recovery: for display)."""
    switch = load_record(record_path()).get(str(proc_sys / key))
    return list(switch.holders) if switch is not None else []


class SwitchHold:
    """One holder's hold on one host switch:

        hold = SwitchHold("net/netfilter/nf_log_all_netns", "1", Holder.this_process("lab"))
        try:
            hold.take()
            ...
        finally:
            hold.release()

    `release` does nothing when `take` never recorded the holder (e.g. Ctrl-C while waiting for the lock),
    so it never waits for a lock it does not need.
    """

    def __init__(self, key: str, value: str, holder: Holder, proc_sys: Path = PROC_SYS) -> None:
        self.path = str(proc_sys / key)
        self.value = value
        self.holder = holder
        self.recorded = False
        self.original: Optional[str] = None
        self.others = 0  # holders besides this one when taken
        self.owner_pid = os.getpid()  # a child forked (without exec) must not take or release this hold

    @property
    def dotted(self) -> str:
        return dotted(self.path)

    def take(self, notice: Notice = stderr_notice) -> str:
        """Record this holder (and the original, when first), then switch. Returns the original."""
        if os.getpid() != self.owner_pid:
            raise DoctorError(f"{self.dotted}: a forked child cannot take its parent's hold")
        record_file = record_path()
        with host_lock(notice):
            record = load_record(record_file)
            recovered = _recover_locked(record)
            switch = record.get(self.path)
            if switch is None:
                current = read_value(self.path)
                if current is None:
                    raise DoctorError(f"{self.path} missing: cannot set {self.dotted}")
                switch = record[self.path] = Switch(original=current, value=self.value)
            switch.holders = [h for h in switch.holders if not h.same(self.holder)] + [self.holder]
            switch.value = self.value
            try:
                save_record(record_file, record)
                self.recorded = True
                write_value(self.path, self.value)
            except BaseException:
                try:
                    self._drop_locked(record, record_file)
                except DoctorError:
                    pass  # the record names this (soon dead) holder: the next run restores
                raise
            self.original = switch.original
            self.others = len(switch.holders) - 1
        for message in recovered:
            notice(f"note: {message}")
        return switch.original

    def release(self, notice: Notice = stderr_notice) -> None:
        """Leave; the last holder out writes the original back. No-op when not recorded."""
        if not self.recorded or os.getpid() != self.owner_pid:
            return  # a forked child unwinding its parent's stack: the hold is the parent's
        record_file = record_path()
        with host_lock(notice, hint=f"to put {self.dotted} back"):
            record = load_record(record_file)
            recovered = _recover_locked(record)
            self._drop_locked(record, record_file, changed=bool(recovered))
        for message in recovered:
            notice(f"note: {message}")

    def _drop_locked(self, record: Record, record_file: Path, changed: bool = False) -> None:
        switch = record.get(self.path)
        if switch is not None:
            switch.holders = [h for h in switch.holders if not h.same(self.holder)]
            if not switch.holders:
                _write_if_changed(self.path, switch.original)  # first: a kill now leaves a record to recover
                del record[self.path]
        if switch is not None or changed:
            save_record(record_file, record)
        self.recorded = False


def release_holder(key: str, holder: Holder, proc_sys: Path = PROC_SYS, notice: Notice = stderr_notice) -> None:
    """Release a hold taken by another process (`conntrack debug off` for a namespace holder)."""
    hold = SwitchHold(key, "", holder, proc_sys)
    hold.recorded = True
    hold.release(notice)
