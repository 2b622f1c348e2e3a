"""CT001: INVALID replies to connections SNATed to this node reach its stack, which resets them."""

from __future__ import annotations

from typing import Iterator, Optional

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.conntrack.nat_facts import NatFacts
from sysctl_doctor.kernel_version import version_text
from sysctl_doctor.findings.model import ERROR, WARNING, Example, Finding, Recommendation, Rule
from sysctl_doctor.findings.nat_advice import nat_findings

# Debian's default input chain (policy accept) on the incident node: nothing drops INVALID replies.
ACCEPTING_NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter;
\t}
\tchain forward {
\t\ttype filter hook forward priority filter;
\t}
}

table ip nat {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat;
\t\toifname "eth0" masquerade
\t}
}
"""

RULE = Rule(
    code="CT001",
    name="snat-reply-reset",
    severity=WARNING,
    title="Out-of-window replies to connections SNATed to this node reset them",
    rationale=(
        "This node masquerades (SNATs to its own address). Conntrack marks a TCP segment outside the "
        "receiver's window INVALID; an INVALID packet has no conntrack entry, so its NAT is not reversed: "
        "the reply stays addressed to the node, goes up its INPUT path, and the node's TCP stack answers "
        "with a RST that resets the connection at both ends. \"SEQ is over upper bound\" and \"ACK is over "
        "upper bound\" are INVALID on every kernel; before 6.1 so are retransmissions of already-ACKed data "
        "(\"SEQ is under the lower bound\", the seed incident), and the rule is an error there (a warning "
        "from 6.1). A `ct state invalid drop` rule in FORWARD does not help: the packet is addressed to the "
        "node and never forwarded. An INPUT chain with policy drop helps when no rule in it accepts the "
        "packet first (a rule limited to established/related, to lo, or to ports below 1024 does not). "
        "be_liberal=1 avoids the INVALID verdict, but only when it is applied at boot: configured and lost "
        "to the nf_conntrack load race (SD101) it is no mitigation. `check` reads the running rules (nft, "
        "iptables-save) on this host, and for an offline root the rulesets its boot loads (nftables.service's "
        "`nft -f` file and its includes, netfilter-persistent's rules.v4, iptables-restore files, ufw's "
        "before.rules); IPv6-only drops do not count."
    ),
    fix=(
        "Drop INVALID packets before the stack sees them: `nft add rule inet filter input ct state invalid "
        "drop` (iptables: `-A INPUT -m conntrack --ctstate INVALID -j DROP`), persisted in the ruleset "
        "loaded at boot; or set net.netfilter.nf_conntrack_tcp_be_liberal=1 so that it survives reboot "
        "(`sysctl-doctor check` and `fix` for the module-load race)."
    ),
    example=Example(
        "The incident node (kernel 6.1, be_liberal lost to the nftables.service race) with an input chain that "
        "accepts everything and masquerade out of eth0.",
        files={"/etc/nftables.conf": ACCEPTING_NFTABLES_CONF},
    ),
    passing=Example(
        "The same node with `ct state invalid drop` in its input chain.",
        files={"/etc/nftables.conf": ACCEPTING_NFTABLES_CONF.replace(
            "priority filter;\n\t}\n\tchain forward", "priority filter;\n\t\tct state invalid drop\n\t}\n\tchain forward")},
    ),
)


def advise(facts: NatFacts) -> Optional[Recommendation]:
    if not facts.snat_to_node or facts.liberal or "input" in facts.invalid_drop_chains:
        return None
    if not facts.kernel_known:
        under = (" On kernels before 6.1 (this root's kernel is unknown) this includes retransmissions of "
                 "already-ACKed data (\"SEQ is under the lower bound\").")
    elif not facts.modern:
        under = (f" On {version_text(facts.kernel)} this includes retransmissions of already-ACKed data "
                 "(\"SEQ is under the lower bound\", the seed incident); 6.1 and later ignore those.")
    else:
        under = ""
    forward_note = (" The INVALID drop rule in FORWARD does not help: the segment is addressed to "
                    "this node and never forwarded.") if "forward" in facts.invalid_drop_chains else ""
    void = (f" net.netfilter.nf_conntrack_tcp_be_liberal=1 is {facts.be_liberal_void}: "
            "that mitigation is void.") if facts.be_liberal_void else ""
    return Recommendation(
        RULE.code, ERROR if not facts.modern else WARNING,
        "out-of-window replies to SNATed connections reset them",
        "This node is the SNAT address: a reply conntrack marks INVALID is not de-NATed, reaches the "
        "node's own stack and is answered with a RST, which resets the connection at both ends. "
        "Segments over the receiver's window (\"SEQ is over upper bound\") are INVALID on every kernel."
        + under + forward_note + void,
        "drop them before the stack sees them: `nft add rule inet filter input ct state invalid drop` "
        "(iptables: `-A INPUT -m conntrack --ctstate INVALID -j DROP`), or set "
        "net.netfilter.nf_conntrack_tcp_be_liberal=1 so that it survives reboot "
        "(see `sysctl-doctor check`)",
    )


def check(analysis: Analysis) -> Iterator[Finding]:
    return nat_findings(analysis, RULE, advise)
