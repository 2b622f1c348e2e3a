"""The one way the command line makes a rich Console: colour only on a terminal, never with NO_COLOR.

NO_COLOR (https://no-color.org): set and not empty, no ANSI styling at all — no colour and no bold
(rich's own `no_color` keeps bold/dim/underline, and `check` used to force colour on a terminal).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def no_color() -> bool:
    """True when the user asked for no colour (NO_COLOR set to a non-empty value)."""
    return os.environ.get("NO_COLOR", "") != ""


def styled(stderr: bool = False) -> bool:
    """Whether output on stdout (or stderr) may carry styles: a terminal, and no NO_COLOR."""
    return _is_tty(sys.stderr if stderr else sys.stdout) and not no_color()


def make_console(stderr: bool = False, piped_width: Optional[int] = None, soft_wrap: bool = True) -> "Console":
    """A Console for stdout (or stderr): styles only when `styled()`; `piped_width` columns when the
    stream is not a terminal (None: rich's default, 80 or $COLUMNS)."""
    from rich.console import Console

    tty = _is_tty(sys.stderr if stderr else sys.stdout)
    plain = not tty or no_color()
    options = {"color_system": None} if plain else {}
    return Console(stderr=stderr, highlight=False, soft_wrap=soft_wrap, no_color=plain,
                   width=None if tty else piped_width, **options)


class PipedOutput:
    """What a text report needs of a Console when stdout is not a terminal (no styles), without importing
    rich (~20 ms of a `check` that must take 0.15 s): the stream, the width, and `print` for what only rich
    can draw, through a real Console made on first use."""

    is_terminal = False

    def __init__(self, width: int, soft_wrap: bool = True) -> None:
        self.width = width
        self.soft_wrap = soft_wrap
        self._console: Optional["Console"] = None

    @property
    def file(self):  # type: ignore[no-untyped-def]
        return sys.stdout  # looked up at each write, as rich's Console does (tests swap it)

    def print(self, *objects, **options) -> None:  # type: ignore[no-untyped-def]
        if self._console is None:
            self._console = make_console(piped_width=self.width, soft_wrap=self.soft_wrap)
        self._console.print(*objects, **options)


def report_console(piped_width: int) -> "Console":
    """A rich Console on a terminal; on anything else a PipedOutput (rich imported only if it must draw)."""
    if _is_tty(sys.stdout):
        return make_console(piped_width=piped_width, soft_wrap=False)
    return PipedOutput(piped_width)  # type: ignore[return-value]


def _is_tty(stream) -> bool:  # type: ignore[no-untyped-def]
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False
