"""A cached Debian root that boots Debian 11's kernel 5.10, with what `sysctl-doctor lab` needs.

Userland is bookworm (mmdebstrap, like base_root.py; Python 3.11, nftables, iproute2 and the
Debian packages of the project's dependencies, pyroute2 included), the kernel is bullseye's
linux-image-5.10.0-*-amd64: its vmlinuz, config and /lib/modules tree come from
tests/kernel_trees.py (apt download with a private apt config + dpkg-deb -x, cached), then the
root's own depmod and mkinitramfs (chroot) build modules.dep and the initrd for that kernel.
The project itself is not installed: the probe copies the checkout's src/ in and sets PYTHONPATH.

Cached under `$SYSCTL_DOCTOR_TEST_CACHE/slow/legacy-<hash>` (built once: ~2 minutes, needs root
and the Debian mirror; a half-built root never takes the final name).

Run `python -m tests.slow.legacy_root` to build it by hand and print its path.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

from .base_root import ARCH, SUITE, BaseRoot, build_root, cache_dir, host_mirror, initrd_modules

SERIES = "5.10"
PACKAGES: Tuple[str, ...] = (
    "systemd", "systemd-sysv", "udev", "kmod", "nftables", "iproute2", "procps",
    "initramfs-tools", "zstd",
    "python3", "python3-click", "python3-rich", "python3-pyelftools", "python3-zstandard",
    "python3-pyroute2",
)
CUSTOMIZE: Tuple[str, ...] = (
    'printf "virtio_pci\\nvirtio_blk\\next4\\n" >> "$1/etc/initramfs-tools/modules"',
    'chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service'
    " getty.target systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer"
    " e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer",
    'echo sdlegacy > "$1/etc/hostname"',
    'chroot "$1" systemd-machine-id-setup',
    'printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\\n" > "$1/etc/fstab"',
)
BUILDER_VERSION = "1"


def _kernel_tree():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from kernel_trees import debian_kernel_tree
    finally:
        sys.path.pop(0)
    return debian_kernel_tree(SERIES)


def _install_kernel(root: Path, tree: Path, kver: str) -> None:
    """vmlinuz/config into /boot, the module tree into /usr/lib/modules; depmod and initrd by the root's tools."""
    (root / "boot").mkdir(exist_ok=True)
    for name in (f"vmlinuz-{kver}", f"config-{kver}", f"System.map-{kver}"):
        shutil.copy2(tree / "boot" / name, root / "boot" / name)
    modules = root / "usr" / "lib" / "modules" / kver
    modules.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(tree / "lib" / "modules" / kver), str(modules)], check=True)
    subprocess.run(["chroot", str(root), "depmod", kver], check=True, capture_output=True, text=True)
    subprocess.run(["chroot", str(root), "mkinitramfs", "-o", f"/boot/initrd.img-{kver}", kver],
                   check=True, capture_output=True, text=True)


def ensure_legacy_root() -> BaseRoot:
    """The cached 5.10 root (BaseRoot: path + kver), built first when absent."""
    mirror = host_mirror()
    tree = _kernel_tree()
    material = "\n".join([BUILDER_VERSION, SUITE, ARCH, mirror, tree.kver, *PACKAGES, *CUSTOMIZE])
    final = cache_dir() / f"legacy-{hashlib.sha256(material.encode()).hexdigest()[:16]}"
    if (final / ".complete").exists():
        return BaseRoot(final, tree.kver)

    def finish(rootdir: Path) -> Tuple[str, str]:
        _install_kernel(rootdir, Path(tree), tree.kver)
        return tree.kver, f"kernel {tree.kver} from {tree}\n"

    build_root(final, PACKAGES, CUSTOMIZE, mirror, finish)
    return BaseRoot(final, tree.kver)

if __name__ == "__main__":
    legacy = ensure_legacy_root()
    print(legacy.path, legacy.kernel)
    mods = initrd_modules(legacy.path, legacy.initrd)
    for wanted in ("virtio_blk.ko", "virtio_pci.ko", "ext4.ko"):
        print(wanted, "in initrd" if any(m.startswith(wanted) for m in mods) else "MISSING from initrd")
