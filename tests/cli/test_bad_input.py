"""Bad input on every command, through the real console script: a clear message, the right exit code
(2 for usage and I/O errors), never a traceback, never "internal error", never a hang.

Each row is (id, argv with {placeholders} for the fixture tree, expected exit code(s), text the
output must contain). The tree holds what users really hand the tool: missing paths, a file where a
directory is expected, symlink loops and FIFOs in sysctl.d, binary garbage, empty files and roots, a
root with no kernel tree, non-capture files, broken gzip.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from cli.console import INCIDENT, console_script, run_cli
from unprivileged import require_nobody, run_as_nobody

GARBAGE = bytes(range(256)) * 16 + b"\x00\xff\xfe" * 100


def _build_tree(base: Path) -> Dict[str, str]:
    paths: Dict[str, str] = {"missing": str(base / "does-not-exist"), "incident": str(INCIDENT)}

    (base / "afile").write_text("hello\n")
    paths["afile"] = str(base / "afile")
    (base / "empty-root").mkdir()
    paths["empty_root"] = str(base / "empty-root")

    loop = base / "loop-root/etc/sysctl.d"
    loop.mkdir(parents=True)
    os.symlink("x.conf", loop / "y.conf")
    os.symlink("y.conf", loop / "x.conf")
    (loop / "10-ok.conf").write_text("net.ipv4.ip_forward = 1\n")
    paths["loop_root"] = str(base / "loop-root")

    loops = base / "loops-root"  # the incident with a symlink loop in every directory the boot model reads
    shutil.copytree(INCIDENT, loops, symlinks=True)
    (loops / "etc/nftables.conf").unlink()
    for directory, a, b in (("etc/systemd/system", "a.service", "b.service"), ("etc/modprobe.d", "x.conf", "y.conf"),
                            ("etc/udev/rules.d", "x.rules", "y.rules"), ("etc/modules-load.d", "m1.conf", "m2.conf"),
                            ("etc/systemd/system/nftables.service.d", "l1.conf", "l2.conf"),
                            ("etc", "nftables.conf", "nft2.conf")):
        (loops / directory).mkdir(parents=True, exist_ok=True)
        os.symlink(a, loops / directory / b)
        os.symlink(b, loops / directory / a)
    os.symlink("/etc/systemd/system/a.service", loops / "etc/systemd/system/sysinit.target.wants/a.service")
    paths["loops_root"] = str(loops)

    kernel_dir = base / "modules-root/lib/modules/6.1.0-x/kernel"  # FIFOs and a loop among the module files
    kernel_dir.mkdir(parents=True)
    os.mkfifo(kernel_dir / "a.ko")
    os.mkfifo(kernel_dir.parent / "modules.dep")
    os.symlink("c.ko", kernel_dir / "d.ko")
    os.symlink("d.ko", kernel_dir / "c.ko")
    paths["modules_root"] = str(base / "modules-root")

    fifo = base / "fifo-root/etc/sysctl.d"
    fifo.mkdir(parents=True)
    os.mkfifo(fifo / "f.conf")
    os.mkfifo(base / "fifo-root/etc/sysctl.conf")
    paths["fifo_root"] = str(base / "fifo-root")

    garbage = base / "garbage-root"
    for inside in ("etc/sysctl.d/g.conf", "etc/sysctl.conf", "usr/lib/systemd/system/nftables.service",
                   "etc/nftables.conf", "etc/modules", "etc/modprobe.d/x.conf", "etc/udev/rules.d/1.rules",
                   "etc/default/grub", "etc/kernel/cmdline", "etc/os-release",
                   "etc/initramfs-tools/modules", "boot/initrd.img-6.1.0-x",
                   "lib/modules/6.1.0-x/modules.dep", "lib/modules/6.1.0-x/modules.builtin",
                   "lib/modules/6.1.0-x/modules.alias", "lib/modules/6.1.0-x/kernel/x.ko",
                   "lib/modules/6.1.0-x/kernel/y.ko.xz", "lib/modules/6.1.0-x/kernel/z.ko.zst"):
        (garbage / inside).parent.mkdir(parents=True, exist_ok=True)
        (garbage / inside).write_bytes(GARBAGE)
    (garbage / "lib/modules/6.1.0-x/kernel/elf.ko").write_bytes(b"\x7fELF\x02\x01\x01" + GARBAGE[:100])
    wants = garbage / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/nftables.service", wants / "nftables.service")
    (garbage / "etc/sysctl.d/a.conf").write_text("net.netfilter.nf_conntrack_tcp_be_liberal = 1\n")
    paths["garbage_root"] = str(garbage)

    no_kernel = base / "no-kernel-root/etc/sysctl.d"
    no_kernel.mkdir(parents=True)
    (no_kernel / "a.conf").write_text("net.netfilter.nf_conntrack_tcp_be_liberal = 1\n")
    paths["no_kernel_root"] = str(base / "no-kernel-root")

    (base / "garbage.bin").write_bytes(GARBAGE)
    paths["garbage"] = str(base / "garbage.bin")
    (base / "empty.pcap").write_bytes(b"")
    paths["empty_file"] = str(base / "empty.pcap")
    (base / "text.pcap").write_text("these are not the packets you are looking for\n")
    paths["text"] = str(base / "text.pcap")
    (base / "cut.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00")
    paths["cut_pcap"] = str(base / "cut.pcap")
    (base / "dir.pcap").mkdir()
    paths["dir"] = str(base / "dir.pcap")
    whole = gzip.compress(b"".join(b"%d kernel: line %d\n" % (i, i * i) for i in range(20000)))
    (base / "cut.log.gz").write_bytes(whole[: len(whole) // 2])  # a rotated log cut by a full disk
    paths["cut_gz"] = str(base / "cut.log.gz")
    return paths


@pytest.fixture(scope="module")
def tree() -> Iterator[Dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="sd-bad-input-"))
    try:
        yield _build_tree(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


OK, FINDINGS, ERROR = 0, 1, 2

# (id, argv, allowed exit codes, text the combined output must contain)
CASES = [
    # check
    ("check-missing-root", ["check", "--root", "{missing}"], {ERROR}, "not a directory"),
    ("check-root-is-file", ["check", "--root", "{afile}"], {ERROR}, "is a file"),
    ("check-empty-root", ["check", "--root", "{empty_root}"], {ERROR}, "not a root filesystem"),  # issue 16
    ("check-symlink-loop", ["check", "--root", "{loop_root}"], {OK}, "net.ipv4.ip_forward"),
    ("check-loops-everywhere", ["check", "--root", "{loops_root}"], {OK, FINDINGS},
     "skipped: /etc/nftables.conf: too many levels of symbolic links"),
    ("index-loops-everywhere", ["index", "--root", "{loops_root}"], {OK}, "/etc/modprobe.d/x.conf: cannot read"),
    ("fix-loops-everywhere", ["fix", "--root", "{loops_root}", "--dry-run"], {OK}, "modules-load.d"),
    ("explain-loops-everywhere", ["explain", "net.netfilter.nf_conntrack_tcp_be_liberal", "--root", "{loops_root}"],
     {OK}, "provided by module nf_conntrack"),
    ("check-fifo", ["check", "--root", "{fifo_root}"], {OK}, "0 keys"),
    ("check-garbage", ["check", "--root", "{garbage_root}"], {OK, FINDINGS}, "nf_conntrack_tcp_be_liberal"),
    ("check-garbage-json", ["check", "--root", "{garbage_root}", "--format", "json"], {OK, FINDINGS}, '"keys"'),
    ("check-no-kernel-tree", ["check", "--root", "{no_kernel_root}"], {OK, FINDINGS}, "no kernel modules tree"),
    ("check-kernel-missing", ["check", "--root", "{incident}", "--kernel", "9.9.9-nope"], {ERROR},
     "--kernel 9.9.9-nope"),
    ("check-bad-format", ["check", "--root", "{incident}", "--format", "yaml"], {ERROR}, "'yaml' is not one of"),
    ("check-bad-init", ["check", "--root", "{incident}", "--init", "upstart"], {ERROR}, "is not one of"),
    # show
    ("show-missing-root", ["show", "--root", "{missing}"], {ERROR}, "not a directory"),
    ("show-root-is-file", ["show", "--root", "{afile}"], {ERROR}, "is a file"),
    ("show-empty-root", ["show", "--root", "{empty_root}"], {ERROR}, "not a root filesystem"),
    ("show-symlink-loop", ["show", "--root", "{loop_root}"], {OK}, "too many levels of symbolic links"),
    ("show-fifo", ["show", "--root", "{fifo_root}"], {OK}, "not a regular file"),
    ("show-garbage-json", ["show", "--root", "{garbage_root}", "--format", "json"], {OK}, '"settings"'),
    ("show-proc-sys-missing", ["show", "--root", "{garbage_root}", "--proc-sys", "{missing}"], {ERROR},
     "not a directory"),
    ("show-bad-flavor", ["show", "--root", "{empty_root}", "--flavor", "busybox"], {ERROR}, "is not one of"),
    # explain
    ("explain-empty-subject", ["explain", "", "--root", "{incident}"], {ERROR}, "give a key"),
    ("explain-assignment", ["explain", "net.ipv4.ip_forward=1", "--root", "{incident}"], {ERROR}, "give a key"),
    ("explain-unknown-code", ["explain", "SD999"], {ERROR}, "unknown finding code SD999"),
    ("explain-lowercase-code", ["explain", "sd101"], {OK}, "SD101"),
    ("explain-nonsense-key", ["explain", "no.such.key", "--root", "{incident}"], {OK}, "no line sets this key"),
    ("explain-symlink-loop", ["explain", "net.ipv4.ip_forward", "--root", "{loop_root}"], {OK}, "10-ok.conf"),
    ("explain-fifo", ["explain", "net.ipv4.ip_forward", "--root", "{fifo_root}"], {OK}, "no line sets"),
    ("explain-missing-root", ["explain", "kernel.pid_max", "--root", "{missing}"], {ERROR}, "not a directory"),
    # fix
    ("fix-missing-root", ["fix", "--root", "{missing}"], {ERROR}, "not a directory"),
    ("fix-symlink-loop", ["fix", "--root", "{loop_root}", "--dry-run"], {OK}, "nothing to change"),
    ("fix-fifo", ["fix", "--root", "{fifo_root}", "--dry-run"], {OK}, "nothing to change"),
    ("fix-now-offline", ["fix", "--root", "{incident}", "--now"], {ERROR}, "--now acts on the running host"),
    ("fix-kernel-missing", ["fix", "--root", "{incident}", "--kernel", "nope", "--dry-run"], {ERROR},
     "--kernel nope"),
    ("fix-bad-method", ["fix", "--root", "{incident}", "--method", "sysfs"], {ERROR}, "is not one of"),
    # index
    ("index-missing-root", ["index", "--root", "{missing}"], {ERROR}, "not a directory"),
    ("index-kernel-missing", ["index", "--root", "{incident}", "--kernel", "nope"], {ERROR}, "--kernel nope"),
    ("index-garbage-tree", ["index", "--root", "{garbage_root}", "--no-cache"], {OK}, "partial"),
    ("index-fifo-and-loop-modules", ["index", "--root", "{modules_root}", "--no-cache"], {OK},
     "kernel/a.ko: not a regular file"),
    ("check-fifo-and-loop-modules", ["check", "--root", "{modules_root}"], {OK}, "0 keys"),
    ("index-empty-root", ["index", "--root", "{empty_root}", "--format", "json"], {ERROR}, "not a root filesystem"),
    # conntrack replay
    ("replay-missing", ["conntrack", "replay", "{missing}"], {ERROR}, "cannot read"),
    ("replay-empty-file", ["conntrack", "replay", "{empty_file}"], {ERROR}, "not a capture file"),
    ("replay-text", ["conntrack", "replay", "{text}"], {ERROR}, "not a pcap or pcapng"),
    ("replay-garbage", ["conntrack", "replay", "{garbage}"], {ERROR}, "not a pcap or pcapng"),
    ("replay-directory", ["conntrack", "replay", "{dir}"], {ERROR}, "Is a directory"),
    ("replay-cut-header", ["conntrack", "replay", "{cut_pcap}"], {ERROR}, "cut short"),
    ("replay-bad-kernel", ["conntrack", "replay", "{cut_pcap}", "--kernel", "nope"], {ERROR},
     "not a kernel version"),
    ("replay-sysctl-no-equals", ["conntrack", "replay", "{cut_pcap}", "--sysctl", "be_liberal"], {ERROR},
     "expected NAME=VALUE"),
    ("replay-sysctl-unknown", ["conntrack", "replay", "{cut_pcap}", "--sysctl", "foo=1"], {ERROR},
     "unknown conntrack TCP sysctl"),
    ("replay-sysctl-not-int", ["conntrack", "replay", "{cut_pcap}", "--sysctl", "nf_conntrack_tcp_be_liberal=yes"],
     {ERROR}, "must be an integer"),
    ("replay-what-if-bad", ["conntrack", "replay", "{cut_pcap}", "--what-if", "kernel=zzz"], {ERROR},
     "not a kernel version"),
    ("replay-bad-format", ["conntrack", "replay", "{cut_pcap}", "--format", "xml"], {ERROR}, "is not one of"),
    # conntrack logs
    ("logs-missing", ["conntrack", "logs", "{missing}"], {ERROR}, "No such file or directory"),
    ("logs-directory", ["conntrack", "logs", "{dir}"], {ERROR}, "Is a directory"),
    ("logs-binary", ["conntrack", "logs", "{garbage}"], {OK}, "0 conntrack records"),
    ("logs-binary-json", ["conntrack", "logs", "{garbage}", "--format", "json"], {OK}, '"conntrack": 0'),
    ("logs-empty", ["conntrack", "logs", "{empty_file}"], {OK}, "0 lines"),
    ("logs-cut-gzip", ["conntrack", "logs", "{cut_gz}"], {ERROR}, "cannot read"),
    ("logs-bad-since", ["conntrack", "logs", "{garbage}", "--since", "yesterday-ish"], {ERROR}, "--since"),
    ("logs-since-year-1", ["conntrack", "logs", "{garbage}", "--since", "0001-01-01"], {ERROR}, "out of range"),
    ("logs-negative-limit", ["conntrack", "logs", "{garbage}", "--limit", "-1"], {ERROR}, "--limit"),
    # conntrack stats / debug (only failures that change nothing)
    ("stats-unknown-netns", ["conntrack", "stats", "--netns", "sd-qa-no-such-ns"], {ERROR}, "not found"),
    ("stats-zero-interval", ["conntrack", "stats", "--watch", "--interval", "0"], {ERROR}, "--interval"),
    ("stats-negative-interval", ["conntrack", "stats", "--watch", "--interval", "-1"], {ERROR}, "--interval"),
    ("stats-infinite-interval", ["conntrack", "stats", "--watch", "--interval", "inf"], {ERROR}, "--interval"),
    ("stats-nan-interval", ["conntrack", "stats", "--watch", "--interval", "nan"], {ERROR}, "--interval"),
    ("stats-negative-count", ["conntrack", "stats", "--watch", "--count", "-1"], {ERROR}, "--count"),
    ("stats-bad-source", ["conntrack", "stats", "--source", "sysfs"], {ERROR}, "is not one of"),
    ("debug-bad-duration", ["conntrack", "debug", "on", "--for", "soon"], {ERROR}, "not a duration"),
    ("debug-negative-duration", ["conntrack", "debug", "on", "--for", "-5m"], {ERROR}, "must be positive"),
    ("debug-nan-duration", ["conntrack", "debug", "on", "--for", "nanm"], {ERROR}, "not a duration"),
    ("debug-infinite-duration", ["conntrack", "debug", "on", "--for", "1e400s"], {ERROR}, "not a duration"),
    ("debug-century-duration", ["conntrack", "debug", "on", "--for", "36500d"], {ERROR}, "more than a year"),
    ("debug-unknown-netns", ["conntrack", "debug", "on", "--netns", "sd-qa-no-such-ns"], {ERROR}, "not found"),
    ("debug-bad-action", ["conntrack", "debug", "sideways"], {ERROR}, "is not one of"),
    ("conntrack-unknown", ["conntrack", "nope"], {ERROR}, "No such command"),
    # lab (argument errors only: nothing is built)
    ("lab-bad-scenario", ["lab", "--scenario", "nope"], {ERROR}, "is not one of"),
    ("lab-bad-mitigation", ["lab", "--mitigation", "nope"], {ERROR}, "is not one of"),
    ("lab-capture-dir-is-file", ["lab", "--capture-dir", "{afile}"], {ERROR}, "is a file"),
    ("lab-capture-dir-uncreatable", ["lab", "--capture-dir", "/proc/sd-qa-no-such-dir"], {ERROR}, "error: "),
    ("unknown-command", ["frobnicate"], {ERROR}, "No such command"),
]


def _assert_clean(result: subprocess.CompletedProcess, argv: List[str]) -> str:
    out = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out, (argv, out)
    assert "internal error" not in out, (argv, out)
    return out


@pytest.mark.parametrize("argv,codes,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tree: Dict[str, str], argv: List[str], codes: set, expected: str) -> None:
    args = [a.format(**tree) for a in argv]
    result = run_cli(args, timeout=120)  # a FIFO opened for reading would hang: the timeout fails it
    out = _assert_clean(result, args)
    assert result.returncode in codes, (args, result.returncode, out)
    assert expected in out, (args, out)
    if result.returncode == ERROR:
        assert result.stderr.strip(), "an error must say what went wrong on stderr"
    if "--format" in args and "json" in args and result.returncode != ERROR:
        json.loads(result.stdout)  # pure JSON on stdout, whatever the input


def test_broken_gzip_on_stdin_is_an_error_not_an_interrupt() -> None:
    # click turns an EOFError escaping a command into "Aborted"/exit 130; a bad gzip stream raised one.
    result = run_cli(["conntrack", "logs", "-"], stdin=b"\x1f\x8b\x08\x00garbage")
    out = _assert_clean(result, ["conntrack", "logs", "-"])
    assert result.returncode == ERROR, out
    assert "gzip" in out and "interrupted" not in out


def test_fix_on_read_only_root_is_exit_2(tmp_path: Path, require_root: None) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("NEEDS unshare(1) to bind-mount the root read-only in a private mount namespace")
    root = tmp_path / "root"
    shutil.copytree(INCIDENT, root, symlinks=True)
    # The read-only bind mount lives in a private mount namespace and dies with the process.
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" fix --root "$1"'
    env = {k: v for k, v in os.environ.items() if k != "SYSCTL_DOCTOR_DEBUG"}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             str(root), str(console_script())], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=120, env=env)
    out = _assert_clean(result, ["fix", "--root", "<read-only>"])
    assert result.returncode == ERROR, out
    assert "cannot write /etc/modules-load.d/sysctl-doctor.conf" in out and "Read-only file system" in out
    assert not (root / "etc/modules-load.d/sysctl-doctor.conf").exists()


def _as_nobody(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_as_nobody(args, cwd)


def test_unreadable_files_as_an_unprivileged_user(require_root: None) -> None:
    require_nobody()
    base = Path(tempfile.mkdtemp(prefix="sd-unreadable-"))
    try:
        base.chmod(0o777)
        root = base / "root"
        shutil.copytree(INCIDENT, root, symlinks=True)
        for inside in ("etc/sysctl.conf", "etc/nftables.conf", "usr/lib/modules/6.1.0-56-amd64/modules.dep"):
            (root / inside).chmod(0)
        # unreadable directories are an error, not a warning: tests/cli/test_unreadable_dirs.py
        capture = base / "capture.pcap"
        capture.write_bytes(b"")
        capture.chmod(0)
        rows = [
            (["show", "--root", str(root)], {OK}, "Permission denied"),
            (["check", "--root", str(root)], {OK, FINDINGS}, "Permission denied"),
            (["explain", "net.ipv4.ip_forward", "--root", str(root)], {OK}, "net.ipv4.ip_forward"),
            (["index", "--root", str(root)], {OK}, "Permission denied"),
            (["fix", "--root", str(root), "--dry-run"], {OK}, ""),
            (["conntrack", "replay", str(capture)], {ERROR}, "Permission denied"),
            (["conntrack", "logs", str(capture)], {ERROR}, "Permission denied"),
            (["lab"], {ERROR}, "needs root"),
            (["conntrack", "debug", "on"], {ERROR}, "needs root"),  # fails before changing anything
        ]
        for args, codes, expected in rows:
            result = _as_nobody(args, base)
            out = _assert_clean(result, args)
            assert result.returncode in codes, (args, result.returncode, out)
            assert expected in out, (args, out)
    finally:
        for path in base.rglob("*"):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


def _wait_blocked(proc: subprocess.Popen, wchans: tuple, timeout: float = 60) -> None:
    """Until the process sleeps in one of `wchans` (it got past start-up and is waiting for input)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/wchan") as fh:
                if any(w in fh.read() for w in wchans):
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"exited early: {proc.returncode} {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"never blocked in {wchans}")


