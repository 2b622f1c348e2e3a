"""`sysctl-doctor conntrack replay FILE`: which packets of a capture conntrack marks INVALID, and why."""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from typing import Dict, List, Optional, Tuple

import click

from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS, EXIT_OK
from sysctl_doctor.errors import DoctorError

MAX_CHANGES_SHOWN = 50


def _pairs(values: Tuple[str, ...], option: str) -> List[Tuple[str, str]]:
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise DoctorError(f"{option} {item!r}: expected NAME=VALUE")
        out.append((name.strip(), value.strip()))
    return out


@click.command("replay")
@click.argument("file", metavar="FILE")
@click.option("--kernel", metavar="VER", help="Kernel version whose tracker to model, e.g. 5.10 or 6.18 "
              "(default: the running kernel).")
@click.option("--sysctl", "sysctls", multiple=True, metavar="NAME=VALUE",
              help="A conntrack TCP sysctl of the box that saw the traffic (full key or its last part; "
                   "repeatable). Unset ones have the kernel's defaults.")
@click.option("--what-if", "what_ifs", multiple=True, metavar="NAME=VALUE",
              help="Replay again with this sysctl changed (or kernel=VER) and report what changes (repeatable).")
@click.option("--explain", "explain", type=int, metavar="FRAME",
              help="Show how one packet (its frame number) got its verdict: tcp_error(), the entry, the state "
                   "table and the window arithmetic (td_end, td_maxend, td_maxwin, scaled window, the bound "
                   "crossed). Exit 1 when that packet is INVALID.")
