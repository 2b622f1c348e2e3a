"""Live conntrack: network namespaces made for the test (prefix sdlab-), always removed."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from typing import Iterator

import pytest

from conftest import fresh_netns


@contextlib.contextmanager
def conntrack_netns() -> Iterator[str]:
    """A fresh netns with lo up and conntrack active (an nft table that uses ct in output)."""
    with fresh_netns("sdlab-t") as name:
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], check=True, text=True, input=(
            "table ip sdlabt { chain out { type filter hook output priority 0; policy accept; "
            "ct state invalid counter accept; }; }\n"))
        yield name


@pytest.fixture
def lab_netns():  # type: ignore[no-untyped-def]
    with conntrack_netns() as name:
        yield name


@pytest.fixture
def other_lab_netns():  # type: ignore[no-untyped-def]
    """A second one, for overlapping sessions."""
    with conntrack_netns() as name:
        yield name


def send_lone_rst(netns: str, sport: int = 40404, dport: int = 40405) -> None:
    """A RST with no connection behind it, over lo in `netns`: conntrack says "invalid new"."""
    from sysctl_doctor.conntrack.stats import in_netns

    from sysctl_doctor.conntrack.frames import F_RST, ip_tcp_packet

    # the TCP part of the project's frame writer's packet: a raw IPPROTO_TCP socket adds the IP header
    tcp = ip_tcp_packet("127.0.0.1", "127.0.0.1", sport, dport, 12345, 0, F_RST, window=0)[20:]
    with in_netns(netns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        try:
            raw.sendto(tcp, ("127.0.0.1", 0))
        finally:
            raw.close()
