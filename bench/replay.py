#!/usr/bin/env python3
"""Benchmark: `sysctl-doctor conntrack replay` against tshark's spurious-retransmission filter.

    .venv/bin/python bench/replay.py [--packets 1000000] [--flows 2000] [--keep FILE]

Generates a capture (Ethernet pcap: `--flows` connections interleaved, each a
handshake then data and ACKs, all with TCP timestamps, with a stale segment 80 KB below the window every
100th step), then runs, side by side on the same file, alternating, `--rounds`
times each (best time kept — the machine is shared):

  tshark -r FILE -Y tcp.analysis.spurious_retransmission        (Debian's tshark)
  sysctl-doctor conntrack replay FILE --kernel 5.10 --format json > /dev/null

and prints wall and CPU time, packets per second, max RSS of each, and the ratios. The replay runs
twice more with SYSCTL_DOCTOR_PURE_PYTHON=1 (the pure-Python replay, the second baseline: what runs
without the compiled accelerator). Issue #12's target: the replay >= 10x faster than tshark (wall),
memory <= 1/10 of tshark's; the script says whether each holds, with the load average before and after.
With dpkt importable it also times a parse-only pass of dpkt against our own struct
reader (the reason the project does not depend on dpkt).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from sysctl_doctor.conntrack import pcap  # noqa: E402
from sysctl_doctor.conntrack.tcp_model import F_ACK, F_PSH, F_SYN  # noqa: E402


def generate(path: str, packets: int, flows: int, payload: int = 64) -> int:
    """Write `packets` frames: `flows` interleaved connections. Returns the number written."""
    eth = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
    data = b"x" * payload
    rec = struct.Struct("<IIII")
    ip = struct.Struct("!BBHHHBBH4s4s")
    tcp = struct.Struct("!HHIIBBHHH")
    ts_opt = struct.Struct("!BBBBII")  # NOP NOP TS: what Linux puts on every segment
    state = []
    for i in range(flows):
        c = bytes([10, 231, 100 + (i >> 8) % 100, i & 0xFF])
        state.append([c, 30000 + i % 30000, 1000 + i * 7, 2_000_000_000 + i * 13, 0])
    server = bytes([10, 231, 9, 9])
    written = 0
    t = 1_700_000_000.0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        out = []
        while written < packets:
            for st in state:
                if written >= packets:
                    break
                c, cport, cseq, sseq, step = st
                if step == 0:
                    segs = [(c, server, cport, 6379, cseq, 0, F_SYN, 64240, b"")]
                    st[2] = cseq + 1
                elif step == 1:
                    segs = [(server, c, 6379, cport, sseq, cseq, F_SYN | F_ACK, 65160, b"")]
                    st[3] = sseq + 1
                elif step == 2:
                    segs = [(c, server, cport, 6379, cseq, sseq, F_ACK, 65535, b"")]
                else:
                    segs = [(server, c, 6379, cport, sseq, cseq, F_ACK | F_PSH, 65535, data),
                            (c, server, cport, 6379, cseq, sseq + payload, F_ACK, 65535, b"")]
                    st[3] = sseq + payload
                    if step % 100 == 99:  # a stale segment far below the window
                        segs.append((server, c, 6379, cport, sseq - 80_000, cseq, F_ACK | F_PSH, 65535, data))
                st[4] = step + 1
                for src, dst, sp, dp, seq, ack, flags, win, body in segs:
                    opts = ts_opt.pack(1, 1, 8, 10, written & 0xFFFFFFFF, (written - 1) & 0xFFFFFFFF)
                    seg = (tcp.pack(sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x80, flags, win, 0, 0)
                           + opts + body)
                    # a correct TCP checksum (replay checks them, as conntrack does with nf_conntrack_checksum=1)
                    total = (int.from_bytes(src + dst, "big") + 6 + len(seg)
                             + int.from_bytes(seg + b"\0" * (len(seg) & 1), "big")) % 0xFFFF
                    seg = seg[:16] + struct.pack("!H", 0xFFFF - (total or 0xFFFF)) + seg[18:]
                    pkt = ip.pack(0x45, 0, 20 + len(seg), written & 0xFFFF, 0x4000, 64, 6, 0, src, dst) + seg
                    frame = eth + pkt
                    t += 0.00001
                    out.append(rec.pack(int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame)
                    written += 1
            if len(out) > 10000:
                f.write(b"".join(out))
                out = []
        f.write(b"".join(out))
    return written


def run_measured(args, out_path, env=None):
    """Wall seconds, CPU seconds, max RSS (KiB), exit status and stderr of one child; stdout to out_path."""
    start = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status), stderr


def parse_only_ours(path: str) -> tuple:
    f, info = pcap.open_capture(path)
    n = 0
    start = time.perf_counter()
    for _frame, _ts, linktype, data, _olen, hint in pcap.read_records(f, info, []):
        p = pcap.decode(linktype, data, hint)
        if p.__class__ is not str:
            n += 1
    f.close()
    return time.perf_counter() - start, n


def parse_only_dpkt(path: str) -> tuple:
    import dpkt

    n = 0
    start = time.perf_counter()
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ipk = eth.data
            if isinstance(ipk, dpkt.ip.IP) and isinstance(ipk.data, dpkt.tcp.TCP):
                t = ipk.data
                _ = (ipk.src, ipk.dst, t.sport, t.dport, t.seq, t.ack, t.flags, t.win, t.opts, len(t.data))
                n += 1
    return time.perf_counter() - start, n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=2000)
    ap.add_argument("--keep", help="write the capture here and keep it")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each tool; the best is kept")
    opts = ap.parse_args()
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark is not installed (apt-get install tshark)", file=sys.stderr)
        return 2
    tmpdir = tempfile.mkdtemp(prefix="sdtcp-bench-")
    path = opts.keep or os.path.join(tmpdir, "bench.pcap")
    try:
        t0 = time.perf_counter()
        n = generate(path, opts.packets, opts.flows)
        size = os.path.getsize(path)
        print(f"capture: {n} packets, {opts.flows} flows, {size / 1e6:.0f} MB, generated in "
              f"{time.perf_counter() - t0:.1f} s")

        out = os.path.join(tmpdir, "out")
        ours = [sys.executable, "-m", "sysctl_doctor", "conntrack", "replay", path, "--kernel", "5.10"]
        fast_env = dict(os.environ)
        fast_env.pop("SYSCTL_DOCTOR_PURE_PYTHON", None)
        pure_env = dict(os.environ, SYSCTL_DOCTOR_PURE_PYTHON="1")
        commands = {
            "tshark": ([tshark, "-n", "-r", path, "-Y", "tcp.analysis.spurious_retransmission"], None),
            "text": (ours, fast_env),
            "json": (ours + ["--format", "json"], fast_env),
            "pure-text": (ours, pure_env),
            "pure-json": (ours + ["--format", "json"], pure_env),
        }
        from sysctl_doctor.compiled import load_accelerator

        built = load_accelerator("sysctl_doctor.conntrack._replayfast") is not None
        print(f"replay accelerator (conntrack/_replayfast.c): {'built' if built else 'NOT built: both runs are pure Python'}")
        load_before = os.getloadavg()
        best = {name: [float("inf"), float("inf"), 0] for name in commands}  # wall, CPU, max RSS
        notes = {}
        outputs = {}
        # alternate the tools, round after round, and keep each one's best: the machine is shared
        for _ in range(opts.rounds):
            for name, (cmd, env) in commands.items():
                wall, cpu, rss, rc, err = run_measured(cmd, out, env)
                if rc not in ((0,) if name == "tshark" else (0, 1)):
                    print(f"{name} failed ({rc}): {err.strip()[:300]}", file=sys.stderr)
                    return 2
                b = best[name]
                b[0], b[1], b[2] = min(b[0], wall), min(b[1], cpu), max(b[2], rss)
                # read the output in pieces: the children's max RSS counts this process's at fork time
                digest = hashlib.sha256()
                with open(out, "rb") as f:
                    for piece in iter(lambda: f.read(1 << 20), b""):
                        digest.update(piece)
                if name != "tshark":
                    outputs.setdefault(name, set()).add(digest.hexdigest())
                with open(out, encoding="utf-8", errors="replace") as f:
                    if name == "tshark":
                        notes[name] = f"{sum(1 for _ in f)} packets flagged"
                    elif name.endswith("text"):
                        notes[name] = next((line.strip() for line in f if line.startswith("verdicts:")), "?")
                    else:
                        notes[name] = "every packet's verdict"
        load_after = os.getloadavg()
        labels = {"tshark": "tshark -Y tcp.analysis.spurious_retransmission",
                  "text": "sysctl-doctor conntrack replay (text)",
                  "json": "sysctl-doctor conntrack replay --format json",
                  "pure-text": "  the same, pure Python (text)",
                  "pure-json": "  the same, pure Python (--format json)"}
        print(f"best of {opts.rounds} alternating rounds; output of every tool to a file; load average "
              f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after")
        for name, (wall, cpu, rss) in best.items():
            print(f"{labels[name]:<48} {wall:6.2f} s wall {cpu:6.2f} s CPU {n / wall:9.0f} pkt/s  "
                  f"max RSS {rss / 1024:6.1f} MiB  ({notes[name]})")
        ts = best["tshark"]
        for kind in ("text", "json"):
            fast, pure = best[kind], best["pure-" + kind]
            print(f"ratio tshark/replay ({kind}): wall {ts[0] / fast[0]:.2f}x, CPU {ts[1] / fast[1]:.2f}x, "
                  f"memory 1/{ts[2] / fast[2]:.1f}; pure Python/accelerated: wall {pure[0] / fast[0]:.2f}x, "
                  f"CPU {pure[1] / fast[1]:.2f}x; tshark/pure Python: wall {ts[0] / pure[0]:.2f}x")
            same = outputs[kind] == outputs["pure-" + kind] and len(outputs[kind]) == 1
            print(f"  {kind}: output byte-identical to the pure-Python run's: {'yes' if same else 'NO'}; "
                  f"target >= 10x tshark wall: {'holds' if ts[0] >= 10 * fast[0] else 'does NOT hold'}; "
                  f"memory <= 1/10 of tshark's: {'holds' if fast[2] * 10 <= ts[2] else 'does NOT hold'}")

        ours_parse, m1 = parse_only_ours(path)
        print(f"parse only, our struct reader: {ours_parse:6.2f} s ({m1} TCP packets)")
        try:
            import dpkt  # noqa: F401
        except ImportError:
            print("parse only, dpkt: not installed (pip install dpkt to compare)")
        else:
            dpkt_parse, m2 = parse_only_dpkt(path)
            print(f"parse only, dpkt {dpkt.__version__}:           {dpkt_parse:6.2f} s ({m2} TCP packets); "
                  f"ours is {dpkt_parse / ours_parse:.2f}x faster")
        return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # a --keep capture lives outside it


if __name__ == "__main__":
    sys.exit(main())
