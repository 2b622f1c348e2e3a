"""Split and parse sysctl.d files line by line, exactly as each flavour does.

systemd-sysctl 252 reads lines with read_line(): a line ends at ``\\n``, ``\\r``,
``\\r\\n``, NUL (and combinations), and a line of LONG_LINE_MAX bytes or more
stops the file; whitespace is `` \\t\\r\\n``. procps 4.0.2 uses getline() (``\\n``
only; C string functions stop at a NUL) and C isspace(). Both treat ``#`` and ``;``
as comments. Pure functions over bytes; never raises on any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, List, NamedTuple, Optional, Tuple

from sysctl_doctor.config.model import Flavor
from sysctl_doctor.errors import Diagnostic

LONG_LINE_MAX = 1024 * 1024  # systemd's LONG_LINE_MAX
MAX_BYTE_DIAGNOSTICS = 5  # per file, then one summary line

_SYSTEMD_WS = b" \t\n\r"
_C_SPACE = b" \t\n\v\f\r"


class ParsedLine(NamedTuple):
    """One meaningful line of a sysctl.d file."""

    line: int
    kind: str  # "assignment" | "exclusion" | "invalid"
    key: str = ""  # as written, after the "-" and whitespace are removed
    value: Optional[str] = None
    ignore_failure: bool = False
    text: str = ""  # the stripped line (for messages)


INVALID_LINE = "invalid-line"  # Diagnostic.kind of a line that is not an assignment (SD111)


@dataclass
class ParsedFile:
    lines: List[ParsedLine] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


_EOL_BITS = {0x0A: 2, 0x0D: 4, 0x00: 1}
_RUN = re.compile(rb"([^\r\n\x00]*)([\r\n\x00]*)")


def systemd_lines(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """Lines as systemd's read_line() returns them: (1-based number, text).

    Raises `ValueError` (with the line number in args[1]) for a line of
    LONG_LINE_MAX bytes or more: systemd stops reading the file there.
    """
    lineno = 0
    for match in _RUN.finditer(data):
        text, eols = match.group(1), match.group(2)
        if not text and not eols:
            break
        if len(text) >= LONG_LINE_MAX:
            raise ValueError("line too long", lineno + 1)
        lineno += 1
        yield lineno, text
        # An EOL run holds one terminator, then empty lines: a terminator ends
        # after a NUL or when a marker already seen in it repeats.
        seen = 0
        for byte in eols:
            bit = _EOL_BITS[byte]
            if seen and (seen & 1 or seen & bit):
                lineno += 1
                yield lineno, b""
                seen = 0
            seen |= bit


def procps_lines(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """Lines as procps' getline() loop sees them: (number, bytes incl. the newline)."""
    lineno = 0
    start = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        end = size if end < 0 else end + 1
        lineno += 1
        yield lineno, data[start:end]
        start = end


def _c_rstrip(raw: bytes) -> bytes:
    """procps rstrip(): never strips the first character."""
    end = len(raw) - 1
    while end > 0 and raw[end] in _C_SPACE:
        end -= 1
    return raw[: end + 1] if raw else raw


def _c_lstrip(raw: bytes) -> bytes:
    i = 0
    while i < len(raw) and raw[i] in _C_SPACE:
        i += 1
    return raw[i:]


_new_tuple = tuple.__new__


def parse_systemd_line(lineno: int, raw: bytes) -> Optional[ParsedLine]:
    p = raw.strip(_SYSTEMD_WS)
    if not p or p[0] in b"#;\n":
        return None
    eq = p.find(b"=")
    if eq >= 0:
        ignore = p[0] == 45  # "-"
        key = p[1 if ignore else 0 : eq].strip(_SYSTEMD_WS)
        value = p[eq + 1 :].strip(_SYSTEMD_WS)
        # tuple.__new__: the same ParsedLine without the NamedTuple's Python-level __new__ (per line)
        return _new_tuple(ParsedLine, (lineno, "assignment", key.decode("utf-8", "surrogateescape"),
                                       value.decode("utf-8", "surrogateescape"), ignore, ""))
    if p[:1] == b"-":
        return ParsedLine(lineno, "exclusion", _decode(p[1:].strip(_SYSTEMD_WS)), None, False)
    return ParsedLine(lineno, "invalid", text=_decode(p))


