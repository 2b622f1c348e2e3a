"""The fix text for "load this module before the sysctl step", per init system."""

from __future__ import annotations

from typing import Iterable


def load_early_fix(init_system: str, module: str, prefixes: Iterable[str] = ()) -> str:
    prefix_args = " ".join(f"--prefix=/{p}" for p in prefixes) or "--prefix=/net"
    if init_system == "systemd":
        return (
            f"Load {module} before systemd-sysctl: list it in /etc/modules-load.d/ "
            f"(`sysctl-doctor fix --method modules-load` writes /etc/modules-load.d/sysctl-doctor.conf), "
            f"or re-apply the keys when it loads with a udev rule "
            f"(`sysctl-doctor fix --method udev`: ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"{module}\", "
            f"RUN+=\"/usr/lib/systemd/systemd-sysctl {prefix_args}\")."
        )
    if init_system == "openrc":
        return (
            f"List {module} in /etc/conf.d/modules (modules=\"{module}\") and order sysctl after modules "
            f"with rc_after=\"modules\" in /etc/conf.d/sysctl (`sysctl-doctor fix` does both)."
        )
    return (
        f"List {module} in /etc/modules and make sure the kmod script runs before procps "
        f"(`sysctl-doctor fix` adds the module)."
    )
