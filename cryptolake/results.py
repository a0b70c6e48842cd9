"""What a collection reports: per symbol (:class:`SymbolResult`), per run
(:class:`CollectionReport`), and as it goes (:class:`ProgressEvent`).

Plain data, shared by the collector, its pipeline and the scheduler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptolake.timeutils import iso, to_ms

Direction = Literal["backward", "forward", "gaps"]


@dataclass
class SymbolResult:
    """What one collection did for one symbol."""

    symbol: str
    direction: Direction
    rows_added: int = 0
    rows_changed: int = 0
    files_written: int = 0
    batches: int = 0
    expected_rows: int = 0
    first_open_time: datetime | None = None
    last_open_time: datetime | None = None
    error: str | None = None
    note: str | None = None
    #: The collection was asked to stop (Ctrl-C, SIGTERM) before this symbol was done.
    stopped: bool = False
    #: The exchange does not know the symbol (it is not recorded in the lake's state).
    unknown_symbol: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CollectionReport:
    """The outcome of one collect_backward / collect_forward call, per symbol."""

    direction: Direction
    interval: str
    started_at: datetime
    finished_at: datetime | None = None
    results: dict[str, SymbolResult] = field(default_factory=dict)
    #: For gap filling: candles still missing afterwards, by gap kind.
    remaining: dict[str, int] | None = None

    @property
    def total_rows_added(self) -> int:
        return sum(r.rows_added for r in self.results.values())

    @property
    def failed(self) -> dict[str, str]:
        """``{symbol: error}`` for the symbols that failed."""
        return {s: r.error for s, r in self.results.items() if r.error is not None}

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def stopped(self) -> bool:
        """Some symbol was cut short by a stop request (the partition in progress was written)."""
        return any(r.stopped for r in self.results.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "interval": self.interval,
            "started_at": _iso_dt(self.started_at),
            "finished_at": _iso_dt(self.finished_at),
            "total_rows_added": self.total_rows_added,
            "failed": self.failed,
            **({"remaining": self.remaining} if self.remaining is not None else {}),
            "symbols": {
                s: {
                    **asdict(r),
                    "first_open_time": _iso_dt(r.first_open_time),
                    "last_open_time": _iso_dt(r.last_open_time),
                }
                for s, r in self.results.items()
            },
        }


@dataclass(frozen=True)
class ProgressEvent:
    """Reported to ``on_progress`` as a collection advances.

    ``kind`` is ``"planned"`` (``expected_rows`` known), ``"batch"`` (``rows`` fetched and
    written), ``"done"`` or ``"failed"`` (with ``error``).
    """

    kind: Literal["planned", "batch", "done", "failed"]
    symbol: str
    direction: Direction
    rows: int = 0
    expected_rows: int = 0
    error: str | None = None


def _iso_dt(value: datetime | None) -> str | None:
    return iso(to_ms(value)) if value is not None else None
