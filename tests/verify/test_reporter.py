"""The reporter script itself (the one injected into every image), run on this host without booting:
in a private mount namespace with a tmpfs over /proc/sys holding chosen keys, so it reads the path it
reads in a guest and nothing on the host changes. Its output is parsed and compared as verify does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sysctl_doctor.verify.compare import LOADER_WON, Predicted, compare
from sysctl_doctor.verify.reporter import BOOT, LATE, SCRIPT, parse_report, reporter_injection

pytestmark = pytest.mark.root


def _host_module():
    """A module already loaded here: `modprobe` of it is a real run that changes nothing."""
    try:
        lines = Path("/proc/modules").read_text().splitlines()
    except OSError:
        return None
    return lines[0].split()[0] if lines and shutil.which("modprobe") else None


def _run_reporter(tmp_path: Path, keys, late_load, proc_sys_files, globs=()) -> list:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("NEEDS root and unshare (a private mount namespace with a tmpfs /proc/sys)")
    conf = tmp_path / "conf"
    conf.mkdir()
    injection = reporter_injection("systemd", keys, late_load, (), globs)
    for rel, (content, mode) in injection.files.items():
        if rel.startswith("etc/sdverify/"):
            (conf / rel.rsplit("/", 1)[1]).write_text(content)
    script = tmp_path / "sdverify-report"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "report.log"
    populate = " && ".join(
        f"mkdir -p /proc/sys/{os.path.dirname(path)} && printf '%s' '{value}' > /proc/sys/{path}"
        for path, value in proc_sys_files.items())
    inner = (f"mount --make-rprivate / && mount -t tmpfs sdverify-test /proc/sys && {populate} && "
             f"SDVERIFY_CONF={conf} SDVERIFY_OUT={out} SDVERIFY_NO_SETTLE=1 {script}")
    host_ns = os.readlink("/proc/self/ns/mnt")
    host_pid_max = Path("/proc/sys/kernel/pid_max").read_text()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink("/proc/self/ns/mnt") == host_ns
    assert Path("/proc/sys/kernel/pid_max").read_text() == host_pid_max, "the tmpfs /proc/sys leaked to the host"
    return out.read_text().splitlines()


def test_reporter_reads_each_key_from_proc_sys_and_the_modules(tmp_path):
    module = _host_module()
    keys = ["kernel.pid_max", "net.ipv4.ip_local_port_range", "net.ipv4.conf.eth0/100.rp_filter",
            "net.netfilter.nf_conntrack_tcp_be_liberal"]
    lines = _run_reporter(tmp_path, keys, [module] if module else [], {
        "kernel/pid_max": "4242\n",
        "net/ipv4/ip_local_port_range": "32768\t60999\n",
        "net/ipv4/conf/eth0.100/rp_filter": "2\n",
    })
    seen = parse_report(lines)
    assert seen.begun and seen.complete, lines
    boot = seen.snapshot(BOOT)
    assert boot.values == {"kernel.pid_max": "4242", "net.ipv4.ip_local_port_range": "32768 60999",
                           "net.ipv4.conf.eth0/100.rp_filter": "2",
                           "net.netfilter.nf_conntrack_tcp_be_liberal": None}, lines
    assert boot.uptime is not None and boot.uptime > 0
    modules = Path("/proc/modules")
    host_modules = {line.split()[0] for line in modules.read_text().splitlines()} if modules.exists() else set()
    assert boot.modules == {m.replace("-", "_") for m in host_modules}
    if module:
        assert [(load.module, load.rc) for load in seen.loads] == [(module, 0)], lines
        assert seen.snapshot(LATE).values == boot.values
    else:
        assert seen.snapshot(LATE) is None

    predicted = [
        Predicted("kernel.pid_max", "4242", "/etc/sysctl.d/a.conf", 1, None, True, "4242", False, "4242", False,
                  "applied", "applied"),
        Predicted("net.netfilter.nf_conntrack_tcp_be_liberal", "1", "/etc/sysctl.conf", 3, "nf_conntrack", False,
                  None, True, "0", False, "never-loaded", "not applied (module never loaded)"),
        Predicted("net.ipv4.ip_local_port_range", "32768   60999", "/etc/sysctl.d/a.conf", 2, None, True,
                  "32768   60999", False, "32768   60999", False, "applied", "applied"),
    ]
    outcomes = [o for o in compare(predicted, seen) if o.phase == BOOT]
    assert all(o.agree for o in outcomes), outcomes
    assert not any(o.race_side == LOADER_WON for o in outcomes)


def test_reporter_without_late_loads_reports_one_phase(tmp_path):
    lines = _run_reporter(tmp_path, ["kernel.pid_max"], [], {"kernel/pid_max": "99\n"})
    seen = parse_report(lines)
    assert seen.complete and set(seen.phases) == {BOOT} and seen.loads == []
    assert seen.snapshot(BOOT).values == {"kernel.pid_max": "99"}


def test_reporter_expands_a_glob_line_like_the_kernel_tree_does(tmp_path):
    from sysctl_doctor.verify.compare import GlobLine, compare_globs

    lines = _run_reporter(tmp_path, ["net.ipv4.conf.lo.rp_filter"], [], {
        "net/ipv4/conf/all/rp_filter": "1\n", "net/ipv4/conf/default/rp_filter": "1\n",
        "net/ipv4/conf/lo/rp_filter": "0\n", "net/ipv4/conf/eth0.100/rp_filter": "2\n",
        "net/ipv4/conf/all/forwarding": "0\n",
    }, globs=["net.ipv4.conf.*.rp_filter"])
    boot = parse_report(lines).snapshot(BOOT)
    assert boot.matches == {"net.ipv4.conf.*.rp_filter": {
        "net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "1",
        "net.ipv4.conf.lo.rp_filter": "0", "net.ipv4.conf.eth0/100.rp_filter": "2"}}, lines
    glob = GlobLine("net.ipv4.conf.*.rp_filter", "1", "/etc/sysctl.d/10-hardening.conf", 7)
    outcomes = {o.key: o for o in compare_globs([glob], ["net.ipv4.conf.lo.rp_filter"], boot)}
    assert set(outcomes) == {"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
                             "net.ipv4.conf.eth0/100.rp_filter"}   # lo has its own line: not the glob's
    assert outcomes["net.ipv4.conf.all.rp_filter"].agree and not outcomes["net.ipv4.conf.eth0/100.rp_filter"].agree


def test_reporter_expands_a_glob_lines_braces_as_systemd_sysctl_does(tmp_path):
    # GLOB_BRACE: systemd-sysctl writes net.ipv4.conf.{all,default}.* to both; the guest's sh knows no braces,
    # so the pattern matched nothing and its keys went untested without a word.
    lines = _run_reporter(tmp_path, [], [], {
        "net/ipv4/conf/all/rp_filter": "1\n", "net/ipv4/conf/default/rp_filter": "1\n",
        "net/ipv4/conf/lo/rp_filter": "0\n", "net/ipv4/conf/all/forwarding": "0\n",
    }, globs=["net.ipv4.conf.{all,default}.rp_*"])
    assert parse_report(lines).snapshot(BOOT).matches == {"net.ipv4.conf.{all,default}.rp_*": {
        "net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "1"}}, lines
