"""Record every agreement run on the kernel this runs on (inside a qemu guest of the slow tier).

    PYTHONPATH=<src>:<tests> python3 -m conntrack.guest_run OUTDIR

Writes OUTDIR/<run>.pcap and OUTDIR/records.json ({"uname", "records": [record_run() …],
"errors": {run: text}}). Needs root, ip, nft, tcpdump, conntrack, sysctl; the kernel's conntrack,
NAT and nf_log modules are loaded by the caller (the guest's probe).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from sysctl_doctor.live import HostSysctlChange

from . import agreement
from .natbox import Kmsg, NatBox


def main(outdir: str) -> int:
    os.makedirs(outdir, exist_ok=True)
    records, errors = [], {}
    box = NatBox("g%d" % os.getpid())
    try:
        with HostSysctlChange({"net/netfilter/nf_log_all_netns": "1"}):
            box.up()
            kmsg = Kmsg()
            try:
                for run in sorted(agreement.RUNS):
                    try:
                        records.append(agreement.record_run(box, kmsg, run, os.path.join(outdir, run + ".pcap")))
                    except Exception:  # one run's failure is reported, the others still run
                        errors[run] = traceback.format_exc()[-3000:]
            finally:
                kmsg.close()
    finally:
        box.down()
    with open(os.path.join(outdir, "records.json"), "w") as f:
        json.dump({"uname": os.uname().release, "records": records, "errors": errors}, f)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
