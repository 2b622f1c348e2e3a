"""Fixtures: real Debian kernel module trees and their indexes (built once per session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel_trees import KernelTreeUnavailable, debian_kernel_tree  # noqa: E402


def _tree(series: str):
    try:
        return debian_kernel_tree(series)
    except KernelTreeUnavailable as exc:
        pytest.skip(f"NEEDS DEBIAN KERNEL PACKAGE linux-image ({series}): {exc}")


@pytest.fixture(scope="session")
def tree_61():
    return _tree("6.1")


@pytest.fixture(scope="session")
def tree_612():
    return _tree("6.12")


@pytest.fixture(scope="session")
def tree_510():
    return _tree("5.10")


@pytest.fixture(scope="session")
def session_cache():
    """The index cache for the real trees, kept next to the trees in the test cache.

    Its key includes the scanner's source, so after any change to the scanner the first run scans the
    trees again; unchanged code reuses the result (the 6.12 .ko.xz tree costs seconds to decompress).
    Tests of the scan itself (test_module_files) always use a fresh private cache.
    """
    from kernel_trees import cache_root

    path = cache_root() / "xdg-cache"
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def index_61(tree_61, session_cache):
    from sysctl_doctor.kernel import load_module_index
    from sysctl_doctor.root import Root

    return load_module_index(Root(tree_61), tree_61.kver)


@pytest.fixture(scope="session")
def index_612(tree_612, session_cache):
    from sysctl_doctor.kernel import load_module_index
    from sysctl_doctor.root import Root

    return load_module_index(Root(tree_612), tree_612.kver)


@pytest.fixture(scope="session")
def index_510(tree_510, session_cache):
    from sysctl_doctor.kernel import load_module_index
    from sysctl_doctor.root import Root

    return load_module_index(Root(tree_510), tree_510.kver)


@pytest.fixture(params=["5.10", "6.1", "6.12"])
def real_index(request):
    return request.getfixturevalue({"5.10": "index_510", "6.1": "index_61", "6.12": "index_612"}[request.param])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    path = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path
