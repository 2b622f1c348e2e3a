"""Errors and diagnostics shared by every layer.

Nothing below the CLI prints or exits: layers raise `DoctorError` for a
condition that stops the job (exit 2) and return `Diagnostic`s for anything
the user should see while the rest of the analysis goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class DoctorError(Exception):
    """A condition that stops the command: bad usage, unreadable input.

    The CLI renders it as ``error: <message>`` and exits 2.
    """


@dataclass(frozen=True)
class Diagnostic:
    """A warning about the input, with the place it comes from (file:line)."""

    message: str
    file: Optional[str] = None
    line: Optional[int] = None
    kind: Optional[str] = None  # what sort of remark, for the reader that routes it (e.g. "invalid-line": SD111)

    def where(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message
