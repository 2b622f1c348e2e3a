#!/usr/bin/env python3
"""Fuzz every parser with generated inputs: 0 crashes, 0 hangs, memory bounded (issue 16).

Inputs are generated in pure Python: random bytes, and mutations (bit flips, inserted, deleted,
duplicated or spliced ranges, "interesting" tokens) of real sample inputs — the bundled incident
root's files (examples/incident), captures written by the library's own writer, a real kernel
module when the test cache holds one. Targets: sysctl.d (both flavours, parse + apply + globs),
modules-load.d, modprobe.d, unit files, udev rules, nft text, iptables-save, nf_log lines, kernel
logs (dmesg, journal JSON), pcap/pcapng, ELF modules.

A crash is any exception other than the project's `DoctorError` (a clean "error: …", exit 2);
a hang is an input that takes longer than --timeout seconds (signal.setitimer). Peak memory is
the process's ru_maxrss. The baseline, timed in the same run, is generating the inputs alone, so
the ratio says what the parsers cost per input over making it.

    .venv/bin/python bench/fuzz.py --inputs 1000000            # the README's figures
    .venv/bin/python bench/fuzz.py --inputs 20000 --seed 7 --save /tmp/crashes
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from sysctl_doctor.errors import DoctorError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "incident"
MAX_LEN = 1 << 14  # inputs stay small: a million of them must run in minutes

Target = Callable[[bytes], None]


class Hang(Exception):
    pass


# --------------------------------------------------------------------------- targets


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def t_sysctl(data: bytes) -> None:
    from sysctl_doctor.config import sysctl_d
    from sysctl_doctor.config.fates import line_fates, unset_keys
    from sysctl_doctor.config.model import KeyTree, SysctlConfig
    from sysctl_doctor.config.sysctl_lines import parse_sysctl_bytes

    keys = KeyTree.of({"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/eth0/rp_filter", "kernel/pid_max",
                       "net/netfilter/nf_conntrack_tcp_be_liberal"})
    for flavor in ("systemd", "procps"):
        parsed = parse_sysctl_bytes(data, flavor, "/etc/sysctl.d/f.conf")  # type: ignore[arg-type]
        config = SysctlConfig(flavor=flavor, files=["/etc/sysctl.d/f.conf"], assignments=[], exclusions=[],
                              ignored_files=[], diagnostics=list(parsed.diagnostics), opened=[])
        lines = [("/etc/sysctl.d/f.conf", parsed.lines)]
        if flavor == "systemd":
            sysctl_d._apply_systemd(config, lines)
        else:
            sysctl_d._apply_procps(config, lines)
        sysctl_d.effective_settings(config, keys)
        sysctl_d.effective_settings(config, None, ["net"])
        for tree in (keys, None):  # every line's fate and the unset keys (check's "assignments", SD116)
            unset_keys(config, line_fates(config, None, tree), tree)


def t_modules_load(data: bytes) -> None:
    from sysctl_doctor.boot.modules_load import parse_module_list

    parse_module_list(_text(data), "/etc/modules-load.d/m.conf")


def t_modprobe(data: bytes) -> None:
    from sysctl_doctor.kernel.modules_tree import ModprobeConfig, parse_modprobe_text, resolve_alias

    cfg = ModprobeConfig()
    parse_modprobe_text(_text(data), "/etc/modprobe.d/m.conf", cfg)
    resolve_alias("nf_conntrack", cfg.aliases)


def t_unit(data: bytes) -> None:
    from sysctl_doctor.boot.units import parse_unit_text

    parse_unit_text(_text(data), "/etc/systemd/system/x.service")


def t_udev(data: bytes) -> None:
    from sysctl_doctor.boot.udev import parse_rules

    parse_rules(_text(data), "/etc/udev/rules.d/99-x.rules")


def t_nft(data: bytes) -> None:
    from sysctl_doctor.conntrack.nat_facts import chains_from_iptables_save, facts_from_chains
    from sysctl_doctor.conntrack.nft_text import NftTextReader

    text = _text(data)
    reader = NftTextReader(lambda path: text, lambda pattern, including: [])
    reader.feed_file("/etc/nftables.conf")
    facts_from_chains(reader.chains.values())
    facts_from_chains(chains_from_iptables_save(text, "/etc/iptables/rules.v4"))


def t_nflog(data: bytes) -> None:
    from sysctl_doctor.conntrack.kernel_log import classify
    from sysctl_doctor.conntrack.nflog import parse_nflog_line

    for line in _text(data).splitlines():
        record = parse_nflog_line(line)
        if record is not None:
            classify(record.message)


def t_kernel_log(data: bytes) -> None:
    from sysctl_doctor.conntrack.kernel_log import parse_kernel_log

    report = parse_kernel_log(data, "fuzz", year=2025)
    report.to_json()


def t_capture(data: bytes) -> None:
    from sysctl_doctor.conntrack.pcap import PCAP_MAGICS, PCAPNG_SHB, CaptureInfo, decode, read_records

    head = data[:4]
    fmt = "pcap" if head in PCAP_MAGICS else "pcapng" if head == PCAPNG_SHB else None
    if fmt is None:
        return
    diagnostics: list = []
    for _frame, _ts, linktype, payload, _orig, hint in read_records(io.BytesIO(data), CaptureInfo("f", fmt, len(data)),
                                                                    diagnostics):
        decode(linktype, payload, hint)


def t_elf(data: bytes) -> None:
    from sysctl_doctor.kernel.elf_scan import scan_module_bytes

    scan_module_bytes(data, "/lib/modules/x/kernel/x.ko", "x", need_modinfo=True)


TARGETS: Dict[str, Target] = {
    "sysctl.d": t_sysctl, "modules-load.d": t_modules_load, "modprobe.d": t_modprobe, "unit": t_unit,
    "udev": t_udev, "nft/iptables": t_nft, "nf_log": t_nflog, "kernel log/journal": t_kernel_log,
    "pcap/pcapng": t_capture, "ELF": t_elf,
}


# --------------------------------------------------------------------------- samples


def _example(*paths: str) -> List[bytes]:
    out = []
    for p in paths:
        for f in sorted(EXAMPLE.glob(p)):
            if f.is_file() and not f.is_symlink():
                out.append(f.read_bytes()[:MAX_LEN])
    return out


NFLOG = (b"[ 12.345678] nf_ct_proto_6: SEQ is over upper bound 1220495536 (over the window of the receiver) "
         b"IN=to-srv OUT= MAC=4e:2f:10:e1:97:62:8e:ff:6d:c4:ef:5b:08:00 SRC=10.232.2.2 DST=10.232.2.1 LEN=1274 "
         b"TOS=0x00 PREC=0x00 TTL=61 ID=24301 DF PROTO=TCP SPT=40536 DPT=59596 SEQ=1221473815 ACK=3659454992 "
         b"WINDOW=509 RES=0x00 ACK PSH URGP=0 OPT (0101080A084C76F30D12DCAA)\n")


def _journal() -> bytes:
    import json

    rec = {"MESSAGE": NFLOG.decode().split("] ", 1)[1].strip(), "__REALTIME_TIMESTAMP": "1764162000000000",
           "_TRANSPORT": "kernel"}
    return (json.dumps(rec) + "\n" + json.dumps(dict(rec, MESSAGE=list(b"nf_ct_proto_6: invalid rst \xff"))) + "\n"
            ).encode()


def _captures() -> List[bytes]:
    import struct

    from sysctl_doctor.conntrack.frames import PcapWriter, ethernet_frame, ip_tcp_packet, tcp_options

    out = []
    for linktype in (1, 101):
        buf = io.BytesIO()
        writer = PcapWriter(buf, linktype=linktype)
        for i in range(3):
            packet = ip_tcp_packet("10.0.0.1", "10.0.0.2", 4000, 80, 1000 + i, 5, 0x18, 502, b"x" * 20,
                                   tcp_options(mss=1460, wscale=7, sack_perm=True) if i == 0 else b"")
            writer.write(ethernet_frame(b"\x02" * 6, b"\x04" * 6, packet) if linktype == 1 else packet, 1.0 + i)
        out.append(buf.getvalue())
    # pcapng: a section header, an interface description (Ethernet), one enhanced packet block
    packet = ethernet_frame(b"\x02" * 6, b"\x04" * 6, ip_tcp_packet("10.0.0.1", "10.0.0.2", 4000, 80, 7, 5, 0x10, 502))

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 262144))
    epb = block(6, struct.pack("<IIIII", 0, 0, 1000, len(packet), len(packet)) + packet)
    out.append(shb + idb + epb)
    return out


def _elf_samples() -> List[bytes]:
    cache = os.environ.get("SYSCTL_DOCTOR_TEST_CACHE")
    found: List[bytes] = []
    if cache:
        trees = Path(cache) / "test-kernels" / "trees"
        for path in sorted(trees.glob("*/lib/modules/*/kernel/net/netfilter/nf_conntrack*.ko"))[:1]:
            found.append(path.read_bytes())
        for path in sorted(trees.glob("*/lib/modules/*/kernel/net/key/*.ko"))[:1]:
            found.append(path.read_bytes())
    # a minimal ELF64 relocatable header with no sections: parsers must refuse it cleanly
    import struct

    found.append(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, 64, 0, 64, 0, 0,
                                                                    64, 0, 0))
    return found


def samples() -> Dict[str, List[bytes]]:
    return {
        "sysctl.d": _example("etc/sysctl.conf", "etc/sysctl.d/*.conf", "usr/lib/sysctl.d/*.conf")
        + [b"net.ipv4.conf.*.rp_filter = 1\n-net.ipv4.conf.lo.rp_filter\nnet/ipv4/conf/eth0.100/x={a,b}\n"],
        "modules-load.d": _example("etc/modules") + [b"nf_conntrack\n# c\n;x\nbr-netfilter\n"],
        "modprobe.d": [b"softdep nf_conntrack pre: nf_defrag_ipv4 post: x\nblacklist x\ninstall y /bin/true\n"
                       b"alias a* nf_conntrack\noptions z a=1 \\\n b=2\n"],
        "unit": _example("usr/lib/systemd/system/*.service"),
        "udev": _example("usr/lib/udev/rules.d/*.rules"),
        "nft/iptables": _example("etc/nftables.conf")
        + [b"*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"
           b"*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"],
        "nf_log": [NFLOG],
        "kernel log/journal": [NFLOG * 3, _journal(), open("/work/shared/seed/incident-writeup.txt", "rb").read()
                               if os.path.exists("/work/shared/seed/incident-writeup.txt") else NFLOG],
        "pcap/pcapng": _captures(),
        "ELF": _elf_samples(),
    }


# --------------------------------------------------------------------------- generation

TOKENS = [b"\n", b"\r", b"\x00", b"=", b"-", b"*", b"?", b"[", b"]", b"{", b"}", b",", b"/", b".", b"#", b";",
          b"\\", b"\"", b"'", b" ", b"\t", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"4294967295", b"-1", b"1e400",
          b"99999999999999999999999", b"NaN", b"{", b"[", b"\"MESSAGE\":", b"nf_ct_proto_6: ", b"IN=", b"SRC=",
          b"PROTO=TCP", b"include \"/etc/*\"", b"chain ", b"table inet f {", b"ExecStart=", b"[Unit]",
          b"After=", b"RUN+=", b"KERNEL==", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]


def hot_ranges(seed: bytes) -> List[Tuple[int, int]]:
    """Where a mutation of a binary sample matters most: an ELF file's header and section header
    table, a capture's file header (the rest is mostly payload the parsers skip)."""
    import struct

    if seed[:4] == b"\x7fELF" and len(seed) >= 64:
        shoff, = struct.unpack_from("<Q", seed, 0x28)
        shnum, = struct.unpack_from("<H", seed, 0x3C)
        return [(0, 64), (shoff, min(len(seed), shoff + shnum * 64))]
    return [(0, 64)]


