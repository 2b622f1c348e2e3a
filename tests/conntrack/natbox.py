"""A NAT box in network namespaces, and the kernel's own verdicts on crafted segments.

    client ns (sdtcp-<id>-c)  c0 10.231.1.2 ── n0 10.231.1.1   nat ns (sdtcp-<id>-n)
                                             n1 10.231.2.1 ── s0 10.231.2.2   server ns (sdtcp-<id>-s)

The nat ns masquerades what leaves n1 and drops TCP to itself (so its stack
never answers with RSTs of its own) except on ports 46000-46999, where the
scenarios about the NAT box's own RST let its stack answer; client and server drop TCP input (their
stacks have no sockets, our frames are the endpoints). Frames are written with
raw AF_PACKET sockets opened inside the client/server namespaces.

The kernel's verdict per injected frame: the nat ns's
/proc/net/stat/nf_conntrack "invalid" counter (did it grow?) and the nf_log
lines in /dev/kmsg naming our addresses (nf_conntrack_log_invalid=255 and the
nf_log_ipv4 logger bound in the nat ns; host-global nf_log_all_netns=1 through
HostSysctlChange).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from sysctl_doctor.conntrack.frames import ethernet_frame, ip_tcp_packet
from sysctl_doctor.conntrack.nflog import NfLogRecord, parse_nflog_line

CLIENT_IP = "10.231.1.2"
NAT_IN_IP = "10.231.1.1"
NAT_OUT_IP = "10.231.2.1"
SERVER_IP = "10.231.2.2"
CLIENT_IP6 = "fd31:1::2"
NAT_IN_IP6 = "fd31:1::1"
NAT_OUT_IP6 = "fd31:2::1"
SERVER_IP6 = "fd31:2::2"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _run(*args: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class InNetns:
    """Run a block inside a named network namespace (this thread), then come back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> "InNetns":
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            _setns(self._home)
        finally:
            os.close(self._home)


@dataclass
class KernelVerdict:
    invalid: bool
    logs: List[NfLogRecord] = field(default_factory=list)


class Kmsg:
    """New kernel log records since `open()`, non-blocking."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> List[str]:
        lines = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: skip ahead
                    continue
                raise
            text = rec.decode("utf-8", "replace")
            _, _, msg = text.partition(";")
            lines.append(msg.split("\n", 1)[0])

    def close(self) -> None:
        os.close(self.fd)


class NatBox:
    def __init__(self, tag: str) -> None:
        self.client = f"sdtcp-{tag}-c"
        self.nat = f"sdtcp-{tag}-n"
        self.server = f"sdtcp-{tag}-s"
        self.macs: Dict[str, bytes] = {}
        self._sockets: Dict[str, socket.socket] = {}
        self._stat_file = None
        self._dev_file = None
        self.rewritten = 0  # frames written again because the nat ns never received them

    # -- topology --------------------------------------------------------------
    def up(self) -> None:
        c, n, s = self.client, self.nat, self.server
        for ns in (c, n, s):
            _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "n0", "netns", n)
        _run("ip", "link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "n1", "netns", n)
        for ns, dev, addr in ((c, "c0", CLIENT_IP + "/24"), (n, "n0", NAT_IN_IP + "/24"),
                              (n, "n1", NAT_OUT_IP + "/24"), (s, "s0", SERVER_IP + "/24")):
            _run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, dev, addr in ((c, "c0", CLIENT_IP6 + "/64"), (n, "n0", NAT_IN_IP6 + "/64"),
                              (n, "n1", NAT_OUT_IP6 + "/64"), (s, "s0", SERVER_IP6 + "/64")):
            _run("ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad")
        _run("ip", "-n", c, "route", "add", "default", "via", NAT_IN_IP)
        _run("ip", "-n", c, "-6", "route", "add", "default", "via", NAT_IN_IP6)
        for ns, dev in ((c, "c0"), (n, "n0"), (n, "n1"), (s, "s0")):
            self.macs[dev] = bytes.fromhex(
                _run("ip", "-n", ns, "-br", "link", "show", dev).split()[2].replace(":", ""))
        _run("ip", "-n", n, "neigh", "replace", CLIENT_IP, "lladdr", _mac(self.macs["c0"]), "dev", "n0")
        _run("ip", "-n", n, "neigh", "replace", SERVER_IP, "lladdr", _mac(self.macs["s0"]), "dev", "n1")
        _run("ip", "-n", c, "neigh", "replace", NAT_IN_IP, "lladdr", _mac(self.macs["n0"]), "dev", "c0")
        _run("ip", "-n", s, "neigh", "replace", NAT_OUT_IP, "lladdr", _mac(self.macs["n1"]), "dev", "s0")
        _run("ip", "-n", n, "-6", "neigh", "replace", CLIENT_IP6, "lladdr", _mac(self.macs["c0"]), "dev", "n0")
        _run("ip", "-n", n, "-6", "neigh", "replace", SERVER_IP6, "lladdr", _mac(self.macs["s0"]), "dev", "n1")
        self.sysctl(n, "net.ipv4.ip_forward", "1")
        self.sysctl(n, "net.ipv6.conf.all.forwarding", "1")
        self.sysctl(n, "net.netfilter.nf_log.10", "nf_log_ipv6")
        self.sysctl(n, "net.netfilter.nf_conntrack_log_invalid", "255")
        self.sysctl(n, "net.netfilter.nf_log.2", "nf_log_ipv4")
        self.nft(n, """
