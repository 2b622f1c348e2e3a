"""Unit tests of the sysctl.d model on small roots built in tmp (the real programs are the
oracle in test_oracle.py; these pin the model's own bookkeeping)."""

from __future__ import annotations

import os
from pathlib import Path

from fixture_roots import write_root
from sysctl_doctor.config.model import KeyTree, key_to_path, path_to_key
from sysctl_doctor.config.sysctl_d import (
    default_flavor,
    effective_settings,
    load_sysctl_config,
    systemd_normalize,
)
from sysctl_doctor.config.sysctl_lines import systemd_lines
from sysctl_doctor.root import Root


def make_root(tmp_path: Path, files: dict) -> Root:
    return Root(write_root(tmp_path, files, usrmerge=False))


def tree(*paths: str) -> KeyTree:
    dirs = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    return KeyTree(frozenset(paths), frozenset(dirs))


def test_key_forms_round_trip():
    assert key_to_path("net.ipv4.conf.eth0/100.rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    assert path_to_key("net/ipv4/conf/eth0.100/rp_filter") == "net.ipv4.conf.eth0/100.rp_filter"
    assert systemd_normalize("net/ipv4//conf/./all/") == "net/ipv4/conf/all"
    assert systemd_normalize("net.ipv4.ip_forward.") == "net/ipv4/ip_forward"


def test_systemd_line_endings():
    assert list(systemd_lines(b"a\r\nb\rc\n\nd\x00e")) == [
        (1, b"a"), (2, b"b"), (3, b"c"), (4, b""), (5, b"d"), (6, b"e")]


def test_etc_beats_usr_lib_and_order_is_by_name(tmp_path):
    root = make_root(tmp_path, {
        "usr/lib/sysctl.d/10-a.conf": "kernel.x = 1\n",
        "etc/sysctl.d/10-a.conf": "kernel.x = 2\n",
        "usr/lib/sysctl.d/05-b.conf": "kernel.y = 3\n",
    })
    cfg = load_sysctl_config(root, "systemd")
    assert cfg.files == ["/usr/lib/sysctl.d/05-b.conf", "/etc/sysctl.d/10-a.conf"]
    assert [(a.key, a.value) for a in cfg.assignments] == [("kernel.y", "3"), ("kernel.x", "2")]
    assert any(i.file == "/usr/lib/sysctl.d/10-a.conf" and "overridden" in i.reason for i in cfg.ignored_files)


def test_systemd_duplicate_moves_to_end_and_keeps_history(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d/a.conf": "a.b = 1\nc.d = 2\na.b = 3\n"})
    cfg = load_sysctl_config(root, "systemd")
    assert [(a.key, a.value) for a in cfg.assignments] == [("c.d", "2"), ("a.b", "3")]
    assert [(o.line, o.value) for o in cfg.assignments[1].overrides] == [(1, "1")]


def test_procps_writes_duplicates_in_order(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d/a.conf": "a.b = 1\nc.d = 2\na.b = 3\n"})
    cfg = load_sysctl_config(root, "procps")
    writes = effective_settings(cfg, tree("a/b", "c/d"))
    assert [(w.key, w.value, w.final) for w in writes] == [("a.b", "1", False), ("c.d", "2", True), ("a.b", "3", True)]
    assert [(o.line, o.value) for o in writes[2].overrides] == [(1, "1")]


def test_glob_skips_explicit_and_excluded(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d/a.conf":
                                "net.ipv4.conf.*.rp_filter = 2\nnet.ipv4.conf.lo.rp_filter = 0\n-net.ipv4.conf.eth0/100.rp_filter\n"})
    keys = tree("net/ipv4/conf/all/rp_filter", "net/ipv4/conf/lo/rp_filter", "net/ipv4/conf/eth0.100/rp_filter")
    for flavor in ("systemd", "procps"):
        writes = effective_settings(load_sysctl_config(root, flavor), keys)
        assert [(w.key, w.value) for w in writes] == [("net.ipv4.conf.all.rp_filter", "2"),
                                                     ("net.ipv4.conf.lo.rp_filter", "0")], flavor
        assert [o.line for o in writes[1].overrides] == [1]


def test_sysctl_conf_without_link_is_ignored_by_systemd(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.conf": "kernel.x = 1\n"})
    cfg = load_sysctl_config(root, "systemd")
    assert cfg.assignments == []
    assert [i.file for i in cfg.ignored_files] == ["/etc/sysctl.conf"]
    assert [a.key for a in load_sysctl_config(root, "procps").assignments] == ["kernel.x"]


def test_mask_hides_vendor_file(tmp_path):
    root = make_root(tmp_path, {"usr/lib/sysctl.d/50-x.conf": "kernel.x = 1\n",
                                "etc/sysctl.d/50-x.conf": ("link", "/dev/null")})
    cfg = load_sysctl_config(root, "systemd")
    assert cfg.assignments == []
    reasons = {i.file: i.reason for i in cfg.ignored_files}
    assert reasons["/usr/lib/sysctl.d/50-x.conf"] == "masked by /etc/sysctl.d/50-x.conf -> /dev/null"


def test_bad_input_is_diagnosed_not_raised(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d/a.conf": b"kernel.x = \xff\xfe\nnot an assignment\n\x00\x01garbage",
                                "etc/sysctl.d/b.conf/inner": "x"})
    cfg = load_sysctl_config(root, "systemd")
    where = {(d.file, d.line) for d in cfg.diagnostics}
    assert ("/etc/sysctl.d/a.conf", 1) in where and ("/etc/sysctl.d/a.conf", 2) in where
    assert any(d.file == "/etc/sysctl.d/b.conf" for d in cfg.diagnostics)
    assert cfg.assignments[0].value == "\udcff\udcfe"


def test_default_flavor(tmp_path):
    assert default_flavor(make_root(tmp_path / "a", {"etc/sysctl.conf": ""})) == "procps"
    assert default_flavor(make_root(tmp_path / "b", {"usr/lib/systemd/system/systemd-sysctl.service": ""})) == "systemd"


def test_special_files_are_reported_not_read(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d/20-dangling.conf": ("link", "/nowhere/x.conf"),
                                "usr/lib/sysctl.d/20-dangling.conf": "kernel.x = 1\n",
                                "etc/sysctl.d/40-ok.conf": "kernel.y = 2\n"})
    os.mkfifo(tmp_path / "etc/sysctl.d/30-fifo.conf")  # reading it would block: never opened
    cfg = load_sysctl_config(root, "systemd")
    reasons = {i.file: i.reason for i in cfg.ignored_files}
    assert "dangling symlink" in reasons["/etc/sysctl.d/20-dangling.conf"]
    assert "overridden by /etc/sysctl.d/20-dangling.conf" in reasons["/usr/lib/sysctl.d/20-dangling.conf"]
    assert "not a regular file" in reasons["/etc/sysctl.d/30-fifo.conf"]
    assert [a.key for a in cfg.assignments] == ["kernel.y"]


def test_unreadable_file_is_a_diagnostic(tmp_path, monkeypatch):
    # Root bypasses permission bits, so make the read itself fail the way EACCES would.
    root = make_root(tmp_path, {"etc/sysctl.d/10-a.conf": "kernel.x = 1\n",
                                "etc/sysctl.d/20-b.conf": ("link", "10-a.conf")})
    real_read = Root.read_bytes

    def deny(self, path, *args, **kwargs):
        if path.endswith("20-b.conf"):
            raise PermissionError(13, "Permission denied", path)
        return real_read(self, path, *args, **kwargs)

    monkeypatch.setattr(Root, "read_bytes", deny)
    cfg = load_sysctl_config(root, "systemd")
    assert {(d.file, d.message) for d in cfg.diagnostics} == {("/etc/sysctl.d/20-b.conf", "cannot read: Permission denied")}
    assert [a.origin.file for a in cfg.assignments] == ["/etc/sysctl.d/10-a.conf"]


def test_key_tree_from_paths_alone_works_for_globs_and_procps(tmp_path):
    # Other layers build KeyTrees from key lists (no directories given): parents are implied.
    root = make_root(tmp_path, {"etc/sysctl.d/a.conf": "net.ipv4.conf.*.rp_filter = 2\nnet.ipv4.ip_forward = 1\n"})
    keys = KeyTree(frozenset({"net/ipv4/conf/all/rp_filter", "net/ipv4/ip_forward"}))
    for flavor in ("systemd", "procps"):
        writes = effective_settings(load_sysctl_config(root, flavor), keys)
        assert [(w.key, w.exists) for w in writes] == [("net.ipv4.conf.all.rp_filter", True),
                                                      ("net.ipv4.ip_forward", True)], flavor


def test_a_file_where_the_directory_should_be(tmp_path):
    root = make_root(tmp_path, {"etc/sysctl.d": "kernel.x = 1\n", "usr/lib/sysctl.d/a.conf": "kernel.y = 2\n"})
    cfg = load_sysctl_config(root, "systemd")
    assert [d.file for d in cfg.diagnostics] == ["/etc/sysctl.d"]
    assert [a.key for a in cfg.assignments] == ["kernel.y"]


def test_one_key_normaliser_for_users_rules_and_tables():
    """config.model.key_to_path is the only user-facing normaliser (kernel/index uses it too)."""
    import sysctl_doctor.kernel.index as index_module

    assert index_module.key_to_path is key_to_path
    assert key_to_path(" net.ipv4.ip_forward ") == "net/ipv4/ip_forward"
    assert key_to_path("/net/ipv4/ip_forward/") == "net/ipv4/ip_forward"
    assert key_to_path("net/ipv4/conf/eth0.100/rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    assert key_to_path("net.ipv4.conf.eth0/100.rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
