"""Terminal output (issue 16 items 2 and 15): text from roots and logs cannot drive the terminal, and
NO_COLOR means no styling on a terminal too. The real console script, as a user runs it."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pytest

from cli.console import INCIDENT, console_script, run_cli
from sysctl_doctor.terminal_text import terminal_safe

ESC_VALUE = b"\x1b]0;PWNED\x07 \x1b[2J \xc2\x9b31m \xe2\x80\xae \x7f \xff\xfe"  # OSC, CSI, 8-bit CSI, RLO, DEL, not UTF-8
EVIL_NAME = "60-x\x1b]0;T\x07\x1b[31m.conf"
NFLOG = (b"[ 12.5] nf_ct_proto_6: SEQ is over upper bound 1 (over the window of the receiver) "
         b"IN=e\x1b]0;PWNED\x07th0 OUT= SRC=10.0.0.2 DST=10.0.0.1 LEN=52 TOS=0x00 PREC=0x00 TTL=61 ID=1 DF PROTO=TCP "
         b"SPT=40\x9b536 DPT=59596 SEQ=12\x1b[2J34 ACK=56 WINDOW=509 RES=0x00 ACK URGP=0 \xff\n")


def dangerous(data: bytes) -> List[str]:
    """Every character a terminal acts on: C0 (but newline/tab), DEL, C1, bidi controls, bytes not UTF-8."""
    text = data.decode("utf-8", "surrogateescape")
    bad = {c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F
           or 0xDC80 <= ord(c) <= 0xDCFF or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"}
    return sorted(repr(c) for c in bad)


@pytest.fixture(scope="module")
def evil_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evil") / "root"
    shutil.copytree(INCIDENT, root, symlinks=True)
    sysctl_d = root / "etc/sysctl.d"
    (sysctl_d / "50-esc.conf").write_bytes(b"kernel.esc = " + ESC_VALUE + b"\nkernel.k\x1b]0;K\x07ey = 1\n"
                                           b"net.ipv4.ip_forward = 1\x1b[8m\n")
    (sysctl_d / EVIL_NAME).write_bytes(b"kernel.pid_max = 4194304\n")
    return root


def assert_safe(proc: subprocess.CompletedProcess, what: str) -> None:
    assert "Traceback" not in proc.stderr.decode(errors="replace"), what
    for stream, data in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert dangerous(data) == [], f"{what}: raw control characters on {stream}: {data[:2000]!r}"


@pytest.mark.parametrize("args", [
    ["show"], ["show", "--flavor", "procps"], ["show", "--proc-sys", "/proc/sys"],
    ["explain", "kernel.esc"], ["explain", "kernel.k\x1b]0;K\x07ey"], ["explain", "net.ipv4.ip_forward"],
    ["check"], ["check", "-v"], ["fix", "--dry-run"], ["index"],
], ids=lambda a: "-".join(x for x in a if x.isprintable()))
def test_commands_escape_values_keys_and_file_names(evil_root: Path, args: List[str]) -> None:
    proc = run_cli([*args, "--root", str(evil_root)])
    assert proc.returncode in (0, 1), proc.stderr
    assert_safe(proc, " ".join(args))
    out = proc.stdout.decode()
    if args[0] in ("show", "explain") and "esc" in " ".join(args):
        assert "\\x1b]0;PWNED\\x07" in out  # shown visibly, not dropped
    if args[0] == "show":
        assert "60-x\\x1b]0;T\\x07\\x1b[31m.conf" in out and "\\xff\\xfe" in out and "\\x9b31m" in out


def test_fix_diff_and_messages_are_escaped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(INCIDENT, root, symlinks=True)
    (root / "etc/modules-load.d/sysctl-doctor.conf").write_bytes(b"# \x1b]0;PWNED\x07 mine\x1b[2J\nbr_netfilter\n")
    proc = run_cli(["fix", "--root", str(root)])
    assert proc.returncode == 0, proc.stderr
    assert_safe(proc, "fix")
    assert b"# \\x1b]0;PWNED\\x07 mine\\x1b[2J" in proc.stdout and b"wrote /etc/modules-load.d" in proc.stdout
    # what is written is the file itself, not its escaped display
    assert (root / "etc/modules-load.d/sysctl-doctor.conf").read_bytes().startswith(b"# \x1b]0;PWNED\x07 mine")


def test_error_messages_naming_a_file_are_escaped(tmp_path: Path) -> None:
    evil = tmp_path / "no\x1b]0;PWNED\x07such"
    for args in (["show", "--root", str(evil)], ["check", "--root", str(evil)],
                 ["conntrack", "logs", str(evil)], ["explain", "x\x1b[2J=1"]):
        proc = run_cli(args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_safe(proc, " ".join(args))
        assert b"\\x1b" in proc.stderr, proc.stderr


def test_conntrack_logs_escape_log_fields_and_the_file_name(tmp_path: Path) -> None:
    log = tmp_path / "kern\x1b]0;T\x07.log"
    log.write_bytes(NFLOG)
    for fmt in ("text", "json"):
        proc = run_cli(["conntrack", "logs", str(log), "--format", fmt])
        assert proc.returncode == 1, proc.stderr  # the line is INVALID
        assert_safe(proc, f"conntrack logs --format {fmt}")
    proc = run_cli(["conntrack", "logs", "-"], stdin=NFLOG)
    assert proc.returncode == 1 and b"INVALID" in proc.stdout
    assert_safe(proc, "conntrack logs -")


def test_terminal_safe() -> None:
    assert terminal_safe("net.ipv4.ip_forward = 1") == "net.ipv4.ip_forward = 1"
    assert terminal_safe("é ü 中 ─") == "é ü 中 ─"
    assert terminal_safe("\x1b]0;T\x07") == "\\x1b]0;T\\x07"
    assert terminal_safe("a\x9b31m\x7f") == "a\\x9b31m\\x7f"
    assert terminal_safe(b"\xff".decode("utf-8", "surrogateescape")) == "\\xff"
    assert terminal_safe("a\tb\nc\u202e") == "a\\tb\\nc\\u202e"
    assert terminal_safe("a\tb\nc", keep="\t\n") == "a\tb\nc"


# --- NO_COLOR on a terminal ------------------------------------------------------------------------

def run_on_pty(args: List[str], env_extra: dict, timeout: float = 120) -> bytes:
    """The console script with stdout and stderr on a pseudo-terminal; everything it wrote."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    env.update(TERM="xterm-256color", COLUMNS="200", **env_extra)
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(console_script()), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    return out


