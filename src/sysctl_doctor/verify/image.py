"""A bootable ext4 disk image from a root directory, without touching the directory.

The root is copied (`cp -a --reflink=auto`: ownership, modes, links, xattrs kept; a reflink where the file
system can) into a work directory; the injected files (the reporter) are written into the copy; `mke2fs
-d` builds the file system from the copy into a sparse image file. No loop device, no mount. Run as root
so that ownership is kept (as a user, every file in the image belongs to that user).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.root import PathKind, Root
from sysctl_doctor.verify.qemu import BootFiles
from sysctl_doctor.verify.tools import MKE2FS, require

IMAGE_LABEL = "sdroot"
_KVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")


@dataclass(frozen=True)
class Injection:
    """Files written into the copy before it is imaged: path inside the root -> (content, mode)."""

    files: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    symlinks: Dict[str, str] = field(default_factory=dict)  # path inside the root -> link target

    def merged(self, other: "Injection") -> "Injection":
        return Injection({**self.files, **other.files}, {**self.symlinks, **other.symlinks})


def _version_key(version: str) -> List[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


def boot_files(root: Path, kernel: Optional[str] = None) -> BootFiles:
    """The root's own kernel and initramfs in /boot (`kernel` or the newest), or a DoctorError naming what is
    missing. /boot and its links are followed inside the root (a /boot -> /boot link is the root's, never
    the host's kernel)."""
    boot = root / "boot"
    if not root.is_dir():
        raise DoctorError(f"{boot}: no vmlinuz-<version>: the root has no kernel to boot ({root}: not a directory)")
    inside = Root(str(root))

    def regular(path: str) -> Optional[Path]:
        return inside.chase(path).host if inside.kind(path) is PathKind.FILE else None

    if kernel is None:
        try:
            names = inside.listdir("/boot")
        except OSError:  # a link loop
            names = []
        found = sorted((name[len("vmlinuz-"):] for name in names if name.startswith("vmlinuz-")
                        and _KVER.match(name[len("vmlinuz-"):]) and regular(f"/boot/{name}")), key=_version_key)
        if not found:
            raise DoctorError(f"{boot}: no vmlinuz-<version>: the root has no kernel to boot "
                              "(install one in the image, e.g. linux-image-amd64)")
        kernel = found[-1]
    vmlinuz = regular(f"/boot/vmlinuz-{kernel}") if _KVER.match(kernel) else None
    if vmlinuz is None:
        raise DoctorError(f"{boot}/vmlinuz-{kernel}: no such kernel image in the root (--kernel {kernel})")
    for name in (f"initrd.img-{kernel}", f"initramfs-{kernel}.img"):  # initramfs-tools, dracut
        initrd = regular(f"/boot/{name}")
        if initrd is not None:
            return BootFiles(kernel, vmlinuz, initrd)
    return BootFiles(kernel, vmlinuz, None)


def has_kernel(root: Path, kernel: str) -> bool:
    """Whether the root's /boot holds vmlinuz-`kernel` (a regular file, links followed inside the root)."""
    return root.is_dir() and bool(_KVER.match(kernel)) and Root(str(root)).kind(f"/boot/vmlinuz-{kernel}") is PathKind.FILE


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree `src` into the directory `dst` (created), ownership and links kept."""
    dst.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DoctorError(f"cannot copy {src}: {proc.stderr.strip()[-500:]}")


def _in_copy(root: Path, rel: str) -> Path:
    """Where `rel` lands in the copy `root`, its directories' links resolved as the booted image resolves
    them: one component at a time, an absolute target from the copy's top, ".." never above it. Every
    component is looked at under directories already resolved inside the copy, so no link (nor a link to
    a link) can lead a write out of it."""
    parts = rel.strip("/").split("/")
    if not rel.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise DoctorError(f"not a path inside the root: {rel!r}")
    resolved: List[str] = []
    todo = list(parts[:-1])
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        step = root.joinpath(*resolved, part)
        if step.is_symlink():
            hops += 1
            if hops > 40:
                raise DoctorError(f"/{'/'.join(resolved + [part])}: too many levels of links on the way to /{rel}")
            target = os.readlink(step)
            if target.startswith("/"):
                resolved = []
            todo = target.split("/") + todo
            continue
        if step.exists() and not step.is_dir():
            raise DoctorError(f"/{'/'.join(resolved + [part])}: not a directory, on the way to /{rel}")
        resolved.append(part)
    return root.joinpath(*resolved, parts[-1])


def _replace(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists() and not path.is_dir():
        path.unlink()
    elif path.is_dir():
        raise DoctorError(f"{path}: a directory where verify injects a file")


def inject(root: Path, injection: Injection) -> None:
    """Write the injected files and links into `root` (a copy), replacing what is there."""
    for rel, (content, mode) in injection.files.items():
        path = _in_copy(root, rel)
        _replace(path)
        path.write_text(content)
        os.chmod(path, mode)
    for rel, target in injection.symlinks.items():
        path = _in_copy(root, rel)
        _replace(path)
        os.symlink(target, path)


def tree_bytes(root: Path) -> int:
    out = subprocess.run(["du", "-sx", "--block-size=1", str(root)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def build_image(tree: Path, image: Path, label: str = IMAGE_LABEL) -> None:
    """An ext4 image of `tree` made by mke2fs itself (ownership and modes kept; sparse: 30% + 256 MiB free)."""
    size_mb = tree_bytes(tree) * 13 // 10 // (1 << 20) + 256
    proc = subprocess.run([require(MKE2FS), "-q", "-F", "-t", "ext4", "-L", label, "-d", str(tree), str(image),
                           f"{size_mb}M"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DoctorError(f"mke2fs -d {tree} failed (exit {proc.returncode}): {proc.stderr.strip()[-1000:]}")


def image_of(root: Path, injection: Injection, workdir: Path) -> Path:
    """copy `root` -> inject -> ext4 image in `workdir`; the copy is removed, the image path returned."""
    import shutil

    tree = workdir / "tree"
    image = workdir / "disk.img"
    try:
        copy_tree(root, tree)
        inject(tree, injection)
        build_image(tree, image)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return image
