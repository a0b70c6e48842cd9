"""Ctrl-C and SIGTERM, treated alike by every command that writes (collect, fill-gaps, run).

The first signal asks the work to stop: the partition being written finishes, the run is
recorded, and the command exits 130 (SIGINT) or 143 (SIGTERM). A second signal aborts at once
with the same code; nothing is lost even then, because every partition and metadata write is
atomic (the next run resumes where this one stopped).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Route SIGINT and SIGTERM to ``on_stop`` (first signal) and to an immediate exit (second).

    Use as a context manager around the work; afterwards :attr:`signum` tells whether a signal
    came, and :attr:`exit_code` the code to exit with (``128 + signal number``). Outside the main
    thread (an embedding program) nothing is installed: signals are the caller's business.
    """

    def __init__(
        self,
        on_stop: Callable[[], None],
        announce: Callable[[str], None] | None = None,
        what_finishes: str = "the partition being written finishes and the run is recorded first",
    ) -> None:
        self.on_stop = on_stop
        self.what_finishes = what_finishes
        self.announce = announce or (lambda text: print(text, file=sys.stderr, flush=True))
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int | None:
        """``128 + signal number`` once a signal has come (130 for Ctrl-C, 143 for SIGTERM)."""
        return None if self.signum is None else 128 + self.signum

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.signum is not None:
            return  # stopping: until the process ends, another signal still means "abort now"
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.announce(
                f"aborted by a second {name}: every file in the lake is whole; the next run "
                "resumes where this one stopped"
            )
            os._exit(128 + signum)
        self.signum = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else f"another {name}"
        self.announce(f"stopping ({name}): {self.what_finishes} ({again} aborts at once)")
        self.on_stop()