SGR = b"\x1b["


@pytest.mark.parametrize("args", [
    ["check", "--root", str(INCIDENT)],
    ["show", "--root", str(INCIDENT)],
    ["explain", "net.ipv4.ip_forward", "--root", str(INCIDENT)],
    ["explain", "SD101"],
], ids=lambda a: a[0] if a[0] != "explain" else f"explain-{a[1]}")
def test_no_color_means_no_styling_on_a_terminal(args: List[str]) -> None:
    coloured = run_on_pty(args, {})
    assert SGR in coloured, "without NO_COLOR a terminal gets styles (else this test proves nothing)"
    plain = run_on_pty(args, {"NO_COLOR": "1"})
    assert b"sysctl" in plain or b"SD101" in plain, plain[:500]
    assert SGR not in plain, plain[:2000]
    empty: Optional[bytes] = run_on_pty(args, {"NO_COLOR": ""})  # set but empty: colour stays (no-color.org)
    assert empty is not None and SGR in empty


def test_conntrack_replay_escapes_the_capture_name(tmp_path: Path) -> None:
    from conntrack.captures import seed_packets, write_ethernet_pcap

    capture = tmp_path / "cap\x1b]0;PWNED\x07.pcap"
    write_ethernet_pcap(str(capture), seed_packets())
    proc = run_cli(["conntrack", "replay", str(capture), "--kernel", "5.10"])
    assert proc.returncode in (0, 1), proc.stderr
    assert_safe(proc, "conntrack replay")
    assert b"cap\\x1b]0;PWNED\\x07.pcap" in proc.stdout
    truncated = tmp_path / "bad\x1b[2J.pcap"
    truncated.write_bytes(capture.read_bytes()[:100])
    proc = run_cli(["conntrack", "replay", str(truncated)])
    assert_safe(proc, "conntrack replay (truncated)")
