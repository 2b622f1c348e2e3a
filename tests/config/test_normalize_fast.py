"""systemd_normalize's shortcut for plain dotted keys must equal the full rule (swap, simplify,
drop a leading slash) on every key: checked exhaustively over short keys of ``a b . /``."""

from __future__ import annotations

import itertools

from sysctl_doctor.config.model import swap_separators
from sysctl_doctor.config.sysctl_d import path_simplify, systemd_normalize


def _full_rule(key: str) -> str:
    key = path_simplify(swap_separators(key))
    return key[1:] if key.startswith("/") and len(key) > 1 else key


def test_shortcut_equals_the_full_rule_on_every_short_key() -> None:
    keys = ["".join(t) for n in range(7) for t in itertools.product("ab./", repeat=n)]
    keys += ["net.ipv4.conf.eth0/100.rp_filter", "net.ipv4.ip_forward", "kernel.*", ".net.x", "net.x.", "a..b"]
    for key in keys:
        assert systemd_normalize(key) == _full_rule(key), key
    assert systemd_normalize("net.ipv4.ip_forward") == "net/ipv4/ip_forward"
