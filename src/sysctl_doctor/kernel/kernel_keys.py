"""Every sysctl key of the supported Debian kernels, with its default value and its aliases, from real boots.

data/kernel_keys/<series>.json.gz is written by tools/gen_kernel_keys.py: each kernel booted under qemu
with a probe as PID 1 (nothing wrote /proc/sys before it read), every key read once with no module
loaded and once after every module with a sysctl table was loaded, and the whole boot repeated with
twice the RAM and CPUs to find the defaults the kernel computes from them ("sized"). Aliases are keys
that each changed the other when written in the guest: one kernel variable under two names.

Used only for a kernel of the same series (major.minor): another kernel gets no exact answer (None), and
the tool keeps its pattern rules.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, FrozenSet, Optional, Tuple

from sysctl_doctor.kernel_version import KernelVersion
from sysctl_doctor.package_data import package_data

FORMAT = "sysctl-doctor kernel-keys 1"
MAX_DATA_BYTES = 16 << 20  # a data file is a few hundred KiB unpacked; refuse anything absurd

# Defaults the kernel computes from the machine, with the formula from the kernel source (Linux 6.1 unless
# named; slash paths). A key listed here is "sized" even when the two generator boots (1 GiB/1 CPU and
# 2 GiB/2 CPUs) happened to give it one value (a clamp, or a threshold outside that range); a key the
# boots found different but that is not listed says only that it depends on RAM/CPUs.
FORMULAS: Dict[str, str] = {
    "fs/file-max": "(RAM pages - 1.5 x pages in use at boot) x PAGE_SIZE / 1024 / 10, at least NR_FILE 8192 "
                   "(fs/file_table.c files_maxfiles_init)",
    "kernel/threads-max": "RAM / (8 x THREAD_SIZE 16 KiB), 20..FUTEX_TID_MASK (kernel/fork.c set_max_threads)",
    "kernel/pid_max": "max(32768, 1024 x possible CPUs), at most 4194304 (kernel/pid.c pid_idr_init)",
    "kernel/watchdog_cpumask": "the possible CPUs (kernel/watchdog.c)",
    "net/netfilter/nf_conntrack_buckets": "RAM / 16384 / sizeof(struct hlist_head) (8); from 5.15: 65536 above "
                                          "1 GiB, 262144 above 4 GiB, at least 1024; before (5.10): 16384 above "
                                          "1 GiB, 65536 above 4 GiB (net/netfilter/nf_conntrack_core.c "
                                          "nf_conntrack_init_start)",
    "net/netfilter/nf_conntrack_max": "nf_conntrack_buckets x max_factor: 1 from 5.15 (6.1, 6.12), 4 before (5.10) "
                                      "(net/netfilter/nf_conntrack_core.c nf_conntrack_init_start)",
    "net/netfilter/nf_conntrack_expect_max": "nf_conntrack_buckets / 256 x 4 (net/netfilter/nf_conntrack_expect.c)",
    "net/ipv4/tcp_mem": "L = max(128, nr_free_buffer_pages() / 16); L x 3/4, L, L x 3/2 pages "
                        "(net/ipv4/tcp.c tcp_init_mem)",
    "net/ipv4/udp_mem": "L = max(128, nr_free_buffer_pages() / 8); L x 3/4, L, L x 3/2 pages "
                        "(net/ipv4/udp.c udp_init_mem)",
    "net/sctp/sctp_mem": "L = nr_free_buffer_pages() / 8; L x 3/4, L, L x 3/2 pages (net/sctp/protocol.c sctp_init)",
    "net/sctp/sctp_rmem": "third value min(4 MiB, sctp_mem[1] pages x PAGE_SIZE / 128) (net/sctp/protocol.c)",
    "net/sctp/sctp_wmem": "third value min(4 MiB, sctp_mem[1] pages x PAGE_SIZE / 128) (net/sctp/protocol.c)",
    "net/ipv4/tcp_rmem": "third value max(131072, min(6 MiB, free buffer memory / 128)) (net/ipv4/tcp.c tcp_init)",
    "net/ipv4/tcp_wmem": "third value max(65536, min(4 MiB, free buffer memory / 128)) (net/ipv4/tcp.c tcp_init)",
    "net/ipv4/tcp_max_orphans": "TCP established hash size (from RAM) / 2 (net/ipv4/tcp.c tcp_init)",
    "net/ipv4/tcp_max_tw_buckets": "TCP established hash size (from RAM) / 2 (net/ipv4/tcp_ipv4.c tcp_sk_init)",
    "net/ipv4/tcp_max_syn_backlog": "max(128, TCP established hash size / 128) (net/ipv4/tcp_ipv4.c tcp_sk_init)",
    "net/ipv4/inet_peer_threshold": "1% of RAM / sizeof(struct inet_peer), 4096..65664 "
                                    "(net/ipv4/inetpeer.c inet_initpeers)",
    "net/ipv4/vs/sync_qlen_max": "nr_free_buffer_pages() / 32 (net/netfilter/ipvs/ip_vs_ctl.c)",
    "fs/nfs/nfs_congestion_kb": "16 x sqrt(RAM pages) pages in KiB, at most 262144 (fs/nfs/write.c "
                                "nfs_init_writepagecache)",
    "vm/user_reserve_kbytes": "min(free memory at boot / 32, 128 MiB) (mm/util.c init_user_reserve)",
    "vm/admin_reserve_kbytes": "min(free memory at boot / 32, 8 MiB) (mm/util.c init_admin_reserve)",
    "fs/epoll/max_user_watches": "4% of low memory / EP_ITEM_COST (fs/eventpoll.c eventpoll_init)",
    "fs/inotify/max_user_watches": "1% of low memory / INOTIFY_WATCH_COST, 8192..1048576 (5.11+; "
                                   "fs/notify/inotify/inotify_user.c inotify_user_setup)",
    "fs/fanotify/max_user_marks": "1% of low memory / FANOTIFY_MARK_COST, 8192..1048576 "
                                  "(fs/notify/fanotify/fanotify_user.c fanotify_user_init)",
    "kernel/sched_latency_ns": "6 ms x (1 + log2(min(CPUs, 8))) (5.10; kernel/sched/fair.c update_sysctl)",
    "kernel/sched_min_granularity_ns": "0.75 ms x (1 + log2(min(CPUs, 8))) (5.10; kernel/sched/fair.c update_sysctl)",
    "kernel/sched_wakeup_granularity_ns": "1 ms x (1 + log2(min(CPUs, 8))) (5.10; kernel/sched/fair.c "
                                          "update_sysctl)",
    "kernel/sched_domain/": "one directory per CPU and scheduling domain (5.10, CONFIG_SCHED_DEBUG; "
                            "kernel/sched/topology.c)",
    **{f"user/max_{ns}_namespaces": "threads-max / 2 (RLIMIT_NPROC of init; kernel/ucount.c setup_userns_sysctls)"
       for ns in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")},
}
# Other names of the same variables (aliases): the same formula.
for _alias, _name in (("net/nf_conntrack_max", "net/netfilter/nf_conntrack_max"),
                      ("user/max_inotify_watches", "fs/inotify/max_user_watches"),
                      ("user/max_fanotify_marks", "fs/fanotify/max_user_marks")):
    FORMULAS[_alias] = FORMULAS[_name]
# Keys whose value is a running state, not a setting (they differ between any two boots).
STATE_KEYS = frozenset({"kernel/ns_last_pid"})


@dataclass(frozen=True)
class KeyDefault:
    """One key of one kernel: its value right after boot (or after its module loaded) and what it depends on."""

    key: str                      # slash path
    value: Optional[str]          # None: the key cannot be read (write-only)
    module: str = ""              # "" built in, else the module that registers it ("?" unknown)
    read_only: bool = False
    sized: bool = False           # computed from RAM/CPUs: differed between two boots, or FORMULAS says so
    formula: Optional[str] = None
    state: bool = False           # a running state (kernel.ns_last_pid), no default to predict

    @property
    def constant(self) -> Optional[str]:
        """The default when it is the same on every machine, else None."""
        return None if self.sized or self.state else self.value


@dataclass(frozen=True)
class KernelKeys:
    series: str
    kernel: str
    source: str
    keys: Dict[str, KeyDefault]
    aliases: Tuple[FrozenSet[str], ...] = ()
    boots: Tuple[str, ...] = ()                      # "1024 MiB/1 CPU"
    _alias_of: Dict[str, FrozenSet[str]] = field(default_factory=dict, compare=False, repr=False)

    def builtin_keys(self) -> FrozenSet[str]:
        return frozenset(k for k, d in self.keys.items() if not d.module)

    def names(self) -> FrozenSet[str]:
        return frozenset(self.keys)

    def alias_map(self) -> Dict[str, str]:
        """slash path -> the first name (sorted) of its kernel variable, for keys that have aliases."""
        return {k: min(g) for k, g in self._alias_of.items()}

    def alias_group(self, key: str) -> FrozenSet[str]:
        """Every name of `key`'s kernel variable (the key itself included), or just {key}."""
        return self._alias_of.get(key, frozenset((key,)))


