"""`sysctl-doctor conntrack stats`: conntrack's counters per network namespace."""

from __future__ import annotations

import json
import time
from typing import Optional

import click


@click.command("stats")
@click.option("--netns", metavar="NAME", help="Network namespace (`ip netns` name); default: the host's.")
@click.option("--all-netns", is_flag=True, help="The host and every namespace in /run/netns.")
@click.option("--source", type=click.Choice(["proc", "netlink"]), default="proc", show_default=True,
              help="/proc/net/stat/nf_conntrack, or ctnetlink (pyroute2, the `conntrack` extra).")
@click.option("--watch", is_flag=True, help="Print again every --interval seconds, with per-second rates.")
@click.option("--interval", type=click.FloatRange(min=0.1, max=86400), default=2.0, show_default=True,
              help="Seconds between two readings with --watch (0.1 to 86400).")
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="With --watch: stop after COUNT updates (0 = until Ctrl-C).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(netns: Optional[str], all_netns: bool, source: str, watch: bool, interval: float, count: int,
            fmt: str) -> None:
    """Conntrack's counters (invalid, insert_failed, drop, early_drop, …) per network namespace.

    Summed over CPUs.

    With --format json each update is one JSON object per line.
    """
    if not 0.1 <= interval <= 86400:  # NaN passes FloatRange
        raise click.BadParameter(f"{interval} is not in 0.1 to 86400", param_hint="'--interval'")
    from sysctl_doctor.conntrack.stats import INTERESTING, list_netns, read_netns_stats

    targets = [None] + list_netns() if all_netns else [netns]
    previous = {}
    updates = 0
    while True:
        snapshot = [read_netns_stats(t, source) for t in targets]
        rows = []
        for stats in snapshot:
            rates = stats.rates(previous[stats.netns]) if stats.netns in previous else {}
            rows.append((stats, rates))
            previous[stats.netns] = stats
        if fmt == "json":
            click.echo(json.dumps({"time": time.time(), "namespaces": [
                dict(s.to_json(), rates_per_second={k: round(v, 3) for k, v in r.items()}) for s, r in rows]}))
        else:
            for stats, rates in rows:
                names = [n for n in INTERESTING if n in stats.counters]
                parts = []
                for n in names:
                    part = f"{n}={stats.counters[n]}"
                    if n in rates and rates[n]:
                        part += f" (+{rates[n]:.1f}/s)"
                    parts.append(part)
                click.echo(f"{stats.netns or 'host'} [{stats.source}, {stats.cpus} cpus]: " + " ".join(parts))
        updates += 1
        if not watch or (count and updates >= count):
            return
        time.sleep(interval)
