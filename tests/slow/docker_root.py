"""The base root's variant with Debian 12's docker.io installed (issue 15 item 8: dockerd's writes at start).

The same builder as base_root.py (mmdebstrap, suite, mirror, customisation hooks), with docker.io added to
the package list: apt installs it and its dependencies (containerd, runc, iptables, tini …) and its
maintainer scripts enable docker.service/docker.socket as on a real install. Cached beside the base root
under `$SYSCTL_DOCTOR_TEST_CACHE/slow/bookworm-docker-<hash>`, built only when a scenario asks for it (a few
minutes, once).

    python -m tests.slow.docker_root     # build it by hand and print its path
"""

from __future__ import annotations

import hashlib
from typing import Tuple

from .base_root import (ARCH, BUILDER_VERSION, CUSTOMIZE, PACKAGES as BASE_PACKAGES, SUITE, BaseRoot, _finish_base,
                        build_root, cache_dir, host_mirror, installed_kernel)

PACKAGES: Tuple[str, ...] = BASE_PACKAGES + ("docker.io",)
VARIANT_VERSION = "1"


def cache_key(mirror: str) -> str:
    material = "\n".join([BUILDER_VERSION, VARIANT_VERSION, SUITE, ARCH, mirror, *PACKAGES, *CUSTOMIZE])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def ensure_docker_root() -> BaseRoot:
    """The cached docker.io root, built first when absent."""
    mirror = host_mirror()
    final = cache_dir() / f"bookworm-docker-{cache_key(mirror)}"
    if not (final / ".complete").exists():
        build_root(final, PACKAGES, CUSTOMIZE, mirror, _finish_base)
    kernel = installed_kernel(final)
    if kernel is None:
        raise RuntimeError(f"cached root {final} has no kernel in /boot")
    return BaseRoot(final, kernel)


if __name__ == "__main__":
    root = ensure_docker_root()
    print(root.path, root.kernel)
    for rel in ("usr/sbin/dockerd", "etc/systemd/system/multi-user.target.wants/docker.service",
                "etc/systemd/system/sockets.target.wants/docker.socket"):
        print(rel, "present" if (root.path / rel).exists() or (root.path / rel).is_symlink() else "MISSING")
