"""Read sysctl.d exactly as systemd-sysctl 252 or procps-ng 4.0.2 `sysctl --system` does.

The two flavours differ in many small ways; each rule below names the
behaviour it reproduces (checked by tests/config against the real programs):

systemd-sysctl 252 (src/sysctl/sysctl.c, src/basic/conf-files.c, fileio.c read_line):
- directories /etc, /run, /usr/local/lib, /usr/lib ``/sysctl.d`` (this is a
  merged-/usr build: no /lib/sysctl.d); directories are resolved and
  de-duplicated; the first directory holding a file name wins; hidden
  (``.x.conf``) and backup names are skipped; the winners are sorted by file
  name (bytes) across directories. A winner linked to /dev/null reads as empty,
  which is how a mask works. /etc/sysctl.conf is never read by itself.
- lines end at ``\\n``, ``\\r``, ``\\r\\n``, ``\\0`` (and combinations); a line of
  1 MiB or more stops the file. Whitespace is `` \\t\\r\\n``; ``#`` and ``;`` start
  comments; the key is split at the first ``=``; ``-key = v`` ignores failures;
  ``-key`` alone excludes the key from globs. Keys are normalised: if the first
  separator is a dot, dots and slashes swap; then the path is simplified.
- one ordered map key -> value: a repeated key with the same value stays
  where it is; a different value replaces it and moves to the end. A glob is
  expanded at apply time and skips keys that have their own entry (value or
  exclusion).

procps-ng 4.0.2 (src/sysctl.c PreloadSystem, Preload, parse_setting_line, write_setting_list):
- directories /etc, /run, /usr/local/lib, /usr/lib, /lib ``/sysctl.d``; the
  first directory with a name wins (hidden files included); sorted by name;
  then /etc/sysctl.conf last when it is a regular file.
- lines end at ``\\n`` only (a NUL ends the text); lines shorter than 2 bytes are
  skipped; ``#``/``;`` comments; whitespace is C isspace; an empty value is
  written as is; every assignment is written, in order (duplicates too); a
  glob skips paths that any line names exactly. procps also globs each file
  name (``x{a,b}.conf`` reads ``xa.conf``).

Line parsing lives in `sysctl_lines`, glob matching in `sysctl_glob`; this module
finds the files, applies the lines in order and computes the writes.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from sysctl_doctor.config.model import (
    MASKED,
    RUNTIME_ONLY,
    SHADOWED,
    ConfigLine,
    EffectiveSetting,
    Flavor,
    IgnoredFile,
    KeyTree,
    Origin,
    OverriddenLine,
    SysctlAssignment,
    SysctlConfig,
    SysctlExclusion,
    is_glob,
    path_to_key,
    swap_separators,
)
from sysctl_doctor.config.sysctl_glob import (
    BRACE_ALTERNATIVES_MAX,
    _component_regex,
    _sort_key,
    GlobIndex,
    expand_braces,
    glob_matches,
    glob_matches_path,
    normalized_alternatives,
)
from sysctl_doctor.config.sysctl_lines import LONG_LINE_MAX, ParsedLine, parse_sysctl_bytes
from sysctl_doctor.errors import Diagnostic, DoctorError
from sysctl_doctor.root import PathKind, Root, SymlinkLoop

SYSTEMD_DIRS: Tuple[str, ...] = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
PROCPS_DIRS: Tuple[str, ...] = SYSTEMD_DIRS + ("/lib/sysctl.d",)
SYSCTL_CONF = "/etc/sysctl.conf"
DEBIAN_SYSCTL_CONF_LINK = "/etc/sysctl.d/99-sysctl.conf"
SYSTEMD_MARKERS = (
    "/usr/lib/systemd/system/systemd-sysctl.service",
    "/lib/systemd/system/systemd-sysctl.service",
    "/usr/lib/systemd/systemd-sysctl",
    "/lib/systemd/systemd-sysctl",
)
_BACKUP_SUFFIXES = frozenset(
    "rpmnew rpmsave rpmorig dpkg-old dpkg-new dpkg-tmp dpkg-dist dpkg-bak dpkg-backup dpkg-remove "
    "ucf-new ucf-old ucf-dist swp bak old new".split()
)


# --------------------------------------------------------------------------- keys


def path_simplify(path: str) -> str:
    """systemd's path_simplify(): drop empty and "." components and trailing slashes."""
    if not path:
        return path
    if "//" not in path and not path.endswith("/") and "." not in path:
        return path
    absolute = path.startswith("/")
    parts = [c for c in path.split("/") if c not in ("", ".")]
    body = "/".join(parts)
    if absolute:
        return "/" + body
    return body or "."


