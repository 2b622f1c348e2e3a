"""systemd unit files: search path, masks, drop-ins, boot transaction, ordering (against real Debian 12 files)."""

from __future__ import annotations

from pathlib import Path

from boot.rootfs import INCIDENT, make_root
from sysctl_doctor.boot.units import SYSCTL_UNIT, SystemdUnits, parse_unit_text
from sysctl_doctor.root import Root

SYSCTL_SERVICE = (INCIDENT / "usr/lib/systemd/system/systemd-sysctl.service").read_text()
MODULES_SERVICE = (INCIDENT / "usr/lib/systemd/system/systemd-modules-load.service").read_text()
NFT_SERVICE = (INCIDENT / "usr/lib/systemd/system/nftables.service").read_text()
BASE = {
    "/usr/lib/systemd/system/systemd-sysctl.service": SYSCTL_SERVICE,
    "/usr/lib/systemd/system/systemd-modules-load.service": MODULES_SERVICE,
    "/usr/lib/systemd/system/nftables.service": NFT_SERVICE,
}


def test_parse_continuation_comments_and_sections() -> None:
    lines = parse_unit_text("[Unit]\n# c\nAfter=a.service \\\n  b.service\n; x\n[Service]\nExecStart=/bin/true\n", "u")
    assert [(item.section, item.key, item.value, item.line) for item in lines] == [
        ("Unit", "After", "a.service b.service", 3),
        ("Service", "ExecStart", "/bin/true", 7),
    ]


def test_incident_nftables_races_systemd_sysctl() -> None:
    tx = SystemdUnits(Root(INCIDENT)).boot_transaction()
    assert "nftables.service" in tx
    assert tx.relation("systemd-modules-load.service", SYSCTL_UNIT) == "before"
    assert tx.relation("nftables.service", SYSCTL_UNIT) == "unordered"
    assert tx.why_member("nftables.service") == "enabled: /etc/systemd/system/sysinit.target.wants/nftables.service"


def test_dropin_after_orders_loader_before_sysctl(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        **BASE,
        "/etc/systemd/system/sysinit.target.wants/nftables.service": ("link", "/lib/systemd/system/nftables.service"),
        "/etc/systemd/system/nftables.service.d/order.conf": "[Unit]\nBefore=systemd-sysctl.service\n",
    })
    tx = SystemdUnits(Root(root)).boot_transaction()
    chain = tx.order_path("nftables.service", SYSCTL_UNIT)
    assert chain is not None and "order.conf:2 Before=systemd-sysctl.service" in chain[0].because


def test_empty_after_in_dropin_resets_the_ordering(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        **BASE,
        "/etc/systemd/system/systemd-sysctl.service.d/reset.conf": "[Unit]\nAfter=\n",
    })
    tx = SystemdUnits(Root(root)).boot_transaction()
    assert tx.relation("systemd-modules-load.service", SYSCTL_UNIT) == "unordered"


def test_service_with_default_dependencies_runs_after_sysctl(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        **BASE,
        "/usr/lib/systemd/system/docker.service": "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/usr/bin/dockerd\n",
        "/etc/systemd/system/multi-user.target.wants/docker.service": ("link", "/lib/systemd/system/docker.service"),
    })
    tx = SystemdUnits(Root(root)).boot_transaction()
    chain = tx.order_path(SYSCTL_UNIT, "docker.service")
    assert chain is not None
    assert [e.second for e in chain] == ["sysinit.target", "docker.service"]


def test_masked_unit_is_not_started(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        **BASE,
        "/etc/systemd/system/sysinit.target.wants/nftables.service": ("link", "/lib/systemd/system/nftables.service"),
        "/etc/systemd/system/nftables.service": ("link", "/dev/null"),
    })
    units = SystemdUnits(Root(root))
    assert units.unit("nftables.service").masked
    assert "nftables.service" not in units.boot_transaction()


def test_etc_unit_file_wins_over_vendor(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        **BASE,
        "/etc/systemd/system/nftables.service": "[Unit]\nAfter=systemd-sysctl.service\n[Service]\nExecStart=/usr/sbin/nft -f /x\n",
        "/etc/systemd/system/sysinit.target.wants/nftables.service": ("link", "/etc/systemd/system/nftables.service"),
    })
    units = SystemdUnits(Root(root))
    assert units.unit("nftables.service").fragment == "/etc/systemd/system/nftables.service"
    assert units.boot_transaction().relation("nftables.service", SYSCTL_UNIT) == "after"


def test_live_debian_root_parses() -> None:
    tx = SystemdUnits(Root("/")).boot_transaction()
    if SYSCTL_UNIT not in tx:
        import pytest

        pytest.skip("NEEDS a systemd host: this machine's / has no systemd-sysctl.service")
    assert tx.relation("systemd-modules-load.service", SYSCTL_UNIT) == "before"


def test_debian_layout_pulls_sysctl_through_sysinit_wants(tmp_path: Path) -> None:
    wants = "/usr/lib/systemd/system/sysinit.target.wants"
    files = {
        **BASE,
        "/usr/lib/systemd/system/sysinit.target": "[Unit]\nDescription=System Initialization\n",
        f"{wants}/systemd-sysctl.service": ("link", "../systemd-sysctl.service"),
        f"{wants}/systemd-modules-load.service": ("link", "../systemd-modules-load.service"),
    }
    tx = SystemdUnits(Root(make_root(tmp_path / "a", files))).boot_transaction()
    assert SYSCTL_UNIT in tx and "systemd-modules-load.service" in tx
    assert tx.why_member(SYSCTL_UNIT) == f"enabled: {wants}/systemd-sysctl.service"
    # without its wants link systemd-modules-load is not started (a "disabled" static unit)
    del files[f"{wants}/systemd-modules-load.service"]
    tx = SystemdUnits(Root(make_root(tmp_path / "b", files))).boot_transaction()
    assert "systemd-modules-load.service" not in tx and SYSCTL_UNIT in tx
