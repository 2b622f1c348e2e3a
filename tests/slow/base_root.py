"""The cached minimal Debian root every real boot starts from.

`mmdebstrap` builds Debian bookworm (amd64) with a kernel, systemd, udev, kmod,
nftables, procps and initramfs-tools into a directory under the test cache
(`$SYSCTL_DOCTOR_TEST_CACHE/slow`, default `<repo>/.cache/slow`), named after a
hash of everything that shapes it (suite, mirror, package list, customisation
commands). It is built once (a few minutes, needs root and the Debian mirror)
and reused; a half-built root never takes the final name (built in a temporary
directory, then renamed).

Run `python tests/slow/base_root.py` to build it by hand and print its path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]

SUITE = "bookworm"
ARCH = "amd64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES: Tuple[str, ...] = (
    "linux-image-amd64",
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "nftables",
    "procps",
    "initramfs-tools",
    "zstd",
)
# Shell run inside the new root (mmdebstrap --customize-hook, "$1" is the root).
# - initramfs-tools' default MODULES=most already takes every block and
#   file-system driver; the explicit list makes the boot's needs visible and
#   survives a change of default (the initrd is checked after the build);
# - no getty on the console: the probe unit owns the serial line;
# - an empty machine-id would make systemd treat every boot as a first boot.
CUSTOMIZE: Tuple[str, ...] = (
    'printf "virtio_pci\\nvirtio_blk\\next4\\n" >> "$1/etc/initramfs-tools/modules"',
    'chroot "$1" update-initramfs -u -k all',
    'chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service'
    " getty.target systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer"
    " e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer",
    'echo sdguest > "$1/etc/hostname"',
    'chroot "$1" systemd-machine-id-setup',
    'printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\\n" > "$1/etc/fstab"',
)
BUILDER_VERSION = "1"


@dataclass(frozen=True)
class BaseRoot:
    path: Path          # the root directory
    kernel: str         # kver of the installed kernel ("6.1.0-37-amd64")

    @property
    def vmlinuz(self) -> Path:
        return self.path / "boot" / f"vmlinuz-{self.kernel}"

    @property
    def initrd(self) -> Path:
        return self.path / "boot" / f"initrd.img-{self.kernel}"


def cache_dir() -> Path:
    base = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    return (Path(base) if base else REPO / ".cache") / "slow"


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources)."""
    candidates: List[Path] = [Path("/etc/apt/sources.list")]
    sources_d = Path("/etc/apt/sources.list.d")
    if sources_d.is_dir():
        candidates += sorted(sources_d.glob("*.sources")) + sorted(sources_d.glob("*.list"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "URIs:":
                uris = [w for w in words[1:] if "security" not in w]
                if uris and "/debian" in uris[0]:
                    return uris[0]
            if words[0] == "deb":
                uris = [w for w in words[1:] if "://" in w and "security" not in w]
                if uris and "/debian" in uris[0]:
                    return uris[0]
    return DEFAULT_MIRROR


def cache_key(mirror: str) -> str:
    material = "\n".join([BUILDER_VERSION, SUITE, ARCH, mirror, *PACKAGES, *CUSTOMIZE])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def installed_kernel(root: Path) -> Optional[str]:
    kernels = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    return kernels[-1] if kernels else None


def initrd_modules(root: Path, initrd: Path) -> List[str]:
    """Module file names inside the root's initramfs (the root's own lsinitramfs, run in a chroot)."""
    inside = "/" + str(initrd.relative_to(root))
    out = subprocess.run(["chroot", str(root), "lsinitramfs", inside],
                         check=True, capture_output=True, text=True).stdout
    return [line.rsplit("/", 1)[-1] for line in out.splitlines() if ".ko" in line]


def missing_reason() -> Optional[str]:
    """Why a base root cannot be built here, or None."""
    if os.geteuid() != 0:
        return "NEEDS ROOT: mmdebstrap runs in root mode and mke2fs -d must keep ownership"
    if shutil.which("mmdebstrap") is None:
        return "NEEDS mmdebstrap: apt-get install mmdebstrap (or run scripts/test-slow.sh)"
    return None


def remove_stale_work(max_age_hours: float = 6) -> None:
    """Drop scenario work directories and half-built roots left by killed sessions (not recent ones:
    another session may be using the same cache right now)."""
    base = cache_dir()
    if not base.is_dir():
        return
    limit = time.time() - max_age_hours * 3600
    for entry in base.iterdir():
        if entry.name.startswith(("run-", "building-")) and entry.stat().st_mtime < limit:
            shutil.rmtree(entry, ignore_errors=True)


def ensure_base_root() -> BaseRoot:
    """Return the cached base root, building it first when absent."""
    mirror = host_mirror()
    final = cache_dir() / f"bookworm-{cache_key(mirror)}"
    if (final / ".complete").exists():
        kernel = installed_kernel(final)
        if kernel is None:
            raise RuntimeError(f"cached root {final} has no kernel in /boot")
        return BaseRoot(final, kernel)
    kernel = build_root(final, PACKAGES, CUSTOMIZE, mirror, _finish_base)
    return BaseRoot(final, kernel)


def _finish_base(rootdir: Path) -> Tuple[str, str]:
    kernel = installed_kernel(rootdir)
    if kernel is None:
        raise RuntimeError("mmdebstrap built a root without /boot/vmlinuz-*")
    return kernel, ""


class MirrorUnreachable(RuntimeError):
    """The Debian mirror did not answer (twice): a test that needs a fresh root skips with this line."""


_NETWORK_FAILURE = re.compile(r"(Could not connect|Could not resolve|Failed to fetch|Temporary failure resolving|"
                              r"Connection timed out|Connection refused|Unable to connect)[^\n]*")


def build_root(final: Path, packages: Sequence[str], customize: Sequence[str], mirror: str,
               finish: Callable[[Path], Tuple[str, str]]) -> str:
    """Build the root `final` with mmdebstrap (`packages`, `customize` hooks), then `finish(rootdir)`,
    which completes it and returns (kernel version, a note for the .complete marker).

    The root is built in a temporary directory beside `final` and renamed only when complete, so a
    half-built root never takes the final name (a concurrent build that finished first wins).
    Returns the kernel version."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=final.parent))
    rootdir = work / "root"
    cmd = ["mmdebstrap", "--mode=root", "--variant=apt", f"--architectures={ARCH}",
           "--include=" + ",".join(packages)]
    cmd += [f"--customize-hook={hook}" for hook in customize]
    cmd += [SUITE, str(rootdir), mirror]
    try:
        for attempt in (1, 2):  # one retry: a mirror hiccup is common, a second one in a row is an outage
            with open(work / "mmdebstrap.log", "w") as out:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode == 0:
                break
            log_text = (work / "mmdebstrap.log").read_text(errors="replace")
            shutil.rmtree(rootdir, ignore_errors=True)
            if attempt == 2 or not _NETWORK_FAILURE.search(log_text):
                if _NETWORK_FAILURE.search(log_text):
                    raise MirrorUnreachable(f"Debian mirror {mirror} unreachable: mmdebstrap could not fetch "
                                            f"{SUITE} twice ({_NETWORK_FAILURE.search(log_text).group(0)})")
                raise subprocess.CalledProcessError(proc.returncode, cmd)
            time.sleep(5)
        kernel, note = finish(rootdir)
        (rootdir / ".complete").write_text(" ".join(cmd) + "\n" + note)
        try:
            os.rename(rootdir, final)
        except OSError:
            if not (final / ".complete").exists():   # not a concurrent build that finished first
                raise
    except subprocess.CalledProcessError as exc:
        log = work / "mmdebstrap.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"{exc.cmd[0]} failed (exit {exc.returncode}): {exc.stderr or ''}\n"
                           f"last output:\n{tail}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return kernel

if __name__ == "__main__":
    base = ensure_base_root()
    print(base.path, base.kernel)
    mods = initrd_modules(base.path, base.initrd)
    for wanted in ("virtio_blk.ko", "virtio_pci.ko", "ext4.ko"):
        print(wanted, "in initrd" if any(m.startswith(wanted) for m in mods) else "MISSING from initrd")
    sys.exit(0)