def systemd_normalize(key: str) -> str:
    """sysctl_normalize(): swap separators if the first is a dot, simplify, drop a leading slash."""
    if "/" not in key and ".." not in key and key[:1] != "." and key[-1:] != ".":
        return key.replace(".", "/")  # the common dotted key: swapping is all there is to do
    key = path_simplify(swap_separators(key))
    if key.startswith("/") and len(key) > 1:
        key = key[1:]
    return key


def procps_path(key: str) -> str:
    """The path procps opens, relative to /proc/sys (a second leading "-" is dropped)."""
    if key.startswith("-"):
        key = key[1:]
    return swap_separators(key)


def normalize_prefix(prefix: str) -> str:
    """systemd-sysctl --prefix as 252 stores it: sysctl_normalize() (which drops a leading
    slash), then a leading "/proc/sys" removed - which therefore never happens: 252 turns
    ``--prefix=/proc/sys/net`` into "proc/sys/net", a prefix no key has (checked against the
    real program). ``--prefix=/net/...`` and dotted prefixes work."""
    norm = systemd_normalize(prefix)
    rest = _path_startswith(norm, "/proc/sys")
    return rest if rest is not None else norm


def _path_startswith(path: str, prefix: str) -> Optional[str]:
    """systemd path_startswith(): component-wise; an absolute and a relative path never match."""
    if path.startswith("/") != prefix.startswith("/"):
        return None
    pc = [c for c in path.split("/") if c]
    qc = [c for c in prefix.split("/") if c]
    if pc[: len(qc)] != qc:
        return None
    return "/".join(pc[len(qc) :])


def under_prefix(path: str, prefixes: Sequence[str]) -> bool:
    if not prefixes:
        return True
    return any(_path_startswith(path, p) is not None for p in prefixes)


# --------------------------------------------------------------------------- discovery


def default_flavor(root: Root) -> Flavor:
    """systemd when the root has systemd-sysctl (unit or binary), else procps."""
    for marker in SYSTEMD_MARKERS:
        if root.kind(marker) in (PathKind.FILE, PathKind.NULL, PathKind.OTHER):
            return "systemd"
    return "procps"


# What shows that a root boots with systemd even when its systemd-sysctl binary and unit are missing
# (a config-only tree, a partial image).
SYSTEMD_SIGNS = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/etc/systemd/system", "/usr/lib/systemd/system",
                 "/lib/systemd/system")


def systemd_signs(root: Root) -> List[str]:
    """The paths that show a systemd boot: /sbin/init -> systemd, the manager, the unit directories."""
    signs = [p for p in SYSTEMD_SIGNS if root.kind(p) is not PathKind.MISSING]
    if root.kind("/sbin/init") is PathKind.FILE:
        init = root.chase("/sbin/init").resolved
        if "systemd" in init.rsplit("/", 1)[-1]:
            signs.insert(0, f"/sbin/init -> {init}")
    return signs


def boot_flavor(root: Root) -> Flavor:
    """The flavour the root's init applies sysctl.d with (`show`'s default; `check` decides it from the init
    system the boot model detects, the same way): systemd when the root has systemd-sysctl, or shows a systemd
    boot without it and /sbin/init is no other init; else procps."""
    if default_flavor(root) == "systemd":
        return "systemd"
    init = root.chase("/sbin/init").resolved if root.kind("/sbin/init") is PathKind.FILE else None
    if init is not None and "systemd" not in init.rsplit("/", 1)[-1]:
        return "procps"  # sysvinit, OpenRC, busybox: `sysctl --system` or `sysctl -p`
    if root.kind("/sbin/openrc") is PathKind.FILE or root.kind("/etc/runlevels") is PathKind.DIR:
        return "procps"
    return "systemd" if systemd_signs(root) else "procps"


def _hidden_or_backup(name: str) -> bool:
    if name.startswith(".") or name in ("lost+found", "aquota.user", "aquota.group") or name.endswith("~"):
        return True
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :] in _BACKUP_SUFFIXES


