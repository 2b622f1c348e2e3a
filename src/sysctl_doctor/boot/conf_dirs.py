"""Which files of a set of configuration directories a systemd tool reads (conf_files_list's precedence).

modules-load.d and udev rules.d share it: a file name seen in an earlier directory hides the same name in
later ones (a link to /dev/null masks it), a directory reached twice (/lib -> usr/lib) counts once, and the
files are read sorted by file name across all directories. In an offline root the directories under /run
are empty at boot (`Root.empty_at_boot`): they are skipped here and `runtime_only_files` names what they
hold. (sysctl.d discovery lives in sysctl_doctor.config, which also reports every file it passes over.)
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Set, Tuple

from sysctl_doctor.root import PathKind, Root


def files_by_precedence(root: Root, dirs: Sequence[str], suffix: str) -> Tuple[List[str], List[str]]:
    """(files ending in `suffix` to read, in order; masked entries as "PATH -> /dev/null"), both by name."""
    chosen: Dict[str, str] = {}
    masked: Dict[str, str] = {}
    seen: Set[str] = set()
    for directory in dirs:
        real = root.chase(directory).resolved
        if real in seen or root.empty_at_boot(directory):
            continue
        seen.add(real)
        for name in root.listdir(directory):
            if not name.endswith(suffix) or name in chosen or name in masked:
                continue
            path = f"{directory}/{name}"
            kind = root.kind(path)
            if kind is PathKind.NULL:
                masked[name] = f"{path} -> /dev/null"
            elif kind is PathKind.FILE:
                chosen[name] = path
    return [chosen[n] for n in sorted(chosen)], [masked[n] for n in sorted(masked)]


def runtime_only_files(root: Root, dirs: Sequence[str], suffix: str) -> List[str]:
    """Files ending in `suffix` in the directories of `dirs` that the boot finds empty (an offline root's
    /run): present in the image, never read at boot."""
    out: List[str] = []
    seen: Set[str] = set()
    for directory in dirs:
        if not root.empty_at_boot(directory):
            continue
        real = root.chase(directory).resolved
        if real in seen:
            continue
        seen.add(real)
        out.extend(f"{directory}/{name}" for name in root.listdir(directory) if name.endswith(suffix))
    return out
