"""Build (or load from the cache) the `IndexData` of one kernel build in a root."""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, Dict, List, Optional, Tuple

from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.kernel import cache
from sysctl_doctor.kernel.model import MODE_ELF, MODE_METADATA, MODE_NONE, IndexData, ModuleScan
from sysctl_doctor.kernel.modules_tree import MODULE_SUFFIXES, module_name, read_modules_metadata
from sysctl_doctor.root import PathKind, Root

Progress = Callable[[int, int], None]
POOL_THRESHOLD = 64  # fewer module files than this: scan in-process


def list_module_files(root: Root, moddir: str) -> Tuple[List[Tuple[str, str]], List[Diagnostic]]:
    """(host path, path relative to the modules dir) of every module file; odd "*.ko.*" files as diagnostics."""
    base = root.chase(moddir).host
    out: List[Tuple[str, str]] = []
    diags: List[Diagnostic] = []

    def denied(exc: OSError) -> None:
        if exc.errno in (errno.EACCES, errno.EPERM):
            root.note_unreadable(f"{moddir}/{os.path.relpath(exc.filename or base, base)}",
                                 f"cannot list: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(base, followlinks=False, onerror=denied):
        dirnames.sort()
        for fname in sorted(filenames):
            if not (fname.endswith(".ko") or ".ko." in fname):
                continue
            host = os.path.join(dirpath, fname)
            rel = os.path.relpath(host, base)
            if fname.endswith(MODULE_SUFFIXES):
                if os.path.islink(host):
                    # e.g. updates/dkms/x.ko -> /var/lib/dkms/...: follow it inside the root only
                    try:
                        chased = root.chase(f"{moddir}/{rel}")
                    except DoctorError as exc:  # a symlink loop
                        diags.append(Diagnostic(f"module link: {exc}", f"{moddir}/{rel}"))
                        continue
                    if chased.kind is PathKind.FILE:
                        out.append((str(chased.host), rel))
                    else:
                        diags.append(Diagnostic(f"module link leads nowhere inside the root ({chased.resolved})", f"{moddir}/{rel}"))
                elif not stat.S_ISREG(os.lstat(host).st_mode):  # a FIFO would block the scanner forever
                    diags.append(Diagnostic("not a regular file (FIFO, socket or device): skipped", f"{moddir}/{rel}"))
                else:
                    out.append((host, rel))
            else:
                diags.append(Diagnostic("unknown module compression (not .ko, .ko.xz, .ko.zst, .ko.gz): skipped", f"{moddir}/{rel}"))
    return out, diags


def _run_scans(jobs: List[Tuple[str, str, str, bool]], progress: Optional[Progress]) -> List[dict]:
    results: List[dict] = []
    total = len(jobs)
    if progress:
        progress(0, total)
    workers = min(os.cpu_count() or 1, 8)
    if total < POOL_THRESHOLD or workers < 2:
        return _run_serial(jobs, progress)
    chunk = max(1, min(32, total // (workers * 8)))
    # Imported here: multiprocessing costs 20-25 ms at start-up, and a warm `check` never scans.
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # Largest files first (longest-processing-time order): the workers finish together instead of one
    # waiting on the other's last chunk of big modules (6.12 .ko.xz cold: ~0.08 s of ~3 s). Results go back
    # in the listing's order, so the index does not depend on the schedule.
    order = sorted(range(total), key=lambda i: -_size(jobs[i][0]))
    by_job: List[Optional[dict]] = [None] * total
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = 0
            for i, res in zip(order, pool.map(_scan_star, [jobs[i] for i in order], chunksize=chunk)):
                done += 1
                by_job[i] = res
                if progress and (done % 25 == 0 or done == total):
                    progress(done, total)
        results.extend(res for res in by_job if res is not None)
        return results
    except (OSError, NotImplementedError, BrokenProcessPool):
        # No usable process pool here (no /dev/shm, seccomp, a worker killed): scan in-process.
        return _run_serial(jobs, progress)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # reported by the scan that cannot read it


def _run_serial(jobs: List[Tuple[str, str, str, bool]], progress: Optional[Progress]) -> List[dict]:
    from sysctl_doctor.kernel.elf_scan import scan_module_file

    results: List[dict] = []
    for i, job in enumerate(jobs, 1):
        res = scan_module_file(*job)
        if res is not None:
            results.append(res)
        if progress:
            progress(i, len(jobs))
    return results


def _scan_star(job: Tuple[str, str, str, bool]) -> Optional[dict]:
    from sysctl_doctor.kernel.elf_scan import scan_module_file  # lazy: lzma and the ELF tables

    return scan_module_file(*job)


def build_index_data(
    root: Root, kver: str, moddir: Optional[str], progress: Optional[Progress] = None, use_cache: bool = True
) -> Tuple[IndexData, bool]:
    """(data, came_from_cache). Never writes into the root; the cache lives in the user's cache dir."""
    if moddir is None:
        return IndexData(kernel=kver, mode=MODE_NONE, partial=True), False
    key = cache.cache_key(root, kver, moddir)
    if use_cache:
        cached = cache.load(key)
        if cached is not None:
            return cached, True
    meta = read_modules_metadata(root, moddir)
    diags = list(meta.diagnostics)
    files, odd = list_module_files(root, moddir)
    diags.extend(odd)
    data = IndexData(
        kernel=kver,
        mode=MODE_ELF if files else MODE_METADATA,
        files=dict(meta.files),
        deps=dict(meta.deps),
        builtin=dict(meta.builtin),
        softdep_pre=dict(meta.softdep_pre),
        aliases=[(a, m) for a, m in meta.aliases if ":" not in a],
        diagnostics=diags,
        partial=bool(odd),
    )
    if not files:
        if meta.files:
            diags.append(Diagnostic("no module files (metadata only): module keys come from the curated table", moddir))
        data.partial = True
    need_modinfo = not meta.has_dep
    if not meta.has_dep:
        data.partial = True
    jobs = [(host, rel, module_name(rel), need_modinfo) for host, rel in files]
    results = [ModuleScan.from_json(r) for r in _run_scans(jobs, progress)]
    data.scanned = len(files)
    scans: Dict[str, ModuleScan] = {}
    for scan in results:
        if scan.error:
            diags.append(Diagnostic(f"module {scan.name}: {scan.error}", f"{moddir}/{scan.file}"))
            data.partial = True
        if need_modinfo:
            data.files.setdefault(scan.name, scan.file)
            data.deps.setdefault(scan.name, list(scan.depends))
            if scan.softdep_pre:
                data.softdep_pre.setdefault(scan.name, []).extend(scan.softdep_pre)
            data.aliases.extend((a, scan.name) for a in scan.aliases if ":" not in a)
        if scan.entries or scan.error or scan.loose_names:
            scans[scan.name] = scan
    if need_modinfo:
        # modinfo depends= lists direct dependencies; modules.dep holds the closure.
        data.deps = _closure(data.deps)
    for host, rel in files:
        data.files.setdefault(module_name(rel), rel)
    data.scans = scans
    if use_cache:
        cache.store(key, data)
    return data, False


def _closure(direct: Dict[str, List[str]]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for mod in direct:
        seen: List[str] = []
        todo = list(direct.get(mod, []))
        while todo:
            dep = todo.pop(0)
            if dep in seen or dep == mod:
                continue
            seen.append(dep)
            todo.extend(direct.get(dep, []))
        out[mod] = seen
    return out
