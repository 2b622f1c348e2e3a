"""`sysctl-doctor lab` inside a qemu guest booted with Debian 11's kernel 5.10.

The guest root is a copy of the cached legacy root (legacy_root.py) plus the checkout's src/
(under /opt/sysctl-doctor/src, run with PYTHONPATH: no network, no pip in the guest) and a probe
unit that, once the boot is finished, runs every scenario × mitigation and writes to the second
serial port (/dev/ttyS1, a file on the host):

    SDLEGACY uname <release>
    SDLEGACY rc <lab exit status>
    SDLEGACY-JSON-BEGIN / <lab --format json> / SDLEGACY-JSON-END
    SDLEGACY-STDERR-BEGIN / <lab stderr> / SDLEGACY-STDERR-END
    SDLEGACY-PCAP-BEGIN / <base64 of tar.gz of the lab's pcaps> / SDLEGACY-PCAP-END
    SDLEGACY module <name>=loaded|absent   (after the lab: what it had to load)
    SDLEGACY END

then powers off. Nothing is modprobed by the probe: the lab must get what it needs on 5.10 itself.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from sysctl_doctor.verify.reporter import after_boot_unit
from sysctl_doctor.verify.serial import between, decode_block, marker_lines, read_lines

from .base_root import BaseRoot
from .real_boot import BootResult, _copy_tree, _symlink, _write, boot_image, build_image

REPO = Path(__file__).resolve().parents[2]
GUEST_SRC = "opt/sysctl-doctor/src"
MODULES = ("nf_conntrack", "nf_nat", "nf_tables", "nft_ct", "nft_masq", "nft_nat", "nf_log_ipv4", "veth")

PROBE_SCRIPT = """#!/bin/sh
# sysctl-doctor slow tier (legacy kernel): run the lab, report on ttyS1, power off.
exec > /dev/ttyS1 2>&1
echo "SDLEGACY BEGIN"
echo "SDLEGACY uname $(uname -r)"
echo "SDLEGACY python $(python3 -c 'import sys; print(sys.version.split()[0])')"
read -r up _ < /proc/uptime
echo "SDLEGACY uptime-before $up"
mkdir -p /var/tmp/lab
cd /var/tmp
PYTHONPATH=/{src} timeout 900 python3 -m sysctl_doctor lab --format json --capture-dir /var/tmp/lab \\
    > /var/tmp/lab.json 2> /var/tmp/lab.err
echo "SDLEGACY rc $?"
read -r up _ < /proc/uptime
echo "SDLEGACY uptime-after $up"
echo "SDLEGACY-JSON-BEGIN"
cat /var/tmp/lab.json
echo "SDLEGACY-JSON-END"
echo "SDLEGACY-STDERR-BEGIN"
tail -c 20000 /var/tmp/lab.err
echo "SDLEGACY-STDERR-END"
echo "SDLEGACY-PCAP-BEGIN"
tar -C /var/tmp/lab -czf - . | base64
echo "SDLEGACY-PCAP-END"
for mod in {modules}; do
    if [ -d "/sys/module/$mod" ]; then state=loaded; else state=absent; fi
    echo "SDLEGACY module $mod=$state"
done
dmesg | grep -e nf_ct_ -e "SEQ is" | tail -n 50 | sed 's/^/SDLEGACY dmesg /'
echo "SDLEGACY END"
sync
systemctl poweroff --no-block
"""
PROBE_UNIT = after_boot_unit("sysctl-doctor slow tier: the lab on the legacy kernel", "/usr/local/sbin/sdlegacy",
                             to_console=True)


@dataclass
class LegacyLabRun:
    boot: BootResult
    uname: Optional[str] = None
    python: Optional[str] = None
    rc: Optional[int] = None
    report: Optional[dict] = None         # the lab's JSON
    stderr: str = ""
    pcaps: Dict[str, Path] = field(default_factory=dict)   # file name -> extracted on the host
    modules: Dict[str, str] = field(default_factory=dict)
    dmesg: List[str] = field(default_factory=list)
    lab_seconds: Optional[float] = None   # guest uptime across the lab command
    complete: bool = False

    def outcome(self, scenario: str, mitigation: str) -> dict:
        assert self.report is not None
        return next(o for o in self.report["outcomes"]
                    if o["scenario"] == scenario and o["mitigation"] == mitigation)

    def explain(self) -> str:
        return (f"qemu {self.boot.seconds:.0f}s exit={self.boot.exit_code} uname={self.uname} rc={self.rc} "
                f"complete={self.complete}; logs {self.boot.console_log} {self.boot.probe_log}\n"
                f"modules {self.modules}\nstderr: {self.stderr[-3000:]}")


def parse_legacy_probe(boot: BootResult, pcap_dir: Path) -> LegacyLabRun:
    lines = read_lines(boot.probe_log)
    run = LegacyLabRun(boot)
    before = after = None
    for key, value in marker_lines(lines, "SDLEGACY"):
        if key == "uname":
            run.uname = value
        elif key == "python":
            run.python = value
        elif key == "rc":
            run.rc = int(value)
        elif key == "uptime-before":
            before = float(value)
        elif key == "uptime-after":
            after = float(value)
        elif key == "module" and "=" in value:
            name, _, state = value.partition("=")
            run.modules[name] = state
        elif key == "dmesg":
            run.dmesg.append(value)
        elif key == "END":
            run.complete = True
    if before is not None and after is not None:
        run.lab_seconds = after - before
    body = between(lines, "SDLEGACY-JSON-BEGIN", "SDLEGACY-JSON-END")
    if body:
        try:
            run.report = json.loads("\n".join(body))
        except ValueError:
            run.report = None
    run.stderr = "\n".join(between(lines, "SDLEGACY-STDERR-BEGIN", "SDLEGACY-STDERR-END") or [])
    data = decode_block(lines, "SDLEGACY-PCAP-BEGIN", "SDLEGACY-PCAP-END")
    if data:
        pcap_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name.endswith(".pcap"):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    (pcap_dir / name).write_bytes(extracted.read())
                    run.pcaps[name] = pcap_dir / name
    return run


def prepare_legacy_root(legacy: BaseRoot, dest: Path) -> None:
    dest.mkdir(parents=True)
    _copy_tree(legacy.path, dest)
    shutil.copytree(REPO / "src" / "sysctl_doctor", dest / GUEST_SRC / "sysctl_doctor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _write(dest, "usr/local/sbin/sdlegacy",
           PROBE_SCRIPT.format(src=GUEST_SRC, modules=" ".join(MODULES)), 0o755)
    _write(dest, "etc/systemd/system/sdlegacy.service", PROBE_UNIT)
    _symlink(dest, "etc/systemd/system/multi-user.target.wants/sdlegacy.service",
             "/etc/systemd/system/sdlegacy.service")


def run_legacy_lab(legacy: BaseRoot, workdir: Path, logdir: Path, timeout: float) -> LegacyLabRun:
    """copy root + src + probe -> ext4 image -> boot the 5.10 kernel -> parse; root and image removed."""
    root, image = workdir / "legacy-lab" / "root", workdir / "legacy-lab" / "disk.img"
    try:
        prepare_legacy_root(legacy, root)
        build_image(root, image)
        shutil.rmtree(root)
        boot = boot_image(legacy, image, logdir / "legacy-lab", "legacy-lab", timeout=timeout)
    finally:
        shutil.rmtree(workdir / "legacy-lab", ignore_errors=True)
    return parse_legacy_probe(boot, logdir / "legacy-lab" / "pcaps")
