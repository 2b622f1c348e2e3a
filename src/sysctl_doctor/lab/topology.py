"""Three fresh network namespaces: pod ↔ NAT box ↔ server.

    sdlab-<pid>-pod  eth0 10.232.1.2/24  default via 10.232.1.1
    sdlab-<pid>-nat  to-pod 10.232.1.1/24, to-srv 10.232.2.1/24, ip_forward=1,
                     nft: masquerade out of to-srv (the NAT box is the SNAT address)
    sdlab-<pid>-srv  eth0 10.232.2.2/24  (no route back to the pod: only NAT works)

Links and addresses are made with pyroute2 (the `lab` extra), rules with
`nft` inside the NAT namespace. Every namespace is new, so every per-netns
sysctl starts at the kernel default and disappears with the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from sysctl_doctor.errors import DoctorError

NETNS_PREFIX = "sdlab-"
POD_ADDR = "10.232.1.2"
NAT_INSIDE_ADDR = "10.232.1.1"
NAT_OUTSIDE_ADDR = "10.232.2.1"
SERVER_ADDR = "10.232.2.2"
PREFIXLEN = 24
NAT_OUTSIDE_IFNAME = "to-srv"
NFT_TABLE = "sdlab"


def _pyroute2():  # type: ignore[no-untyped-def]
    try:
        import pyroute2  # noqa: F401
        from pyroute2 import NetNS, netns
    except ImportError as exc:
        raise DoctorError(
            "the lab needs pyroute2: install the extra with `pip install 'sysctl-doctor[lab]'` "
            f"(Debian: apt-get install python3-pyroute2) ({exc})"
        ) from exc
    return NetNS, netns


def require_lab_tools() -> None:
    """Raise DoctorError naming what is missing (root first: no install helps without it; pyroute2, nft, ip)."""
    if os.geteuid() != 0:
        raise DoctorError("the lab needs root (network namespaces, nftables)")
    _pyroute2()
    if shutil.which("nft") is None:
        raise DoctorError("the lab needs `nft`: apt-get install nftables")
    if shutil.which("ip") is None:
        raise DoctorError("the lab needs `ip`: apt-get install iproute2")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> List[str]:
    """Remove sdlab-<pid>x<n>-* namespaces whose creating process is gone (a SIGKILLed run)."""
    _, netns = _pyroute2()
    removed = []
    for name in netns.listnetns():
        if not name.startswith(NETNS_PREFIX):
            continue
        parts = name.split("-")
        pid = parts[1].split("x", 1)[0] if len(parts) >= 3 else ""
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                netns.remove(name)
                removed.append(name)
            except OSError:
                pass
    return removed


@dataclass
class LabTopology:
    tag: str  # "<pid>x<n>": unique per run on this host; the pid lets a later run remove leftovers

    @property
    def pod(self) -> str:
        return f"{NETNS_PREFIX}{self.tag}-pod"

    @property
    def nat(self) -> str:
        return f"{NETNS_PREFIX}{self.tag}-nat"

    @property
    def srv(self) -> str:
        return f"{NETNS_PREFIX}{self.tag}-srv"

    @property
    def names(self) -> List[str]:
        return [self.pod, self.nat, self.srv]

    def build(self) -> None:
        NetNS, netns = _pyroute2()
        for name in self.names:
            netns.create(name)
        nat = NetNS(self.nat)
        try:
            nat.link("add", ifname="to-pod", kind="veth", peer={"ifname": "eth0", "net_ns_fd": self.pod})
            nat.link("add", ifname=NAT_OUTSIDE_IFNAME, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": self.srv})
            for ifname, addr in (("to-pod", NAT_INSIDE_ADDR), (NAT_OUTSIDE_IFNAME, NAT_OUTSIDE_ADDR)):
                idx = nat.link_lookup(ifname=ifname)[0]
                nat.addr("add", index=idx, address=addr, prefixlen=PREFIXLEN)
                nat.link("set", index=idx, state="up")
            nat.link("set", index=nat.link_lookup(ifname="lo")[0], state="up")
        finally:
            nat.close()
        for name, addr, gateway in ((self.pod, POD_ADDR, NAT_INSIDE_ADDR), (self.srv, SERVER_ADDR, None)):
            ns = NetNS(name)
            try:
                idx = ns.link_lookup(ifname="eth0")[0]
                ns.addr("add", index=idx, address=addr, prefixlen=PREFIXLEN)
                ns.link("set", index=idx, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                if gateway:
                    ns.route("add", dst="default", gateway=gateway)
            finally:
                ns.close()
        with self.entered(self.nat):
            write_netns_sysctl("net/ipv4/ip_forward", "1")

    def destroy(self) -> None:
        try:
            _, netns = _pyroute2()
        except DoctorError:
            return
        existing = set(netns.listnetns())
        for name in self.names:
            if name in existing:
                try:
                    netns.remove(name)
                except OSError:
                    pass

    @contextmanager
    def entered(self, name: str) -> Iterator[None]:
        """Run the block with this thread inside netns `name` (sockets made here stay there)."""
        _, netns = _pyroute2()
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            netns.setns(name)
            try:
                yield
            finally:
                netns.setns(home)
        finally:
            os.close(home)

    def nft(self, ruleset: str) -> None:
        """Load an nft ruleset (text) in the NAT namespace."""
        proc = subprocess.run(
            ["ip", "netns", "exec", self.nat, "nft", "-f", "-"],
            input=ruleset, capture_output=True, text=True, timeout=10,
        )
        if proc.returncode != 0:
            raise DoctorError(f"nft in {self.nat} failed: {proc.stderr.strip()}")


def write_netns_sysctl(key: str, value: str) -> None:
    """Write a sysctl (slash path) in the calling thread's network namespace."""
    with open(f"/proc/sys/{key}", "w") as fh:
        fh.write(value + "\n")


def read_netns_sysctl(key: str) -> Optional[str]:
    try:
        with open(f"/proc/sys/{key}") as fh:
            return fh.read().strip()
    except OSError:
        return None


def nat_ruleset(extra_chains: Dict[str, str]) -> str:
    """The NAT box's nft table: masquerade out of the server side, plus mitigation chains."""
    chains = [
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{NAT_OUTSIDE_IFNAME}" masquerade\n'
        "  }\n"
    ]
    for hook, rule in extra_chains.items():
        chains.append(
            f"  chain {hook} {{\n"
            f"    type filter hook {hook} priority filter; policy accept;\n"
            f"    {rule}\n"
            "  }\n"
        )
    return f"table ip {NFT_TABLE} {{\n" + "".join(chains) + "}\n"
