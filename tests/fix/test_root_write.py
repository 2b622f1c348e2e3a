"""Writes inside a root (issue 16, items 1 and 15): planted links are never followed out of the root,
backups are per run and keep the owner, and nothing in src/ writes into a root another way."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from boot.rootfs import copy_incident, make_root
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.fix.apply import BACKUP_DIR, backup_run, write_atomic
from sysctl_doctor.root import Root
from sysctl_doctor.root_write import UnsafePath, open_root

CONF = "/etc/modules-load.d/sysctl-doctor.conf"
MINE = "# mine\nbr_netfilter\n"
SRC = Path(__file__).resolve().parents[2] / "src" / "sysctl_doctor"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysctl_doctor", *args], capture_output=True, text=True)


def secret_outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("do not touch\n")
    os.chmod(secret, 0o600)
    return secret


def assert_untouched(secret: Path) -> None:
    assert secret.read_text() == "do not touch\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret"], "something was created outside the root"


def backups_of(root: Path) -> List[Path]:
    return sorted((root / BACKUP_DIR.lstrip("/")).rglob("sysctl-doctor.conf"))


def test_link_planted_at_the_predictable_backup_path_is_not_followed(tmp_path: Path) -> None:
    """As found: a link at <root>/var/backups/sysctl-doctor/<this second>/etc/… → a file outside.
    The old code wrote the backup through it and chmodded the outside file (600 → the config's mode)."""
    secret = secret_outside(tmp_path)
    root = copy_incident(tmp_path / "r", {CONF: MINE})
    os.chmod(root / CONF.lstrip("/"), 0o755)
    now = time.time()
    for ahead in range(0, 8):  # the stamps the run can use
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now + ahead))
        link = root / BACKUP_DIR.lstrip("/") / stamp / CONF.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(secret, link)
    proc = run("fix", "--root", str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_untouched(secret)
    real = [b for b in backups_of(root) if not b.is_symlink()]
    assert len(real) == 1 and real[0].read_text() == MINE
    assert f"(backup: {BACKUP_DIR}/" in proc.stdout


@pytest.mark.parametrize("planted", ["/var/backups/sysctl-doctor", "/var/backups", "/var"])
@pytest.mark.parametrize("absolute", [True, False], ids=["absolute", "relative"])
def test_link_planted_at_a_backup_directory_stays_inside_the_root(tmp_path: Path, planted: str,
                                                                   absolute: bool) -> None:
    """A link in place of the backup directory or one of its parents, aimed outside: resolved inside
    the root (re-rooted, `..` stops at the root) like every read, so the backup goes around it."""
    secret = secret_outside(tmp_path)
    root = copy_incident(tmp_path / "r", {CONF: MINE})
    link = root / planted.lstrip("/")
    if link.exists():
        import shutil

        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = str(secret.parent) if absolute else os.path.relpath(secret.parent, link.parent)
    os.symlink(target, link)
    proc = run("fix", "--root", str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_untouched(secret)
    inside = proc.stdout.split("(backup: ", 1)[1].split(")", 1)[0]
    copy = Root(root).chase(inside)
    assert copy.host.read_text() == MINE
    assert os.path.realpath(copy.host).startswith(str(root) + "/"), "the backup is not inside the root"


def _swap_for_link(directory: Path, target: Path) -> None:
    directory.rename(directory.with_name(directory.name + ".moved"))
    os.symlink(target, directory)


def test_directory_swapped_for_a_link_after_resolution_is_refused(tmp_path: Path) -> None:
    """The race a predictable name no longer allows but a writable root still does: between resolving
    the path and writing, a directory becomes a link to a directory outside. Nothing is written there."""
    secret = secret_outside(tmp_path)
    root = make_root(tmp_path / "r", {CONF: MINE})

    def swap(step: str) -> None:
        if step == "mkdir":
            _swap_for_link(root / "etc/modules-load.d", secret.parent)

    with pytest.raises(UnsafePath, match="symbolic link"):
        write_atomic(Root(root), CONF, b"nf_conntrack\n", faults=swap)
    assert_untouched(secret)


def test_backup_directory_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    secret = secret_outside(tmp_path)
    root = make_root(tmp_path / "r", {CONF: MINE, f"{BACKUP_DIR}/keep": "x"})

    def swap(step: str) -> None:
        if step == "backup":
            _swap_for_link(root / BACKUP_DIR.lstrip("/"), secret.parent)

    with pytest.raises(UnsafePath):
        write_atomic(Root(root), CONF, b"nf_conntrack\n", faults=swap)
    assert_untouched(secret)
    assert (root / CONF.lstrip("/")).read_text() == MINE  # no backup, no write


def test_target_file_swapped_for_a_link_is_not_read_or_followed(tmp_path: Path) -> None:
    secret = secret_outside(tmp_path)
    root = make_root(tmp_path / "r", {CONF: MINE})
    real_root = Root(root)
    chased = real_root.chase(CONF)
    os.unlink(chased.host)
    os.symlink(secret, chased.host)  # after resolution, before the write: simulate with a stale chase

    class Stale(Root):
        def chase(self, path: str, *, follow_final: bool = True):  # type: ignore[override]
            return chased if path == CONF else super().chase(path, follow_final=follow_final)

    with pytest.raises(UnsafePath, match="symbolic link"):
        write_atomic(Stale(root), CONF, b"nf_conntrack\n")
    assert_untouched(secret)


def test_two_runs_in_the_same_second_keep_both_backups(tmp_path: Path) -> None:
    """As found: the backup directory was named by the second alone, so the second run's backup
    replaced the first's. Now each run makes its own directory."""
    root = make_root(tmp_path / "r", {CONF: "first\n"})
    fd = open_root(Root(root))
    try:
        for new in (b"second\n", b"third\n"):
            write_atomic(Root(root), CONF, new, backups=backup_run(Root(root), fd, stamp="20260101T000000"))
    finally:
        os.close(fd)
    found = backups_of(root)
    # both kept (their mtimes can be equal: the file system's clock is coarser than two quick writes)
    assert sorted(p.read_text() for p in found) == ["first\n", "second\n"]
    assert len({p.relative_to(root).parts[3] for p in found}) == 2
    assert all(p.relative_to(root).parts[3].startswith("20260101T000000-") for p in found)
    run_dir = found[0].parents[2]
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_backup_keeps_the_original_owner_and_mode(tmp_path: Path, require_root) -> None:
    """Issue 16 item 15: backups were owned by root whatever the original's owner."""
    root = copy_incident(tmp_path / "r", {CONF: MINE})
    target = root / CONF.lstrip("/")
    os.chown(target, 1234, 4321)
    os.chmod(target, 0o640)
    proc = run("fix", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    (backup,) = backups_of(root)
    st = backup.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
    assert backup.read_text() == MINE


def test_a_refused_write_is_a_clean_error(tmp_path: Path) -> None:
    root = make_root(tmp_path / "r", {CONF: MINE, "/etc/modules-load.d/x.conf": "a\n"})
    os.symlink("/nonexistent", root / "etc/modules-load.d/y.conf")
    with pytest.raises(DoctorError):
        write_atomic(Root(root), "/etc/modules-load.d", b"x")


# --- no other way to write into a root ---------------------------------------------------------------

WRITE_CALLS = {"write_text", "write_bytes", "touch", "symlink_to", "hardlink_to", "mkdir", "makedirs", "chmod",
               "lchmod", "chown", "lchown", "rename", "mkstemp", "mkdtemp", "NamedTemporaryFile", "copy", "copy2",
               "copyfile", "copytree", "move", "symlink", "mknod", "truncate", "unlink", "rmtree"}
MODULE_ONLY = {"replace", "link", "remove"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}

# (file under src/sysctl_doctor, call, first argument) → why it is not a write into a root.
ALLOWED: Dict[Tuple[str, str, str], str] = {
    ("fix/apply.py", "write_text", "value + '\\n'"): "--now: /proc/sys of the live host (a kernel interface)",
    ("live.py", "write_text", "value + '\\n'"): "LiveHost: /proc/sys of the live host",
    ("lab/topology.py", "open", "f'/proc/sys/{key}'"): "lab: /proc/sys in the lab's network namespaces",
    ("live.py", "open", "HOST_LOCK"): "the host lock under /run (a host path, never in a root)",
    ("live.py", "mkdir", "parents=True"): "the host lock's directory under /run",
    ("conntrack/debug.py", "open", "HOST_LOCK"): "the host lock under /run",
    ("conntrack/debug.py", "mkdir", "parents=True"): "the host lock's directory under /run",
    ("conntrack/debug.py", "open", "tmp"): "debug's state record under /run/sysctl-doctor (host, root-owned)",
    ("conntrack/debug.py", "makedirs", "directory"): "debug's state directory under /run/sysctl-doctor",
    ("conntrack/debug.py", "replace", "tmp"): "debug's state record, renamed into place",
    ("conntrack/debug.py", "unlink", "path"): "debug's state record, removed when the switch is off",
    ("kernel/cache.py", "mkdir", "parents=True"): "the user's index cache (XDG cache dir), not a root",
    ("kernel/cache.py", "mkstemp", "prefix='.index-'"): "the user's index cache",
    ("kernel/cache.py", "replace", "tmp"): "the user's index cache",
    ("kernel/cache.py", "unlink", "tmp"): "the user's index cache: a failed temporary file",
    ("kernel/cache.py", "unlink", ""): "the user's index cache: `index --no-cache` drops an entry",
    ("conntrack/debug.py", "unlink", "state_path(netns, state_dir)"): "debug's state record under /run/sysctl-doctor",
    ("lab/runner.py", "makedirs", "keep_capture"): "lab --keep-capture DIR: a directory the user names",
    ("lab/capture.py", "open", "path"): "lab --pcap: the capture file the user names on the command line",
    ("cli/__init__.py", "open", "os.devnull"): "stdout pointed at /dev/null after a closed pipe",
    ("fleet/textfile.py", "mkstemp", "prefix=f'.{filename}.'"): "check --textfile-dir DIR: node_exporter's directory the user names",
    ("fleet/textfile.py", "rename", "tmp"): "check --textfile-dir: the metrics file renamed into place",
    ("fleet/textfile.py", "unlink", "tmp"): "check --textfile-dir: a failed temporary file",
    ("conntrack/pcap.py", "NamedTemporaryFile", "prefix='sysctl-doctor-capture-'"): "replay of stdin/a FIFO/.gz: a private copy in $TMPDIR",
    ("fleet/log_counters.py", "mkdir", "mode=493"): "conntrack logs --state-dir: the counters' state directory (host)",
    ("host_switches.py", "mkdir", "mode=493"): "the host-switch record's directory under /run/sysctl-doctor",
    ("host_switches.py", "open", "tmp"): "the host-switch record under /run/sysctl-doctor (host, root-owned)",
    ("host_switches.py", "replace", "tmp"): "the host-switch record, renamed into place",
    ("host_switches.py", "mkdir", "parents=True"): "the host lock's directory under /run/lock",
    ("host_switches.py", "open", "lock_path"): "the host lock under /run/lock",
    ("host_switches.py", "unlink", ""): "the host-switch record's temporary file or a stale record under /run",
    ("host_switches.py", "write_text", "''.join((line + '\\n' for line in lines))"): "the recovery log under /run/sysctl-doctor (host, root-owned)",
    ("host_switches.py", "open", "path"): "a host sysctl under /proc/sys switched by the record",
    ("cli/_shellfiles.py", "mkdir", "parents=True"): "packaging: the man/completion output directory the packager names",
    ("cli/_shellfiles.py", "write_text", "manpage(path, cmd, ctx, __version__, date)"): "packaging: a generated man page",
    ("cli/_shellfiles.py", "write_text", "completion_script(shell)"): "packaging: a generated completion script",
    # verify never writes in --root: it copies the root into its own work directory ($TMPDIR) and writes there
    ("verify/image.py", "mkdir", "parents=True"): "verify: the copy of the root in verify's work directory",
    ("verify/image.py", "unlink", ""): "verify: a file of the copy replaced by the injected reporter",
    ("verify/image.py", "write_text", "content"): "verify: the reporter injected into the copy",
    ("verify/image.py", "chmod", "path"): "verify: the reporter's mode in the copy",
    ("verify/image.py", "symlink", "target"): "verify: the reporter's unit link in the copy",
    ("verify/image.py", "rmtree", "tree"): "verify: the copy, removed once imaged",
    ("verify/qemu.py", "mkdir", "parents=True"): "verify: the boot's log directory (work directory or --log-dir)",
    ("verify/qemu.py", "open", "stderr_path"): "verify: qemu's stderr log in the log directory",
    ("verify/qemu.py", "open", "'/dev/kvm'"): "verify: the KVM device opened (O_RDWR) and closed to see that it opens",
    ("verify/qemu.py", "unlink", ""): "verify: the previous boot's logs in the log directory",
    ("verify/run.py", "mkdtemp", "prefix='sysctl-doctor-verify-'"): "verify: its private work directory in $TMPDIR",
    ("verify/run.py", "rmtree", "work"): "verify: its work directory, removed at the end",
    ("verify/run.py", "unlink", "missing_ok=True"): "verify: a boot's copy of the image in the work directory",
}


def test_now_refuses_a_key_that_leaves_proc_sys(tmp_path: Path) -> None:
    """`fix --now` writes each planned key under /proc/sys; a key from a crafted sysctl.d line with `..`
    (the curated table's nf_conntrack_* pattern matches across slashes) must not lead out of it."""
    from sysctl_doctor.fix.apply import apply_now
    from sysctl_doctor.fix.plan import FixPlan, NowAction

    proc_sys = tmp_path / "proc_sys"
    (proc_sys / "net/netfilter/nf_conntrack_x").mkdir(parents=True)
    sysmod = tmp_path / "sys_module"
    (sysmod / "nf_conntrack").mkdir(parents=True)
    plan = FixPlan("modules-load", now=[NowAction("nf_conntrack", {
        "net/netfilter/nf_conntrack_x/../../../../pwned": "1"})])
    with pytest.raises(DoctorError, match="leaves"):
        apply_now(plan, proc_sys=proc_sys, sys_module=sysmod)
    assert not (tmp_path / "pwned").exists()


def _first_arg(call: ast.Call) -> str:
    if call.args:
        return ast.unparse(call.args[0]) if hasattr(ast, "unparse") else ast.dump(call.args[0])
    if call.keywords:
        kw = call.keywords[0]
        return f"{kw.arg}={ast.unparse(kw.value)}" if hasattr(ast, "unparse") else kw.arg or ""
    return ""


def _is_write(call: ast.Call) -> str:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name == "open":
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if owner == "os":
            flags = {n.attr for a in call.args[1:2] for n in ast.walk(a) if isinstance(n, ast.Attribute)}
            return "open" if flags & WRITE_FLAGS else ""
        modes = [a for a in call.args[:2]] + [k.value for k in call.keywords if k.arg == "mode"]  # Path.open(mode)
        for mode in modes:
            if (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) <= set("rwxabt+U")
                    and set(mode.value) & set("wax+")):
                return "open"
        return ""
    if name == "fdopen":
        return ""  # its fd was opened by a call this scan checks
    if name in MODULE_ONLY:  # os.replace, not str.replace; os.link, not pyroute2's ipr.link
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        return name if owner in ("os", "shutil") else ""
    return name if name in WRITE_CALLS else ""


def raw_writes() -> List[Tuple[str, int, str, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel == "root_write.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Call):
                kind = _is_write(node)
                if kind:
                    found.append((rel, node.lineno, kind, _first_arg(node)))
    return found


@pytest.mark.skipif(sys.version_info < (3, 9), reason="ast.unparse")
def test_no_raw_write_into_a_root_outside_root_write() -> None:
    """`git grep` for open(…, "w…")/write_text/write_bytes/chmod/… in src/: every hit outside
    root_write.py must be a write that never lands in a root, listed in ALLOWED with the reason."""
    unexpected = [f"{rel}:{line}: {kind}({arg})" for rel, line, kind, arg in raw_writes()
                  if (rel, kind, arg) not in ALLOWED]
    assert not unexpected, ("writes outside sysctl_doctor/root_write.py (route them through it, or add them to "
                            "ALLOWED with the reason they never touch a root):\n" + "\n".join(unexpected))


def test_the_scan_sees_the_writes_it_guards_against() -> None:
    snippet = ast.parse('open(p, "wb")\nPath(p).write_text(x)\nos.chmod(p, 0o755)\n'
                        'os.open(p, os.O_WRONLY | os.O_CREAT)\nopen(p)\n"a".replace("a", "b")\n'
                        'Path(p).open("a")\nopen("/var/www")\nipr.link("add")\nos.replace(a, b)\n')
    kinds = [_is_write(n) for n in ast.walk(snippet) if isinstance(n, ast.Call)]
    assert sorted(k for k in kinds if k) == ["chmod", "open", "open", "open", "replace", "write_text"]


def test_apply_plan_reports_a_refused_write_as_a_clean_error(tmp_path: Path) -> None:
    """What the CLI turns into `error: cannot write … refusing to write under …` and exit 2."""
    from sysctl_doctor.fix.apply import apply_plan
    from sysctl_doctor.fix.plan import FileEdit, FixPlan

    secret = secret_outside(tmp_path)
    root = make_root(tmp_path / "r", {CONF: MINE})
    plan = FixPlan("modules-load", edits=[FileEdit(CONF, MINE, MINE + "nf_conntrack\n", "test")])

    def swap(step: str) -> None:
        if step == "mkdir":
            _swap_for_link(root / "etc/modules-load.d", secret.parent)

    with pytest.raises(DoctorError, match=r"cannot write .*refusing to write under /etc/modules-load.d"):
        apply_plan(Root(root), plan, faults=swap)
    assert_untouched(secret)


@pytest.fixture
def request_cleanup():  # type: ignore[no-untyped-def]
    todo: list = []
    yield todo
    for step in todo:
        step()


def test_an_unprivileged_user_writes_its_own_root(request_cleanup: list, require_root) -> None:
    """As `nobody` (a forked child that drops to uid/gid 65534): chown to another owner is not allowed,
    so the backup is the user's own; the write itself works and nothing is left behind."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sd-nobody-"))  # pytest's tmp_path is under a 0700 directory
    request_cleanup.append(lambda: shutil.rmtree(base, ignore_errors=True))
    root = make_root(base / "r", {CONF: MINE})
    for path in [base, *root.rglob("*"), root]:
        os.lchown(path, 65534, 65534)
    os.chown(root / CONF.lstrip("/"), 1234, 65534)
    os.chmod(root / CONF.lstrip("/"), 0o664)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            write_atomic(Root(root), CONF, b"nf_conntrack\n")
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            os.write(2, f"child: {exc!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert (root / CONF.lstrip("/")).read_bytes() == b"nf_conntrack\n"
    (backup,) = backups_of(root)
    assert backup.read_text() == MINE and backup.stat().st_uid == 65534
    assert not [p for p in (root / "etc/modules-load.d").iterdir() if p.name.endswith(".sysctl-doctor-tmp")]
