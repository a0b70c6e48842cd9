"""Progress of a collection: a live display on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any

import click

from cryptolake.collector import ProgressEvent


class CollectProgress:
    """Renders :class:`ProgressEvent` s: overall and per-symbol bars with rows and rate on a
    terminal (rich), one line per finished symbol otherwise, nothing but errors when quiet."""

    def __init__(self, quiet: bool = False, live: bool | None = None) -> None:
        self.quiet = quiet
        self.live = (sys.stderr.isatty() if live is None else live) and not quiet
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._started = time.monotonic()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._overall: Any = None

    def __enter__(self) -> CollectProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._overall = self._progress.add_task("all symbols", total=0, rate="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def announce(self, text: str) -> None:
        """A line for the user (a stop request, say), above the live display if there is one."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, err=True)

    def update(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._progress is not None:
                self._update_live(event)
            else:
                self._update_plain(event)

    def _update_live(self, event: ProgressEvent) -> None:
        key = f"{event.symbol} {event.direction}"
        if event.kind == "planned":
            if event.expected_rows:
                if key in self._tasks:  # one more window of the same symbol and step
                    task = self._progress.tasks[self._tasks[key]]
                    self._progress.update(self._tasks[key], total=(task.total or 0) + event.expected_rows)
                else:
                    self._tasks[key] = self._progress.add_task(key, total=event.expected_rows, rate="")
                overall = self._progress.tasks[self._overall]
                self._progress.update(self._overall, total=(overall.total or 0) + event.expected_rows)
        elif event.kind == "batch" and key in self._tasks:
            self._rows[key] = self._rows.get(key, 0) + event.rows
            self._progress.advance(self._tasks[key], event.rows)
            self._progress.advance(self._overall, event.rows)
            elapsed = max(1e-6, time.monotonic() - self._started)
            rate = f"{sum(self._rows.values()) / elapsed:,.0f} rows/s"
            self._progress.update(self._overall, rate=rate)
        elif event.kind == "done" and key in self._tasks:
            # Exchange outages leave fewer candles than grid slots: a finished symbol is complete.
            self._progress.update(self._tasks[key], completed=event.expected_rows)
        elif event.kind == "failed":
            self._progress.console.print(f"[red]failed[/red] {key}: {event.error}")

    def _update_plain(self, event: ProgressEvent) -> None:
        if event.kind == "batch":
            self._rows[event.symbol] = self._rows.get(event.symbol, 0) + event.rows
        elif event.kind == "failed":
            click.echo(f"{event.direction} {event.symbol}: failed: {event.error}", err=True)
        elif event.kind == "done" and not self.quiet and event.expected_rows:
            elapsed = max(1e-6, time.monotonic() - self._started)
            rows = self._rows.get(event.symbol, 0)
            click.echo(
                f"{event.direction} {event.symbol}: {rows} candles fetched "
                f"({sum(self._rows.values()) / elapsed:,.0f} rows/s overall)",
                err=True,
            )