table inet sdtcp_nat {
  chain post {
    type nat hook postrouting priority srcnat;
    oifname "n1" masquerade
  }
  chain in {
    type filter hook input priority filter;
    tcp dport 46000-46999 accept
    meta l4proto tcp drop
  }
}
""")
        for ns in (c, s):
            self.nft(ns, "table inet sdtcp_quiet {\n chain in {\n  type filter hook input priority filter;\n"
                         "  meta l4proto tcp drop\n }\n}\n")
        for side, ns, dev in (("c", c, "c0"), ("s", s, "s0")):
            with InNetns(ns):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                sock.bind((dev, 0))
            self._sockets[side] = sock
        with InNetns(n):  # the nat box's own packets: a raw IP socket goes through its OUTPUT hooks
            self._sockets["b"] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with InNetns(n):
            self._stat_file = open("/proc/self/net/stat/nf_conntrack", "rb", buffering=0)
            self._dev_file = open("/proc/self/net/dev", "rb", buffering=0)

    def down(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._stat_file is not None:
            self._stat_file.close()
            self._stat_file = None
        if self._dev_file is not None:
            self._dev_file.close()
            self._dev_file = None
        for ns in (self.client, self.nat, self.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @staticmethod
    def sysctl(ns: str, key: str, value: str) -> None:
        _run("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")

    @staticmethod
    def nft(ns: str, ruleset: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, text=True,
                       check=True, capture_output=True)

    def flush(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.nat, "conntrack", "-F"], capture_output=True)

    def entry_state(self, cport: int, family: int = 4) -> tuple:
        """(TCP state, (ASSURED/UNREPLIED…)) of the nat ns's entry for a client port, ("NONE", ()) if none."""
        out = subprocess.run(["ip", "netns", "exec", self.nat, "conntrack", "-L", "-f",
                              "ipv4" if family == 4 else "ipv6", "-p", "tcp",
                              "--orig-src", CLIENT_IP if family == 4 else CLIENT_IP6,
                              "--orig-port-src", str(cport)],
                             capture_output=True, text=True).stdout
        lines = [line for line in out.splitlines() if line.startswith("tcp")]
        if not lines:
            return "NONE", ()
        words = lines[0].split()
        status = tuple(sorted(w.strip("[]") for w in words if w in ("[ASSURED]", "[UNREPLIED]")))
        return words[3], status

    # -- the kernel's verdicts -----------------------------------------------------
    def invalid_count(self) -> int:
        assert self._stat_file is not None
        self._stat_file.seek(0)
        lines = self._stat_file.read().decode().split("\n")
        column = lines[0].split().index("invalid")
        return sum(int(line.split()[column], 16) for line in lines[1:] if line.strip())

    def rx_packets(self, dev: str) -> int:
        """The nat ns's received-packet counter of n0 or n1."""
        assert self._dev_file is not None
        self._dev_file.seek(0)
        for line in self._dev_file.read().decode().splitlines():
            name, sep, counters = line.partition(":")
            if sep and name.strip() == dev:
                return int(counters.split()[1])
        raise RuntimeError(f"no device {dev} in the nat namespace")

    def send(self, side: str, packet: bytes) -> None:
        """Write the frame and wait until the nat ns's interface has received it. On a loaded machine a
        frame written to a veth is now and then never received (seen: 1-5 consecutive frames in a few
        hundred, no drop counted anywhere); it is written again then — the nat box has not seen it, so
        the trace is the same as if the first write had arrived."""
        if side == "b":
            self._sockets["b"].sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
            return
        if side == "c":
            frame, dev = ethernet_frame(self.macs["n0"], self.macs["c0"], packet), "n0"
        else:
            frame, dev = ethernet_frame(self.macs["n1"], self.macs["s0"], packet), "n1"
        for attempt in range(3):
            if attempt:
                self.rewritten += 1
            before = self.rx_packets(dev)
            self._sockets[side].send(frame)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                if self.rx_packets(dev) > before:
                    return
                time.sleep(0.001)
        raise RuntimeError(f"the nat namespace's {dev} never received a frame written three times")


def _mac(raw: bytes) -> str:
    return ":".join("%02x" % b for b in raw)


