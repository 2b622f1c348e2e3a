"""Write lines of styled text segments: colour on a terminal, plain text when piped."""

from __future__ import annotations

import sys
from typing import List, Optional, Tuple

Segment = Tuple[str, Optional[str]]  # (text, rich style or None)


def emit(lines: List[List[Segment]]) -> None:
    """Write styled lines: colour (via rich, one print) on a terminal, plain text otherwise.

    Building one rich `Text` (no markup parsing) keeps 10,000 lines fast, and no text is
    read as markup (an IPv6 address in brackets stays as it is); piped output does not
    import rich at all.
    """
    if not sys.stdout.isatty():
        sys.stdout.write("".join("".join(text for text, _ in line) + "\n" for line in lines))
        return
    from rich.console import Console
    from rich.text import Text

    text = Text()
    for line in lines:
        for chunk, style in line:
            text.append(chunk, style=style)
        text.append("\n")
    Console(highlight=False, soft_wrap=True).print(text, end="")