def _interrupt(args: List[str], ready) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Start the command, wait until `ready(proc)` says it is past start-up, press Ctrl-C."""
    # A shell that runs us in the background leaves SIGINT ignored; a user's Ctrl-C is not.
    proc = subprocess.Popen([str(console_script()), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    _assert_clean(result, args)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "interrupted" in err.decode()
    return result


@pytest.mark.parametrize("argv,wchans", [
    (["conntrack", "logs", "-"], ("pipe_read", "pipe_wait")),
    (["conntrack", "replay", "{fifo}"], ("wait_for_partner", "fifo_open")),
], ids=["logs-stdin", "replay-fifo"])
def test_ctrl_c_is_exit_130_without_traceback(tmp_path: Path, argv: List[str], wchans: tuple) -> None:
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    _interrupt([a.format(fifo=fifo) for a in argv], lambda proc: _wait_blocked(proc, wchans))


def test_ctrl_c_stops_stats_watch() -> None:
    def first_reading(proc: subprocess.Popen) -> None:  # past start-up, in the loop
        if not proc.stdout.readline():
            pytest.skip(f"NEEDS /proc/net/stat/nf_conntrack: {proc.communicate()[1].decode()}")

    _interrupt(["conntrack", "stats", "--watch", "--interval", "0.2"], first_reading)


HELP = [[], ["check"], ["show"], ["explain"], ["fix"], ["index"], ["lab"], ["conntrack"], ["conntrack", "replay"],
        ["conntrack", "logs"], ["conntrack", "stats"], ["conntrack", "debug"]]


@pytest.mark.parametrize("command", HELP, ids=[" ".join(c) or "top" for c in HELP])
def test_help(command: List[str]) -> None:
    result = run_cli([*command, "--help"])
    out = _assert_clean(result, command)
    assert result.returncode == OK and out.startswith(f"Usage: sysctl-doctor {' '.join(command)}".rstrip()), out
    if not command:
        assert "Exit status: 0 clean, 1 findings at error level" in out  # the codes, where users look first


def test_reader_closing_stdout_is_a_quiet_exit_0(tmp_path: Path) -> None:
    # `sysctl-doctor … | head`: click swallowed the EPIPE and exited 1, which reads as "findings".
    from conntrack.captures import seed_packets, write_ethernet_pcap

    capture = tmp_path / "seed.pcap"
    write_ethernet_pcap(str(capture), seed_packets(segments=3000))  # ~6000 JSON lines: more than a pipe holds
    proc = subprocess.Popen([str(console_script()), "conntrack", "replay", str(capture), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(100)
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == OK, (code, err)
    assert err == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="NEEDS /dev/full to fill the output")
def test_full_disk_on_stdout_is_exit_2_with_a_message() -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run([str(console_script()), "show", "--root", str(INCIDENT), "--format", "json"],
                                stdout=full, stderr=subprocess.PIPE, timeout=60)
    err = result.stderr.decode()
    assert "Traceback" not in err and "internal error" not in err, err
    assert result.returncode == ERROR, err
    assert "No space left on device" in err


def _limit_memory() -> None:  # in the child: 1 GiB of address space, less than the files below
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("argv", [["check"], ["check", "--format", "json"],
                                  ["explain", "net.ipv4.conf.eth0.rp_filter"], ["show"]])
def test_huge_files_never_read_are_read_within_the_bound(tmp_path: Path, argv: List[str]) -> None:
    # The lines of files the boot never reads (runtime-only /run in an offline root, shadowed, *.cfg) are shown
    # by check's line fates, explain's story and SD105: each read them whole (a 250 MB runtime-only file: check
    # 9.9 s and 457 MB, explain 43 s and 485 MB). Now at most 2 MiB in all, whole lines, as the files read are.
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "run/sysctl.d").mkdir(parents=True)
    (root / "usr/lib/sysctl.d").mkdir(parents=True)
    unit = root / "usr/lib/systemd/system/systemd-sysctl.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    (root / "etc/sysctl.d/10-a.conf").write_text("net.ipv4.conf.*.rp_filter = 2\n")
    (root / "run/sysctl.d/00-small.conf").write_text("net.ipv4.conf.eth0.rp_filter = 1\n")
    for name in ("run/sysctl.d/50-sparse.conf", "usr/lib/sysctl.d/10-a.conf", "etc/sysctl.d/zz.cfg"):
        with open(root / name, "wb") as fh:  # 2 GiB each, sparse: whole, any one is more than the child may map
            fh.truncate(2 << 30)
    os.mkfifo(root / "run/sysctl.d/60-fifo.conf")
    os.symlink("/dev/zero", root / "run/sysctl.d/70-zero.conf")
    os.symlink("../../../../../../../../dev/zero", root / "run/sysctl.d/71-zero.conf")
    args = [*argv, "--root", str(root)]
    started = time.monotonic()
    result = subprocess.run([str(console_script()), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=120, preexec_fn=_limit_memory, stdin=subprocess.DEVNULL)
    out = _assert_clean(result, args)
    assert result.returncode in (0, 1), (args, result.returncode, out)
    assert time.monotonic() - started < 60, out
    if argv[0] == "explain":
        assert "/run/sysctl.d/00-small.conf:1" in out, out  # the small runtime-only file's line is still told
    if "json" in argv:
        lines = json.loads(result.stdout)["assignments"]
        assert any(a["file"] == "/run/sysctl.d/00-small.conf" and a["fate"] == "runtime-only" for a in lines), lines


@pytest.mark.parametrize("argv", [["check"], ["explain", "net.ipv4.conf.x.rp_filter"], ["show"]])
def test_a_glob_with_millions_of_brace_alternatives(tmp_path: Path, argv: List[str]) -> None:
    # "*{a,b}" x 22: 4 million brace alternatives (GLOB_BRACE); check and explain ran past 120 s expanding them
    # all. Now the first 1,024 (sysctl_glob.BRACE_ALTERNATIVES_MAX).
    from sysctl_doctor.config.sysctl_glob import BRACE_ALTERNATIVES_MAX, expand_braces

    assert len(expand_braces("x{a,b}" * 22)) == BRACE_ALTERNATIVES_MAX
    assert expand_braces("{a,b}{c,d}") == ["ac", "ad", "bc", "bd"]
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    unit = root / "usr/lib/systemd/system/systemd-sysctl.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    (root / "etc/sysctl.d/10-b.conf").write_text("net.ipv4.conf.*" + "{a,b}" * 22 + ".rp_filter = 1\n")
    started = time.monotonic()
    result = run_cli([*argv, "--root", str(root)], timeout=120)
    out = _assert_clean(result, argv)
    assert result.returncode in (0, 1) and time.monotonic() - started < 60, out