def parse(blob: bytes, name: str) -> KernelKeys:
    """The data file's content (gzip'd JSON); ValueError naming `name` when it is not one."""
    try:
        raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        if len(raw) > MAX_DATA_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{name}: not a kernel-keys data file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{name}: format is not {FORMAT!r}")
    keys: Dict[str, KeyDefault] = {}
    for path, row in doc.get("keys", {}).items():
        value, module, flags = row
        flag_set = set(flags.split(",")) if flags else set()
        formula = FORMULAS.get(path) or next((f for p, f in FORMULAS.items()
                                              if p.endswith("/") and path.startswith(p)), None)
        sized = ("sized" in flag_set or formula is not None) and path not in STATE_KEYS
        keys[path] = KeyDefault(path, value, module, "ro" in flag_set, sized, formula,
                                path in STATE_KEYS or "state" in flag_set)
    groups = tuple(frozenset(g) for g in doc.get("aliases", ()))
    alias_of = {k: g for g in groups for k in g}
    boots = tuple(f"{b['memory_mb']} MiB/{b['cpus']} CPU" for b in doc.get("boots", ()))
    return KernelKeys(str(doc.get("series", "")), str(doc.get("kernel", "")), str(doc.get("source", "")),
                      keys, groups, boots, alias_of)


@lru_cache(maxsize=None)
def _load(series: str) -> Optional[KernelKeys]:
    entry = package_data(f"kernel_keys/{series}.json.gz")
    try:
        blob = entry.read_bytes()
    except (OSError, FileNotFoundError):
        return None
    return parse(blob, f"data/kernel_keys/{series}.json.gz")


@lru_cache(maxsize=1)
def shipped_series() -> Tuple[str, ...]:
    folder = package_data("kernel_keys")
    try:
        names = [e.name for e in folder.iterdir()]
    except (OSError, FileNotFoundError):
        return ()
    return tuple(sorted(n[:-len(".json.gz")] for n in names if n.endswith(".json.gz")))


def for_kernel(kernel: Optional[str]) -> Optional[KernelKeys]:
    """The data of `kernel`'s series (same major.minor), None for any other kernel or an unknown one."""
    if not kernel:
        return None
    want = KernelVersion.parse(kernel)
    if want is None:
        return None
    for series in shipped_series():
        if KernelVersion.parse(series) == want:
            return _load(series)
    return None
