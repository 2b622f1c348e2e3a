"""Text from files, file names and logs made safe to print on a terminal.

A value, a file name or a log field may carry ESC, BEL, OSC/CSI sequences, C1 controls or bytes that
are not UTF-8 (kept as surrogate escapes when read). Printed as they are, they retitle the terminal,
move the cursor, hide text or worse. Every text renderer passes what it prints through
`terminal_safe`; JSON output is already escaped by json.dumps.
"""

from __future__ import annotations

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if c in _SHORT:
        return _SHORT[c]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_safe(text: str, keep: str = "") -> str:
    """`text` with every character a terminal would act on shown visibly instead: C0 and C1 controls,
    DEL and ESC as \\xNN (\\t \\n \\r short), undecodable bytes as \\xNN, other non-printable code
    points (bidi overrides, line separators) as \\uNNNN. Characters in `keep` (e.g. "\\t" in a diff,
    "\\n" in a multi-line message) pass through. Printable text is returned as is (fast path)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape_char(c) for c in text)
