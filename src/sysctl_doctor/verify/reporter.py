"""The reporter the guest runs once its boot has settled, and the reading of what it wrote.

It reads `/etc/sdverify/keys` (`<dotted key> <path under /proc/sys>` per line), `/etc/sdverify/late-load`
(module names) and `/etc/sdverify/patterns` (fixed strings that make a journal line relevant), and writes
to the second serial port (`SDVERIFY_OUT`, default /dev/ttyS1):

    SDVERIFY BEGIN
    SDVERIFY uptime <phase> <seconds since boot>
    SDVERIFY value <phase> <dotted key>=<value, tabs and newlines as spaces>
    SDVERIFY absent <phase> <dotted key>
    SDVERIFY unreadable <phase> <dotted key>
    SDVERIFY match <phase> <glob> <dotted key>=<value>   (each key a glob line of `/etc/sdverify/globs` matches)
    SDVERIFY module <phase> <name>                      (every line of /proc/modules)
    SDVERIFY load <module> rc=<modprobe status> <its message>
    SDVERIFY journal <line>                             (this boot's journal, or dmesg without journald)
    SDVERIFY END

with <phase> `boot` (after boot settled), then `late` (after the --late-load modules, only when there are
any). `SDVERIFY_PROC_SYS` points it at another /proc/sys, `SDVERIFY_OUT` at another file and
`SDVERIFY_NO_SETTLE=1` skips the waits (the default tier runs it on the host, against a tmpfs /proc/sys in
a private mount namespace);
only `--poweroff` (the guest's unit passes it) makes it power the machine off at the end.

"Settled": systemd starts it from a transient timer 3 s after multi-user.target (so that it is not
itself part of the boot transaction) and it waits for `systemctl is-system-running --wait` and `udevadm
settle`; sysvinit runs an rc script (S99, runlevels 2-5) and OpenRC a local.d script, each 3 s later in the
background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

from sysctl_doctor.config.sysctl_glob import expand_braces
from sysctl_doctor.verify.image import Injection
from sysctl_doctor.verify.serial import marker_lines

PREFIX = "SDVERIFY"
SCRIPT_PATH = "usr/local/sbin/sdverify-report"
CONF_DIR = "etc/sdverify"
BOOT, LATE = "boot", "late"

SCRIPT = r"""#!/bin/sh
# sysctl-doctor verify: what this booted system shows, key by key (injected into a temporary image).
CONF=${SDVERIFY_CONF:-/etc/sdverify}
PROC_SYS=${SDVERIFY_PROC_SYS:-/proc/sys}
exec > "${SDVERIFY_OUT:-/dev/ttyS1}" 2>&1
say() { echo "SDVERIFY $*"; }
settle() {
    [ -z "$SDVERIFY_NO_SETTLE" ] || return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        timeout 120 systemctl is-system-running --wait >/dev/null 2>&1
    fi
    if command -v udevadm >/dev/null 2>&1; then
        udevadm settle --timeout=30 >/dev/null 2>&1 || say note udevadm settle timed out
    fi
}
snapshot() {
    phase=$1
    read -r up _ < /proc/uptime
    say uptime "$phase" "$up"
    while read -r key path; do
        [ -n "$key" ] || continue
        file="$PROC_SYS/$path"
        if [ ! -e "$file" ]; then
            say absent "$phase" "$key"
        elif value=$(tr '\t\n' '  ' < "$file" 2>/dev/null); then
            say value "$phase" "$key=$(printf '%s' "$value" | sed 's/ *$//')"
        else
            say unreadable "$phase" "$key"
        fi
    done < "$CONF/keys"
    if [ -s "$CONF/globs" ]; then
        while read -r pattern path; do
            [ -n "$pattern" ] || continue
            for file in $PROC_SYS/$path; do
                [ -e "$file" ] || continue
                key=$(printf '%s' "${file#"$PROC_SYS"/}" | tr './' '/.')
                if value=$(tr '\t\n' '  ' < "$file" 2>/dev/null); then
                    say match "$phase" "$pattern" "$key=$(printf '%s' "$value" | sed 's/ *$//')"
                fi
            done
        done < "$CONF/globs"
    fi
    if [ -r /proc/modules ]; then
        while read -r name _; do
            say module "$phase" "$name"
        done < /proc/modules
    fi
}
say BEGIN
settle
snapshot boot
late=$(grep -v '^[[:space:]]*$' "$CONF/late-load" 2>/dev/null)
if [ -n "$late" ]; then
    for mod in $late; do
        out=$(modprobe "$mod" 2>&1)
        rc=$?
        say load "$mod" "rc=$rc" $(printf '%s' "$out" | tr '\n' ' ')
    done
    settle
    snapshot late
