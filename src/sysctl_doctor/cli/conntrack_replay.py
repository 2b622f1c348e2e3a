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

    def packets(json_lines: bool):
        if not others:
            # the fast path's accepted packets come as ready JSON lines (or not at all for text)
            yield from main.verdict_stream(json_lines)
            return
        streams = [main.packets()] + [r.packets() for r in others]
        yield from _compared(streams)
        for stream in streams[1:]:  # zip stops at the main stream's end: let the others finish their pass
            deque(stream, maxlen=0)

    def _compared(streams):
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
    out = sys.stdout
    if fmt == "json":
        out.write(json.dumps(header)[:-1] + ', "packets": [')
        batch: List[str] = []
        sep = "\n  "
        for v in packets(True):
            if v.__class__ is str:  # accepted packets' lines, each after ",\n  "
                out.write("".join(batch) + (v if sep != "\n  " else v[1:]))
                batch = []
            else:
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
        deque(packets(False), maxlen=0)  # run the pass; the summary holds what the text shows
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
    """The text report, written as styled lines (one write when piped: a capture with thousands of
    INVALID flows prints tens of thousands of lines)."""
    from sysctl_doctor.cli.styled_lines import Segment, emit

    lines: List[List[Segment]] = []
    add = lines.append
    s = main.summary
    sysctl_text = ", ".join(f"{k}={v}" for k, v in header["sysctls"].items()) or "kernel defaults"
    add([(f"{header['file']}: {s.frames} frames, {s.tcp_packets} TCP packets in {len(s.flows)} flows "
          f"({s.format})", None)])
    add([(f"model: kernel {header['kernel']} (profile {header['profile_label']}), sysctls: {sysctl_text}", None)])
    v = s.verdicts
    line: List[Segment] = [("verdicts: ", None), (f"{v['accept']} accept", "green"), (", ", None),
                           (f"{v['ignore']} ignore", "yellow" if v["ignore"] else None), (", ", None),
                           (f"{v['invalid']} invalid", "bold red" if v["invalid"] else None)]
    if s.copies:
        line.append((f"  ({s.copies} forwarded copies of incoming packets given their original's verdict)", None))
    add(line)
    bad = [fl for fl in s.flows if fl.invalid]
    if bad:
        add([])
        add([("Flows with INVALID packets:", "bold")])
    for fl in bad:
        title = f"flow {fl.index}: {fl.src}:{fl.sport} -> {fl.dst}:{fl.dport}"
        if fl.nat:
            title += f" (left the NAT box as {fl.nat})"
        add([(f"{title} — {fl.invalid} invalid, {fl.ignore} ignored of {fl.packets} packets; "
              f"last state {fl.state}", "bold")])
        shown = 0
        for ex in fl.examples:
            if ex.verdict != "invalid":
                continue
            shown += 1
            add([(f"  frame {ex.frame:>7}  ", None), ("INVALID", "red"),
                 (f"  {ex.direction:<8} {ex.src}:{ex.sport} > {ex.dst}:{ex.dport} [{ex.flags}] "
                  f"seq={ex.seq} ack={ex.ack} len={ex.length}", None)])
            add([(f"                   {ex.message or '(the kernel logs nothing for this case)'}", None)])
        if fl.invalid > shown:
            add([(f"  … {fl.invalid - shown} more", None)])
    ignored = [fl for fl in s.flows if fl.ignore and not fl.invalid]
    if ignored:
        add([])
        add([(f"{sum(fl.ignore for fl in ignored)} packets in {len(ignored)} other flows were "
              "IGNOREd (they keep their conntrack entry; NAT applies; `ct state invalid` does not match).", None)])
    for i, ((label, _p, _st), other) in enumerate(zip(alternatives, others)):
        add([])
        o = other.summary.verdicts
        add([(f"what if {label}: {v['invalid']} invalid -> {o['invalid']} invalid, "
              f"{v['ignore']} ignore -> {o['ignore']} ignore", "bold")])
        for key, count in sorted(changed_counts[i].items()):
            add([(f"  {count} packet{'s' if count != 1 else ''} {key.replace('->', ' -> ')}", None)])
        for b, a in changes[i][:10]:
            add([(f"  frame {b.frame:>7}: {b.verdict} -> {a.verdict}" + (f" ({a.message})" if a.message else ""),
                  None)])
    if s.bad_checksums:
        add([])
        add([(f"{s.bad_checksums} packets arrived with a wrong TCP checksum: INVALID (\"bad checksum\"), as "
              "the kernel judges them with nf_conntrack_checksum=1. If the capture was taken on the "
              "host that sent them, or a tool rewrote them, that is the capture, not the wire: use "
              "--capture-point endpoint or --sysctl nf_conntrack_checksum=0.", "yellow")])
    if bad and not asked_what_if:
        add([])
        add([("hint: --what-if nf_conntrack_tcp_be_liberal=1 shows what the usual mitigation changes", None)])
    if s.skipped:
        add([])
        add([("not judged: " + ", ".join(f"{n} {reason}" for reason, n in sorted(s.skipped.items())), None)])
    for d in s.diagnostics:
        add([(f"warning: {d}", "yellow")])
    emit(lines)