class Capture:
    """tcpdump -i any (or one interface) in the nat ns, written to `path`."""

    def __init__(self, ns: str, path: str, linktype: Optional[str] = None, iface: str = "any") -> None:
        self.path = path
        args = ["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "--immediate-mode", "-U", "-s", "0",
                "-w", path]
        if linktype:
            args += ["-y", linktype]
        args += ["tcp"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.proc.stderr is not None
        line = ""
        for _ in range(3):
            line = self.proc.stderr.readline().decode()
            if "listening" in line or not line:
                break
        if "listening" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {line}")
        time.sleep(0.2)

    def stop(self) -> None:
        # tcpdump drops what is still in its ring when SIGINT comes: on a loaded machine it may
        # lag, so wait until the file has stopped growing (at most 5 s), not a fixed time
        size, still, deadline = -1, 0, time.monotonic() + 5
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = os.path.getsize(self.path) if os.path.exists(self.path) else 0
            still = still + 1 if now == size else 0
            size = now
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


Step = tuple  # side, flags, seq, ack, window, payload len, options[, extra: dict]

_LOG_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "ECE": 0x40,
              "CWR": 0x80}


def corrupt_tcp_checksum(packet: bytes) -> bytes:
    """The same packet with a TCP checksum that does not add up (every other byte untouched)."""
    l4 = (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40
    csum = ((packet[l4 + 16] << 8) | packet[l4 + 17]) ^ 0x5A5A
    return packet[:l4 + 16] + bytes((csum >> 8, csum & 0xFF)) + packet[l4 + 18:]


def _log_key(rec: NfLogRecord) -> tuple:
    flags = 0
    for word in rec.tcp_flags:
        flags |= _LOG_FLAGS[word]
    return (rec.fields.get("SRC"), rec.fields.get("DST"), rec.int_field("SPT"), rec.int_field("DPT"),
            rec.int_field("SEQ"), rec.int_field("ACK"), flags)


def inject(box: NatBox, kmsg: Kmsg, steps: List[Step], cport: int, sport: int = 6379, family: int = 4,
           box_packets: Optional[List[Tuple[tuple, KernelVerdict]]] = None,
           ) -> List[Tuple[tuple, KernelVerdict]]:
    """Send each step, return ((src, dst, sport, dport, seq, ack, flags), kernel verdict) per step.

    Side "c" is the client, "s" the server, "b" the nat box itself (a raw IP socket in its namespace).
    A step's optional 8th element is a dict: {"csum": "bad"} sends it with a wrong TCP checksum;
    {"to": "client"} sends a server step to the client's own address (routed through the nat ns, no
    NAT: the entry's original direction is then server -> client when the server speaks first).
    Log lines for packets the nat ns itself sent (its stack's RSTs) are appended to `box_packets`
    as (key, verdict), the key taken from the logged header."""
    out = []
    client, server, nat_out = ((CLIENT_IP, SERVER_IP, NAT_OUT_IP) if family == 4
                               else (CLIENT_IP6, SERVER_IP6, NAT_OUT_IP6))
    for i, step in enumerate(steps):
        side, flags, seq, ack, window, length, options = step[:7]
        extra = step[7] if len(step) > 7 else {}
        if side == "c":
            src, dst, sp, dp = client, server, cport, sport
        elif side == "b":  # sent by the nat box itself (IPv4): conntrack's OUTPUT hook, no checksum check
            src, dst, sp, dp = nat_out, server, cport, sport
        else:
            src, dst, sp, dp = server, client if extra.get("to") == "client" else nat_out, sport, cport
        before = box.invalid_count()
        packet = ip_tcp_packet(src, dst, sp, dp, seq, ack, flags, window, b"d" * length, options,
                               ip_id=(cport * 64 + i) & 0xFFFF)
        if extra.get("csum") == "bad":
            packet = corrupt_tcp_checksum(packet)
        box.send(side, packet)
        time.sleep(0.003)
        after = box.invalid_count()
        logs = []
        for line in kmsg.read():
            rec = parse_nflog_line(line)
            if rec is None or not rec.fields.get("SRC", "").startswith(("10.231.", "fd31:")):
                continue
            logs.append(rec)
        key = (src, dst, sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags)
        mine = [r for r in logs if r.int_field("SEQ") == key[4] and r.int_field("SPT") == sp]
        others = [r for r in logs if r.fields.get("SRC") == nat_out and r not in mine]
        if box_packets is not None:
            for rec in others:
                box_packets.append((_log_key(rec), KernelVerdict(invalid=True, logs=[rec])))
            # the box answers only what it found INVALID; its answer, INVALID too, is not logged before
            # 6.7 ("invalid new" was a pr_debug): the counter grew for it all the same
            for _ in range(max(0, after - before - len(others) - 1)):
                box_packets.append((None, KernelVerdict(invalid=True, logs=[])))
        out.append((key, KernelVerdict(invalid=after - len(others) > before, logs=mine)))
    return out
