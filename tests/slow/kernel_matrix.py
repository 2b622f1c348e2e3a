"""The conntrack agreement runs inside a qemu guest booted with one Debian kernel.

The guest root is a copy of the cached matrix root (matrix_root.py) plus the checkout's src/ and
tests/conntrack (under /opt/sysctl-doctor, run with PYTHONPATH), and a probe unit that loads the
conntrack/NAT/nf_log modules, runs `python3 -m conntrack.guest_run` (every run of
tests/conntrack/agreement.py through the guest kernel's conntrack, in network namespaces) and writes
to the second serial port:

    SDMATRIX uname <release>
    SDMATRIX rc <exit status>
    SDMATRIX-DATA-BEGIN / <base64 of tar.gz: records.json and one pcap per run> / SDMATRIX-DATA-END
    SDMATRIX-STDERR-BEGIN / … / SDMATRIX-STDERR-END
    SDMATRIX END

then powers off. The host replays each capture with `replay --kernel <that release>`'s profile and
compares packet by packet (agreement.compare_run).
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
GUEST = "opt/sysctl-doctor"
MODULES = ("nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nf_tables", "nft_ct", "nft_masq", "nft_nat",
           "nft_chain_nat", "nf_log_syslog", "nf_log_ipv4", "nf_log_ipv6", "veth", "nf_defrag_ipv6")

PROBE_SCRIPT = """#!/bin/sh
# sysctl-doctor slow tier (kernel matrix): the conntrack agreement runs, report on ttyS1, power off.
exec > /dev/ttyS1 2>&1
echo "SDMATRIX BEGIN"
echo "SDMATRIX uname $(uname -r)"
for mod in {modules}; do modprobe "$mod" 2>/dev/null; done
mkdir -p /var/tmp/ka
cd /var/tmp
PYTHONPATH=/{guest}/src:/{guest}/tests timeout 1500 python3 -m conntrack.guest_run /var/tmp/ka \\
    > /var/tmp/ka.out 2> /var/tmp/ka.err
echo "SDMATRIX rc $?"
echo "SDMATRIX-DATA-BEGIN"
tar -C /var/tmp/ka -czf - . | base64
echo "SDMATRIX-DATA-END"
echo "SDMATRIX-STDERR-BEGIN"
tail -c 20000 /var/tmp/ka.err
echo "SDMATRIX-STDERR-END"
echo "SDMATRIX END"
sync
systemctl poweroff --no-block
"""
PROBE_UNIT = after_boot_unit("sysctl-doctor slow tier: conntrack agreement runs on this kernel", "/usr/local/sbin/sdmatrix",
                             to_console=True)


@dataclass
class MatrixRun:
    boot: BootResult
    uname: Optional[str] = None
    rc: Optional[int] = None
    records: List[dict] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)
    captures: Dict[str, Path] = field(default_factory=dict)
    stderr: str = ""
    complete: bool = False

    def explain(self) -> str:
        return (f"qemu {self.boot.seconds:.0f}s exit={self.boot.exit_code} uname={self.uname} rc={self.rc} "
                f"complete={self.complete}; logs {self.boot.console_log} {self.boot.probe_log}\n"
                f"errors: {self.errors}\nstderr: {self.stderr[-3000:]}")


def parse_matrix_probe(boot: BootResult, outdir: Path) -> MatrixRun:
    lines = read_lines(boot.probe_log)
    run = MatrixRun(boot)
    for key, value in marker_lines(lines, "SDMATRIX"):
        if key == "uname":
            run.uname = value
        elif key == "rc":
            run.rc = int(value)
        elif key == "END":
            run.complete = True
    run.stderr = "\n".join(between(lines, "SDMATRIX-STDERR-BEGIN", "SDMATRIX-STDERR-END") or [])
    data_tar = decode_block(lines, "SDMATRIX-DATA-BEGIN", "SDMATRIX-DATA-END")
    if data_tar:
        outdir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data_tar), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and (name.endswith(".pcap") or name == "records.json"):
                    data = tar.extractfile(member)
                    assert data is not None
                    (outdir / name).write_bytes(data.read())
                    if name.endswith(".pcap"):
                        run.captures[name[:-5]] = outdir / name
        if (outdir / "records.json").exists():
            data = json.loads((outdir / "records.json").read_text())
            run.records, run.errors = data.get("records", []), data.get("errors", {})
    return run


def prepare_matrix_root(base: BaseRoot, dest: Path) -> None:
    dest.mkdir(parents=True)
    _copy_tree(base.path, dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "src" / "sysctl_doctor", dest / GUEST / "src" / "sysctl_doctor", ignore=ignore)
    shutil.copytree(REPO / "tests" / "conntrack", dest / GUEST / "tests" / "conntrack", ignore=ignore)
    _write(dest, "usr/local/sbin/sdmatrix", PROBE_SCRIPT.format(guest=GUEST, modules=" ".join(MODULES)), 0o755)
    _write(dest, "etc/systemd/system/sdmatrix.service", PROBE_UNIT)
    _symlink(dest, "etc/systemd/system/multi-user.target.wants/sdmatrix.service",
             "/etc/systemd/system/sdmatrix.service")


def run_matrix(base: BaseRoot, series: str, workdir: Path, logdir: Path, timeout: float) -> MatrixRun:
    """copy root + checkout + probe -> ext4 image -> boot `base.kernel` -> parse; root and image removed."""
    name = f"kernel-matrix-{series}"
    root, image = workdir / name / "root", workdir / name / "disk.img"
    try:
        prepare_matrix_root(base, root)
        build_image(root, image)
        shutil.rmtree(root)
        boot = boot_image(base, image, logdir / name, name, timeout=timeout)
    finally:
        shutil.rmtree(workdir / name, ignore_errors=True)
    return parse_matrix_probe(boot, logdir / name / "data")
