#!/usr/bin/python3
"""Runs as PID 1 (init=) inside a qemu guest booted by tools/gen_kernel_keys.py; not part of the package.

Nothing has written /proc/sys yet (no systemd, no systemd-sysctl, no udev after the initramfs), so every
value read is the kernel's own default. Steps, each reported on /dev/ttyS1 as one base64'd gzip'd JSON
document between KKDATA-BEGIN and KKDATA-END:

  1. snapshot /proc/sys (path -> value, or null when the read fails; mode) with the modules the
     initramfs left loaded;
  2. modprobe every module named in /etc/sdkeys/modules.<uname -r> (the modules that register sysctl tables),
     snapshot again;
  3. with --aliases: for every writable integer key, write a neighbouring value, read back every other
     key that had the same value, note those that now show the written value, restore; two keys that
     each change the other are one kernel variable under two names.

Then it powers the machine off (reboot(2) via sysrq 'o').

With --dump it is a systemd service of a normal boot instead (tools/gen_kernel_keys.py agree): step 1
only, after the boot has settled, then `systemctl poweroff`.
"""

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time

OUT = "/dev/ttyS1"
INT = re.compile(r"-?[0-9]+\Z")
# Writes that cannot be undone (a lock that stays set, a taint), that act rather than set (flush,
# drop_caches), that would stop the machine (panic*), or that name a process: never probed.
NO_WRITE_PREFIXES = (
    "kernel/modules_disabled", "kernel/kexec_load_disabled", "kernel/unprivileged_bpf_disabled",
    "kernel/tainted", "kernel/cad_pid", "kernel/ns_last_pid", "kernel/yama/ptrace_scope",
    "vm/drop_caches", "vm/compact", "vm/stat_refresh",
    "net/netfilter/nf_hooks_lwtunnel",  # once 1, it cannot be set back to 0 (EBUSY)
)
SKIP_ANY = ("panic", "disable_ipv6", "/flush")


def read_all():
    values, modes = {}, {}
    for dirpath, dirs, files in os.walk("/proc/sys"):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            rel = path[len("/proc/sys/"):]
            try:
                modes[rel] = os.stat(path).st_mode & 0o777
            except OSError:
                continue
            try:
                with open(path, "rb") as f:
                    values[rel] = f.read(65536).decode("utf-8", "replace").rstrip("\n")
            except OSError:
                values[rel] = None
    return values, modes


def read(rel):
    try:
        with open("/proc/sys/" + rel, "rb") as f:
            return f.read(4096).decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None


def write(rel, value):
    try:
        with open("/proc/sys/" + rel, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def is_iface_key(rel):
    parts = rel.split("/")
    return len(parts) >= 4 and parts[0] == "net" and parts[2] in ("conf", "neigh") \
        and parts[3] not in ("all", "default")


def probe_aliases(values, modes):
    candidates = {k: v for k, v in values.items()
                  if v is not None and INT.match(v) and modes.get(k, 0) & 0o200 and not is_iface_key(k)}
    groups = {}
    for k, v in candidates.items():
        groups.setdefault(v, []).append(k)
    changes = {}
    for k in sorted(candidates):
        if k.startswith(NO_WRITE_PREFIXES) or any(s in k for s in SKIP_ANY):
            continue
        old = candidates[k]
        if read(k) != old:
            continue  # it moved on its own since the snapshot
        peers = [p for p in groups[old] if p != k and read(p) == old]  # still as snapshotted
        if not peers:
            continue
        wrote = None
        for cand in (str(int(old) + 1), str(int(old) - 1)):
            if write(k, cand) and read(k) == cand:
                wrote = cand
                break
        if wrote is None:
            write(k, old)
            continue
        moved = [p for p in peers if read(p) == wrote]
        write(k, old)
        for p in moved:
            if read(p) != old:
                write(p, old)
        if moved:
            changes[k] = moved
    return changes


def main():
    started = time.monotonic()
    doc = {"uname": os.uname().release, "argv": sys.argv[1:]}
    with open("/proc/cmdline") as f:
        doc["cmdline"] = f.read().strip()
    doc["nproc"] = os.cpu_count()
    with open("/proc/meminfo") as f:
        doc["memtotal_kb"] = int(f.readline().split()[1])
    with open("/proc/modules") as f:
        doc["modules_at_start"] = sorted(line.split()[0] for line in f)
    doc["builtin"], doc["builtin_modes"] = read_all()
    if "--dump" in sys.argv:  # a normal boot's /proc/sys as userland left it (tools/gen_kernel_keys.py agree)
        return _send(doc, started)
    wanted = []
    listing = "/etc/sdkeys/modules." + doc["uname"]
    if os.path.exists(listing):
        with open(listing) as f:
            wanted = [line.strip() for line in f if line.strip()]
    failed = {}
    for mod in wanted:
        try:
            r = subprocess.run(["modprobe", "-q", mod], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                failed[mod] = (r.stderr or "").strip()[-200:] or f"rc {r.returncode}"
        except subprocess.TimeoutExpired:
            failed[mod] = "timeout"
    doc["modprobe_failed"] = failed
    with open("/proc/modules") as f:
        doc["modules_loaded"] = sorted(line.split()[0] for line in f)
    doc["all"], doc["all_modes"] = read_all()
    if "--aliases" in sys.argv or "sdkeys.aliases=1" in doc["cmdline"].split():
        doc["alias_changes"] = probe_aliases(doc["all"], doc["all_modes"])
    _send(doc, started)


def _send(doc, started):
    doc["seconds"] = round(time.monotonic() - started, 1)
    blob = base64.b64encode(gzip.compress(json.dumps(doc, sort_keys=True).encode())).decode()
    with open(OUT, "w") as out:
        out.write("KKDATA-BEGIN\n")
        for i in range(0, len(blob), 76):
            out.write(blob[i:i + 76] + "\n")
        out.write("KKDATA-END\n")
        out.flush()
        os.fsync(out.fileno())


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # PID 1 must never just die silently
        with open(OUT, "w") as out:
            out.write(f"KKERROR {type(exc).__name__}: {exc}\n")
    finally:
        os.sync()
        if "--dump" in sys.argv:
            subprocess.run(["systemctl", "poweroff", "--no-block"])
        else:
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("o")
            time.sleep(30)
