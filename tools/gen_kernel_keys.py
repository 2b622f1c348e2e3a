#!/usr/bin/env python3
"""Regenerate, or check, src/sysctl_doctor/data/kernel_keys/<series>.json.gz from real boots under qemu.

    .venv/bin/python tools/gen_kernel_keys.py boot [SERIES…]   boot each kernel twice, keep the raw reports
    .venv/bin/python tools/gen_kernel_keys.py build [SERIES…]  write the data files from the raw reports
    .venv/bin/python tools/gen_kernel_keys.py --check          are the data files whole and from the pinned kernels?
    .venv/bin/python tools/gen_kernel_keys.py agree [SERIES…]  boot each kernel normally: predictions vs /proc/sys

`boot` uses the slow tier's matrix root (tests/slow/matrix_root.py: bookworm userland with Debian's 5.10,
6.1 and 6.12 kernels, the pinned packages of tests/kernel_trees.py) and one ext4 image of it with
tools/kernel_keys_guest.py as `init=` (PID 1: nothing writes /proc/sys before it reads). Each series boots
twice under `qemu -accel tcg`: 1 GiB/1 CPU (with the alias probe) and 2 GiB/2 CPUs; the guest reads every
/proc/sys value with no module loaded, then modprobes every module whose ELF sysctl tables the project
finds in that kernel tree and reads again. Raw reports go to $SYSCTL_DOCTOR_TEST_CACHE/kernel-keys/.
Slow (about 2-6 minutes a boot under TCG) and opt-in: never part of the default test tier.

`build` turns the raw reports into the shipped data: every key with its default (the value at the
first read, or after its module loaded), the module that registers it (ELF owner), flags (ro: not
writable, wo: not readable, sized: differs between the two boots, i.e. computed from RAM/CPUs; the
formula from the kernel source where known; hw: a key of data/known_keys that no boot showed, the
module registers it only with a device the guest lacks; state: read-only and different on each boot, no
value kept) and the aliases: keys that each changed the
other when written in the guest (built-in and module tables), merged with module keys whose ctl_table
entries' `.data` relocations point at one symbol + offset in the .ko (elf_aliases).

`--check` (no network, no boot): each data file parses, names the package data/known_keys/<series>.tsv
is pinned to, and holds every key that list gives its modules. Exit 0 current, 1 drift, 2 error.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from sysctl_doctor.kernel import kernel_keys, known_keys  # noqa: E402
from sysctl_doctor.verify.reporter import after_boot_unit  # noqa: E402

OUT_DIR = REPO / "src/sysctl_doctor/data/kernel_keys"
KNOWN_DIR = REPO / "src/sysctl_doctor/data/known_keys"
SERIES = ("5.10", "6.1", "6.12")
GUEST_SCRIPT = "usr/local/sbin/sdkeys"
# (name, memory MiB, CPUs, probe aliases)
BOOTS = (("small", 1024, 1, True), ("large", 2048, 2, False))
TIMEOUT = float(os.environ.get("SYSCTL_DOCTOR_BOOT_TIMEOUT", "1500"))


def raw_dir() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "kernel-keys"


def _module_index(root: Path, kver: str):
    from sysctl_doctor.kernel.index import load_module_index
    from sysctl_doctor.root import Root

    return load_module_index(Root(root), kver)


def sysctl_modules(root: Path, kver: str) -> List[str]:
    """Every module of the tree whose ELF holds a sysctl table (tied to a directory or not)."""
    index = _module_index(root, kver)
    return sorted(name for name, scan in index.data.scans.items()
                  if scan.error is None and (scan.entries or scan.loose_names))


def _boot(base, image: Path, logdir: Path, memory: int, cpus: int, aliases: bool,
          init: bool = True) -> Tuple[float, Optional[dict]]:
    """One qemu boot with the project's harness (sysctl_doctor.verify.qemu: TCG, serial 1 = the probe);
    the image is opened with -snapshot, so every boot starts from it as built."""
    from slow.real_boot import boot_files_of
    from sysctl_doctor.verify.qemu import QEMU, qemu_command, require, run_qemu

    logdir.mkdir(parents=True, exist_ok=True)
    console, probe = logdir / "console.log", logdir / "probe.log"
    for log in (console, probe):
        if log.exists():
            log.unlink()
    extra = (f"init=/{GUEST_SCRIPT}" if init else "") + (" sdkeys.aliases=1" if aliases else "")
    cmd = qemu_command(boot_files_of(base), image, console, probe, "tcg", extra.strip(), memory, require(QEMU))
    cmd[cmd.index("-smp") + 1] = str(cpus)
    cmd.insert(cmd.index("-drive"), "-snapshot")
    _code, seconds = run_qemu(cmd, TIMEOUT, logdir / "qemu.stderr")
    lines = [ln.rstrip("\r") for ln in probe.read_text(errors="replace").splitlines()] if probe.exists() else []
    if "KKDATA-BEGIN" not in lines or "KKDATA-END" not in lines:
        return seconds, None
    body = lines[lines.index("KKDATA-BEGIN") + 1:lines.index("KKDATA-END")]
    return seconds, json.loads(gzip.decompress(base64.b64decode("".join(body))))


def boot(series_list: List[str], only: Tuple[str, ...] = ()) -> int:
    from slow.base_root import cache_dir
    from slow.matrix_root import ensure_matrix_root
    from slow.real_boot import _write, build_image

    bases = ensure_matrix_root()
    work = Path(tempfile.mkdtemp(prefix="kernel-keys-", dir=cache_dir()))
    out = raw_dir()
    out.mkdir(parents=True, exist_ok=True)
    try:
        root = work / "root"
        root.mkdir()
        first = next(iter(bases.values()))
        subprocess.run(["cp", "-a", "--reflink=auto", f"{first.path}/.", str(root)], check=True)
        _write(root, GUEST_SCRIPT, (REPO / "tools/kernel_keys_guest.py").read_text(), 0o755)
        for series in series_list:
            kver = bases[series].kernel
            mods = sysctl_modules(first.path, kver)
            _write(root, f"etc/sdkeys/modules.{kver}", "".join(m + "\n" for m in mods))
            print(f"{series}: {kver}: {len(mods)} modules with sysctl tables", flush=True)
        image = work / "disk.img"
        build_image(root, image)
        shutil.rmtree(root)
        for series in series_list:
            for name, memory, cpus, aliases in BOOTS:
                if only and name not in only:
                    continue
                seconds, doc = _boot(bases[series], image, cache_dir() / "logs" / f"kernel-keys-{series}-{name}",
                                     memory, cpus, aliases)
                if doc is None:
                    print(f"{series} {name}: no report after {seconds:.0f}s (see logs)", file=sys.stderr)
                    return 2
                doc["boot"] = {"memory_mb": memory, "cpus": cpus, "seconds": round(seconds, 1)}
                path = out / f"{series}-{name}.json.gz"
                path.write_bytes(gzip.compress(json.dumps(doc, sort_keys=True).encode()))
                print(f"{series} {name}: qemu {seconds:.0f}s, guest {doc['seconds']}s, "
                      f"{len(doc['builtin'])} keys before modules, {len(doc['all'])} after, "
                      f"{len(doc['modprobe_failed'])} modprobe failures -> {path}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


AGREE_UNIT = after_boot_unit("sysctl-doctor: dump /proc/sys once boot has settled (tools/gen_kernel_keys.py agree)",
                             "/usr/local/sbin/sdkeys --dump", exec_start_pre="/bin/sleep 5")


# Keys systemd (PID 1, src/core/main.c, 252) writes itself at start, before any unit: not sysctl.d, so
# not in check's predictions. Counted apart in the agreement figures.
SYSTEMD_PID1_WRITES = {
    "net.unix.max_dgram_qlen": "bump_unix_max_dgram_qlen(): at least 512",
    "kernel.ctrl-alt-del": "reboot(RB_DISABLE_CAD): Ctrl-Alt-Del becomes SIGINT to PID 1 (0)",
    "kernel.printk_devkmsg": "disable_printk_ratelimit(): 'on' unless printk.devkmsg= is on the command line",
    "kernel.hostname": "hostname_setup(): /etc/hostname",
}


def _normal(value: Optional[str]) -> Optional[str]:
    return None if value is None else " ".join(value.split())


def agree(series_list: List[str]) -> int:
    results = agreement(series_list)
    if results is None:
        return 2
    return 0 if all(r["configured"][0] == r["configured"][1] for r in results.values()) else 1


def agreement(series_list: List[str]) -> Optional[Dict[str, dict]]:
    """Boot the matrix root normally (systemd, its own sysctl.d) once per kernel and compare every key's
    predicted value after boot (check's prediction for configured keys, the shipped default for the rest)
    with the guest's /proc/sys. Prints the figures and each disagreement."""
    from slow.base_root import cache_dir
    from slow.matrix_root import ensure_matrix_root
    from slow.real_boot import _symlink, _write, build_image

    bases = ensure_matrix_root()
    work = Path(tempfile.mkdtemp(prefix="kernel-keys-agree-", dir=cache_dir()))
    results: Dict[str, dict] = {}
    try:
        root = work / "root"
        root.mkdir()
        first = next(iter(bases.values()))
        subprocess.run(["cp", "-a", "--reflink=auto", f"{first.path}/.", str(root)], check=True)
        predictions: Dict[str, dict] = {}
        for series in series_list:
            proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--kernel",
                                   bases[series].kernel, "--format", "json"], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            if proc.returncode not in (0, 1):
                print(f"{series}: check failed: {proc.stderr}", file=sys.stderr)
                return None
            predictions[series] = {k["key"]: k for k in json.loads(proc.stdout)["keys"]}
        _write(root, GUEST_SCRIPT, (REPO / "tools/kernel_keys_guest.py").read_text(), 0o755)
        _write(root, "etc/systemd/system/sdkeys.service", AGREE_UNIT)
        _symlink(root, "etc/systemd/system/multi-user.target.wants/sdkeys.service", "/etc/systemd/system/sdkeys.service")
        image = work / "disk.img"
        build_image(root, image)
        shutil.rmtree(root)
        for series in series_list:
            seconds, doc = _boot(bases[series], image, cache_dir() / "logs" / f"kernel-keys-agree-{series}",
                                 1024, 1, False, init=False)
            if doc is None:
                print(f"{series}: no report after {seconds:.0f}s (see logs)", file=sys.stderr)
                return None
            results[series] = _report_agreement(series, doc, predictions[series], seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _report_agreement(series: str, doc: dict, predicted: Dict[str, dict], seconds: float) -> dict:
    from sysctl_doctor.config.model import path_to_key

    data = kernel_keys.for_kernel(doc["uname"])
    assert data is not None
    observed = doc["builtin"]
    rows = {"configured": [0, 0], "default": [0, 0]}
    misses: List[str] = []
    pid1: List[str] = []
    no_default = 0
    for path, value in sorted(observed.items()):
        key = path_to_key(path)
        info = data.keys.get(path)
        if key in predicted:
            want = predicted[key]["boot"]["value"]
            kind = "configured"
        elif info is not None and info.constant is not None and not info.read_only:
            want = info.constant
            kind = "default"
        else:
            no_default += 1
            continue
        rows[kind][0] += 1
        if _normal(want) == _normal(value):
            rows[kind][1] += 1
        elif kind == "default" and key in SYSTEMD_PID1_WRITES:
            pid1.append(f"  systemd PID 1: {key}: default {want!r}, the boot shows {value!r} "
                        f"({SYSTEMD_PID1_WRITES[key]})")
        else:
            misses.append(f"  {kind}: {key}: predicted {want!r}, the boot shows {value!r}")
    print(f"{series} ({doc['uname']}, qemu {seconds:.0f}s, {len(observed)} keys in /proc/sys, "
          f"{len(doc['modules_at_start'])} modules loaded): "
          f"defaults {rows['default'][1]}/{rows['default'][0]} agree, "
          f"{len(pid1)} more written by systemd PID 1, "
          f"configured {rows['configured'][1]}/{rows['configured'][0]} agree, "
          f"{no_default} without a constant default (read-only, sized, state or unknown)")
    for line in pid1 + misses:
        print(line)
    return {**rows, "pid1": pid1, "misses": misses, "no_default": no_default, "keys": len(observed)}


def _load_raw(series: str, name: str) -> dict:
    return json.loads(gzip.decompress((raw_dir() / f"{series}-{name}.json.gz").read_bytes()))


# Pairs the probe sees change each other in a TCG guest that are not one variable (kernel source):
# kernel.watchdog is the OR of soft_watchdog and nmi_watchdog (kernel/watchdog.c watchdog_enabled bits);
# without an NMI watchdog (no PMU under TCG) writing either looks like writing both.
NOT_ALIASES = (frozenset({"kernel/watchdog", "kernel/soft_watchdog"}),)


def _merge_groups(groups: List[List[str]]) -> List[List[str]]:
    """Groups that share a key are one group (one variable)."""
    out: List[set] = []
    for g in groups:
        joined = set(g)
        for other in [o for o in out if o & joined]:
            joined |= other
            out.remove(other)
        out.append(joined)
    return sorted(sorted(g) for g in out)


def _aliases(changes: Dict[str, List[str]]) -> List[List[str]]:
    """Keys that each changed the other when written, grouped (union of symmetric pairs)."""
    pairs = {(a, b) for a, moved in changes.items() for b in moved if a in changes.get(b, ())
             and frozenset({a, b}) not in NOT_ALIASES}
    parent: Dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: Dict[str, List[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def _device_key(path: str) -> bool:
    """A key of one network device other than all/default/lo (tunnel fallback devices that modules
    create: tunl0, sit0, gre0, ...): an interface's key, not a kernel default worth shipping."""
    parts = path.split("/")
    return (len(parts) >= 4 and parts[0] == "net" and parts[2] in ("conf", "neigh")
            and parts[3] not in ("all", "default", "lo"))


OFF_DATA = 8  # struct ctl_table: procname at +0, data at +8 (every layout of elf_scan.LAYOUTS)


def elf_aliases(root: Path, kver: str) -> List[List[str]]:
    """Module keys that are one variable: ctl_table entries of one module file whose `.data` relocation
    points at the same symbol + offset (e.g. nf_conntrack's net/nf_conntrack_max and
    net/netfilter/nf_conntrack_max both at nf_conntrack_max). Entries without a static `.data` (filled in
    per network namespace at run time) say nothing. Each entry's procname is mapped to the module's keys
    with that last component."""
    from sysctl_doctor.kernel import elf_scan

    index = _module_index(root, kver)
    moddir = next(d for d in (root / "usr/lib/modules" / kver, root / "lib/modules" / kver) if d.is_dir())
    groups: List[List[str]] = []
    for name, scan in sorted(index.data.scans.items()):
        if scan.error is not None or not scan.entries:
            continue
        elf = elf_scan.Elf(elf_scan.decompress((moddir / index.data.files[name]).read_bytes(), index.data.files[name]))
        sc = elf_scan._Scanner(elf)
        data_relocs: Dict[int, Dict[int, Tuple[int, int]]] = {}
        for rela in elf.sections:
            if rela.type == elf_scan.SHT_RELA and rela.info < sc.nsec and \
                    not elf.sections[rela.info].flags & elf_scan.SHF_EXECINSTR:
                m = data_relocs.setdefault(rela.info, {})
                for off, sym, add in elf.relocations(rela):
                    m[off] = (sym, add)
        stringy = sc.string_symbols()
        candidates = {sec: [off for off, (sym, _a) in m.items() if sym in stringy] for sec, m in data_relocs.items()}
        by_leaf: Dict[str, List[str]] = {}
        for entry in scan.entries:
            by_leaf.setdefault(entry.path.rsplit("/", 1)[-1], []).append(entry.path)
        best: Dict[object, set] = {}
        for layout in elf_scan.LAYOUTS:
            targets: Dict[object, set] = {}
            for (sec, off), (procname, child) in elf_scan._entries(elf, sc, data_relocs, candidates, layout).items():
                reloc = data_relocs[sec].get(off + OFF_DATA)
                if child is not None or reloc is None or procname not in by_leaf:
                    continue
                tgt = sc.target(*reloc)
                if tgt is not None:
                    targets.setdefault(tgt, set()).add(procname)
            if sum(len(v) for v in targets.values()) > sum(len(v) for v in best.values()):
                best = targets
        # one target, two entries: either two leaves, or one leaf registered under two directories
        for procnames in best.values():
            paths = sorted({p for leaf in procnames for p in by_leaf[leaf]})
            if len(paths) > 1:
                groups.append(paths)
    return sorted(groups)


def build(series_list: List[str]) -> int:
    from slow.matrix_root import ensure_matrix_root

    bases = ensure_matrix_root()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for series in series_list:
        small, large = _load_raw(series, "small"), _load_raw(series, "large")
        kver = small["uname"]
        index = _module_index(bases[series].path, kver)
        owner = {e.path: name for name, scan in index.data.scans.items() for e in scan.entries}
        committed = known_keys.parse((KNOWN_DIR / f"{series}.tsv").read_text(encoding="utf-8"), f"{series}.tsv")
        for module, keys in committed.by_module.items():
            for key in keys:
                owner.setdefault(key, module)
        keys: Dict[str, list] = {}
        for boot_doc, phase in ((small, "builtin"), (small, "all"), (large, "builtin"), (large, "all")):
            values, modes = boot_doc[phase], boot_doc[phase + "_modes"]
            for path in sorted(values):
                if path in keys or _device_key(path):
                    continue
                flags = []
                mode = modes.get(path, 0)
                if not mode & 0o222:
                    flags.append("ro")
                if values[path] is None:
                    flags.append("wo")
                other = (large if boot_doc is small else small)[phase]
                if path not in other:
                    flags.append("sized")  # exists with one machine size only (per-CPU entries)
                elif values[path] is not None and other[path] != values[path] and "ro" not in flags:
                    flags.append("sized")
                elif values[path] is not None and other[path] != values[path]:
                    flags.append("state")  # read-only and different on every boot (uuid, entropy, counts)
                value = None if "state" in flags else values[path]
                module = owner.get(path, "")
                if phase == "all" and not module:
                    module = "?"  # appeared when the modules loaded; no table names it
                keys[path] = [value, module, ",".join(flags)]
        # Keys the module files register that no boot showed: the module registers them only for a device
        # the guest lacks (sg's kernel.sg-big-buff) or did not load (hv_vmbus off Hyper-V). They exist, with
        # no default known here.
        for module, names in committed.by_module.items():
            for path in names:
                keys.setdefault(path, [None, module, "hw"])
        sized = {p: [small["all"].get(p), large["all"].get(p)] for p, row in keys.items()
                 if "sized" in row[2] and "ro" not in row[2]}
        doc = {
            "format": kernel_keys.FORMAT,
            "series": series,
            "kernel": kver,
            "source": committed.source,
            "generated_by": "tools/gen_kernel_keys.py (qemu boots, init= probe, no userland writes)",
            "boots": [{"memory_mb": d["boot"]["memory_mb"], "cpus": d["boot"]["cpus"],
                       "memtotal_kb": d["memtotal_kb"]} for d in (small, large)],
            "modules_at_start": small["modules_at_start"],
            "modprobe_failed": small["modprobe_failed"],
            "keys": keys,
            "sized_values": sized,
        }
        probed = _aliases(small.get("alias_changes", {}))
        from_elf = [g for g in elf_aliases(bases[series].path, kver) if all(k in keys for k in g)]
        merged = _merge_groups(probed + from_elf)
        doc["aliases"] = merged
        doc["alias_evidence"] = [sorted({"probe" for g in probed if set(g) & set(m)}
                                        | {"elf" for g in from_elf if set(g) & set(m)}) for m in merged]
        path = OUT_DIR / f"{series}.json.gz"
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        path.write_bytes(gzip.compress(data, mtime=0))
        one_way = sorted((a, b) for a, moved in small.get("alias_changes", {}).items() for b in moved
                         if a not in small["alias_changes"].get(b, ()))
        print(f"{series}: {kver}: {len(keys)} keys ({sum(1 for r in keys.values() if not r[1])} built in), "
              f"{len(sized)} sized, {len(doc['aliases'])} alias groups "
              f"({len(probed)} by probing, {len(from_elf)} from module ELF tables), {len(one_way)} one-way changes; "
              f"{path.stat().st_size} bytes")
        for a, b in one_way:
            print(f"  one-way: writing {a} changed {b}")
    return 0


def check(series_list: List[str]) -> int:
    drift = 0
    for series in series_list or list(SERIES):
        path = OUT_DIR / f"{series}.json.gz"
        try:
            data = kernel_keys.parse(path.read_bytes(), path.name)
        except (OSError, ValueError) as exc:
            print(f"{series}: {exc}")
            drift = 1
            continue
        committed = known_keys.parse((KNOWN_DIR / f"{series}.tsv").read_text(encoding="utf-8"), f"{series}.tsv")
        problems = []
        if committed.kernel and committed.kernel != data.kernel:
            problems.append(f"booted {data.kernel}, data/known_keys/{series}.tsv is from {committed.kernel}")
        if committed.source != data.source:
            problems.append(f"source {data.source!r} != known_keys' {committed.source!r}")
        missing = sorted(committed.all_keys() - data.keys.keys())
        if missing:
            problems.append(f"{len(missing)} module keys of known_keys/{series}.tsv absent from the boot: "
                            + ", ".join(missing[:5]))
        if problems:
            drift = 1
            print(f"{series}: drift: " + "; ".join(problems))
            print(f"  regenerate: tools/gen_kernel_keys.py boot {series} && tools/gen_kernel_keys.py build {series}")
        else:
            print(f"{series}: current ({data.kernel}, {len(data.keys)} keys, {len(data.aliases)} alias groups)")
    return drift


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--check", action="store_true", help="check the data files, write nothing")
    ap.add_argument("step", nargs="?", choices=("boot", "build", "agree"))
    ap.add_argument("series", nargs="*")
    ap.add_argument("--only", action="append", default=[], choices=[b[0] for b in BOOTS],
                    help="boot only this configuration (repeatable): small (with the alias probe) or large")
    args = ap.parse_intermixed_args(argv)
    series = args.series or list(SERIES)
    if args.check:
        return check(args.series)
    if args.step == "boot":
        return boot(series, tuple(args.only))
    if args.step == "build":
        return build(series)
    if args.step == "agree":
        return agree(series)
    ap.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
