"""Ctrl-C and SIGTERM that never cut set-up or teardown in half.

While the lab runs, SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the
main thread — except inside a `critical()` block (creating namespaces, loading
rules, tearing down), where the signal is held and raised when the block ends.
A signal arriving in a forked helper (pyroute2 creates namespaces from a child)
takes that child's default action, as the helper expects.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Dict, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _State:
    depth = 0
    pending = False
    owner_pid = 0


def _handler(signum, frame):  # type: ignore[no-untyped-def]
    if os.getpid() != _State.owner_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _State.depth > 0:
        _State.pending = True
        return
    raise KeyboardInterrupt


@contextmanager
def interrupts_deferred_in_critical_sections() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.owner_pid = os.getpid()
    _State.pending = False
    old: Dict[int, object] = {sig: signal.signal(sig, _handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


@contextmanager
def critical() -> Iterator[None]:
    """A block a signal must not interrupt; a signal received meanwhile is raised at its end."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending:
        _State.pending = False
        raise KeyboardInterrupt