def parse_procps_line(lineno: int, raw: bytes) -> Optional[ParsedLine]:
    if len(raw) < 2:  # rlen < 2
        return None
    raw = raw.split(b"\x00", 1)[0]  # C string functions stop at a NUL
    key = _c_lstrip(raw)
    if len(key) < 2 or key[:1] in (b"#", b";"):
        return None
    eq = key.find(b"=")
    if eq < 0:
        if key[:1] == b"-":
            return ParsedLine(lineno, "exclusion", _decode(_c_rstrip(key[1:])), None, False)
        return ParsedLine(lineno, "invalid", text=_decode(key.rstrip(_C_SPACE)))
    name, value = key[:eq], key[eq + 1 :]
    ignore = name[:1] == b"-"
    if ignore:
        name = name[1:]
    value = _c_rstrip(_c_lstrip(value))
    return ParsedLine(lineno, "assignment", _decode(_c_rstrip(name)), _decode(value), ignore)


def parse_sysctl_bytes(data: bytes, flavor: Flavor, file: str) -> ParsedFile:
    """Parse one file's bytes the way `flavor` does. Never raises on any input."""
    out = ParsedFile()
    bad_bytes = 0
    try:
        data.decode("utf-8")
        check_utf8 = False
    except UnicodeDecodeError:
        check_utf8 = True
    if flavor == "systemd":
        if b"\r" in data or b"\x00" in data or len(data) >= LONG_LINE_MAX:
            lines: Iterator[Tuple[int, bytes]] = systemd_lines(data)
        else:  # only "\n" line ends and no long line: a plain split is the same thing, faster
            chunks = data.split(b"\n")
            if chunks and not chunks[-1]:
                chunks.pop()
            lines = iter(enumerate(chunks, 1))
        parse = parse_systemd_line
    else:
        lines = procps_lines(data)
        parse = parse_procps_line
    if b"\x00" in data:
        out.diagnostics.append(
            Diagnostic(
                "binary data (NUL bytes): "
                + ("systemd-sysctl treats a NUL as a line end" if flavor == "systemd"
                   else "procps ignores the rest of a line after a NUL"),
                file,
                data[: data.index(b"\x00")].count(b"\n") + 1,
            )
        )
    try:
        for lineno, raw in lines:
            parsed = parse(lineno, raw)
            if parsed is None:
                continue
            if parsed.kind == "invalid":
                msg = ("line is not an assignment, ignored (systemd-sysctl then exits with an error, so "
                       "systemd-sysctl.service shows as failed): " if flavor == "systemd"
                       else "invalid syntax (no '='), ignored: ")
                out.diagnostics.append(Diagnostic(msg + _shorten(parsed.text), file, lineno, INVALID_LINE))
                continue
            try:
                if check_utf8:
                    raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_bytes += 1
                if bad_bytes <= MAX_BYTE_DIAGNOSTICS:
                    out.diagnostics.append(
                        Diagnostic("bytes that are not UTF-8; they are used as they are (shown escaped)", file, lineno)
                    )
            out.lines.append(parsed)
    except ValueError as exc:
        out.diagnostics.append(
            Diagnostic(
                f"line of {LONG_LINE_MAX} bytes or more: systemd-sysctl stops reading the file here "
                "(assignments before it still apply)",
                file,
                exc.args[1],
            )
        )
    if bad_bytes > MAX_BYTE_DIAGNOSTICS:
        out.diagnostics.append(Diagnostic(f"{bad_bytes - MAX_BYTE_DIAGNOSTICS} more lines with non-UTF-8 bytes", file))
    return out


def _shorten(text: str, limit: int = 80) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace") if _has_surrogates(text) else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