@click.option("--capture-point", "capture_point", default="any", show_default=True,
              type=click.Choice(["any", "nat-outside", "nat-inside", "endpoint"]),
              help="Where the capture was taken: 'any' reads each packet's direction from the capture "
                   "(tcpdump -i any); 'nat-outside'/'nat-inside' one link of the NAT box (its own RSTs are "
                   "told apart on the outside); 'endpoint' a host at one end (checksums not judged).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(file: str, kernel: Optional[str], sysctls: Tuple[str, ...], what_ifs: Tuple[str, ...],
            explain: Optional[int], capture_point: str, fmt: str) -> None:
    """Replay a pcap/pcapng capture through a model of conntrack's TCP window tracking.

    Every TCP packet gets the verdict the kernel's conntrack would give it —
    accept, ignore or invalid — with the message the kernel logs for it.
    Exit status 1 when some packet is INVALID.
    """
    from sysctl_doctor.conntrack import pcap
    from sysctl_doctor.conntrack.profiles import profile_for
    from sysctl_doctor.conntrack.replay import Replay
    from sysctl_doctor.conntrack.tcp_model import normalize_sysctl_name, settings_from_sysctls

    profile = profile_for(kernel or os.uname().release)
    given = _pairs(sysctls, "--sysctl")
    base_map: Dict[str, str] = {normalize_sysctl_name(k): v for k, v in given}
    settings = settings_from_sysctls(base_map)
    if settings.ignore_invalid_rst and not profile.has_ignore_invalid_rst:
        click.echo(f"warning: nf_conntrack_tcp_ignore_invalid_rst does not exist before 5.14; "
                   f"it has no effect on kernel {kernel}", err=True)
    alternatives = []
    for name, value in _pairs(what_ifs, "--what-if"):
        if name == "kernel":
            alternatives.append((f"kernel={value}", profile_for(value), settings))
        else:
            key = normalize_sysctl_name(name)
            alternatives.append((f"net.netfilter.{key}={value}", profile,
                                 settings_from_sysctls({key: value}, settings)))

    # stdin, a FIFO or a .gz is copied once to a temporary file (removed when the command ends)
    path = click.get_current_context().with_resource(pcap.capture_file(file))
    f, _info = pcap.open_capture(path, file)  # a clear error (exit 2) before any output
    f.close()
    if explain is not None:
        from sysctl_doctor.cli.conntrack_replay_explain import explain_frame

        explain_frame(path, explain, profile, settings, fmt, {"capture_point": capture_point, "display": file})

    progress = _progress_bar(path) if sys.stderr.isatty() else None
    main = Replay(path, profile, settings, progress=progress, display=file, capture_point=capture_point)
    others = [Replay(path, p, s, display=file, capture_point=capture_point) for _, p, s in alternatives]
    changes: List[List[Tuple[object, object]]] = [[] for _ in alternatives]
    changed_counts: List[Dict[str, int]] = [{} for _ in alternatives]

    def packets():
        if not others:
            yield from main.packets()
            return
        streams = [main.packets()] + [r.packets() for r in others]
        for row in zip(*streams):
            base = row[0]
            if base.copy_of is not None:  # a forwarded copy mirrors its original: counted once
                yield base
                continue
            for i, alt in enumerate(row[1:]):
                if (alt.verdict, alt.message) != (base.verdict, base.message):
                    key = f"{base.verdict}->{alt.verdict}"
                    if base.verdict == alt.verdict:
                        key += " (other message)"
                    changed_counts[i][key] = changed_counts[i].get(key, 0) + 1
                    if len(changes[i]) < MAX_CHANGES_SHOWN:
                        changes[i].append((base, alt))
            yield base

    header = {
        "file": file,
        "kernel": "%d.%d" % profile.version,
        "profile": profile.name,
        "profile_label": profile.label,
        "sysctls": {"net.netfilter." + k: v for k, v in sorted(base_map.items())},
        "capture_point": capture_point,
    }
    out = click.get_text_stream("stdout")
    if fmt == "json":
        out.write(json.dumps(header)[:-1] + ', "packets": [')
        batch: List[str] = []
        sep = "\n  "
        for v in packets():
            batch.append(sep + v.json_line())
            sep = ",\n  "
            if len(batch) >= 4096:
                out.write("".join(batch))
                batch = []
        out.write("".join(batch))
        summary = main.summary
        tail = {
            "flows": [fl.to_json() for fl in summary.flows],
            "summary": _summary_json(summary),
            "what_if": [
                {"change": label, "invalid": other.summary.verdicts["invalid"],
                 "ignore": other.summary.verdicts["ignore"], "changed": changed_counts[i],
                 "packets": [{"frame": b.frame, "from": b.verdict, "to": a.verdict, "message": a.message}
                             for b, a in changes[i]]}
                for i, ((label, _p, _s), other) in enumerate(zip(alternatives, others))
            ],
            "diagnostics": [str(d) for d in summary.diagnostics],
        }
        out.write("\n]," + json.dumps(tail)[1:] + "\n")
        invalid = summary.verdicts["invalid"]
    else:
        deque(packets(), maxlen=0)  # run the pass; the summary holds what the text shows
        invalid = main.summary.verdicts["invalid"]
        _render_text(header, main, alternatives, others, changes, changed_counts, bool(what_ifs))
    raise click.exceptions.Exit(EXIT_FINDINGS if invalid else EXIT_OK)


def _summary_json(summary) -> dict:
    return {
        "frames": summary.frames, "tcp_packets": summary.tcp_packets, "copies": summary.copies,
        "verdicts": summary.verdicts, "skipped": summary.skipped, "flows": len(summary.flows),
        "bad_checksums": summary.bad_checksums,
        "format": summary.format,
    }


def _progress_bar(path: str):
    size = os.path.getsize(path)
    if size < 8 << 20:
        return None
    state = {"last": -1}

    def show(done: int, total: int) -> None:
        pct = int(done * 100 / total) if total else 100
        if pct != state["last"]:
            state["last"] = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rreplay [{bar:<25}] {pct:3d}%")
            if pct >= 100:
                sys.stderr.write("\r" + " " * 40 + "\r")
            sys.stderr.flush()

    return show


