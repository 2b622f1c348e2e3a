"""The lab: the incident reproduced on this machine's real kernel.

    topology (netns pod ↔ NAT ↔ server, pyroute2 + nft) ──► scenario (traffic,
    one injected segment, a mitigation) ──► observed outcome (sockets, capture,
    kernel log lines, conntrack counters)

`run_lab` is the entry point; nothing here prints.
"""