def _entries(root: Root, directory: str, diags: List[Diagnostic]) -> List[Tuple[str, PathKind, Optional[str]]]:
    """(name, kind) of each entry of a directory inside the root, sorted by name.

    Plain files and directories take their kind from the directory entry; links are
    resolved inside the root (a link to /dev/null is a mask)."""
    try:
        chased = root.chase(directory)
    except DoctorError as exc:
        diags.append(Diagnostic(f"cannot resolve directory: {exc}", directory))
        return []
    if chased.kind is not PathKind.DIR:
        if chased.kind is not PathKind.MISSING:
            diags.append(Diagnostic("should be a directory of *.conf files but is not; nothing read from it",
                                    directory))
        return []
    try:
        with os.scandir(chased.host) as it:
            entries = list(it)
    except OSError as exc:
        diags.append(Diagnostic(f"cannot list directory: {exc.strerror}", directory))
        if exc.errno in (errno.EACCES, errno.EPERM):
            root.note_unreadable(chased.resolved, f"cannot list: {exc.strerror}")
        return []
    out = []
    for entry in entries:
        kind = None
        host = None
        try:
            if not entry.is_symlink():
                if entry.is_file(follow_symlinks=False):
                    kind = PathKind.FILE
                    host = entry.path
                elif entry.is_dir(follow_symlinks=False):
                    kind = PathKind.DIR
        except OSError:
            kind = None
        if kind is None:
            path = f"{directory.rstrip('/')}/{entry.name}"
            try:
                kind = root.chase(path).kind
            except DoctorError as exc:
                kind = PathKind.MISSING
                diags.append(Diagnostic(f"cannot resolve: {exc}", path))
        out.append((entry.name, kind, host))
    out.sort(key=lambda item: _sort_key(item[0]))
    return out


@dataclass
class _Candidate:
    path: str  # inside the root, as the tool names it
    kind: PathKind
    host: Optional[str] = None  # a plain file (no link) found in a directory the Root resolved


def _discover(root: Root, flavor: Flavor,
              at_boot: bool = False) -> Tuple[List[_Candidate], List[IgnoredFile], List[Diagnostic]]:
    ignored: List[IgnoredFile] = []
    diags: List[Diagnostic] = []
    winners: Dict[str, _Candidate] = {}
    if flavor == "systemd":
        dirs: List[str] = []
        for d in SYSTEMD_DIRS:  # path_strv_resolve_uniq
            try:
                resolved = root.chase(d).resolved
            except DoctorError as exc:
                diags.append(Diagnostic(f"cannot resolve directory: {exc}", d))
                continue
            if resolved not in dirs:
                dirs.append(resolved)
    else:
        # procps opens each directory as named; a directory reached twice (/lib -> usr/lib) only repeats
        # names already seen, which it skips: every file is reported once, for the first directory.
        dirs = []
        seen_dirs: Set[str] = set()
        for d in PROCPS_DIRS:
            try:
                resolved = root.chase(d).resolved
            except DoctorError:
                resolved = d
            if resolved in seen_dirs and root.kind(d) is PathKind.DIR:
                continue
            seen_dirs.add(resolved)
            dirs.append(d)
    for d in dirs:
        if at_boot and root.empty_at_boot(d):
            # an offline root's /run/sysctl.d: /run is an empty tmpfs at boot, so nothing here is read and
            # nothing here hides a file of the same name in a later directory
            for name, kind, _host in _entries(root, d, diags):
                if name.endswith(".conf") and kind is not PathKind.DIR:
                    ignored.append(IgnoredFile(
                        f"{d.rstrip('/')}/{name}",
                        "runtime-only: /run is an empty tmpfs at boot, so a file left in the image's /run is "
                        "never read", RUNTIME_ONLY))
            continue
        for name, kind, host in _entries(root, d, diags):
            path = f"{d.rstrip('/')}/{name}"
            if flavor == "systemd":
                if not name.endswith(".conf"):
                    if kind is not PathKind.DIR:
                        ignored.append(IgnoredFile(path, "name does not end in .conf"))
                    continue
                if _hidden_or_backup(name):
                    ignored.append(IgnoredFile(path, "hidden or backup file name: systemd-sysctl skips it"))
                    continue
            else:
                if len(name) < 5 or not name.endswith(".conf"):
                    if kind is not PathKind.DIR:
                        ignored.append(IgnoredFile(path, "name does not end in .conf"))
                    continue
            if name in winners:
                winner = winners[name]
                if _same_file(root, winner.path, path):
                    continue  # the same directory seen twice (/lib -> usr/lib)
                if winner.kind is PathKind.NULL:
                    reason, why = f"masked by {winner.path} -> /dev/null", MASKED
                else:
                    reason, why = f"overridden by {winner.path} (same file name, earlier directory)", SHADOWED
                ignored.append(IgnoredFile(path, reason, why, winner.path))
                continue
            winners[name] = _Candidate(path, kind, host)
    if flavor == "systemd":
        lib = root.chase("/lib/sysctl.d") if root.kind("/lib/sysctl.d") is PathKind.DIR else None
        if lib is not None and lib.resolved not in dirs:
            for name in root.listdir("/lib/sysctl.d"):
                if name.endswith(".conf"):
                    ignored.append(IgnoredFile(
                        f"/lib/sysctl.d/{name}",
                        "systemd-sysctl 252 (merged-/usr build, Debian 12) does not read /lib/sysctl.d"))
    ordered = [winners[name] for name in sorted(winners, key=_sort_key)]
    return ordered, ignored, diags