def _render_text(header, main, alternatives, others, changes, changed_counts, asked_what_if: bool) -> None:
    from rich.text import Text

    from sysctl_doctor.cli.console import make_console
    from sysctl_doctor.terminal_text import terminal_safe

    console = make_console()
    s = main.summary
    sysctl_text = ", ".join(f"{k}={v}" for k, v in header["sysctls"].items()) or "kernel defaults"
    console.print(Text(f"{terminal_safe(str(header['file']))}: {s.frames} frames, {s.tcp_packets} TCP packets in "
                       f"{len(s.flows)} flows ({s.format})"))
    console.print(Text(f"model: kernel {header['kernel']} (profile {header['profile_label']}), sysctls: {sysctl_text}"))
    v = s.verdicts
    line = Text("verdicts: ")
    line.append(f"{v['accept']} accept", style="green")
    line.append(", ")
    line.append(f"{v['ignore']} ignore", style="yellow" if v["ignore"] else None)
    line.append(", ")
    line.append(f"{v['invalid']} invalid", style="bold red" if v["invalid"] else None)
    if s.copies:
        line.append(f"  ({s.copies} forwarded copies of incoming packets given their original's verdict)")
    console.print(line)
    bad = [fl for fl in s.flows if fl.invalid]
    if bad:
        console.print()
        console.print(Text("Flows with INVALID packets:", style="bold"))
    for fl in bad:
        title = f"flow {fl.index}: {fl.src}:{fl.sport} -> {fl.dst}:{fl.dport}"
        if fl.nat:
            title += f" (left the NAT box as {fl.nat})"
        console.print(Text(f"{title} — {fl.invalid} invalid, {fl.ignore} ignored of {fl.packets} packets; "
                           f"last state {fl.state}", style="bold"))
        for ex in fl.examples:
            if ex.verdict != "invalid":
                continue
            t = Text(f"  frame {ex.frame:>7}  ")
            t.append("INVALID", style="red")
            t.append(f"  {ex.direction:<8} {ex.src}:{ex.sport} > {ex.dst}:{ex.dport} [{ex.flags}] "
                     f"seq={ex.seq} ack={ex.ack} len={ex.length}")
            console.print(t)
            console.print(Text(f"                   {ex.message or '(the kernel logs nothing for this case)'}"))
        shown = sum(1 for ex in fl.examples if ex.verdict == "invalid")
        if fl.invalid > shown:
            console.print(Text(f"  … {fl.invalid - shown} more"))
    ignored = [fl for fl in s.flows if fl.ignore and not fl.invalid]
    if ignored:
        console.print()
        console.print(Text(f"{sum(fl.ignore for fl in ignored)} packets in {len(ignored)} other flows were "
                           "IGNOREd (they keep their conntrack entry; NAT applies; `ct state invalid` does not match)."))
    for i, ((label, _p, _st), other) in enumerate(zip(alternatives, others)):
        console.print()
        o = other.summary.verdicts
        console.print(Text(f"what if {label}: {v['invalid']} invalid -> {o['invalid']} invalid, "
                           f"{v['ignore']} ignore -> {o['ignore']} ignore", style="bold"))
        for key, count in sorted(changed_counts[i].items()):
            console.print(Text(f"  {count} packet{'s' if count != 1 else ''} {key.replace('->', ' -> ')}"))
        for b, a in changes[i][:10]:
            console.print(Text(f"  frame {b.frame:>7}: {b.verdict} -> {a.verdict}"
                               + (f" ({a.message})" if a.message else "")))
    if s.bad_checksums:
        console.print()
        console.print(Text(f"{s.bad_checksums} packets arrived with a wrong TCP checksum: INVALID (\"bad checksum\"), as "
                           "the kernel judges them with nf_conntrack_checksum=1. If the capture was taken on the "
                           "host that sent them, or a tool rewrote them, that is the capture, not the wire: use "
                           "--capture-point endpoint or --sysctl nf_conntrack_checksum=0.", style="yellow"))
    if bad and not asked_what_if:
        console.print()
        console.print(Text("hint: --what-if nf_conntrack_tcp_be_liberal=1 shows what the usual mitigation changes"))
    if s.skipped:
        console.print()
        console.print(Text("not judged: " + ", ".join(f"{n} {reason}" for reason, n in sorted(s.skipped.items()))))
    for d in s.diagnostics:
        console.print(Text(terminal_safe(f"warning: {d}"), style="yellow"))