fi
if command -v journalctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    journalctl -b -o short-monotonic --no-pager 2>&1
else
    dmesg 2>&1
fi | grep -F -i -f "$CONF/patterns" | tail -n 2000 | sed 's/^/SDVERIFY journal /'
say END
sync
if [ "$1" = "--poweroff" ]; then
    if [ -d /run/systemd/system ]; then systemctl poweroff --no-block; else poweroff || echo o > /proc/sysrq-trigger; fi
fi
"""

def after_boot_unit(description: str, exec_start: str, exec_start_pre: str = "", to_console: bool = False) -> str:
    """A oneshot unit in multi-user.target, ordered after it: how every probe of a booted guest starts (verify's
    reporter, the slow tier's probes, the kernel-keys generator)."""
    pre = f"ExecStartPre={exec_start_pre}\n" if exec_start_pre else ""
    output = "StandardOutput=journal+console\n" if to_console else ""
    return (f"[Unit]\nDescription={description}\nAfter=multi-user.target\n\n"
            f"[Service]\nType=oneshot\n{pre}ExecStart={exec_start}\n{output}\n"
            "[Install]\nWantedBy=multi-user.target\n")


# systemd: the unit (in multi-user.target) starts the report from a transient timer, outside the boot transaction.
UNIT = after_boot_unit(
    "sysctl-doctor verify: report the booted system's sysctls once boot has settled",
    "systemd-run --no-block --on-active=3 --unit=sdverify-report /usr/local/sbin/sdverify-report --poweroff")

RC_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          sdverify
# Required-Start:    $all
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: sysctl-doctor verify: report the booted system's sysctls
### END INIT INFO
case "$1" in
    start) (sleep 3; /usr/local/sbin/sdverify-report --poweroff) >/dev/null 2>&1 & ;;
esac
exit 0
"""

OPENRC_LOCAL = """#!/bin/sh
# sysctl-doctor verify: report the booted system's sysctls once the default runlevel is up
(sleep 3; /usr/local/sbin/sdverify-report --poweroff) >/dev/null 2>&1 &
"""

# a journal line is evidence when it names one of these (plus each key, module and late-load module)
BASE_PATTERNS = ("sysctl", "modules-load", "Couldn't write", "kernel module", "modprobe")


def proc_sys_path(key: str) -> str:
    """The /proc/sys path of a dotted key, as systemd-sysctl spells it (dots and slashes swapped)."""
    return key.translate(str.maketrans("./", "/."))


def reporter_injection(init_system: str, keys: Iterable[str], late_load: Iterable[str] = (),
                       patterns: Iterable[str] = (), globs: Iterable[str] = ()) -> Injection:
    """The reporter's files for a root booted by `init_system` ("systemd", "sysvinit", "openrc")."""
    keys = list(dict.fromkeys(keys))
    words = list(dict.fromkeys([*BASE_PATTERNS, *(proc_sys_path(k) for k in keys), *keys, *late_load, *patterns]))
    files = {
        SCRIPT_PATH: (SCRIPT, 0o755),
        f"{CONF_DIR}/keys": ("".join(f"{k} {proc_sys_path(k)}\n" for k in keys), 0o644),
        # one line per brace alternative: systemd-sysctl globs with GLOB_BRACE, the guest's sh has no braces
        f"{CONF_DIR}/globs": ("".join(f"{g} {alt}\n" for g in dict.fromkeys(globs)
                                      if all(c not in g for c in " \t\n")
                                      for alt in dict.fromkeys(expand_braces(proc_sys_path(g)))), 0o644),
        f"{CONF_DIR}/late-load": ("".join(f"{m}\n" for m in late_load), 0o644),
        f"{CONF_DIR}/patterns": ("".join(f"{w}\n" for w in words if w and "\n" not in w), 0o644),
    }
    symlinks: Dict[str, str] = {}
    if init_system == "systemd":
        files["etc/systemd/system/sdverify.service"] = (UNIT, 0o644)
        symlinks["etc/systemd/system/multi-user.target.wants/sdverify.service"] = "/etc/systemd/system/sdverify.service"
    elif init_system == "openrc":
        files["etc/local.d/sdverify.start"] = (OPENRC_LOCAL, 0o755)
        symlinks["etc/runlevels/default/local"] = "/etc/init.d/local"
    else:
        files["etc/init.d/sdverify"] = (RC_SCRIPT, 0o755)
        for level in (2, 3, 4, 5):
            symlinks[f"etc/rc{level}.d/S99sdverify"] = "../init.d/sdverify"
    return Injection(files, symlinks)


