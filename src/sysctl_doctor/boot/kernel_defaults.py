"""The value a key has after boot when nobody writes it: the kernel's default.

For the supported Debian kernels (5.10, 6.1, 6.12) the defaults come from real boots
(sysctl_doctor.kernel.kernel_keys, data/kernel_keys/<series>.json.gz): every key, built in or
a module's. A default the kernel computes from RAM or CPUs is not a constant: `kernel_default`
gives None for it and `default_info` says how it is computed. For any other kernel, the hand
table below (Linux 6.1 constants of the module keys; sources are the kernel files named).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

UNKNOWN_DEFAULT = "(kernel default)"

# slash path -> (value, source)
KERNEL_DEFAULTS: Dict[str, Tuple[str, str]] = {
    "net/netfilter/nf_conntrack_tcp_be_liberal": ("0", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_be_liberal)"),
    "net/netfilter/nf_conntrack_tcp_loose": ("1", "net/netfilter/nf_conntrack_proto_tcp.c (nf_ct_tcp_loose)"),
    "net/netfilter/nf_conntrack_tcp_max_retrans": ("3", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_max_retrans)"),
    "net/netfilter/nf_conntrack_tcp_ignore_invalid_rst": ("0", "net/netfilter/nf_conntrack_proto_tcp.c"),
    "net/netfilter/nf_conntrack_log_invalid": ("0", "net/netfilter/nf_conntrack_standalone.c"),
    "net/netfilter/nf_conntrack_checksum": ("1", "net/netfilter/nf_conntrack_standalone.c (nf_conntrack_checksum)"),
    "net/netfilter/nf_conntrack_acct": ("0", "net/netfilter/nf_conntrack_acct.c (nf_ct_acct)"),
    "net/netfilter/nf_conntrack_timestamp": ("0", "net/netfilter/nf_conntrack_timestamp.c (nf_ct_tstamp)"),
    "net/netfilter/nf_conntrack_helper": ("0", "net/netfilter/nf_conntrack_helper.c (nf_ct_auto_assign_helper)"),
    "net/netfilter/nf_conntrack_tcp_timeout_established": ("432000", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_syn_sent": ("120", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_syn_recv": ("60", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_fin_wait": ("120", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait": ("60", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_last_ack": ("30", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_time_wait": ("120", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_close": ("10", "net/netfilter/nf_conntrack_proto_tcp.c (tcp_timeouts)"),
    "net/netfilter/nf_conntrack_tcp_timeout_max_retrans": ("300", "net/netfilter/nf_conntrack_proto_tcp.c"),
    "net/netfilter/nf_conntrack_tcp_timeout_unacknowledged": ("300", "net/netfilter/nf_conntrack_proto_tcp.c"),
    "net/netfilter/nf_conntrack_udp_timeout": ("30", "net/netfilter/nf_conntrack_proto_udp.c (udp_timeouts)"),
    "net/netfilter/nf_conntrack_udp_timeout_stream": ("120", "net/netfilter/nf_conntrack_proto_udp.c (udp_timeouts)"),
    "net/netfilter/nf_conntrack_generic_timeout": ("600", "net/netfilter/nf_conntrack_proto_generic.c"),
    "net/netfilter/nf_conntrack_icmp_timeout": ("30", "net/netfilter/nf_conntrack_proto_icmp.c"),
    "net/netfilter/nf_conntrack_icmpv6_timeout": ("30", "net/netfilter/nf_conntrack_proto_icmpv6.c"),
    "net/bridge/bridge-nf-call-iptables": ("1", "net/bridge/br_netfilter_hooks.c (brnf_call_iptables)"),
    "net/bridge/bridge-nf-call-ip6tables": ("1", "net/bridge/br_netfilter_hooks.c (brnf_call_ip6tables)"),
    "net/bridge/bridge-nf-call-arptables": ("1", "net/bridge/br_netfilter_hooks.c (brnf_call_arptables)"),
    "net/bridge/bridge-nf-filter-vlan-tagged": ("0", "net/bridge/br_netfilter_hooks.c"),
    "net/bridge/bridge-nf-filter-pppoe-tagged": ("0", "net/bridge/br_netfilter_hooks.c"),
    "net/bridge/bridge-nf-pass-vlan-input-dev": ("0", "net/bridge/br_netfilter_hooks.c"),
    "net/ipv4/vs/conntrack": ("0", "net/netfilter/ipvs/ip_vs_ctl.c"),
    "net/ipv4/vs/expire_nodest_conn": ("0", "net/netfilter/ipvs/ip_vs_ctl.c"),
}


def default_info(slash_key: str, kernel: Optional[str] = None):
    """The booted default of `slash_key` on `kernel`'s series (kernel_keys.KeyDefault), or None."""
    from sysctl_doctor.kernel import kernel_keys

    exact = kernel_keys.for_kernel(kernel)
    return exact.keys.get(slash_key) if exact is not None else None


def kernel_default(slash_key: str, kernel: Optional[str] = None) -> Optional[str]:
    """The constant default of a key, None when it is not known or not a constant (sized from RAM/CPUs)."""
    info = default_info(slash_key, kernel)
    if info is not None:
        return info.constant
    entry = KERNEL_DEFAULTS.get(slash_key)
    return entry[0] if entry else None


def default_text(slash_key: str, kernel: Optional[str] = None) -> str:
    """`kernel default 0`, or how a sized default is computed, or `the kernel default`."""
    info = default_info(slash_key, kernel)
    if info is not None and info.sized:
        how = f": {info.formula}" if info.formula else ""
        return f"the kernel default (computed from RAM/CPUs{how})"
    value = kernel_default(slash_key, kernel)
    return f"kernel default {value}" if value is not None else "the kernel default"
