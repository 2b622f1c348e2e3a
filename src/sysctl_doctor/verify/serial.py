"""Marker lines on a serial port: what every guest probe (verify's reporter, the slow tier's probes) writes.

A probe writes `PREFIX kind rest…` lines, and blocks between `BEGIN-marker` / `END-marker` lines, to a
serial port that qemu sends to a file of its own. The kernel console may interleave carriage returns;
lines are read tolerantly (undecodable bytes replaced, `\\r` dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple


def read_lines(path: Path, limit: int = 64 << 20) -> List[str]:
    """The lines of a serial log (at most `limit` bytes from its start), `\\r` removed; [] when absent."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except FileNotFoundError:
        return []
    return [line.rstrip("\r") for line in data.decode("utf-8", "replace").split("\n")]


def marker_lines(lines: List[str], prefix: str) -> List[Tuple[str, str]]:
    """(kind, rest) of every `PREFIX kind rest` line, in order."""
    out: List[Tuple[str, str]] = []
    lead = prefix + " "
    for line in lines:
        if line.startswith(lead):
            kind, _, rest = line[len(lead):].partition(" ")
            out.append((kind, rest))
    return out


def between(lines: List[str], begin: str, end: str) -> Optional[List[str]]:
    """The lines strictly between the first `begin` line and the next `end` line; None when either is missing."""
    try:
        start = lines.index(begin)
        stop = lines.index(end, start)
    except ValueError:
        return None
    return lines[start + 1:stop]


def tail(lines: List[str], count: int = 40) -> List[str]:
    """The last `count` non-empty lines (a boot that failed shows where it stopped)."""
    return [line for line in lines if line.strip()][-count:]


def decode_block(lines: List[str], begin: str, end: str) -> Optional[bytes]:
    """The bytes of a base64 block between `begin` and `end` (a probe's tar of files); None when absent."""
    import base64
    import binascii

    body = between(lines, begin, end)
    if not body:
        return None
    try:
        return base64.b64decode("".join(line.strip() for line in body), validate=True)
    except (binascii.Error, ValueError):
        return None
