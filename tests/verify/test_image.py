"""verify's image builder, without booting: a small root is imaged with mke2fs -d and the image read back
with debugfs (e2fsprogs) — ownership, modes, links, the injected reporter — and the root is unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from sysctl_doctor.errors import DoctorError
from sysctl_doctor.verify.image import Injection, boot_files, image_of, inject
from sysctl_doctor.verify.reporter import reporter_injection

pytestmark = pytest.mark.skipif(shutil.which("mke2fs") is None or shutil.which("debugfs") is None,
                                reason="NEEDS e2fsprogs (mke2fs, debugfs): apt-get install e2fsprogs")


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], check=True, capture_output=True,
                          text=True).stdout


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)} {st.st_mode:o} {st.st_uid} {st.st_mtime_ns}\n".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _small_root(root: Path) -> Path:
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "boot").mkdir()
    os.symlink("usr/lib", root / "lib")  # merged /usr
    (root / "etc/sysctl.conf").write_text("net.netfilter.nf_conntrack_tcp_be_liberal = 1\n")
    os.symlink("../sysctl.conf", root / "etc/sysctl.d/99-sysctl.conf")
    secret = root / "etc/secret"
    secret.write_text("only root\n")
    os.chmod(secret, 0o600)
    if os.geteuid() == 0:
        os.chown(secret, 1234, 1234)
    # /etc/systemd/system as an absolute link: injected units land where the image's link points
    os.symlink("/usr/lib/custom-units", root / "etc/systemd")
    (root / "usr/lib/custom-units").mkdir(parents=True)
    return root


def test_image_holds_the_root_and_the_reporter_and_the_root_is_unchanged(tmp_path):
    root = _small_root(tmp_path / "root")
    before = _digest(root)
    work = tmp_path / "work"
    work.mkdir()
    injection = reporter_injection("systemd", ["net.netfilter.nf_conntrack_tcp_be_liberal",
                                               "net.ipv4.conf.eth0/100.rp_filter"], ["nf_conntrack"], ["nf_conntrack"])
    image = image_of(root, injection, work)
    assert _digest(root) == before, "building the image changed the root"
    assert sorted(p.name for p in work.iterdir()) == ["disk.img"], "the copy is removed, the image stays"

    assert "../sysctl.conf" in _debugfs(image, "stat /etc/sysctl.d/99-sysctl.conf")
    assert _debugfs(image, "cat /etc/sysctl.conf") == "net.netfilter.nf_conntrack_tcp_be_liberal = 1\n"
    secret = _debugfs(image, "stat /etc/secret")
    assert "Mode:  0600" in secret
    if os.geteuid() == 0:
        assert "User:  1234" in secret, secret
    keys = _debugfs(image, "cat /etc/sdverify/keys")
    assert keys == ("net.netfilter.nf_conntrack_tcp_be_liberal net/netfilter/nf_conntrack_tcp_be_liberal\n"
                    "net.ipv4.conf.eth0/100.rp_filter net/ipv4/conf/eth0.100/rp_filter\n")
    assert _debugfs(image, "cat /etc/sdverify/late-load") == "nf_conntrack\n"
    assert "Mode:  0755" in _debugfs(image, "stat /usr/local/sbin/sdverify-report")
    assert _debugfs(image, "cat /usr/local/sbin/sdverify-report").startswith("#!/bin/sh\n")
    # the unit went through the image's own /etc/systemd link (absolute, resolved inside the image)
    assert "After=multi-user.target" in _debugfs(image, "cat /usr/lib/custom-units/system/sdverify.service")
    wants = _debugfs(image, "stat /usr/lib/custom-units/system/multi-user.target.wants/sdverify.service")
    assert "/etc/systemd/system/sdverify.service" in wants
    label = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert "Filesystem volume name:   sdroot" in label


def test_sysvinit_and_openrc_get_their_own_start_script(tmp_path):
    for init, path in (("sysvinit", "etc/rc2.d/S99sdverify"), ("openrc", "etc/local.d/sdverify.start")):
        root = tmp_path / init
        root.mkdir()
        inject(root, reporter_injection(init, ["kernel.pid_max"]))
        assert (root / path).exists() and os.access(root / path, os.X_OK)
        assert not (root / "etc/systemd").exists()


def test_an_injected_path_never_leaves_the_copy(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("../../outside", root / "etc/escape")  # ".." stops at the copy's top, as in the booted image
    inject(root, Injection({"etc/escape/x": ("x", 0o644)}))
    assert (root / "outside/x").read_text() == "x"
    with pytest.raises(DoctorError, match="not a path inside"):
        inject(root, Injection({"etc/../x": ("x", 0o644)}))
    assert not (tmp_path / "outside").exists()


def test_a_link_through_a_link_to_the_host_never_leads_a_write_out(tmp_path):
    # etc/sdverify -> /usr/evil/sdverify, usr/evil -> <host dir>: the old check resolved only etc/sdverify's own
    # link, and the host then followed usr/evil: the reporter's keys file was written into the host directory.
    host = tmp_path / "host"
    (host / "sdverify").mkdir(parents=True)
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink(str(host), root / "usr/evil")
    os.symlink("/usr/evil/sdverify", root / "etc/sdverify")
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    (root / "etc/afile").write_text("")
    inject(root, Injection({"etc/sdverify/keys": ("k", 0o644)}, {"etc/sdverify/link": "/x"}))
    assert list((host / "sdverify").iterdir()) == []
    inside = root.joinpath(*host.parts[1:], "sdverify")  # the host path, taken inside the copy
    assert (inside / "keys").read_text() == "k" and os.readlink(inside / "link") == "/x"
    with pytest.raises(DoctorError, match="too many levels of links"):
        inject(root, Injection({"etc/loop1/x": ("x", 0o644)}))
    with pytest.raises(DoctorError, match="not a directory"):
        inject(root, Injection({"etc/afile/x": ("x", 0o644)}))
    (root / "etc/adir").mkdir()
    with pytest.raises(DoctorError, match="a directory where"):
        inject(root, Injection({"etc/adir": ("x", 0o644)}))


def test_boot_files_pick_the_newest_kernel_by_version_and_its_initrd(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64",
                 "vmlinuz-6.1.0-9-amd64.old"):
        (boot / name).write_bytes(b"")
    files = boot_files(tmp_path)
    assert files.kernel == "6.1.0-10-amd64" and files.initrd == boot / "initrd.img-6.1.0-10-amd64"
    assert boot_files(tmp_path, "6.1.0-9-amd64").initrd is None
    with pytest.raises(DoctorError, match="no such kernel image"):
        boot_files(tmp_path, "5.10.0-30-amd64")
    with pytest.raises(DoctorError, match="no kernel to boot"):
        boot_files(tmp_path / "nothing")


def test_insserv_order_gets_the_reporter_last():
    from sysctl_doctor.verify.reporter import depend_start_with_reporter

    text = ("TARGETS = rsyslog procps kmod rc.local\nINTERACTIVE =\nprocps: kmod\nrc.local: rsyslog procps kmod\n")
    edited = depend_start_with_reporter(text)
    assert edited.splitlines()[0] == "TARGETS = rsyslog procps kmod rc.local sdverify"
    assert edited.splitlines()[-1] == "sdverify: rsyslog procps kmod rc.local"
    assert "procps: kmod" in edited.splitlines()
    assert depend_start_with_reporter(edited) == edited


def test_boot_files_follow_links_inside_the_root_never_to_the_host(tmp_path):
    host = tmp_path / "hostboot"  # stands for the host's /boot: a root's /boot -> /boot link must not reach it
    host.mkdir()
    (host / "vmlinuz-9.9.9").write_bytes(b"host kernel")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(host), root / "boot")
    with pytest.raises(DoctorError, match="no vmlinuz"):
        boot_files(root)
    with pytest.raises(DoctorError, match="no such kernel image"):
        boot_files(root, "9.9.9")
    (root / "boot").unlink()
    (root / "realboot").mkdir()
    (root / "realboot/vmlinuz-6.1.0-9-amd64").write_bytes(b"k")
    os.symlink("vmlinuz-6.1.0-9-amd64", root / "realboot/vmlinuz-6.1.0-10-amd64")  # a link inside: fine
    os.symlink(str(host / "vmlinuz-9.9.9"), root / "realboot/vmlinuz-9.9.9")  # to the host: not a kernel here
    os.symlink("/realboot", root / "boot")
    files = boot_files(root)
    assert files.kernel == "6.1.0-10-amd64" and files.vmlinuz == root / "realboot/vmlinuz-6.1.0-9-amd64"
    (root / "boot").unlink()
    os.symlink("boot", root / "boot")  # a loop
    with pytest.raises(DoctorError, match="no vmlinuz"):
        boot_files(root)


def test_the_insserv_order_file_is_read_inside_the_root_only(tmp_path):
    from sysctl_doctor.root import Root
    from sysctl_doctor.verify.run import _sysvinit_order

    host = tmp_path / "hostinit"
    host.mkdir()
    (host / ".depend.start").write_text("TARGETS = host-only\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host), root / "etc/init.d")  # the host's file: never read into the image
    assert _sysvinit_order(Root(str(root))).files == {}
    (root / "etc/init.d").unlink()
    (root / "etc/init.d").mkdir()
    (root / "etc/init.d/.depend.start").write_text("TARGETS = rsyslog\n")
    [(content, _mode)] = _sysvinit_order(Root(str(root))).files.values()
    assert "rsyslog" in content and "sdverify" in content


def test_an_image_of_a_hostile_root_is_built_within_bounds(tmp_path):
    """FIFOs, device nodes, a 5 GB sparse file, links out of the root and link loops are copied as what they are
    (never opened, never followed, the sparse file kept sparse), and the root is left unchanged."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS root (mknod)")
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    (root / "dev").mkdir()
    os.mkfifo(root / "srv/fifo")
    os.mknod(root / "dev/null2", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(root / "srv/sparse", "wb") as fh:
        fh.truncate(5 << 30)
    os.symlink("/etc/shadow", root / "srv/out")
    os.symlink("../../../../../../../../etc/passwd", root / "srv/out2")
    os.symlink("loop2", root / "srv/loop1")
    os.symlink("loop1", root / "srv/loop2")
    def shape():  # names, modes, sizes and links: no body is read (the sparse file is 5 GB)
        return sorted((str(q.relative_to(root)), q.lstat().st_mode, q.lstat().st_size,
                       os.readlink(q) if q.is_symlink() else "") for q in root.rglob("*"))

    before = shape()
    work = tmp_path / "work"
    work.mkdir()
    image = image_of(root, Injection({"etc/sdverify/keys": ("k\n", 0o644)}), work)
    assert image.stat().st_blocks * 512 < 64 << 20, "the sparse file was written out"
    listing = _debugfs(image, "ls -l /srv")
    assert "5368709120" in listing and "10644" in listing  # the sparse file's size, the FIFO's mode
    assert "Type: character special" in _debugfs(image, "stat /dev/null2")
    assert _debugfs(image, "cat /etc/sdverify/keys") == "k\n"
    assert os.readlink(root / "srv/out") == "/etc/shadow" and not (root / "etc").exists()
    assert shape() == before
