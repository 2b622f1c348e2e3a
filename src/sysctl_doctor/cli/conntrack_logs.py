"""`sysctl-doctor conntrack logs`: the conntrack lines of the kernel log, explained."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click


@click.command("logs")
@click.argument("file", required=False)
@click.option("--since", metavar="WHEN", help="Only records after WHEN: a duration ago (10m, 2h, 1d) or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(file: Optional[str], since: Optional[str], fmt: str) -> None:
    """Explain conntrack's nf_log lines: INVALID or only IGNOREd, grouped by flow.

    FILE is dmesg output, `journalctl -k` (short or -o json), a syslog file
    (rotated .gz too), raw /dev/kmsg records, or - for stdin. Without FILE
    the live host's journal is read (or the kernel ring buffer if there is
    no journal). Exit 1 when a line shows an INVALID packet.
    """
    import gc

    from sysctl_doctor.conntrack.kernel_log import parse_kernel_log, read_log_file, read_stream

    gc.disable()  # a short-lived run building acyclic records: the collector would only rescan them
    from sysctl_doctor.conntrack.log_sources import boot_time, parse_since, read_live_kernel_log

    since_at = parse_since(since) if since else None
    boot = None
    if file == "-":
        data, source = read_stream(sys.stdin.buffer), "<stdin>"
    elif file:
        data, source = read_log_file(file), file
    else:
        live = read_live_kernel_log(since_at)
        data, source = live.data, live.source
        boot = boot_time() if live.boot_clock else None
    report = parse_kernel_log(data, source, since=since_at, boot_time=boot)
    if fmt == "json":
        # Indented for a person at a terminal; compact (C encoder, much faster) when piped.
        click.echo(json.dumps(report.to_json(), indent=2 if sys.stdout.isatty() else None))
    else:
        _render_text(report)
    if report.verdict_counts()["INVALID"]:
        raise click.exceptions.Exit(1)


def _render_text(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    console = Console(highlight=False, soft_wrap=True)
    skipped = report.skipped
    console.print(
        f"[bold]{report.source}[/]: {report.lines_total} lines, {len(report.records)} conntrack records"
        f" ({report.continuation_lines} wrapped lines joined), {skipped.total} skipped"
        f" (other {skipped.other}, partial {skipped.partial}, before --since {skipped.filtered})"
    )
    if not report.records:
        console.print("no conntrack nf_log lines. To make the kernel log them: "
                      "`sysctl-doctor conntrack debug on --for 10m`")
        return
    counts = report.verdict_counts()
    console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    console.print("[bold]timeline[/]")
    for rec in report.records:
        f = rec.record.fields
        verdict = rec.reason.verdict
        style = {"INVALID": "red", "IGNORE": "yellow"}.get(verdict)
        shown = f"[{style}]{verdict:<7}[/]" if style else f"{verdict:<7}"
        when = f" {rec.time}" if rec.time else ""
        console.print(
            f"  line {rec.line}{when} {shown} {rec.reason.code}: "
            f"{f.get('SRC')}:{f.get('SPT')} > {f.get('DST')}:{f.get('DPT')} "
            f"[{' '.join(sorted(rec.record.tcp_flags))}] seq={f.get('SEQ', '?')} ack={f.get('ACK', '?')}"
            f" in={f.get('IN') or '-'} out={f.get('OUT') or '-'}"
        )
    console.print("[bold]flows[/]")
    for flow in report.flows():
        reasons = ", ".join(f"{k} {v}" for k, v in flow.reasons.items())
        verdicts = ", ".join(f"{k} {v}" for k, v in flow.verdicts.items())
        console.print(f"  {flow.flow}: {flow.records} records ({verdicts}; {reasons}), lines {flow.first_line}-{flow.last_line}")
    console.print("[bold]what the messages mean[/]")
    seen = set()
    for rec in report.records:
        key = (rec.reason.code, rec.reason.wording)
        if key in seen:
            continue
        seen.add(key)
        console.print(f"  {rec.reason.code} ({rec.reason.verdict}, {rec.reason.wording} wording): {rec.reason.explanation}")
