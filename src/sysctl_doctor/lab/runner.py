"""Run scenarios × mitigations on fresh topologies and observe what happens.

One run (about 1 s):
 1. build pod ↔ NAT ↔ server namespaces; load the NAT table (+ mitigation chain),
    set the mitigation's sysctls and nf_conntrack_log_invalid=255 in the NAT netns;
 2. capture on the NAT box's outside link; the server listens; the pod's client
    (SO_RCVBUF 16 KB, so windows stay small enough to leave) sends "A";
 3. the server streams 64 KB; once the client has it all, inject the scenario's
    segment from the server's address to the NAT box's masqueraded port with
    ACK = the client's next sequence number (read from the capture);
 4. the client sends "B", the server streams 64 KB more and closes;
 5. each end reports completed / reset / timeout; the capture shows the NAT
    box's RST; /dev/kmsg gives the kernel's conntrack lines for this flow.
Everything is torn down in `finally` (Ctrl-C included). The only host setting
touched is net.netfilter.nf_log_all_netns (so the NAT netns may log): a hold in
the host-switch record (`sysctl_doctor.host_switches`), taken before the first
run and released after the last; a SIGKILLed lab is undone by the next run.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from typing import Callable, List, Optional

from sysctl_doctor.conntrack.kernel_log import parse_kernel_log, read_kmsg_records
from sysctl_doctor.conntrack.stats import read_proc_stats
from sysctl_doctor.errors import DoctorError
from sysctl_doctor.lab.interrupts import critical, interrupts_deferred_in_critical_sections
from sysctl_doctor.lab.capture import InterfaceCapture, build_tcp_segment
from sysctl_doctor.lab.mitigations import Mitigation
from sysctl_doctor.lab.outcome import COMPLETED, ERROR, RESET, TIMEOUT, EndResult, InjectedSegment, LabOutcome, LabReport
from sysctl_doctor.kernel_version import version_or_unknown
from sysctl_doctor.lab.scenarios import INJECTED_PAYLOAD, Scenario, expected_survival
from sysctl_doctor.lab.topology import (
    NAT_OUTSIDE_ADDR,
    NAT_OUTSIDE_IFNAME,
    POD_ADDR,
    SERVER_ADDR,
    LabTopology,
    nat_ruleset,
    read_netns_sysctl,
    remove_stale_namespaces,
    require_lab_tools,
    write_netns_sysctl,
)

PHASE_BYTES = 64 * 1024
CLIENT_RCVBUF = 16 * 1024
SOCKET_TIMEOUT = 2.0
HOST_LOG_KEY = "net/netfilter/nf_log_all_netns"

_run_counter = 0


def _recv_exact(sock: socket.socket, count: int, result: EndResult) -> bool:
    while count > 0:
        chunk = sock.recv(min(count, 65536))
        if not chunk:
            return False
        result.bytes_received += len(chunk)
        count -= len(chunk)
    return True


def _end_error(result: EndResult, exc: BaseException) -> None:
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        result.state = RESET
    elif isinstance(exc, socket.timeout):
        result.state = TIMEOUT
    else:
        result.state = ERROR
    result.error = f"{type(exc).__name__}: {exc}"


def _client(sock: socket.socket, port: int, phase1: threading.Event, go: threading.Event,
            result: EndResult) -> None:
    try:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect((SERVER_ADDR, port))
        sock.sendall(b"A")
        if not _recv_exact(sock, PHASE_BYTES, result):
            result.state, result.error = ERROR, "EOF in phase 1"
            return
        phase1.set()
        if not go.wait(5):
            result.state, result.error = ERROR, "never told to go on"
            return
        sock.sendall(b"B")
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            result.bytes_received += len(chunk)
        result.state = COMPLETED if result.bytes_received == 2 * PHASE_BYTES else ERROR
        if result.state == ERROR:
            result.error = f"EOF after {result.bytes_received} bytes"
    except (OSError, socket.timeout) as exc:
        _end_error(result, exc)
    finally:
        phase1.set()
        sock.close()


def _server(listener: socket.socket, result: EndResult) -> None:
    conn = None
    try:
        listener.settimeout(SOCKET_TIMEOUT)
        conn, _ = listener.accept()
        conn.settimeout(SOCKET_TIMEOUT + 1)
        if not _recv_exact(conn, 1, result):
            result.state, result.error = ERROR, "no request"
            return
        conn.sendall(b"x" * PHASE_BYTES)
        if not _recv_exact(conn, 1, result):
            result.state, result.error = ERROR, "EOF instead of the second request"
            return
        conn.sendall(b"y" * PHASE_BYTES)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        result.state = COMPLETED
    except (OSError, socket.timeout) as exc:
        _end_error(result, exc)
    finally:
        if conn is not None:
            conn.close()
        listener.close()


def run_one(scenario: Scenario, mitigation: Mitigation, kernel: str, keep_capture: Optional[str] = None,
            kmsg_fd: Optional[int] = None) -> LabOutcome:
    """One scenario under one mitigation on a fresh topology; always torn down."""
    global _run_counter
    _run_counter += 1
    topo = LabTopology(f"{os.getpid()}x{_run_counter}")
    started = time.monotonic()
    port = random.randint(20000, 59999)
    outcome = LabOutcome(
        scenario=scenario.name, mitigation=mitigation.name, kernel=kernel, survived=False,
        expected_survived=expected_survival(scenario.name, mitigation.name, version_or_unknown(kernel)),
        client=EndResult(), server=EndResult(), injected=None, nat_rst=False, server_port=port,
    )
    capture: Optional[InterfaceCapture] = None
    threads: List[threading.Thread] = []
    try:
        with critical():
            topo.build()
            topo.nft(nat_ruleset(mitigation.nft_chains))
            with topo.entered(topo.nat):
                write_netns_sysctl("net/netfilter/nf_conntrack_log_invalid", "255")
                _bind_ipv4_logger()
                for key, value in mitigation.netns_sysctls.items():
                    write_netns_sysctl(key, value)
                before = read_proc_stats().counters
                capture = InterfaceCapture(NAT_OUTSIDE_IFNAME)
            capture.start()
        with topo.entered(topo.srv):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((SERVER_ADDR, port))
            listener.listen(1)
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with topo.entered(topo.pod):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        phase1, go = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=_server, args=(listener, outcome.server), daemon=True),
            threading.Thread(target=_client, args=(client, port, phase1, go, outcome.client), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            phase1.wait(5)
            time.sleep(0.1)  # let the last ACKs reach the server through conntrack
            outcome.injected = _inject(capture, raw, scenario, port)
            time.sleep(0.3)
        finally:
            raw.close()
            go.set()
        for t in threads:
            t.join(timeout=3 * SOCKET_TIMEOUT)
        time.sleep(0.05)
        with topo.entered(topo.nat):
            after = read_proc_stats().counters
        outcome.counters = {k: after[k] - before.get(k, 0) for k in ("invalid", "ignore", "drop", "insert_failed")
                            if k in after}
    except DoctorError as exc:
        outcome.error = str(exc)
    finally:
        with critical():
            if capture is not None:
                capture.stop()
            topo.destroy()
    if capture is not None:
        outcome.nat_rst = any(
            s.src == NAT_OUTSIDE_ADDR and s.dport == port and s.has("RST") for s in capture.segments())
        if keep_capture:
            outcome.capture = os.path.join(keep_capture, f"{scenario.name}--{mitigation.name}.pcap")
            outcome.capture_frames = capture.write_pcap(outcome.capture)
        else:
            outcome.capture_frames = len(capture.frames)
    if kmsg_fd is not None:
        _collect_kernel_lines(outcome, kmsg_fd, port)
    outcome.survived = outcome.client.state == COMPLETED and outcome.server.state == COMPLETED
    outcome.seconds = time.monotonic() - started
    return outcome


def _bind_ipv4_logger() -> None:
    """Give the NAT netns an IPv4 packet logger, so nf_conntrack_log_invalid has somewhere to write.

    Where the logger is a module (Debian's 5.10: nf_log_ipv4; 5.12+: nf_log_syslog), nothing loads it
    and writing its name to nf_log/2 fails with ENOENT; loading it (alias nf-logger-2-0) binds it in
    every namespace by itself.
    """
    if read_netns_sysctl("net/netfilter/nf_log/2") not in ("NONE", None):
        return
    try:
        write_netns_sysctl("net/netfilter/nf_log/2", "nf_log_ipv4")
        return
    except OSError:
        pass
    modprobe = shutil.which("modprobe") or ("/sbin/modprobe" if os.path.exists("/sbin/modprobe") else None)
    if modprobe is not None:
        subprocess.run([modprobe, "-q", "nf-logger-2-0"], check=False, capture_output=True)
    if read_netns_sysctl("net/netfilter/nf_log/2") in ("NONE", None):
        try:
            write_netns_sysctl("net/netfilter/nf_log/2", "nf_log_ipv4")
        except OSError as exc:
            raise DoctorError(f"lab: no IPv4 packet logger for conntrack's lines ({exc}); "
                              "load nf_log_ipv4 (kernels before 5.12) or nf_log_syslog") from None


def _inject(capture: InterfaceCapture, raw: socket.socket, scenario: Scenario, port: int) -> InjectedSegment:
    """Send the scenario's segment from the server to the NAT box's masqueraded port."""
    last = None
    for seg in capture.segments():
        if seg.src == NAT_OUTSIDE_ADDR and seg.dst == SERVER_ADDR and seg.dport == port and seg.has("ACK"):
            last = seg
    if last is None:
        raise DoctorError("lab: no client segment seen on the NAT box's outside link (connection never set up)")
    client_next = (last.seq + last.payload) % (1 << 32)
    server_next = last.ack
    seq = scenario.injected_seq(server_next)
    packet = build_tcp_segment(SERVER_ADDR, NAT_OUTSIDE_ADDR, port, last.sport, seq, client_next,
                               b"z" * INJECTED_PAYLOAD)
    raw.sendto(packet, (NAT_OUTSIDE_ADDR, 0))
    return InjectedSegment(SERVER_ADDR, NAT_OUTSIDE_ADDR, port, last.sport, seq, client_next,
                           INJECTED_PAYLOAD, server_next, client_next)


def _collect_kernel_lines(outcome: LabOutcome, kmsg_fd: int, port: int) -> None:
    data = read_kmsg_records(handle=kmsg_fd)
    report = parse_kernel_log(data, "/dev/kmsg")
    lab_addrs = {POD_ADDR, SERVER_ADDR, NAT_OUTSIDE_ADDR}
    lines = data.decode("utf-8", "replace").splitlines()
    for rec in report.records:
        f = rec.record.fields
        if port not in (rec.record.int_field("SPT"), rec.record.int_field("DPT")):
            continue
        if f.get("SRC") not in lab_addrs and f.get("DST") not in lab_addrs:
            continue
        outcome.kernel_lines.append(lines[rec.line - 1])
        outcome.kernel_reasons.append(rec.reason.code)
        outcome.kernel_verdicts.append(rec.reason.verdict)


def run_lab(scenarios: List[Scenario], mitigations: List[Mitigation], keep_capture: Optional[str] = None,
            progress: Optional[Callable[[LabOutcome], None]] = None,
            notice: Optional[Callable[[str], None]] = None) -> LabReport:
    """Every scenario under every mitigation; the host is left as found.

    `notice` gets the host-switch messages (waiting for the lock, a killed run's switch restored)."""
    require_lab_tools()
    from sysctl_doctor.host_switches import Holder, SwitchHold, stderr_notice

    say = notice or stderr_notice

    remove_stale_namespaces()
    kernel = os.uname().release
    report = LabReport(kernel=kernel)
    if keep_capture:
        os.makedirs(keep_capture, exist_ok=True)
    kmsg_fd: Optional[int] = None
    try:
        kmsg_fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(kmsg_fd, 0, os.SEEK_END)
    except OSError as exc:
        report.kernel_log = f"/dev/kmsg unreadable ({exc}): no kernel lines"
    hold: Optional[SwitchHold] = None
    if os.path.exists(f"/proc/sys/{HOST_LOG_KEY}"):
        hold = SwitchHold(HOST_LOG_KEY, "1", Holder.this_process("lab"))
    else:
        report.kernel_log = f"/proc/sys/{HOST_LOG_KEY} missing: the NAT netns cannot log"
    try:
        with interrupts_deferred_in_critical_sections():
            try:
                if hold is not None:  # not critical: waiting for the lock stays interruptible
                    report.host_changes = {hold.dotted: hold.take(say)}
                for scenario in scenarios:
                    for mitigation in mitigations:
                        if kmsg_fd is not None:
                            os.lseek(kmsg_fd, 0, os.SEEK_END)
                        outcome = run_one(scenario, mitigation, kernel, keep_capture, kmsg_fd)
                        report.outcomes.append(outcome)
                        if progress is not None:
                            progress(outcome)
            finally:
                if hold is not None:
                    with critical():
                        hold.release(say)
    finally:
        if kmsg_fd is not None:
            os.close(kmsg_fd)
    return report