DEPEND_START = "etc/init.d/.depend.start"


def depend_start_with_reporter(text: str) -> str:
    """insserv's `.depend.start` (startpar's order when Debian's rc runs scripts in parallel, CONCURRENCY
    makefile) with sdverify added as a target that waits for every other one; unchanged when it is there."""
    lines = text.splitlines()
    targets: List[str] = []
    out: List[str] = []
    for line in lines:
        if line.startswith("TARGETS =") and not targets:
            targets = line.split("=", 1)[1].split()
            if "sdverify" not in targets:
                line = line.rstrip() + " sdverify"
        out.append(line)
    if targets and "sdverify" not in targets:
        out.append("sdverify: " + " ".join(targets))
    return "\n".join(out) + "\n"


@dataclass
class Snapshot:
    """One phase's view: each key's value (None: the key does not exist), the loaded modules."""

    values: Dict[str, Optional[str]] = field(default_factory=dict)
    unreadable: Set[str] = field(default_factory=set)
    modules: Set[str] = field(default_factory=set)
    uptime: Optional[float] = None
    matches: Dict[str, Dict[str, str]] = field(default_factory=dict)  # glob -> {matching key: value}


@dataclass
class LoadResult:
    module: str
    rc: Optional[int]
    message: str


@dataclass
class Observation:
    phases: Dict[str, Snapshot] = field(default_factory=dict)
    loads: List[LoadResult] = field(default_factory=list)
    journal: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    begun: bool = False
    complete: bool = False  # the END line was seen

    def snapshot(self, phase: str) -> Optional[Snapshot]:
        return self.phases.get(phase)


def module_name(name: str) -> str:
    return name.replace("-", "_")


def parse_report(lines: List[str]) -> Observation:
    """The reporter's lines -> Observation (unknown or malformed lines are skipped)."""
    seen = Observation()
    for kind, rest in marker_lines(lines, PREFIX):
        if kind == "BEGIN":
            seen.begun = True
        elif kind == "END":
            seen.complete = True
        elif kind == "journal":
            seen.journal.append(rest)
        elif kind == "note":
            seen.notes.append(rest)
        elif kind == "load":
            module, _, tail = rest.partition(" ")
            status, _, message = tail.partition(" ")
            rc: Optional[int] = None
            if status.startswith("rc="):
                try:
                    rc = int(status[3:])
                except ValueError:
                    rc = None
            seen.loads.append(LoadResult(module, rc, message.strip()))
        elif kind in ("value", "absent", "unreadable", "module", "uptime", "match"):
            phase, _, body = rest.partition(" ")
            snap = seen.phases.setdefault(phase, Snapshot())
            if kind == "value" and "=" in body:
                key, _, value = body.partition("=")
                snap.values[key] = value.strip()
            elif kind == "absent" and body:
                snap.values[body] = None
            elif kind == "match" and "=" in body:
                pattern, _, assignment = body.partition(" ")
                key, _, value = assignment.partition("=")
                snap.matches.setdefault(pattern, {})[key] = value.strip()
            elif kind == "unreadable" and body:
                snap.unreadable.add(body)
            elif kind == "module" and body:
                snap.modules.add(module_name(body.strip()))
            elif kind == "uptime":
                try:
                    snap.uptime = float(body)
                except ValueError:
                    pass
    return seen
