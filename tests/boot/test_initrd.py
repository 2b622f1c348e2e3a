"""Initramfs images built with the real cpio and compressors; check trusts the image over the lists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boot.rootfs import copy_incident
from sysctl_doctor.boot.initrd import read_initrd

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"
KVER = "6.1.0-56-amd64"  # the incident root's kernel


def build_image(tmp: Path, modules: str, compressor: list) -> bytes:
    for tool in ("cpio", compressor[0]):
        if shutil.which(tool) is None:
            pytest.skip(f"NEEDS {tool}: apt-get install {tool}")
    early = tmp / "early"
    (early / "kernel/x86/microcode").mkdir(parents=True)
    (early / "kernel/x86/microcode/GenuineIntel.bin").write_bytes(b"\0" * 100)
    main = tmp / "main"
    (main / "conf").mkdir(parents=True)
    (main / "conf/modules").write_text(modules)
    (main / f"usr/lib/modules/{KVER}/kernel/net/netfilter").mkdir(parents=True)
    (main / f"usr/lib/modules/{KVER}/kernel/net/netfilter/nf_conntrack.ko").write_bytes(b"\x7fELF")

    def cpio(directory: Path) -> bytes:
        names = subprocess.run(["find", "."], cwd=directory, capture_output=True, check=True).stdout
        return subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=directory, input=names,
                              capture_output=True, check=True).stdout

    compressed = subprocess.run(compressor, input=cpio(main), capture_output=True, check=True).stdout
    return cpio(early) + compressed


@pytest.mark.parametrize("compressor", [["zstd", "-q", "-c"], ["gzip", "-c"], ["xz", "-c", "--check=crc32"]],
                         ids=["zstd", "gzip", "xz"])
def test_read_real_images(tmp_path: Path, compressor: list) -> None:
    image = build_image(tmp_path, "# comment\nnf_conntrack\nbr-netfilter opt=1\n", compressor)
    contents = read_initrd("/boot/initrd.img", image)
    assert contents.error is None
    assert contents.compression == ["none", compressor[0]]
    assert contents.loads == [("nf_conntrack", "/boot/initrd.img:conf/modules:2"),
                              ("br_netfilter", "/boot/initrd.img:conf/modules:3")]
    assert contents.has_module_file("nf_conntrack") and not contents.has_module_file("sctp")


def test_truncated_image_is_reported_not_raised(tmp_path: Path) -> None:
    image = build_image(tmp_path, "nf_conntrack\n", ["gzip", "-c"])
    contents = read_initrd("/boot/x", image[:200])
    assert contents.error


def run_check(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout)


def test_image_decides_over_the_configured_list(tmp_path: Path) -> None:
    # the image loads nf_conntrack: applied, though nothing is in /etc/initramfs-tools/modules
    root = copy_incident(tmp_path / "a")
    (root / "boot").mkdir()
    (root / f"boot/initrd.img-{KVER}").write_bytes(build_image(tmp_path / "img1", "nf_conntrack\n", ["zstd", "-q", "-c"]))
    entry = next(e for e in run_check(root)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}
    # listed for initramfs-tools, but the image was not rebuilt: still the race, with a note
    root2 = copy_incident(tmp_path / "b", {"/etc/initramfs-tools/modules": "nf_conntrack\n"})
    (root2 / "boot").mkdir()
    (root2 / f"boot/initrd.img-{KVER}").write_bytes(build_image(tmp_path / "img2", "ext4\n", ["zstd", "-q", "-c"]))
    entry = next(e for e in run_check(root2)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": False, "value": "0"}
    # without an image the list is trusted
    root3 = copy_incident(tmp_path / "c", {"/etc/initramfs-tools/modules": "nf_conntrack\n"})
    entry = next(e for e in run_check(root3)["keys"] if e["key"] == KEY)
    assert entry["boot"] == {"applied": True, "value": "1"}


def test_newc_archive_is_read_by_real_cpio(tmp_path: Path) -> None:
    from sysctl_doctor.boot.initrd import newc_archive

    if shutil.which("cpio") is None:
        pytest.skip("NEEDS cpio: apt-get install cpio")
    data = newc_archive({"conf/modules": "ext4\nnf_conntrack\n", "conf/x": "abc"}).encode()
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True).stdout
    assert listing.decode().split() == ["conf/modules", "conf/x"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "conf/modules").read_text() == "ext4\nnf_conntrack\n"
    assert [m for m, _ in read_initrd("/i", data).loads] == ["ext4", "nf_conntrack"]