# --------------------------------------------------------------------------- loading


def _is_symlink_loop(root: Root, path: str) -> bool:
    """Whether `path` (which did not resolve to anything) fails because its links go round in a loop."""
    try:
        root.chase(path)
    except SymlinkLoop:
        return True
    except DoctorError:
        return False
    return False


def load_sysctl_config(root: Root, flavor: Flavor, at_boot: bool = False) -> SysctlConfig:
    """Every file and line the flavour reads from `root`, with what each line does.

    `at_boot`: read as the next boot does: in an offline root /run/sysctl.d is an empty tmpfs then
    (`Root.empty_at_boot`), so its files are reported as runtime-only and take no part. Without it the
    files are read as the program would read them now (`show`, the oracle tests)."""
    if flavor not in ("systemd", "procps"):
        raise DoctorError(f"unknown flavour {flavor!r} (systemd or procps)")
    candidates, ignored, diagnostics = _discover(root, flavor, at_boot)
    read_paths: List[str] = []
    sources: List[Tuple[str, bytes]] = []

    opened: List[str] = []

    def read(cand: _Candidate, announce: bool = True) -> None:
        # What the tool opens (systemd logs "Parsing", procps prints "* Applying"):
        # systemd silently skips a name whose open fails with ENOENT (a dangling link).
        if announce and (flavor == "procps" or cand.kind is not PathKind.MISSING):
            opened.append(cand.path)
        if flavor == "procps" and announce and _procps_name_is_glob(cand.path):
            # procps passes each file name through glob(GLOB_NOCHECK|GLOB_BRACE|GLOB_TILDE).
            targets = procps_file_glob(root, cand.path)
            if targets != [cand.path]:
                diagnostics.append(Diagnostic(
                    "procps treats this file name as a glob and reads "
                    + (", ".join(targets) if targets else "nothing") + " instead", cand.path))
                for target in targets:
                    try:
                        kind = root.chase(target).kind
                    except DoctorError:
                        kind = PathKind.MISSING
                    read(_Candidate(target, kind), announce=False)
                return
        if cand.kind is PathKind.NULL:
            ignored.append(IgnoredFile(cand.path, "a mask (link to /dev/null): nothing is read from it", MASKED))
            return
        if cand.kind is PathKind.MISSING:
            if _is_symlink_loop(root, cand.path):
                ignored.append(IgnoredFile(cand.path, "symlink loop: too many levels of symbolic links, "
                                                      "the file cannot be opened (skipped)"))
            else:
                ignored.append(IgnoredFile(cand.path,
                                           "dangling symlink: the target does not exist (silently skipped)"))
            return
        if cand.kind is PathKind.OTHER:
            ignored.append(IgnoredFile(cand.path, "not a regular file (device, fifo or socket): not read"))
            diagnostics.append(Diagnostic("not a regular file (device, fifo or socket); not read", cand.path))
            return
        if cand.kind is PathKind.DIR:
            ignored.append(IgnoredFile(cand.path, "a directory, not a file"))
            diagnostics.append(Diagnostic("is a directory where a file is expected; nothing read", cand.path))
            return
        try:
            if cand.host is not None:  # not a link: nothing to resolve, read it directly
                with open(cand.host, "rb") as handle:
                    data = handle.read(MAX_FILE_BYTES + 1)
            else:
                data = root.read_bytes(cand.path, MAX_FILE_BYTES + 1)
        except OSError as exc:
            ignored.append(IgnoredFile(cand.path, f"unreadable: {exc.strerror or exc}"))
            diagnostics.append(Diagnostic(f"cannot read: {exc.strerror or exc}", cand.path))
            return
        left = MAX_TOTAL_BYTES - sum(len(d) for _, d in sources)
        if unread or left <= 0:  # the total is spent (a file was cut for it): later files are not read
            unread.append(cand.path)
            return
        read_paths.append(cand.path)
        sources.append((cand.path, _bounded(data, min(left, MAX_FILE_BYTES), cand.path, diagnostics)))
        if len(data) > left:
            unread.append("")  # marks the total as spent; names only files really left out

    if len(candidates) > MAX_FILES:
        diagnostics.append(Diagnostic(
            f"more than {MAX_FILES} sysctl.d files: this one and the {len(candidates) - MAX_FILES - 1} after it "
            "are not analysed (systemd-sysctl reads them all)", candidates[MAX_FILES].path))
        del candidates[MAX_FILES:]
    unread: List[str] = []
    for cand in candidates:
        read(cand)

    linked = {c.path for c in candidates if c.host is None}  # plain files cannot lead elsewhere
    via_link = any(_resolves_to(root, p, SYSCTL_CONF) for p in read_paths if p in linked or p == SYSCTL_CONF)
    conf_kind = root.kind(SYSCTL_CONF)
    if flavor == "procps":
        if conf_kind is PathKind.FILE:
            read(_Candidate(SYSCTL_CONF, conf_kind))
            if via_link:
                diagnostics.append(Diagnostic(
                    "procps reads /etc/sysctl.conf twice: through the /etc/sysctl.d link and again last",
                    SYSCTL_CONF))
        elif conf_kind is not PathKind.MISSING:
            ignored.append(IgnoredFile(SYSCTL_CONF, "not a regular file: procps reads it only when it is one"))
    elif conf_kind is PathKind.FILE and not via_link:
        ignored.append(IgnoredFile(
            SYSCTL_CONF,
            f"systemd-sysctl never reads /etc/sysctl.conf itself and there is no {DEBIAN_SYSCTL_CONF_LINK} "
            "-> ../sysctl.conf link: its settings are not applied at boot"))

    unread = [u for u in unread if u]
    if unread:
        diagnostics.append(Diagnostic(
            f"sysctl-doctor analyses at most {MAX_TOTAL_BYTES} bytes of sysctl.d files in all: this file and "
            f"{len(unread) - 1} after it are not analysed (systemd-sysctl reads them all)", unread[0]))
    config = SysctlConfig(flavor=flavor, files=read_paths, assignments=[], exclusions=[],
                          ignored_files=ignored, diagnostics=diagnostics, opened=opened)
    parsed = []
    for path, data in sources:
        pf = parse_sysctl_bytes(data, flavor, path)
        diagnostics.extend(pf.diagnostics)
        parsed.append((path, pf.lines))
    if flavor == "systemd":
        _apply_systemd(config, parsed)
    else:
        _apply_procps(config, parsed)
    return config


