"""The line fates on hostile input: many globs against many unset keys, the files never read read within
their bound. Pure: a root directory on disk, no program run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysctl_doctor.config import fates
from sysctl_doctor.config.fates import RUNTIME_ONLY, ignored_file_bytes, line_fates, unset_keys
from sysctl_doctor.config.sysctl_d import load_sysctl_config
from sysctl_doctor.root import Root


def _root(tmp_path: Path, files: dict) -> Root:
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Root(str(tmp_path))


def _unset(root: Root) -> list:
    config = load_sysctl_config(root, "systemd", at_boot=True)
    return [u.key for u in unset_keys(config, line_fates(config, root))]


def test_many_globs_against_many_unset_keys(tmp_path: Path) -> None:
    # 1,000 glob lines x 57,000 keys set only in a runtime-only file: check took 32 s in unset_keys alone
    # (one glob_matches_path per key and glob); GlobIndex's candidates only now, and the globs still keep keys off.
    globs = "".join(f"net.ipv4.conf.*.x{j}* = 1\n" for j in range(300))
    root = _root(tmp_path, {"/etc/sysctl.d/10-g.conf": globs + "net.ipv4.conf.*.reached = 1\n",
                            "/run/sysctl.d/50-r.conf": "".join(f"net.ipv4.conf.eth{j}.rp_filter = 1\n"
                                                              for j in range(3000))
                            + "net.ipv4.conf.eth0.reached = 2\n"})
    unset = _unset(root)
    assert "net.ipv4.conf.eth0.reached" not in unset  # a glob reaches it: it gets the glob's value
    assert len(unset) == 3000 and unset[0] == "net.ipv4.conf.eth0.rp_filter"


def test_past_the_work_cap_no_key_is_called_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path, {"/etc/sysctl.d/10-g.conf": "net.ipv4.conf.*.x = 1\nnet.ipv4.conf.*.y = 1\n",
                            "/run/sysctl.d/50-r.conf": "k.a = 1\nk.b = 1\nk.c = 1\n"})
    assert _unset(root) == ["k.a", "k.b", "k.c"]
    root = _root(tmp_path, {"/etc/sysctl.d/10-g.conf": "k.*a = 1\nk.?a = 1\n",
                            "/run/sysctl.d/50-r.conf": "k.b.a = 1\nk.c.a = 1\nk.d.a = 1\n"})
    # both globs are candidates for each key (literal ends "k/" and "a"), neither matches ("*" stops at "/")
    assert _unset(root) == ["k.b.a", "k.c.a", "k.d.a"]
    config = load_sysctl_config(root, "systemd", at_boot=True)
    unset_keys(config, line_fates(config, root))
    assert not [d for d in config.diagnostics if "glob work limit" in d.message]
    monkeypatch.setattr(fates, "UNSET_GLOB_WORK_MAX", 4)  # two keys' worth of tests (two candidate globs each)
    assert _unset(root) == ["k.b.a", "k.c.a"]  # k.d.a might be reached by a glob: not guessed
    # the cut is said once, at the first line left unchecked (it was silent)
    config = load_sysctl_config(root, "systemd", at_boot=True)
    unset_keys(config, line_fates(config, root))
    notes = [d for d in config.diagnostics if "glob work limit" in d.message]
    assert [(n.file, n.line) for n in notes] == [("/run/sysctl.d/50-r.conf", 3)]
    assert "(4 key x glob tests)" in notes[0].message


def test_the_unset_work_cap_reaches_checks_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sysctl_doctor.analysis import CheckInputs, build_analysis

    root = _root(tmp_path, {"/etc/sysctl.d/10-g.conf": "k.*a = 1\nk.?a = 1\n",
                            "/run/sysctl.d/50-r.conf": "k.b.a = 1\nk.c.a = 1\nk.d.a = 1\n"})
    monkeypatch.setattr(fates, "UNSET_GLOB_WORK_MAX", 4)
    analysis = build_analysis(CheckInputs(root, kernel="6.1.0-0-amd64"))
    assert [(d.file, d.line) for d in analysis.diagnostics if "glob work limit" in d.message] == [
        ("/run/sysctl.d/50-r.conf", 3)]


def test_ignored_files_are_read_whole_lines_within_the_bounds(tmp_path: Path) -> None:
    root = _root(tmp_path, {"/etc/sysctl.d/10-a.conf": "k.a = 1\n",
                            "/run/sysctl.d/10-big.conf": "k.big = 1\n" * 1000,
                            "/run/sysctl.d/20-small.conf": "k.small = 1\n"})
    config = load_sysctl_config(root, "systemd", at_boot=True)
    read = dict((i.file, d) for i, d in ignored_file_bytes(config, root, file_max=95))
    assert read["/run/sysctl.d/10-big.conf"] == b"k.big = 1\n" * 9  # cut at the last whole line
    assert read["/run/sysctl.d/20-small.conf"] == b"k.small = 1\n"
    read = dict((i.file, d) for i, d in ignored_file_bytes(config, root, bytes_max=95))
    assert read["/run/sysctl.d/10-big.conf"] == b"k.big = 1\n" * 9
    assert read.get("/run/sysctl.d/20-small.conf", b"") == b""  # the budget spent on the first file
    assert [f.fate for f in line_fates(config, root) if f.key == "k.small"] == [RUNTIME_ONLY]
