"""`conntrack replay FILE --explain FRAME`: one packet's verdict, step by step (kept out of
conntrack_replay.py so that file stays the option parser and the whole-capture report)."""

from __future__ import annotations

import json
import sys

import click

from sysctl_doctor.cli.exit_codes import EXIT_FINDINGS, EXIT_OK
from sysctl_doctor.errors import DoctorError


def explain_frame(file: str, frame: int, profile, settings, fmt: str, replay_options: dict) -> None:
    from sysctl_doctor.conntrack.explain_frame import explanation_json, explanation_lines
    from sysctl_doctor.conntrack.replay import Replay

    if frame < 1:
        raise DoctorError(f"--explain {frame}: frames are numbered from 1")
    replay = Replay(file, profile, settings, explain=frame, **replay_options)
    for v in replay.packets():
        if v.frame >= frame:
            break
    explanation = replay.explanation
    if explanation is None:
        name = replay_options.get("display") or file
        raise DoctorError(f"--explain {frame}: frame {frame} of {name} is not a TCP packet the replay judges "
                          f"(see the summary's 'skipped' counts; the file has {replay.summary.frames} frames "
                          "read so far)")
    out = sys.stdout
    if fmt == "json":
        out.write(json.dumps(explanation_json(explanation, profile, settings)) + "\n")
    else:
        for line in explanation_lines(explanation, profile, settings):
            out.write(line + "\n")
    raise click.exceptions.Exit(EXIT_FINDINGS if explanation["verdict"].verdict == "invalid" else EXIT_OK)
