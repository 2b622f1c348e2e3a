"""SD109: the key is per network namespace; containers and pods do not inherit it."""

from __future__ import annotations

from typing import Dict, Iterator, List

from sysctl_doctor.analysis import Analysis
from sysctl_doctor.boot.model import KeyFate
from sysctl_doctor.findings.model import INFO, Example, Finding, Rule

RULE = Rule(
    code="SD109",
    name="per-network-namespace",
    severity=INFO,
    title="The key is per network namespace: containers and pods get the default",
    rationale=(
        "Keys registered with register_net_sysctl() exist once per network namespace. The sysctl step "
        "sets them in the host's (init) namespace only; a container, a pod or `ip netns add` gets a new "
        "namespace with the kernel defaults (conntrack keys included), not the host's values."
    ),
    fix=(
        "Set the key inside the namespace where it matters too: Kubernetes pod securityContext.sysctls "
        "(net.* keys are namespaced), docker run --sysctl, or `ip netns exec NS sysctl -w`. For conntrack "
        "on a NAT node the host namespace is usually the one that counts."
    ),
    example=Example("be_liberal is per network namespace (nf_conntrack registers it for each netns)."),
    passing=Example(
        "Only global keys configured.",
        files={"/etc/sysctl.conf": "kernel.pid_max = 4194304\n"},
        removed=("/etc/sysctl.d/10-hardening.conf",),
    ),
)


def check(analysis: Analysis) -> Iterator[Finding]:
    # One finding per file, listing its per-namespace keys (a hardened host sets dozens of net.* keys).
    by_file: Dict[str, List[KeyFate]] = {}
    for p in analysis.fates:
        provider = p.provider
        if not provider.per_netns or provider.init_netns_only:
            continue
        by_file.setdefault(p.file, []).append(p)
    for file, fates in by_file.items():
        keys = [p.key for p in fates]
        if len(keys) == 1:
            message = f"{keys[0]} is set per network namespace: containers and pods start with the kernel default"
        else:
            shown = ", ".join(keys[:12]) + (f", … ({len(keys) - 12} more)" if len(keys) > 12 else "")
            message = (f"{len(keys)} keys set here are per network namespace: containers and pods start with the "
                       f"kernel defaults: {shown}")
        # located at the file's first such line (a place to start, and what SARIF consumers need)
        yield Finding(RULE.code, RULE.severity, keys[0], message, RULE.fix, file, fates[0].line, tuple(keys))
