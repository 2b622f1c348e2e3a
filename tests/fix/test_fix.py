"""`fix`: plan → diff → atomic apply, on copies of the incident root; idempotent; confined; crash-safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boot.rootfs import copy_incident, make_root
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.fix.apply import BACKUP_DIR, STEPS, write_atomic
from sysctl_doctor.root import Root

KEY = "net.netfilter.nf_conntrack_tcp_be_liberal"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True)


def boot_entry(root: Path) -> dict:
    data = json.loads(run("check", "--root", str(root), "--format", "json").stdout)
    return next(e for e in data["keys"] if e["key"] == KEY)


def test_modules_load_fix_then_applied_and_idempotent(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r")
    dry = run("fix", "--root", str(root), "--dry-run")
    assert dry.returncode == 0
    assert "+++ b/etc/modules-load.d/sysctl-doctor.conf" in dry.stdout and "+nf_conntrack" in dry.stdout
    assert not (root / "etc/modules-load.d/sysctl-doctor.conf").exists()
    first = run("fix", "--root", str(root))
    assert first.returncode == 0, first.stdout + first.stderr
    written = root / "etc/modules-load.d/sysctl-doctor.conf"
    assert written.read_text().splitlines()[-1] == "nf_conntrack"
    assert oct(written.stat().st_mode & 0o777) == "0o644"
    assert f"{KEY}: applied at boot" in first.stdout
    assert boot_entry(root)["boot"] == {"applied": True, "value": "1"}
    second = run("fix", "--root", str(root))
    assert second.returncode == 0 and "nothing to change" in second.stdout
    assert not [p for p in written.parent.iterdir() if "sysctl-doctor-tmp" in p.name]


def test_udev_fix_writes_the_sysctl_d_rule(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r")
    proc = run("fix", "--root", str(root), "--method", "udev")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = (root / "etc/udev/rules.d/90-sysctl-doctor.rules").read_text()
    assert ('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
            'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"') in rules
    assert boot_entry(root)["boot"] == {"applied": True, "value": "1"}
    assert "nothing to change" in run("fix", "--root", str(root), "--method", "udev").stdout


def test_existing_file_keeps_mode_owner_and_is_backed_up(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {"/etc/modules-load.d/sysctl-doctor.conf": "# mine\nbr_netfilter\n"})
    target = root / "etc/modules-load.d/sysctl-doctor.conf"
    os.chmod(target, 0o640)
    os.chown(target, 1234, 4321)
    proc = run("fix", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "# mine\nbr_netfilter\nnf_conntrack\n"
    st = target.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 1234, 4321)
    backups = list((root / BACKUP_DIR.lstrip("/")).rglob("sysctl-doctor.conf"))
    assert len(backups) == 1 and backups[0].read_text() == "# mine\nbr_netfilter\n"


def test_broken_ordering_gets_a_dropin(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {
        "/etc/systemd/system/systemd-sysctl.service.d/override.conf": "[Unit]\nAfter=\n",
    })
    proc = run("fix", "--root", str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dropin = root / "etc/systemd/system/systemd-sysctl.service.d/sysctl-doctor-after-modules.conf"
    assert "After=systemd-modules-load.service" in dropin.read_text()
    assert boot_entry(root)["boot"]["applied"] is True


def test_writes_never_leave_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make_root(tmp_path / "r", {"/etc/modules-load.d": ("link", str(outside))})
    # an absolute link is re-rooted: the write lands in <root>/<outside path>, not in `outside`
    applied = write_atomic(Root(root), "/etc/modules-load.d/x.conf", b"nf_conntrack\n")
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "x.conf").read_text() == "nf_conntrack\n"
    assert applied.written == f"{outside}/x.conf"
    make_root(tmp_path / "m", {"/etc/modules-load.d/x.conf": ("link", "/dev/null")})
    with pytest.raises(DoctorError, match="masked"):
        write_atomic(Root(tmp_path / "m"), "/etc/modules-load.d/x.conf", b"y\n")


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_crash_at_every_step_leaves_old_or_new(tmp_path: Path, step: str, existing: bool) -> None:
    """A real process death (os._exit in a forked child) between steps: never a torn file."""
    root = make_root(tmp_path / "r", {"/etc/modules-load.d/keep.conf": "old\n" * 1000} if existing else {})
    target = root / "etc/modules-load.d/keep.conf"
    old = target.read_bytes() if existing else None
    new = b"new line\n" * 5000
    pid = os.fork()
    if pid == 0:  # child: crash when `step` is reached
        def crash(name: str) -> None:
            if name == step:
                os._exit(77)
        try:
            write_atomic(Root(root), "/etc/modules-load.d/keep.conf", new, faults=crash)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 77, "the injected crash did not happen"
    content = target.read_bytes() if target.exists() else None
    assert content in (old, new), f"torn file after crash at {step}"
    # before the rename the old file (or none) is there; from the directory fsync on, the new one
    assert content == (new if step == "dirfsync" else old)


@pytest.mark.parametrize("step", STEPS)
def test_exception_at_every_step_cleans_up(tmp_path: Path, step: str) -> None:
    root = make_root(tmp_path / "r", {"/etc/modules-load.d/keep.conf": "old\n"})
    target = root / "etc/modules-load.d/keep.conf"

    def fail(name: str) -> None:
        if name == step:
            raise OSError(28, "No space left on device (injected)")

    with pytest.raises(OSError):
        write_atomic(Root(root), "/etc/modules-load.d/keep.conf", b"new\n", faults=fail)
    assert target.read_bytes() in (b"old\n", b"new\n")
    assert target.read_bytes() == (b"new\n" if step == "dirfsync" else b"old\n")
    assert not [p for p in target.parent.iterdir() if "sysctl-doctor-tmp" in p.name]


def test_now_refused_on_an_offline_root(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r")
    proc = run("fix", "--root", str(root), "--now")
    assert proc.returncode == 2 and "--now" in proc.stderr


def test_now_sets_the_value_in_a_private_network_namespace(require_root) -> None:
    """apply_now against the real kernel, in a network namespace of its own (the host is untouched)."""
    import shutil
    import textwrap

    if shutil.which("unshare") is None:
        pytest.skip("NEEDS unshare (util-linux)")
    if not Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal").exists():
        pytest.skip("NEEDS a kernel with conntrack in /proc/sys (built in, or nf_conntrack loaded)")
    host_before = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal").read_text()
    child = textwrap.dedent("""
        from pathlib import Path
        from sysctl_doctor.fix.plan import FixPlan, NowAction
        from sysctl_doctor.fix.apply import apply_now
        key = "net/netfilter/nf_conntrack_tcp_be_liberal"
        want = "0" if Path("/proc/sys", key).read_text().strip() == "1" else "1"
        done = apply_now(FixPlan("modules-load", now=[NowAction("nf_conntrack", {key: want})]))
        assert Path("/proc/sys", key).read_text().strip() == want, done
        print("\\n".join(done))
    """)
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", child], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "nf_conntrack already loaded (or built in)" in proc.stdout
    assert Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal").read_text() == host_before


def test_fix_leaves_a_blocked_module_alone(tmp_path: Path) -> None:
    root = copy_incident(tmp_path / "r", {"/etc/modprobe.d/cis.conf": "install nf_conntrack /bin/true\n"})
    proc = run("fix", "--root", str(root))
    assert "nothing this method can change" in proc.stdout and "nf_conntrack cannot be loaded" in proc.stdout
    assert not (root / "etc/modules-load.d/sysctl-doctor.conf").exists()


def test_a_file_with_bytes_that_are_not_utf8_is_edited_byte_for_byte(tmp_path: Path) -> None:
    """As found: a Latin-1 comment in the file to extend made every `fix` fail with "changed since the
    plan was made" (the plan had read it with U+FFFD replacements), and the diff printed the raw byte."""
    root = copy_incident(tmp_path / "r", {})
    target = root / "etc/modules-load.d/sysctl-doctor.conf"
    target.write_bytes(b"# caf\xe9\nbr_netfilter\n")
    proc = subprocess.run([sys.executable, "-m", "sysctl_doctor", "fix", "--root", str(root)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b"# caf\xe9\nbr_netfilter\nnf_conntrack\n"
    assert b" # caf\\xe9\n" in proc.stdout and b"\xe9" not in proc.stdout
