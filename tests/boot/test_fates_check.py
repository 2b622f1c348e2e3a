"""Issue 15 items 1, 3, 7 through `check`: line fates and unset keys, an offline root's /run, the flavour the init
system decides, one SD109 per file, a file reached through /lib -> usr/lib reported once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from sysctl_doctor.analysis import CheckInputs, build_analysis
from sysctl_doctor.findings.engine import report_for
from sysctl_doctor.root import Root


def _root(base: Path, files: Dict[str, str], links: Dict[str, str] = {}) -> Path:  # noqa: B006 - read only
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, target in links.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    return base


SYSTEMD = {"usr/lib/systemd/system/systemd-sysctl.service": "[Unit]\nDefaultDependencies=no\n"
                                                              "After=systemd-modules-load.service\n"}


def _check_json(root: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "check", "--root", str(root), "--format", "json",
                           *extra], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_every_line_has_a_fate_and_every_key_a_row(tmp_path: Path) -> None:
    root = _root(tmp_path, {
        **SYSTEMD,
        "etc/sysctl.d/50-a.conf": "net.ipv4.ip_forward = 1\nkernel.sysrq = 1\n-kernel.sysrq\nnot an assignment\n",
        "usr/lib/sysctl.d/50-a.conf": "vm.swappiness = 5\n",
        "usr/lib/sysctl.d/60-b.conf": "vm.overcommit_memory = 1\n",
        "etc/sysctl.conf": "fs.file-max = 100000\n",
        "etc/sysctl.d/70-x.cfg": "kernel.panic = 10\n",
    }, {"etc/sysctl.d/60-b.conf": "/dev/null"})
    doc = _check_json(root)
    fates = {(a["file"], a["line"]): (a["key"], a["fate"]) for a in doc["assignments"]}
    assert fates == {
        ("/etc/sysctl.d/50-a.conf", 1): ("net.ipv4.ip_forward", "applied"),
        ("/etc/sysctl.d/50-a.conf", 2): ("kernel.sysrq", "cancelled"),
        ("/etc/sysctl.d/50-a.conf", 3): ("kernel.sysrq", "excludes"),
        ("/etc/sysctl.d/50-a.conf", 4): (None, "invalid"),
        ("/usr/lib/sysctl.d/50-a.conf", 1): ("vm.swappiness", "shadowed"),
        ("/usr/lib/sysctl.d/60-b.conf", 1): ("vm.overcommit_memory", "masked"),
        ("/etc/sysctl.conf", 1): ("fs.file-max", "never-read"),
        ("/etc/sysctl.d/70-x.cfg", 1): ("kernel.panic", "never-read"),
    }
    cancelled = next(a for a in doc["assignments"] if a["fate"] == "cancelled")
    assert cancelled["by"] == {"file": "/etc/sysctl.d/50-a.conf", "line": 3}
    rows = {k["key"]: k for k in doc["keys"]}
    assert rows["net.ipv4.ip_forward"]["fate"] == "applied"
    for key, fate in (("kernel.sysrq", "cancelled"), ("vm.swappiness", "shadowed"),
                      ("vm.overcommit_memory", "masked"), ("fs.file-max", "never-read"), ("kernel.panic", "never-read")):
        assert rows[key]["fate"] == fate and rows[key]["boot"]["applied"] is False, rows[key]
        assert "SD116" in rows[key]["findings"], rows[key]
    sd116 = [f for f in doc["findings"] if f["code"] == "SD116"]
    assert len(sd116) == 5 and all(f["fix"] and f["keys"] == [f["key"]] for f in sd116)
    assert "cancelled by the later `-kernel.sysrq` line at /etc/sysctl.d/50-a.conf:3" in next(
        f["message"] for f in sd116 if f["key"] == "kernel.sysrq")


def test_a_glob_gives_a_value_to_a_key_whose_own_line_is_never_read(tmp_path: Path) -> None:
    root = _root(tmp_path, {**SYSTEMD, "etc/sysctl.d/10-g.conf": "net.ipv4.conf.*.rp_filter = 2\n",
                            "etc/sysctl.conf": "net.ipv4.conf.lo.rp_filter = 0\nnet.ipv4.conf.lo.forwarding = 1\n"})
    analysis = build_analysis(CheckInputs(Root(str(root))))
    assert [u.key for u in analysis.unset] == ["net.ipv4.conf.lo.forwarding"]


def test_an_offline_roots_run_is_runtime_only_and_a_live_one_counts(tmp_path: Path) -> None:
    files = {**SYSTEMD,
             "run/sysctl.d/50-pid-max.conf": "kernel.pid_max = 65536\n",
             "usr/lib/sysctl.d/50-pid-max.conf": "kernel.pid_max = 4194304\n",
             "run/modules-load.d/ct.conf": "nf_conntrack\n",
             "etc/sysctl.d/90-ct.conf": "net.netfilter.nf_conntrack_tcp_be_liberal = 1\n",
             "run/systemd/system/sysinit.target.wants/.keep": ""}
    root = _root(tmp_path, files)
    offline = report_for(build_analysis(CheckInputs(Root(str(root)))))
    fates = {(f.origin.file, f.fate) for f in offline.analysis.lines}
    assert ("/run/sysctl.d/50-pid-max.conf", "runtime-only") in fates
    assert ("/usr/lib/sysctl.d/50-pid-max.conf", "applied") in fates
    be = offline.analysis.fate("net.netfilter.nf_conntrack_tcp_be_liberal")
    assert be is not None and not be.applied  # /run/modules-load.d is not read at boot: nothing loads it
    notes = [str(d) for d in offline.analysis.diagnostics]
    assert any(n.startswith("/run/modules-load.d/ct.conf: runtime-only module list file") for n in notes), notes
    assert any("/run/systemd/system/sysinit.target.wants: runtime-only unit file" in n for n in notes), notes
    assert offline.analysis.fate("kernel.pid_max").configured == "4194304"

    live = report_for(build_analysis(CheckInputs(Root(str(root), live=True))))
    assert live.analysis.fate("kernel.pid_max").configured == "65536"
    assert live.analysis.fate("net.netfilter.nf_conntrack_tcp_be_liberal").applied
    assert not any(f.fate == "runtime-only" for f in live.analysis.lines)


def test_a_systemd_root_without_the_systemd_sysctl_binary_is_read_as_systemd(tmp_path: Path) -> None:
    """A config-only tree: no systemd-sysctl unit or binary, but /etc/systemd/system and /sbin/init -> systemd."""
    root = _root(tmp_path, {"etc/sysctl.conf": "kernel.sysrq = 1\n", "etc/systemd/system/.keep": "",
                            "usr/lib/systemd/systemd": ""}, {"sbin/init": "/usr/lib/systemd/systemd"})
    report = report_for(build_analysis(CheckInputs(Root(str(root)))))
    assert report.analysis.flavor == "systemd"
    assert any("sysctl flavour systemd although the root has no systemd-sysctl" in str(d)
               for d in report.analysis.diagnostics)
    assert [u.key for u in report.analysis.unset] == ["kernel.sysrq"]  # no 99-sysctl.conf link: never read
    # a root with no sign of systemd at all keeps procps' reading
    bare = _root(tmp_path / "bare", {"etc/sysctl.conf": "kernel.sysrq = 1\n"})
    assert build_analysis(CheckInputs(Root(str(bare)))).flavor == "procps"


def test_sd111_only_for_lines_and_with_its_own_fix(tmp_path: Path) -> None:
    """procps reading /etc/sysctl.conf twice is a note, not SD111 with "rewrite the line" as its fix."""
    root = _root(tmp_path, {"etc/sysctl.conf": "kernel.sysrq = 1\nbroken line\n", "etc/inittab": ""},
                 {"etc/sysctl.d/99-sysctl.conf": "../sysctl.conf", "sbin/init": "/etc/inittab"})
    report = report_for(build_analysis(CheckInputs(Root(str(root)))))
    assert report.analysis.flavor == "procps"
    sd111 = [f for f in report.findings if f.code == "SD111"]
    assert [f.where() for f in sd111] == ["/etc/sysctl.d/99-sysctl.conf:2", "/etc/sysctl.conf:2"]
    assert any("procps reads /etc/sysctl.conf twice" in str(d) for d in report.analysis.diagnostics)


def test_a_file_reached_through_the_lib_link_is_reported_once(tmp_path: Path) -> None:
    root = _root(tmp_path, {"etc/sysctl.d/50-x.conf": "kernel.sysrq = 1\n",
                            "usr/lib/sysctl.d/50-x.conf": "kernel.sysrq = 0\n"}, {"lib": "usr/lib"})
    config = build_analysis(CheckInputs(Root(str(root)), init_system="sysvinit")).config
    assert [i.file for i in config.ignored_files] == ["/usr/lib/sysctl.d/50-x.conf"]
    report = report_for(build_analysis(CheckInputs(Root(str(root)), init_system="sysvinit")))
    assert [f.file for f in report.findings if f.code == "SD105"] == ["/usr/lib/sysctl.d/50-x.conf"]


def test_sd109_is_one_finding_per_file(tmp_path: Path) -> None:
    keys = [f"net.ipv4.conf.default.{k}" for k in ("rp_filter", "accept_redirects", "send_redirects",
                                                   "accept_source_route", "log_martians")]
    root = _root(tmp_path, {**SYSTEMD, "etc/sysctl.d/10-hardening.conf": "".join(f"{k} = 0\n" for k in keys),
                            "etc/sysctl.d/20-one.conf": "net.ipv4.tcp_syncookies = 1\nkernel.sysrq = 0\n"})
    doc = _check_json(root)
    sd109 = [f for f in doc["findings"] if f["code"] == "SD109"]
    assert len(sd109) == 2, sd109
    assert sd109[0]["keys"] == keys and sd109[0]["key"] == keys[0] and "5 keys set here" in sd109[0]["message"]
    assert sd109[1]["keys"] == ["net.ipv4.tcp_syncookies"]
    rows = {k["key"]: k for k in doc["keys"]}
    assert all("SD109" in rows[k]["findings"] for k in keys) and "SD109" not in rows["kernel.sysrq"]["findings"]


def test_explain_tells_an_unset_keys_fate(tmp_path: Path) -> None:
    root = _root(tmp_path, {**SYSTEMD, "etc/sysctl.d/50-a.conf": "kernel.sysrq = 1\n-kernel.sysrq\n"})
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "explain", "kernel.sysrq", "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "kernel.sysrq at the next boot (systemd)" in proc.stdout
    assert "(not set: cancelled by -key)" in proc.stdout and "warning SD116" in proc.stdout


def test_lines_of_files_never_read_are_bounded(tmp_path: Path) -> None:
    """Hostile input: thousands of .cfg files are not all read for their lines (the fates stop at a bound)."""
    from sysctl_doctor.config import fates
    from sysctl_doctor.config.sysctl_d import load_sysctl_config

    d = tmp_path / "etc/sysctl.d"
    d.mkdir(parents=True)
    for i in range(fates.IGNORED_FILES_MAX + 50):
        (d / f"{i:05d}.cfg").write_text(f"kernel.k{i} = 1\n")
    root = Root(str(tmp_path))
    lines = fates.line_fates(load_sysctl_config(root, "systemd"), root)
    # exactly the first IGNORED_FILES_MAX files are read (an empty result would pass a mere "<=")
    assert len({f.origin.file for f in lines}) == fates.IGNORED_FILES_MAX
    big = tmp_path / "big"
    (big / "etc/sysctl.d").mkdir(parents=True)
    (big / "etc/sysctl.d/big.txt").write_bytes(b"kernel.big = 1\n" * 400_000)  # 6 MB: read to the byte bound
    lines = fates.line_fates(load_sysctl_config(Root(str(big)), "systemd"), Root(str(big)))
    assert sum(1 for f in lines if f.key == "kernel.big") == fates.IGNORED_BYTES_MAX // 15


def test_show_reads_a_config_only_systemd_tree_as_systemd(tmp_path: Path) -> None:
    from sysctl_doctor.config.sysctl_d import boot_flavor

    systemd = _root(tmp_path / "s", {"etc/sysctl.conf": "kernel.sysrq = 1\n", "etc/systemd/system/.keep": ""})
    sysv = _root(tmp_path / "v", {"etc/sysctl.conf": "kernel.sysrq = 1\n", "etc/systemd/system/.keep": "",
                                  "sbin/init": "sysvinit"})
    openrc = _root(tmp_path / "o", {"etc/sysctl.conf": "x = 1\n", "etc/runlevels/default/.keep": "",
                                    "etc/systemd/system/.keep": ""})
    assert [boot_flavor(Root(str(r))) for r in (systemd, sysv, openrc)] == ["systemd", "procps", "procps"]
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "show", "--root", str(systemd)],
                          capture_output=True, text=True)
    assert proc.stdout.startswith("flavour systemd") and "/etc/sysctl.conf" in proc.stdout, proc.stdout
