"""`sysctl-doctor conntrack logs`: the conntrack lines of the kernel log, explained."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS
from sysctl_doctor.cli.styled_lines import emit
from sysctl_doctor.errors import DoctorError


@click.command("logs")
@click.argument("file", required=False)
@click.option("--since", metavar="WHEN", help="Only records after WHEN: a duration ago (10m, 2h, 1d) or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "prometheus"]), default="text", show_default=True,
              help="prometheus: add the records new since the last run to running totals (--state-dir) and "
                   "print them as counters (or write them to --textfile-dir); exit 0 whatever the verdicts.")
@click.option("--state-dir", default=None, metavar="DIR",
              help="With --format prometheus: where the totals and each source's cursor are kept "
                   "(default /var/lib/sysctl-doctor).")
@click.option("--textfile-dir", default=None, metavar="DIR",
              help="With --format prometheus: write DIR/sysctl_doctor_conntrack.prom atomically "
                   "(node_exporter's textfile collector) instead of stdout.")
@click.option("--limit", type=click.IntRange(min=0), default=200, show_default=True,
              help="Text timeline: show the first LIMIT records (0 = all); counts and flows cover every one.")
@click.option("--events", is_flag=True,
              help="JSON Lines, streamed: one object per conntrack record (\"type\": \"record\"), then the "
                   "--format json summary (\"type\": \"summary\") as the last line.")
def command(file: Optional[str], since: Optional[str], fmt: str, limit: int, state_dir: Optional[str],
            textfile_dir: Optional[str], events: bool) -> None:
    """Explain conntrack's nf_log lines: INVALID or only IGNOREd, grouped by flow.

    FILE is dmesg output, `journalctl -k` (short or -o json), a syslog file
    (rotated .gz too), raw /dev/kmsg records, or - for stdin. Without FILE
    the live host's journal is read (or the kernel ring buffer if there is
    no journal). Exit 1 when a line shows an INVALID packet.
    """
    import gc

    from sysctl_doctor.conntrack.kernel_log import (
        FlowTable,
        KernelLogReport,
        LogInput,
        iter_kernel_log_stream,
        open_log_file,
        summarise_kernel_log_stream,
    )

    gc.disable()  # a short-lived run building acyclic records: the collector would only rescan them

    closing: list = []  # the live journal's journalctl, stopped and reaped however the run ends
    try:
        if fmt != "prometheus" and (state_dir is not None or textfile_dir is not None):
            raise click.UsageError("--state-dir and --textfile-dir go with --format prometheus")
        if events and fmt == "prometheus":
            raise click.UsageError("--events writes JSON Lines: it goes with --format json (or no --format)")
        since_at = None
        if since:  # log_sources (subprocess, shutil) only when asked for: start-up counts on big logs
            from sysctl_doctor.conntrack.log_sources import parse_since

            since_at = parse_since(since)
        boot = None
        if file == "-":
            if sys.stdin is None:  # started with stdin closed (`<&-`)
                raise DoctorError("<stdin>: standard input is closed (pass a log FILE, or pipe one in)")
            log, source = LogInput(sys.stdin.buffer, "<stdin>"), "<stdin>"
        elif file:
            log, source = open_log_file(file), file
        else:
            from sysctl_doctor.conntrack.log_sources import boot_time, read_live_kernel_log

            live = read_live_kernel_log(since_at)
            log, source = LogInput(live.stream, live.source), live.source
            boot = boot_time() if live.boot_clock else None
            closing.append(live.close)
        report = KernelLogReport(source=source)
        table = FlowTable()
        if fmt == "prometheus":
            # Read in blocks: memory stays bounded whatever the input (over-long lines are cut and counted).
            records = iter_kernel_log_stream(log, report, since=since_at, boot_time=boot)
            _count_for_prometheus(report, records, state_dir, textfile_dir, file)
            _warn_cut(report)
            return
        if events:
            _stream_events(report, iter_kernel_log_stream(log, report, since=since_at, boot_time=boot), table)
        elif fmt == "json":
            # Counts and flows only: the summary path reads whole blocks.
            summarise_kernel_log_stream(log, report, table, since=since_at, boot_time=boot, workers=_workers())
            _write_json(report, table)
        elif limit == 0:
            _render_text(report, iter_kernel_log_stream(log, report, since=since_at, boot_time=boot), table, limit)
        else:
            # The first LIMIT records one by one (the timeline), the rest only counted.
            shown = summarise_kernel_log_stream(log, report, table, since=since_at, boot_time=boot, keep=limit + 1,
                                                workers=_workers())
            _render_text(report, iter(shown), table, limit, total=sum(table.verdicts.values()))
        _warn_cut(report)
        if table.untracked:
            from sysctl_doctor.conntrack.kernel_log import MAX_FLOWS

            click.echo(f"warning: {report.source}: more than {MAX_FLOWS} flows: {table.untracked} records of later "
                       "flows are counted but not listed per flow", err=True)
        if table.verdicts["INVALID"]:
            raise click.exceptions.Exit(EXIT_FINDINGS)

    finally:
        for close in closing:
            close()
        gc.freeze()  # the interpreter's last collection at exit need not walk every object again (~5 ms, a big log)


def _count_for_prometheus(report, records, state_dir: Optional[str], textfile_dir: Optional[str],  # type: ignore[no-untyped-def]
                          file: Optional[str]) -> None:
    """Running totals: only the records after this source's cursor are added (counters only go up)."""
    import os

    from sysctl_doctor.fleet import log_counters
    from sysctl_doctor.fleet.textfile import write_textfile

    directory = state_dir or log_counters.DEFAULT_STATE_DIR
    counters = log_counters.load(directory)
    source = os.path.realpath(file) if file and file != "-" else ("<stdin>" if file == "-" else "live kernel log")
    log_counters.count_new(counters, source, records, log_counters.boot_id())
    log_counters.save(directory, counters)
    text = log_counters.render(counters)
    if textfile_dir is None:
        sys.stdout.write(text)
    else:
        write_textfile(textfile_dir, text, log_counters.TEXTFILE)


