"""SD113: a module listed for the initramfs is not in the image that boots."""

from __future__ import annotations

from typing import Iterator

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.initrd import newc_archive
from sysctl_doctor.findings.model import WARNING, Example, Finding, Rule

_IMAGE = "/boot/initrd.img-6.1.0-56-amd64"

RULE = Rule(
    code="SD113",
    name="initramfs-image-stale",
    severity=WARNING,
    title="A module listed for the initramfs is not loaded by the image that boots",
    rationale=(
        "/etc/initramfs-tools/modules (and dracut's force_drivers) only take effect once the image is "
        "rebuilt: the initramfs loads the modules named in its own conf/modules. A module added to the list "
        "after the last update-initramfs is not loaded early, so keys that depend on it are not there when "
        "the sysctl step runs. The image is read only when a module key's fate depends on it."
    ),
    fix="Rebuild the image: update-initramfs -u -k <kernel> (initramfs-tools) or dracut -f (dracut); or load the "
        "module from /etc/modules-load.d/ instead, which needs no rebuild.",
    example=Example(
        "nf_conntrack listed in /etc/initramfs-tools/modules, but the image was built before (it loads only ext4).",
        files={"/etc/initramfs-tools/modules": "nf_conntrack\n", _IMAGE: newc_archive({"conf/modules": "ext4\n"})},
    ),
    passing=Example(
        "The rebuilt image loads nf_conntrack.",
        files={"/etc/initramfs-tools/modules": "nf_conntrack\n",
               _IMAGE: newc_archive({"conf/modules": "ext4\nnf_conntrack\n"})},
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    for module, listed_at, image in analysis.timeline.stale_initramfs:
        message = (f"{module} is listed for the initramfs ({listed_at}) but {image} does not load it: the image "
                   "was not rebuilt since")
        yield Finding(RULE.code, RULE.severity, None, message, RULE.fix, image, None)