# Bounds on what is analysed (issue 16: 100 MB of random bytes ran out of memory). Real sysctl.d
# files are a few KiB; a cut is named in a diagnostic with the file and line where it happens.
MAX_FILE_BYTES = 2 << 20  # per file (above systemd-sysctl's 1 MiB line limit, which still applies)
MAX_TOTAL_BYTES = 2 << 20  # all files together
MAX_FILES = 1000


def _bounded(data: bytes, limit: int, path: str, diagnostics: List[Diagnostic]) -> bytes:
    """`data` cut to `limit` bytes at a line end, with a diagnostic naming the line when it is cut.
    A line of LONG_LINE_MAX bytes or more that reaches the cut stays (systemd-sysctl stops there)."""
    if len(data) <= limit:
        return data
    end = max(data.rfind(b"\n", 0, limit), data.rfind(b"\r", 0, limit), data.rfind(b"\x00", 0, limit)) + 1
    if limit - end >= LONG_LINE_MAX:
        end = limit
    kept = data[:end]
    diagnostics.append(Diagnostic(
        f"sysctl-doctor analyses at most {MAX_FILE_BYTES} bytes of a file and {MAX_TOTAL_BYTES} in all: "
        "the rest of this file, from here, is not analysed (systemd-sysctl and procps read it all)",
        path, kept.count(b"\n") + 1))
    return kept


def _same_file(root: Root, a: str, b: str) -> bool:
    try:
        return root.chase(os.path.dirname(a)).resolved == root.chase(os.path.dirname(b)).resolved
    except DoctorError:
        return False


