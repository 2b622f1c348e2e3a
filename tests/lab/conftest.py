"""The lab runs for real: root, network namespaces, nft, the running kernel's conntrack."""

from __future__ import annotations

import os
import shutil

import pytest


def lab_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: the lab creates network namespaces and nft tables")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        pytest.skip("NEEDS pyroute2: pip install '.[lab]'")
    if shutil.which("nft") is None:
        pytest.skip("NEEDS nft: apt-get install nftables")


@pytest.fixture(scope="session")
def lab_report(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Every scenario under every mitigation, once per test session (about 5 s)."""
    lab_prerequisites()
    from sysctl_doctor.lab.mitigations import select_mitigations
    from sysctl_doctor.lab.runner import run_lab
    from sysctl_doctor.lab.scenarios import select_scenarios

    captures = tmp_path_factory.mktemp("lab-captures")
    return run_lab(select_scenarios("all"), select_mitigations("all"), keep_capture=str(captures))