def _warn_cut(report) -> None:  # type: ignore[no-untyped-def]
    """Say on stderr what was not read: over-long lines and journal records with an absurd time."""
    from sysctl_doctor.conntrack.kernel_log import MAX_LINE

    skipped = report.skipped
    if skipped.too_long:
        click.echo(f"warning: {report.source}: {skipped.too_long} line(s) over {MAX_LINE} bytes cut and not read "
                   f"(kernel log lines are under 1 KiB; first at line {report.first_too_long})", err=True)
    if skipped.bad_time:
        click.echo(f"warning: {report.source}: {skipped.bad_time} journal record(s) skipped: __REALTIME_TIMESTAMP "
                   "is not a date (out of range)", err=True)


def _workers() -> int:
    """Processes for the pure-Python summary path: SYSCTL_DOCTOR_WORKERS, default 1. Measured on a shared
    2-core machine (bench/logs.py), two processes took 10-30 % more CPU for 0-20 % less wall time: the
    reading and the merge stay in the main process. (The compiled scanner's threads: kernel_log.scan_threads.)"""
    from sysctl_doctor.conntrack.kernel_log import workers_asked

    return workers_asked() or 1


def _summary_json(report, table) -> dict:  # type: ignore[no-untyped-def]
    from sysctl_doctor.conntrack.kernel_log import JSON_SCHEMA

    return {
        "schema": JSON_SCHEMA,
        "source": report.source,
        "lines": report.lines_json(),
        "counts": table.verdicts,
        "reasons": table.reasons_json(),
        "flows": [f.to_json() for f in table.summaries()],
        "flows_untracked_records": table.untracked,
    }


def _write_json(report, table) -> None:  # type: ignore[no-untyped-def]
    """One JSON object of counts and flows: its size grows with flows × reasons, not with lines."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(_summary_json(report, table), indent=indent) + "\n")


def _stream_events(report, records, table) -> None:  # type: ignore[no-untyped-def]
    """JSON Lines as the records come (memory stays O(flows) on huge logs), the summary last."""
    write, dumps, add = sys.stdout.write, json.dumps, table.add
    for rec in records:
        add(rec)
        event = rec.to_json()
        event["type"] = "record"
        write(dumps(event) + "\n")
    summary = _summary_json(report, table)
    summary["type"] = "summary"
    write(dumps(summary) + "\n")


def _render_text(report, records, table, limit: int, total: Optional[int] = None) -> None:  # type: ignore[no-untyped-def]
    """The timeline, counts and flows. Lines are (text, style) segments: plain writes when piped
    (no rich import, fast on 100k flows), one rich Text on a terminal; never parsed as markup,
    so data like ``[fd32::1]:80`` prints as it is."""
    lines: list = []
    say = lines.append
    say([("timeline", "bold"), (f" of {report.source}", None)])
    shown = 0
    styles = {"INVALID": "red", "IGNORE": "yellow"}
    for rec in records:
        if total is None:  # records read one by one here; else `table` has them all already
            table.add(rec)
        shown += 1
        if limit and shown > limit:
            continue
        f = rec.record.fields
        verdict = rec.reason.verdict
        when = f" {rec.time}" if rec.time else ""
        say([(f"  line {rec.line}{when} ", None), (f"{verdict:<7}", styles.get(verdict)), (
            f" {rec.reason.code}: "
            f"{f.get('SRC')}:{f.get('SPT')} > {f.get('DST')}:{f.get('DPT')} "
            f"[{' '.join(sorted(rec.record.tcp_flags))}] seq={f.get('SEQ', '?')} ack={f.get('ACK', '?')}"
            f" in={f.get('IN') or '-'} out={f.get('OUT') or '-'}", None)])
    if total is not None:
        shown = total
    if limit and shown > limit:
        say([(f"  … {shown - limit} more records (--limit 0 shows all; --events lists every one)", None)])
    skipped = report.skipped
    say([(report.source, "bold"), (
        f": {report.lines_total} lines, {shown} conntrack records"
        f" ({report.continuation_lines} wrapped lines joined), {skipped.total} skipped"
        f" (other {skipped.other}, partial {skipped.partial}, before --since {skipped.filtered}"
        + (f", too long {skipped.too_long}" if skipped.too_long else "")
        + (f", bad time stamp {skipped.bad_time}" if skipped.bad_time else "") + ")", None)])
    if not shown:
        say([("no conntrack nf_log lines. To make the kernel log them: "
              "`sysctl-doctor conntrack debug on --for 10m`", None)])
        emit(lines)
        return
    say([("verdicts: " + ", ".join(f"{k} {v}" for k, v in table.verdicts.items() if v), None)])
    say([("flows", "bold")])
    for flow in table.summaries():
        reasons = ", ".join(f"{k} {v}" for k, v in flow.reasons.items())
        verdicts = ", ".join(f"{k} {v}" for k, v in flow.verdicts.items())
        say([(f"  {flow.flow}: {flow.records} records ({verdicts}; {reasons}), "
              f"lines {flow.first_line}-{flow.last_line}", None)])
    if table.untracked:
        say([(f"  … {table.untracked} more records in flows beyond the first {len(table.by_flow)} "
              "(counted above, not listed per flow)", None)])
    say([("what the messages mean", "bold")])
    for reason in table.reasons.values():
        say([(f"  {reason.code} ({reason.verdict}, {reason.wording} wording): {reason.explanation}", None)])
    emit(lines)