def _procps_name_is_glob(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(c in name for c in "*?[{")


def procps_file_glob(root: Root, path: str) -> List[str]:
    """glob(3) of a procps config path with GLOB_NOCHECK|GLOB_BRACE inside the root: the
    files procps really opens for it (the path itself when nothing matches)."""
    directory, _, name = path.rpartition("/")
    entries = [n for n, _kind, _host in _entries(root, directory or "/", [])]
    found: List[str] = []
    for alternative in expand_braces(name):
        if any(c in alternative for c in "*?["):
            rx = _component_regex(alternative)
            dot_ok = alternative.startswith(".")
            hits = [n for n in entries if (dot_ok or not n.startswith(".")) and rx.fullmatch(n)]
            found.extend(f"{directory}/{n}" for n in sorted(hits, key=_sort_key))
        else:
            literal = alternative.replace("\\", "")
            if literal in entries:
                found.append(f"{directory}/{literal}")
    return found or [path]


def _resolves_to(root: Root, path: str, target: str) -> bool:
    try:
        return root.chase(path).resolved == target
    except DoctorError:
        return False


def _apply_systemd(config: SysctlConfig, parsed: List[Tuple[str, List[ParsedLine]]]) -> None:
    # One insertion-ordered map path -> entry, like systemd's OrderedHashmap. Entries are
    # SysctlAssignments; value None marks an exclusion until they are split at the end.
    table: Dict[str, SysctlAssignment] = {}
    history = config.history
    new_tuple = tuple.__new__  # ConfigLine(...) without the NamedTuple's Python-level __new__
    normalized: Dict[str, Tuple[str, str]] = {}
    for path, lines in parsed:
        for pl in lines:
            origin = Origin(path, pl.line)
            cached = normalized.get(pl.key)
            if cached is None:
                norm = systemd_normalize(pl.key)
                cached = normalized[pl.key] = (norm, path_to_key(norm))
            norm, key = cached
            value = pl.value
            history.append(new_tuple(ConfigLine, (origin, key, norm, value, pl.ignore_failure)))
            existing = table.get(norm)
            if existing is not None:
                if existing.value == value:
                    existing.ignore_failure = existing.ignore_failure or pl.ignore_failure
                    existing.repeats.append(OverriddenLine(path, pl.line, value or "",
                                                           "assignment" if value is not None else "exclusion"))
                    continue
                del table[norm]
                own = OverriddenLine(existing.origin.file, existing.origin.line, existing.value or "",
                                     "assignment" if existing.value is not None else "exclusion")
                overrides = [*existing.overrides, own, *existing.repeats]
            else:
                overrides = []
            table[norm] = SysctlAssignment(key, value, origin, pl.ignore_failure,  # type: ignore[arg-type]
                                           overrides, is_glob(norm), [], norm)
    for entry in table.values():
        if entry.value is None:
            config.exclusions.append(SysctlExclusion(entry.key, entry.origin, tuple(entry.overrides), entry.path))
        else:
            config.assignments.append(entry)


def _apply_procps(config: SysctlConfig, parsed: List[Tuple[str, List[ParsedLine]]]) -> None:
    earlier: Dict[str, List[SysctlAssignment]] = {}
    for path, lines in parsed:
        for pl in lines:
            origin = Origin(path, pl.line)
            ppath = procps_path(pl.key)
            key = path_to_key(ppath)
            config.history.append(ConfigLine(origin, key, ppath, pl.value, pl.ignore_failure))
            if pl.value is None:
                config.exclusions.append(SysctlExclusion(key, origin, (), ppath))
                continue
            before = earlier.setdefault(ppath, [])
            overrides = [OverriddenLine(a.origin.file, a.origin.line, a.value) for a in before if a.value != pl.value]
            repeats = [OverriddenLine(a.origin.file, a.origin.line, a.value) for a in before if a.value == pl.value]
            assignment = SysctlAssignment(key=key, value=pl.value, origin=origin, ignore_failure=pl.ignore_failure,
                                          overrides=overrides, is_glob=is_glob(ppath), repeats=repeats, path=ppath)
            before.append(assignment)
            config.assignments.append(assignment)


# --------------------------------------------------------------------------- applying


def systemd_key_exists(path: str, keys: KeyTree) -> bool:
    """Would systemd's sysctl_write() open /proc/sys/<path> (already normalised) as a file?"""
    if ".." in path.split("/"):
        return False  # path_is_normalized() refuses it
    return path in keys.paths


def procps_key_exists(path: str, keys: KeyTree) -> bool:
    """Would procps' stat() and checks accept /proc/sys/<path> as a writable key file?"""
    if not path or path.endswith("/"):
        return False  # a trailing slash needs a directory
    stack: List[str] = []
    dirs = keys.all_directories()
    for comp in path.split("/"):
        if comp in ("", "."):
            if stack and "/".join(stack) not in dirs:
                return False
            continue
        if comp == "..":
            if not stack or "/".join(stack) not in dirs:
                return False
            stack.pop()
            continue
        if stack and "/".join(stack) not in dirs:
            return False
        stack.append(comp)
    final = "/".join(stack)
    return final in keys.paths and keys.writable(final)


def effective_settings(
    config: SysctlConfig, keys: Optional[KeyTree], prefixes: Sequence[str] = (),
    aliases: Optional[Mapping[str, str]] = None,
) -> List[EffectiveSetting]:
    """What the flavour writes, in order, against `keys` (globs expanded; explicit/excluded keys
    skipped for globs). `prefixes` filters like systemd-sysctl --prefix (slash or dotted).

    `aliases` maps a slash path to one name of its kernel variable when the kernel has several
    (kernel.kernel_keys): both flavours write every name in order, so the last write through any
    name is the value; earlier writes through another name lose `final` and name the winner."""
    norm_prefixes = [normalize_prefix(p) for p in prefixes]
    writes: List[EffectiveSetting] = []
    beaten_globs: Dict[str, List[SysctlAssignment]] = {}
    if config.flavor == "systemd":
        named: Set[str] = {a.path for a in config.assignments} | {e.path for e in config.exclusions}
        exists = systemd_key_exists
    else:
        named = {a.path for a in config.assignments} | {e.path for e in config.exclusions}
        exists = procps_key_exists
    globs = [a for a in config.assignments if a.is_glob] if keys is None else []
    braces = config.flavor == "systemd"
    if braces:
        _note_brace_cap(config)
    index = GlobIndex([(i, alt) for i, g in enumerate(globs) for alt in normalized_alternatives(g.path, braces)])
    budget = GlobBudget(config)
    for a in config.assignments:
        if a.is_glob:
            if keys is None or not budget.spend(a, 0):  # past the glob work cap: left unexpanded
                writes.append(EffectiveSetting(a.key, a.value, a, None, path=a.path))
                continue
            work = [0]
            matches = glob_matches(a.path, keys, braces=config.flavor == "systemd", work=work)
            budget.spend(a, work[0])
            for match in matches:
                if not under_prefix(match, norm_prefixes):
                    continue
                if match in named:
                    beaten_globs.setdefault(match, []).append(a)
                    continue
                # A directory matched by the glob is tried and fails (EISDIR / EINVAL).
                writes.append(EffectiveSetting(path_to_key(match), a.value, a, match in keys.paths, path=match))
        else:
            if not under_prefix(a.path, norm_prefixes):
                continue
            if globs:  # no key tree: a glob that would match this key is beaten by this line
                canonical = _canonical(a.path)
                candidates = index.candidates(canonical)
                if candidates and budget.spend(a, len(candidates)):
                    for i in candidates:
                        g = globs[i]
                        if glob_matches_path(g.path, canonical, braces=braces):
                            beaten_globs.setdefault(a.path, []).append(g)
            writes.append(EffectiveSetting(a.key, a.value, a, None if keys is None else exists(a.path, keys),
                                           path=a.path))
    _link_overrides(writes, beaten_globs, config.files, aliases or {})
    return writes


GLOB_WORK_MAX = 2_000_000  # glob tests (key x glob) per run; real configurations need thousands


def _note_brace_cap(config: SysctlConfig) -> None:
    """One diagnostic per glob line whose brace alternatives pass the cap (only the first ones are used)."""
    for a in config.assignments:
        if not (a.is_glob and "{" in a.path):
            continue
        if len(expand_braces(a.path, BRACE_ALTERNATIVES_MAX + 1)) > BRACE_ALTERNATIVES_MAX:
            note = Diagnostic(f"more than {BRACE_ALTERNATIVES_MAX} brace alternatives: only the first "
                              f"{BRACE_ALTERNATIVES_MAX} are expanded (results for this glob are incomplete)",
                              a.origin.file, a.origin.line)
            if note not in config.diagnostics:
                config.diagnostics.append(note)


class GlobBudget:
    """Caps the glob work of one `effective_settings` run. Past the cap, globs are left unexpanded
    (and unchecked against explicit keys) and one diagnostic names the line where it stopped."""

    def __init__(self, config: SysctlConfig, limit: Optional[int] = None) -> None:
        self.config = config
        self.left = GLOB_WORK_MAX if limit is None else limit
        self.exhausted = False

    def spend(self, line: SysctlAssignment, work: int) -> bool:
        """Whether `work` more tests for `line` fit in the budget (False from then on once it is spent)."""
        if self.exhausted:
            return False
        self.left -= work
        if self.left >= 0:
            return True
        self.exhausted = True
        note = Diagnostic(
            f"glob work limit reached ({GLOB_WORK_MAX} key x glob tests): globs are not expanded or "
            "compared with explicit keys from this line on (results for globs are incomplete)",
            line.origin.file, line.origin.line)
        if note not in self.config.diagnostics:
            self.config.diagnostics.append(note)
        return False


def _canonical(path: str) -> str:
    if "//" not in path and "/." not in path and not path.startswith((".", "/")) and not path.endswith("/"):
        return path
    return "/".join(c for c in path.split("/") if c not in ("", "."))


def _link_overrides(writes: List[EffectiveSetting], beaten_globs: Dict[str, List[SysctlAssignment]],
                    files: List[str], aliases: Mapping[str, str]) -> None:
    """Fill each write's `overrides` (every line that set, or would have set, the same concrete key
    and lost to it, oldest first) and clear `final` on writes a later write replaces."""
    rank = {f: i for i, f in enumerate(files)}
    last: Dict[str, EffectiveSetting] = {}
    for w in writes:
        if w.exists is False:
            continue
        k = _canonical(w.path)
        k = aliases.get(k, k)
        a = w.assignment
        prev = last.get(k)
        if prev is None and not a.overrides and (a.is_glob or w.path not in beaten_globs):
            last[k] = w
            continue
        over: List[OverriddenLine] = list(a.overrides)
        if prev is not None:
            prev.final = False
            over.extend(prev.overrides)
            if prev.value != w.value:
                over.append(OverriddenLine(prev.assignment.origin.file, prev.assignment.origin.line, prev.value))
        if not a.is_glob:
            for g in beaten_globs.get(w.path, ()):
                over.append(OverriddenLine(g.origin.file, g.origin.line, g.value))
        seen: Set[Tuple[str, int]] = {(a.origin.file, a.origin.line)}
        unique = []
        for o in sorted(over, key=lambda o: (rank.get(o.file, -1), o.line)):
            if (o.file, o.line) not in seen:
                seen.add((o.file, o.line))
                unique.append(o)
        w.overrides = unique
        last[k] = w
    if aliases:
        for w in writes:
            winner = last.get(aliases.get(_canonical(w.path), ""))
            if winner is not None and not w.final and _canonical(winner.path) != _canonical(w.path):
                w.alias_winner = _canonical(winner.path)


def expand_globs_over(config: SysctlConfig, settings: List[EffectiveSetting],
                      candidates: Dict[str, Sequence[str]]) -> List[EffectiveSetting]:
    """`settings` from `effective_settings(config, None)` (globs unexpanded) with each glob's write followed by
    its writes to the slash paths `candidates[glob path]` predicts will exist, as the flavour writes them: a key
    that a line names explicitly, or a ``-key`` exclusion names, is skipped by every glob (systemd-sysctl 252
    and procps 4.0.2 alike, whatever the order of the lines); a later glob's write to the same key replaces an
    earlier one. The glob's own write stays (it also covers keys nobody can predict offline).

    The added writes have `exists` None (predicted, not seen) and `overrides` naming the glob lines they
    replaced; explicit lines already list the globs they beat."""
    named: Set[str] = {_canonical(a.path) for a in config.assignments if not a.is_glob}
    named |= {_canonical(e.path) for e in config.exclusions}
    braces = config.flavor == "systemd"
    out: List[EffectiveSetting] = []
    last: Dict[str, EffectiveSetting] = {}
    for w in settings:
        out.append(w)
        a = w.assignment
        if not a.is_glob or w.exists is not None or w.key != a.key:
            continue
        for path in candidates.get(a.path, ()):
            path = _canonical(path)
            if path in named or not glob_matches_path(a.path, path, braces=braces):
                continue
            concrete = EffectiveSetting(path_to_key(path), a.value, a, None, path=path)
            prev = last.get(path)
            if prev is not None:
                prev.final = False
                concrete.overrides = list(prev.overrides)
                if prev.value != a.value:
                    concrete.overrides.append(OverriddenLine(prev.assignment.origin.file,
                                                             prev.assignment.origin.line, prev.value))
            last[path] = concrete
            out.append(concrete)
    return out
