"""Root confines every path to the root directory, like systemd's chase()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sysctl_doctor.root import PathKind, Root, RootError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.conf").write_text("a.b = 1\n")
    (tmp_path / "usr/lib/sysctl.d").mkdir(parents=True)
    (tmp_path / "usr/lib/sysctl.d/10-x.conf").write_text("c.d = 2\n")
    return tmp_path


def test_relative_link_is_followed(tree: Path) -> None:
    os.symlink("../sysctl.conf", tree / "etc/sysctl.d/99-sysctl.conf")
    root = Root(tree)
    chased = root.chase("/etc/sysctl.d/99-sysctl.conf")
    assert chased.resolved == "/etc/sysctl.conf"
    assert chased.kind is PathKind.FILE
    assert root.read_text("/etc/sysctl.d/99-sysctl.conf") == "a.b = 1\n"


def test_absolute_link_is_rerooted(tree: Path) -> None:
    os.symlink("/usr/lib/sysctl.d/10-x.conf", tree / "etc/sysctl.d/10-x.conf")
    root = Root(tree)
    assert root.chase("/etc/sysctl.d/10-x.conf").host == tree / "usr/lib/sysctl.d/10-x.conf"
    assert root.read_text("/etc/sysctl.d/10-x.conf") == "c.d = 2\n"


def test_link_to_host_file_does_not_escape(tree: Path) -> None:
    os.symlink("/etc/passwd", tree / "etc/sysctl.d/evil.conf")
    root = Root(tree)
    chased = root.chase("/etc/sysctl.d/evil.conf")
    assert chased.host == tree / "etc/passwd"
    assert chased.kind is PathKind.MISSING
    with pytest.raises(FileNotFoundError):
        root.read_bytes("/etc/sysctl.d/evil.conf")


def test_dotdot_is_clamped_at_root(tree: Path) -> None:
    os.symlink("../../../../../../../../etc/passwd", tree / "etc/sysctl.d/up.conf")
    root = Root(tree)
    assert root.chase("/etc/sysctl.d/up.conf").host == tree / "etc/passwd"
    assert root.chase("/../../../etc/sysctl.conf").host == tree / "etc/sysctl.conf"


def test_loop_is_a_clear_error(tree: Path) -> None:
    os.symlink("b.conf", tree / "etc/sysctl.d/a.conf")
    os.symlink("a.conf", tree / "etc/sysctl.d/b.conf")
    root = Root(tree)
    with pytest.raises(RootError, match="too many levels of symbolic links"):
        root.chase("/etc/sysctl.d/a.conf")


def test_link_to_dev_null_is_a_mask_even_without_dev(tree: Path) -> None:
    os.symlink("/dev/null", tree / "etc/sysctl.d/10-x.conf")
    root = Root(tree)
    assert root.kind("/etc/sysctl.d/10-x.conf") is PathKind.NULL
    assert root.read_bytes("/etc/sysctl.d/10-x.conf") == b""


def test_directory_where_file_expected(tree: Path) -> None:
    (tree / "etc/sysctl.d/dir.conf").mkdir()
    root = Root(tree)
    assert root.kind("/etc/sysctl.d/dir.conf") is PathKind.DIR
    with pytest.raises(IsADirectoryError):
        root.read_bytes("/etc/sysctl.d/dir.conf")


def test_listdir_missing_is_empty(tree: Path) -> None:
    root = Root(tree)
    assert root.listdir("/run/sysctl.d") == []
    assert root.listdir("/usr/lib/sysctl.d") == ["10-x.conf"]


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RootError, match="not a directory"):
        Root(tmp_path / "nope")


def test_live_root() -> None:
    assert Root("/").is_live


def test_host_sysctl_change_restores_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sysctl_doctor.host_switches import RUN_DIR_ENV
    from sysctl_doctor.live import HostSysctlChange

    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    key = tmp_path / "net/netfilter/nf_log_all_netns"
    key.parent.mkdir(parents=True)
    key.write_text("0\n")
    with pytest.raises(RuntimeError):
        with HostSysctlChange({"net/netfilter/nf_log_all_netns": "1"}, proc_sys=tmp_path):
            assert key.read_text() == "1\n"
            raise RuntimeError("boom")
    assert key.read_text() == "0\n"
    assert not (tmp_path / "run/host-switches.json").exists()


def test_fifo_is_not_opened(tree: Path) -> None:
    # open() on a FIFO with no writer blocks forever: a root holding one must not hang the tool.
    os.mkfifo(tree / "etc/sysctl.d/fifo.conf")
    root = Root(tree)
    assert root.kind("/etc/sysctl.d/fifo.conf") is PathKind.OTHER
    with pytest.raises(OSError) as info:
        root.read_bytes("/etc/sysctl.d/fifo.conf")
    assert info.value.filename == "/etc/sysctl.d/fifo.conf"


def test_symlink_loop_is_other_and_reads_as_an_oserror(tree: Path) -> None:
    # Readers skip unreadable files with a warning (except OSError); a loop must not stop the whole run.
    import errno

    os.symlink("b.conf", tree / "etc/sysctl.d/a.conf")
    os.symlink("a.conf", tree / "etc/sysctl.d/b.conf")
    root = Root(tree)
    assert root.kind("/etc/sysctl.d/a.conf") is PathKind.OTHER
    assert root.exists("/etc/sysctl.d/a.conf")
    with pytest.raises(OSError) as info:
        root.read_text("/etc/sysctl.d/a.conf")
    assert info.value.errno == errno.ELOOP and info.value.filename == "/etc/sysctl.d/a.conf"
    assert isinstance(info.value, RootError)  # still a DoctorError for those who catch that
    assert str(info.value) == "/etc/sysctl.d/a.conf: too many levels of symbolic links (a loop?)"