def mutate(rng: random.Random, seed: bytes, pool: List[bytes], binary: bool = False) -> bytes:
    data = bytearray(seed)
    hot = hot_ranges(seed) if binary else []
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(7)
        n = len(data)
        i = rng.randrange(n + 1)
        if hot and rng.random() < 0.7:
            lo, hi = rng.choice(hot)
            i = min(n, rng.randrange(lo, max(lo + 1, hi)))
        if op == 0 and n:  # flip a byte
            data[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set a byte
            data[min(i, n - 1)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            data[i:i] = os.urandom(rng.randrange(1, 16)) if rng.random() < 0.3 else bytes(
                rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and n:  # delete a range
            del data[i:i + rng.randrange(1, 64)]
        elif op == 4 and n:  # duplicate a range
            j = rng.randrange(n)
            data[i:i] = data[j:j + rng.randrange(1, 256)]
        elif op == 5:  # insert a token
            data[i:i] = rng.choice(TOKENS)
        elif op == 6 and pool:  # splice with another sample
            other = rng.choice(pool)
            j = rng.randrange(len(other) + 1)
            data[i:] = other[j:]
    return bytes(data if binary else data[:MAX_LEN])


BINARY = frozenset({"ELF", "pcap/pcapng"})  # whole samples kept (an ELF file cut short is only "truncated")


def generate(rng: random.Random, pool: List[bytes], binary: bool = False) -> bytes:
    roll = rng.random()
    if roll < 0.1 or not pool:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if roll < 0.15:
        return os.urandom(rng.randrange(0, 2048))
    return mutate(rng, rng.choice(pool), pool, binary)


# --------------------------------------------------------------------------- running


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def run(inputs: int, seed: int = 1, timeout: float = 2.0, save: Optional[str] = None,
        only: Optional[List[str]] = None, quiet: bool = False) -> dict:
    """Feed `inputs` generated inputs round-robin to the targets; counts per target."""
    rng = random.Random(seed)
    pools = samples()
    names = [n for n in TARGETS if not only or n in only]
    stats = {n: {"inputs": 0, "crashes": 0, "hangs": 0, "seconds": 0.0} for n in names}
    failures: List[Tuple[str, str, bytes]] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    try:
        for k in range(inputs):
            name = names[k % len(names)]
            data = generate(rng, pools[name], name in BINARY)
            st = stats[name]
            st["inputs"] += 1
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                TARGETS[name](data)
            except DoctorError:
                pass
            except Hang:
                st["hangs"] += 1
                failures.append((name, f"hang: over {timeout} s", data))
            except Exception as exc:  # noqa: BLE001 - a crash is what we are looking for
                st["crashes"] += 1
                where = traceback.extract_tb(exc.__traceback__)[-1]
                failures.append((name, f"{type(exc).__name__}: {exc} at {where.filename}:{where.lineno}", data))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            st["seconds"] += time.perf_counter() - t0
            if not quiet and k and k % 100_000 == 0:
                print(f"  … {k} inputs, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - started
    if save and failures:
        os.makedirs(save, exist_ok=True)
        for i, (name, why, data) in enumerate(failures):
            Path(save, f"{i:04d}-{name.replace('/', '_').replace(' ', '_')}.bin").write_bytes(data)
            Path(save, f"{i:04d}.txt").write_text(f"{name}: {why}\n")
    return {"targets": stats, "failures": failures, "seconds": elapsed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def baseline(inputs: int, seed: int) -> float:
    """Seconds to generate `inputs` inputs without parsing them (the same generator)."""
    rng = random.Random(seed)
    pools = samples()
    names = list(TARGETS)
    t0 = time.perf_counter()
    for k in range(inputs):
        generate(rng, pools[names[k % len(names)]], names[k % len(names)] in BINARY)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs in all, round-robin over the targets")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--target", action="append", choices=list(TARGETS), help="only these targets")
    ap.add_argument("--save", metavar="DIR", help="write each failing input (and why) to DIR")
    args = ap.parse_args()
    base_n = min(args.inputs, 20_000)
    base = baseline(base_n, args.seed)
    result = run(args.inputs, args.seed, args.timeout, args.save, args.target)
    print(f"{'target':<20} {'inputs':>9} {'crashes':>8} {'hangs':>6} {'us/input':>9}")
    for name, st in result["targets"].items():
        per = st["seconds"] / st["inputs"] * 1e6 if st["inputs"] else 0.0
        print(f"{name:<20} {st['inputs']:>9} {st['crashes']:>8} {st['hangs']:>6} {per:>9.0f}")
    crashes = sum(st["crashes"] for st in result["targets"].values())
    hangs = sum(st["hangs"] for st in result["targets"].values())
    total = sum(st["inputs"] for st in result["targets"].values())
    per_input = result["seconds"] / max(total, 1)
    per_base = base / max(base_n, 1)
    print(f"total: {total} inputs in {result['seconds']:.1f} s ({per_input * 1e6:.0f} us/input), "
          f"{crashes} crashes, {hangs} hangs, peak memory {result['peak_rss_mb']:.0f} MB (ru_maxrss)")
    print(f"baseline (generating the inputs alone, {base_n} of them): {per_base * 1e6:.0f} us/input; "
          f"ratio {per_input / per_base:.1f}x")
    for name, why, data in result["failures"][:20]:
        print(f"  {name}: {why} (input {len(data)} bytes: {data[:60]!r})")
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
