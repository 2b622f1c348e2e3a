"""`sysctl-doctor show` and `explain` end to end (the real console script, in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "incident"


def run(*args: str, check_rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True,
                          env={**os.environ, "SYSCTL_DOCTOR_DEBUG": ""})
    assert proc.returncode == check_rc, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def fake_proc_sys(where: Path, *paths: str) -> Path:
    for p in paths:
        (where / p).parent.mkdir(parents=True, exist_ok=True)
        (where / p).write_text("0\n")
    return where


def test_show_json_contract_on_the_example(tmp_path):
    proc_sys = fake_proc_sys(tmp_path / "ps", "net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter",
                             "net/ipv4/conf/lo/rp_filter", "net/ipv4/conf/eth0.100/rp_filter", "kernel/pid_max")
    doc = json.loads(run("show", "--root", str(EXAMPLE), "--proc-sys", str(proc_sys), "--format", "json").stdout)
    assert doc["flavor"] == "systemd"
    by_key = {}
    for s in doc["settings"]:
        assert set(s) >= {"key", "value", "exists", "file", "line", "ignore_failure", "overrides"}
        assert isinstance(s["exists"], bool) and isinstance(s["line"], int)
        by_key.setdefault(s["key"], []).append(s)
    fwd = by_key["net.ipv4.ip_forward"][-1]
    assert (fwd["value"], fwd["file"], fwd["line"]) == ("1", "/etc/sysctl.d/99-sysctl.conf", 72)
    assert fwd["overrides"] == [{"file": "/etc/sysctl.d/10-hardening.conf", "line": 4, "value": "0"}]
    # The glob is expanded against the key tree; the VLAN interface eth0.100 is shown dotted as eth0/100.
    assert by_key["net.ipv4.conf.eth0/100.rp_filter"][0]["glob"] == "net.ipv4.conf.*.rp_filter"
    assert by_key["net.ipv4.conf.lo.rp_filter"][0]["value"] == "0"
    # A key that is not in the tree says so.
    assert by_key["net.netfilter.nf_conntrack_tcp_be_liberal"][0]["exists"] is False
    assert {"file": "/etc/sysctl.d/README.sysctl", "reason": "name does not end in .conf"} in doc["ignored_files"]


def test_show_without_key_tree_keeps_globs(tmp_path):
    doc = json.loads(run("show", "--root", str(EXAMPLE), "--format", "json").stdout)
    globs = [s for s in doc["settings"] if s["glob"]]
    assert [g["key"] for g in globs] == ["net.ipv4.conf.*.rp_filter"]
    assert all(s["exists"] is None for s in doc["settings"])


def test_show_procps_lists_both_writes_of_a_duplicate():
    doc = json.loads(run("show", "--root", str(EXAMPLE), "--flavor", "procps", "--format", "json").stdout)
    liberal = [s for s in doc["settings"] if s["key"] == "net.netfilter.nf_conntrack_tcp_be_liberal"]
    assert [(s["file"], s["final"]) for s in liberal] == [("/etc/sysctl.d/99-sysctl.conf", False),
                                                          ("/etc/sysctl.conf", True)]


def test_show_text_names_files_and_origins():
    out = run("show", "--root", str(EXAMPLE)).stdout
    assert "/etc/sysctl.d/99-sysctl.conf:72" in out
    assert "beats /etc/sysctl.d/10-hardening.conf:4 (= 0)" in out
    assert "\x1b[" not in out  # plain when piped


def test_explain_key_says_which_line_wins_and_why():
    out = run("explain", "net.ipv4.ip_forward", "--root", str(EXAMPLE)).stdout
    assert "=> /etc/sysctl.d/99-sysctl.conf:72" in out
    assert "overridden: a later line for the same key replaces it" in out


def test_explain_mentions_lines_in_files_never_read(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "sysctl.conf").write_text("net.netfilter.nf_conntrack_tcp_be_liberal = 1\n")
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd/system/systemd-sysctl.service").write_text("")
    doc = json.loads(run("explain", "net.netfilter.nf_conntrack_tcp_be_liberal", "--root", str(root),
                         "--format", "json").stdout)
    data = doc["sections"][0]["data"]
    assert data["value"] is None
    assert [(ln["file"], ln["verdict"]) for ln in data["lines"]] == [("/etc/sysctl.conf", "not applied")]
    assert "never read" in data["summary"]


def test_explain_unknown_code_is_a_clean_error():
    proc = run("explain", "SD999", check_rc=2)
    assert "unknown finding code SD999" in proc.stderr


def test_bad_root_and_bad_input_give_messages_not_tracebacks(tmp_path):
    assert "not a directory" in run("show", "--root", str(tmp_path / "nope"), check_rc=2).stderr
    root = tmp_path / "root"
    (root / "etc/sysctl.d/dir.conf").mkdir(parents=True)
    (root / "etc/sysctl.d/bin.conf").write_bytes(b"\x7fELF\x00\x01\xff\xfe garbage\nkernel.x = \xff\n")
    doc = json.loads(run("show", "--root", str(root), "--format", "json").stdout)
    where = {(d["file"], d["line"]) for d in doc["diagnostics"]}
    assert ("/etc/sysctl.d/dir.conf", None) in where
    assert ("/etc/sysctl.d/bin.conf", 2) in where
    assert [s["value"] for s in doc["settings"] if s["key"] == "kernel.x"] == ["\\xff"]


@pytest.mark.skipif(not os.path.isdir("/proc/sys/kernel"), reason="NEEDS /proc/sys: the live host's key tree")
def test_live_host_uses_proc_sys_by_default():
    doc = json.loads(run("show", "--format", "json").stdout)
    assert doc["key_tree"] == "/proc/sys"
    assert all(isinstance(s["exists"], bool) for s in doc["settings"])


def test_explain_sections_and_code_handlers_are_extensible(monkeypatch):
    from click.testing import CliRunner

    from sysctl_doctor.cli import cli
    from sysctl_doctor.cli import explain as explain_cli

    monkeypatch.setattr(explain_cli, "KEY_SECTIONS", explain_cli.KEY_SECTIONS + [
        lambda ctx: explain_cli.ExplainSection("extra", [f"seen {ctx.key} with {len(ctx.analysis.config.files)} files"])])
    monkeypatch.setattr(explain_cli, "CODE_HANDLERS", [
        lambda code: explain_cli.ExplainSection(code, ["a rule"]) if code == "SD101" else None])
    out = CliRunner().invoke(cli, ["explain", "net.ipv4.ip_forward", "--root", str(EXAMPLE)]).output
    assert "seen net.ipv4.ip_forward with 4 files" in out
    assert CliRunner().invoke(cli, ["explain", "SD101"]).output.splitlines() == ["SD101", "  a rule"]


def test_explain_lists_glob_lines_and_exclusions(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "usr/lib/sysctl.d/10-a.conf").write_text("k.*.v = 1\nk.a.v = 2\n")
    (root / "etc/sysctl.d/20-b.conf").write_text("-k.a.v\n")
    verdicts = {}
    for flavor in ("systemd", "procps"):
        doc = json.loads(run("explain", "k.a.v", "--root", str(root), "--flavor", flavor, "--format", "json").stdout)
        verdicts[flavor] = [(ln["line"], ln["verdict"]) for ln in doc["sections"][0]["data"]["lines"]]
    # systemd: the later "-k.a.v" replaces the assignment (nothing is written); procps still writes it.
    assert verdicts["systemd"] == [(1, "skipped"), (2, "cancelled"), (1, "excludes")]
    assert verdicts["procps"] == [(1, "skipped"), (2, "wins"), (1, "excludes")]


def test_show_names_a_symlink_loop_as_a_loop(tmp_path):
    """Regression: a symlink loop in sysctl.d was listed as a "dangling symlink" under "Not read"."""
    d = tmp_path / "etc/sysctl.d"
    d.mkdir(parents=True)
    os.symlink("x.conf", d / "y.conf")
    os.symlink("y.conf", d / "x.conf")
    os.symlink("nowhere.conf", d / "gone.conf")
    (d / "10-ok.conf").write_text("net.ipv4.ip_forward = 1\n")
    out = run("show", "--root", str(tmp_path)).stdout
    for name in ("x.conf", "y.conf"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"/etc/sysctl.d/{name}:"))
        assert "symlink loop" in line and "dangling" not in line
    gone = next(ln for ln in out.splitlines() if ln.strip().startswith("/etc/sysctl.d/gone.conf:"))
    assert "dangling symlink" in gone
    doc = json.loads(run("show", "--root", str(tmp_path), "--format", "json").stdout)
    assert "symlink loop" in json.dumps(doc) and "net.ipv4.ip_forward" in json.dumps(doc)


def test_explain_a_glob_itself_on_the_example(tmp_path):
    """Issue 16 item 11: `explain 'net.ipv4.conf.*.rp_filter'` said "no line sets this key" and that its only
    line was "overridden … by a later line with the same glob"."""
    out = run("explain", "net.ipv4.conf.*.rp_filter", "--root", str(EXAMPLE)).stdout
    assert "no line sets this key" not in out and "same glob" not in out
    assert "net.ipv4.conf.*.rp_filter = 1  (a glob, from /etc/sysctl.d/10-hardening.conf:7)" in out
    doc = json.loads(run("explain", "net.ipv4.conf.*.rp_filter", "--root", str(EXAMPLE), "--format", "json").stdout)
    data = doc["sections"][0]["data"]
    assert data["value"] == "1" and data["winner"] == {"file": "/etc/sysctl.d/10-hardening.conf", "line": 7}
    assert [(ln["line"], ln["verdict"]) for ln in data["lines"]] == [(7, "wins"), (8, "skipped")]
    tree = fake_proc_sys(tmp_path / "proc", "net/ipv4/conf/eth0/rp_filter", "net/ipv4/conf/lo/rp_filter")
    out = run("explain", "net.ipv4.conf.*.rp_filter", "--root", str(EXAMPLE), "--proc-sys", str(tree)).stdout
    assert "writes 1 key here: net.ipv4.conf.eth0.rp_filter" in out


@pytest.mark.parametrize("flavor", ["systemd", "procps"])
def test_explain_a_glob_set_twice(tmp_path, flavor):
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.d/10-a.conf").write_text("k.*.v = 1\n")
    (root / "etc/sysctl.d/20-b.conf").write_text("k.*.v = 2\n")
    doc = json.loads(run("explain", "k.*.v", "--root", str(root), "--flavor", flavor, "--format", "json").stdout)
    data = doc["sections"][0]["data"]
    assert data["value"] == "2" and [ln["verdict"] for ln in data["lines"]] == ["overridden", "wins"]
    assert "20-b.conf:1" in data["lines"][0]["reason"]
