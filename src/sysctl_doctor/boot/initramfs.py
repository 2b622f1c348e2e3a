"""Modules the initramfs loads before the real root's init starts.

A module loaded in the initramfs stays loaded, so its keys exist when the real
root's systemd-sysctl runs.

- initramfs-tools (Debian/Ubuntu): /usr/share/initramfs-tools/modules.d/* and
  /etc/initramfs-tools/modules (one module per line, parameters may follow, ``#``
  comments) are copied to the image's conf/modules and loaded by its init.
- dracut: ``force_drivers+=" … "`` in /etc/dracut.conf, /etc/dracut.conf.d/*.conf and
  /usr/lib/dracut/dracut.conf.d/*.conf are loaded early; ``add_drivers`` are only
  *included* in the image (loaded if something asks), which is reported but not
  counted as a load.

The lists only take effect once the initrd is rebuilt; an image older than the list
is reported.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import List, Optional

from sysctl_doctor.boot.modules_load import ModuleRequest, module_name
from sysctl_doctor.errors import Diagnostic
from sysctl_doctor.root import PathKind, Root

INITRAMFS_TOOLS_LISTS = ("/usr/share/initramfs-tools/modules.d", "/etc/initramfs-tools/modules")
DRACUT_CONF = ("/usr/lib/dracut/dracut.conf.d", "/etc/dracut.conf", "/etc/dracut.conf.d")
_DRACUT_LINE = re.compile(r"^\s*(force_drivers|add_drivers|drivers)\s*\+?=\s*(.*)$")


@dataclass
class InitramfsModules:
    builder: Optional[str] = None  # "initramfs-tools", "dracut" or None
    loaded: List[ModuleRequest] = field(default_factory=list)
    included_only: List[ModuleRequest] = field(default_factory=list)
    images: List[str] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)


def _files(root: Root, entries) -> List[str]:
    out: List[str] = []
    for entry in entries:
        kind = root.kind(entry)
        if kind is PathKind.FILE:
            out.append(entry)
        elif kind is PathKind.DIR:
            out.extend(f"{entry}/{n}" for n in root.listdir(entry) if root.kind(f"{entry}/{n}") is PathKind.FILE)
    return out


def _mtime(root: Root, path: str) -> Optional[float]:
    try:
        return os.stat(root.chase(path).host).st_mtime
    except OSError:
        return None


def load_initramfs_modules(root: Root) -> InitramfsModules:
    result = InitramfsModules()
    result.images = [f"/boot/{n}" for n in root.listdir("/boot") if n.startswith(("initrd.img-", "initramfs-"))]
    tools_files = _files(root, INITRAMFS_TOOLS_LISTS)
    if root.kind("/etc/initramfs-tools") is PathKind.DIR or tools_files:
        result.builder = "initramfs-tools"
    for path in tools_files:
        text = root.read_config(path)
        if text is None:
            continue
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            result.loaded.append(
                ModuleRequest(module_name(line.split()[0]), f"{path}:{number} (initramfs)", path, number)
            )
    dracut_files = [p for p in _files(root, DRACUT_CONF) if p.endswith(".conf")]
    if dracut_files:
        result.builder = result.builder or "dracut"
    for path in dracut_files:
        text = root.read_config(path)
        if text is None:
            continue
        for number, raw in enumerate(text.splitlines(), start=1):
            match = _DRACUT_LINE.match(raw.split("#", 1)[0])
            if not match:
                continue
            try:
                words = " ".join(shlex.split(match.group(2))).split()
            except ValueError:
                result.diagnostics.append(Diagnostic("unbalanced quotes", path, number))
                continue
            target = result.loaded if match.group(1) == "force_drivers" else result.included_only
            for word in words:
                target.append(ModuleRequest(module_name(word), f"{path}:{number} (dracut {match.group(1)})", path, number))
    if result.loaded and result.images:
        newest_list = max((_mtime(root, r.file) or 0.0) for r in result.loaded if r.file)
        for image in result.images:
            stamp = _mtime(root, image)
            if stamp is not None and stamp < newest_list:
                result.diagnostics.append(
                    Diagnostic(
                        "initramfs image is older than its module list; rebuild it "
                        "(update-initramfs -u / dracut -f) or the new modules are not in it",
                        image,
                    )
                )
    return result
