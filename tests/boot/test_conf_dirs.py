"""The directory precedence modules-load.d and udev rules.d share (sysctl_doctor.boot.conf_dirs), on a real tree."""

from __future__ import annotations

import os
from pathlib import Path

from fixture_roots import write_root
from sysctl_doctor.boot.conf_dirs import files_by_precedence
from sysctl_doctor.boot.modules_load import MODULES_LOAD_DIRS, modules_load_files
from sysctl_doctor.boot.udev import UDEV_RULES_DIRS, rules_files
from sysctl_doctor.root import Root


def _tree(base: Path, area: str, suffix: str) -> None:
    etc, run, usr = (f"/{d}/{area}" for d in ("etc", "run", "usr/lib"))
    write_root(base, {  # merged /usr: /lib/... is /usr/lib/... and counts once
        f"{usr}/10-a{suffix}": "usr\n",
        f"{etc}/10-a{suffix}": "etc\n",  # same name, earlier directory: wins
        f"{usr}/05-b{suffix}": "usr\n",
        f"{run}/20-c{suffix}": "run\n",
        f"{etc}/30-masked{suffix}": ("null",),
        f"{usr}/30-masked{suffix}": "usr\n",
        f"{usr}/99-other.txt": "not ours\n",
        f"{usr}/40-dangling{suffix}": ("link", "nowhere"),
    })


def test_modules_load_and_udev_read_files_by_the_same_precedence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    modules, udev = tmp_path / "m", tmp_path / "u"
    _tree(modules, "modules-load.d", ".conf")
    _tree(udev, "udev/rules.d", ".rules")

    # a root mounted as the running host (`check --live`): /run counts as it is
    files, masked = modules_load_files(Root(str(modules), live=True))
    assert files == ["/usr/lib/modules-load.d/05-b.conf", "/etc/modules-load.d/10-a.conf",
                     "/run/modules-load.d/20-c.conf"]
    assert masked == ["/etc/modules-load.d/30-masked.conf -> /dev/null"]
    assert (files, masked) == files_by_precedence(Root(str(modules), live=True), MODULES_LOAD_DIRS, ".conf")

    assert rules_files(Root(str(udev), live=True)) == [
        "/usr/lib/udev/rules.d/05-b.rules", "/etc/udev/rules.d/10-a.rules", "/run/udev/rules.d/20-c.rules"]
    assert files_by_precedence(Root(str(udev)), UDEV_RULES_DIRS, ".rules")[1] == [
        "/etc/udev/rules.d/30-masked.rules -> /dev/null"]


def test_an_offline_roots_run_is_empty_at_boot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """/run is a tmpfs at boot: files an image holds there are never read (and hide nothing)."""
    from sysctl_doctor.boot.conf_dirs import runtime_only_files

    modules, udev = tmp_path / "m", tmp_path / "u"
    _tree(modules, "modules-load.d", ".conf")
    _tree(udev, "udev/rules.d", ".rules")
    (modules / "run/modules-load.d/05-b.conf").write_text("run\n")  # would hide /usr/lib's 05-b on a live host
    offline = Root(str(modules))
    assert offline.empty_at_boot("/run/modules-load.d") and not Root(str(modules), live=True).empty_at_boot("/run")
    assert modules_load_files(offline)[0] == ["/usr/lib/modules-load.d/05-b.conf", "/etc/modules-load.d/10-a.conf"]
    assert runtime_only_files(offline, MODULES_LOAD_DIRS, ".conf") == [
        "/run/modules-load.d/05-b.conf", "/run/modules-load.d/20-c.conf"]
    assert rules_files(Root(str(udev))) == ["/usr/lib/udev/rules.d/05-b.rules", "/etc/udev/rules.d/10-a.rules"]
    os.symlink("../run", modules / "var")  # /var/run -> ../run style links lead to /run too
    assert offline.empty_at_boot("/var/modules-load.d")


def test_conf_d_word_lists_split_like_the_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """OpenRC's rc_* ordering and /etc/conf.d/modules read their words through one function."""
    from sysctl_doctor.boot.initscripts import conf_d_word_lists, load_openrc
    from sysctl_doctor.boot.timeline import _openrc_conf_modules

    conf = tmp_path / "etc/conf.d"
    conf.mkdir(parents=True)
    (conf / "modules").write_text('modules="nf_conntrack  br_netfilter" # load early\n'
                                  "modules_6_1='sctp'\n"
                                  'modules="unclosed\n'
                                  "other=x\n")
    root = Root(str(tmp_path))
    assert conf_d_word_lists(root, "/etc/conf.d/modules", r"modules(?:_[\w.-]+)?") == [
        (1, "modules", ["nf_conntrack", "br_netfilter"]), (2, "modules_6_1", ["sctp"])]
    assert conf_d_word_lists(root, "/etc/conf.d/missing", r"modules") == []
    assert [(r.module, r.source) for r in _openrc_conf_modules(root)] == [
        ("nf_conntrack", "/etc/conf.d/modules:1"), ("br_netfilter", "/etc/conf.d/modules:1"),
        ("sctp", "/etc/conf.d/modules:2")]

    init = tmp_path / "etc/init.d"
    init.mkdir(parents=True)
    (init / "sysctl").write_text("#!/sbin/openrc-run\ndepend() {\n  before net\n}\n")
    (conf / "sysctl").write_text('rc_after="modules udev"\nrc_before=\'local\'\n')
    script = load_openrc(root).scripts["sysctl"]
    assert ("modules", "/etc/conf.d/sysctl:1") in script.after and ("udev", "/etc/conf.d/sysctl:1") in script.after
    assert ("local", "/etc/conf.d/sysctl:2") in script.before
