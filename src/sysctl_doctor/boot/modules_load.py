"""Modules loaded at boot by name: modules-load.d, Debian's /etc/modules, the kernel command line.

systemd-modules-load (modules-load.d(5), systemd 252 src/modules-load/modules-load.c):
- ``*.conf`` files in /etc, /run, /usr/local/lib, /usr/lib (+ /lib) ``/modules-load.d``;
  the same file name in an earlier directory wins, a link to /dev/null masks it,
  files are then read in file-name order across directories;
- one module name per line, ``#`` and ``;`` start comments, blank lines ignored;
- kernel command line ``modules_load=a,b`` (``-``/``_`` equivalent in the key), in
  the initrd also ``rd.modules_load=``.
Debian links /etc/modules-load.d/modules.conf -> ../modules, so /etc/modules is read
through that link (by systemd) and directly (by sysvinit's kmod script).
Module names are compared with ``-`` and ``_`` equivalent (kmod does the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from sysctl_doctor.boot.conf_dirs import files_by_precedence
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

MODULES_LOAD_DIRS: Tuple[str, ...] = (
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",
)
DEBIAN_MODULES = "/etc/modules"


def module_name(name: str) -> str:
    """The canonical spelling of a module name: kmod treats '-' and '_' alike."""
    return name.strip().replace("-", "_")


@dataclass(frozen=True)
class ModuleRequest:
    """A module asked for by name, with where it is asked."""

    module: str  # canonical (underscores)
    source: str  # "/etc/modules-load.d/k8s.conf:3", "kernel command line modules_load="
    file: Optional[str] = None
    line: Optional[int] = None
    via: Optional[str] = None  # the file it was read through (a link), if any


@dataclass
class ModulesLoadConfig:
    files: List[str] = field(default_factory=list)  # files read, in order
    masked: List[str] = field(default_factory=list)  # "<path> -> /dev/null"
    requests: List[ModuleRequest] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)

    def modules(self) -> List[str]:
        out: List[str] = []
        for request in self.requests:
            if request.module not in out:
                out.append(request.module)
        return out

    def request_for(self, module: str) -> Optional[ModuleRequest]:
        module = module_name(module)
        for request in self.requests:
            if request.module == module:
                return request
        return None


def modules_load_files(root: Root, dirs: Sequence[str] = MODULES_LOAD_DIRS) -> Tuple[List[str], List[str]]:
    """(files to read in order, masked entries) following the sysctl.d-style precedence."""
    return files_by_precedence(root, dirs, ".conf")


def parse_module_list(text: str, file: str, shown: Optional[str] = None) -> Tuple[List[ModuleRequest], List[Diagnostic]]:
    """One module per line; '#'/';' comments. Extra words (Debian's parameters) are reported."""
    requests: List[ModuleRequest] = []
    diagnostics: List[Diagnostic] = []
    where = shown or file
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        words = line.split()
        if len(words) > 1:
            diagnostics.append(
                Diagnostic(
                    f"'{line}': systemd-modules-load takes one module name per line "
                    "(parameters belong in /etc/modprobe.d); it will fail to load this line",
                    where,
                    number,
                )
            )
            continue
        requests.append(
            ModuleRequest(
                module=module_name(words[0]),
                source=f"{where}:{number}",
                file=where,
                line=number,
                via=file if shown and shown != file else None,
            )
        )
    return requests, diagnostics


def load_modules_load(root: Root) -> ModulesLoadConfig:
    """What systemd-modules-load loads on this root."""
    config = ModulesLoadConfig()
    files, masked = modules_load_files(root)
    config.masked = masked
    for path in files:
        chased = root.chase(path)
        try:
            text = root.read_text(path)
        except OSError as exc:
            config.diagnostics.append(Diagnostic(f"cannot read: {exc.strerror}", path))
            continue
        config.files.append(path)
        shown = chased.resolved if chased.is_link else path
        requests, diagnostics = parse_module_list(text, path, shown)
        # keep the link as `via` so the user sees how /etc/modules is reached
        config.requests.extend(
            ModuleRequest(r.module, r.source, r.file, r.line, path if chased.is_link else None) for r in requests
        )
        config.diagnostics.extend(diagnostics)
    return config


def debian_etc_modules(root: Root) -> ModulesLoadConfig:
    """/etc/modules read directly (sysvinit's kmod script reads it besides modules-load.d)."""
    config = ModulesLoadConfig()
    text = root.read_config(DEBIAN_MODULES) if root.kind(DEBIAN_MODULES) is PathKind.FILE else None
    if text is None:
        return config
    config.files.append(DEBIAN_MODULES)
    requests, diagnostics = parse_module_list(text, DEBIAN_MODULES)
    config.requests.extend(requests)
    config.diagnostics.extend(diagnostics)
    return config

