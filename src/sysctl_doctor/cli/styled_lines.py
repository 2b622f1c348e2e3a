"""Write lines of styled text segments: colour on a terminal, plain text when piped; every segment
made terminal-safe (control characters and undecodable bytes shown escaped)."""

from __future__ import annotations

import sys
from typing import List, Optional, Tuple

from sysctl_doctor.terminal_text import terminal_safe

Segment = Tuple[str, Optional[str]]  # (text, rich style or None)


def emit(lines: List[List[Segment]]) -> None:
    """Write styled lines: colour (via rich, one print) on a terminal, plain text otherwise.

    Building one rich `Text` (no markup parsing) keeps 10,000 lines fast, and no text is
    read as markup (an IPv6 address in brackets stays as it is); piped output does not
    import rich at all. Each segment goes through `terminal_safe`: file contents and log fields
    cannot drive the terminal.
    """
    from sysctl_doctor.cli.console import styled

    safe = terminal_safe
    if not styled():  # piped, or NO_COLOR: plain text
        out = "".join("".join(text for text, _ in line) + "\n" for line in lines)
        if not out.replace("\n", "").isprintable():  # two C passes; escape segment by segment only if needed
            out = "".join("".join(safe(text) for text, _ in line) + "\n" for line in lines)
        sys.stdout.write(out)
        return
    from rich.text import Text

    from sysctl_doctor.cli.console import make_console

    text = Text()
    for line in lines:
        for chunk, style in line:
            text.append(safe(chunk), style=style)
        text.append("\n")
    make_console().print(text, end="")
