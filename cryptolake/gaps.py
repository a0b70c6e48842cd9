"""DataGapDetector: where the lake is incomplete, and why, found with DuckDB SQL over the lake.

Every candle interval has a grid (see :class:`~cryptolake.schema.Interval`); a symbol is
expected to have one candle per grid slot from its start (the requested start date or its
listing, whichever is later) up to the last closed candle. Gaps are runs of empty slots:

- ``backward``: from the start up to the first stored candle;
- ``internal``: between stored candles;
- ``forward``: after the last stored candle, up to the last candle closed on the exchange.

Each gap has a kind: ``missing`` (nobody knows why: fetch it), ``exchange_gap`` (the exchange
returned nothing there although the symbol traded before and after: an outage), or ``failed``
(the last fetch of that window failed). Rows that break the grid are reported too, as
``off_grid`` (an open time between slots: it fills no slot) and ``duplicate`` (an open time
stored more than once).

Speed: one DuckDB query answers for every symbol. Partitions whose footer proves them
contiguous (row count equal to the slots between their first and last open time, and no
off-grid rows as recorded by cryptolake's writer) are represented by that range alone; only
the other partitions are scanned.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
import pyarrow as pa

from cryptolake.errors import CryptolakeError, Interrupted, LakeError, SourceError
from cryptolake.lake import Lake, PartitionStats
from cryptolake.lake.layout import DEFAULT_EXCHANGE, META_DIR
from cryptolake.lake.meta import LakeMeta, Window, with_exchange
from cryptolake.lake.storage import ObjectStorage, update_object
from cryptolake.schema import HOUR_MS, Interval
from cryptolake.sources.base import KlineSource
from cryptolake.timeutils import from_ms, iso, to_ms

GapKind = Literal["missing", "exchange_gap", "no_trades", "failed", "off_grid", "duplicate", "misplaced"]
Position = Literal["backward", "internal", "forward"]
#: Kinds that are empty grid slots (the others are stored rows that break the grid).
SLOT_KINDS: tuple[str, ...] = ("missing", "exchange_gap", "no_trades", "failed")
#: Kinds found empty on the exchange, fetched again once ``exchange_gap_recheck_days`` have passed
#: (an empty answer during an incident must not be written off for good).
RECHECKED_KINDS: tuple[str, ...] = ("exchange_gap", "no_trades")
log = logging.getLogger("cryptolake.gaps")

DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Gap:
    """A run of ``count`` grid slots (or, for ``off_grid``/``duplicate``, stored rows).

    ``start_time`` and ``end_time`` are the first and the last missing open time (UTC).
    """

    symbol: str
    interval: str
    kind: GapKind
    position: Position
    start_ms: int
    end_ms: int
    count: int
    recheck_due: bool = False
    error: str | None = None
    exchange: str = DEFAULT_EXCHANGE

    @property
    def start_time(self) -> datetime:
        return from_ms(self.start_ms)

    @property
    def end_time(self) -> datetime:
        return from_ms(self.end_ms)

    @property
    def hours_missing(self) -> float:
        """Hours of candles missing (equals ``count`` for ``1h``)."""
        grid = Interval(self.interval)
        return (grid.next_open(grid.floor(self.end_ms)) - self.start_ms) / HOUR_MS

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exchange": self.exchange, "symbol": self.symbol, "interval": self.interval, "kind": self.kind,
            "position": self.position, "start_time": iso(self.start_ms),
            "end_time": iso(self.end_ms), "count": self.count,
        }  # fmt: skip
        if self.kind in RECHECKED_KINDS:
            out["recheck_due"] = self.recheck_due
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class SymbolSpan:
    """What the lake holds for one symbol, as the detector saw it (grid indices, inclusive)."""

    symbol: str
    expected_first: int | None
    expected_last: int | None
    stored_first: int | None
    stored_last: int | None
    present: int
    present_by_month: dict[str, int]


@dataclass(frozen=True)
class GapScan:
    """One detection pass: the gaps and the span of every symbol, judged at ``end_ms``."""

    interval: str
    end_ms: int
    gaps: list[Gap]
    spans: dict[str, SymbolSpan]
    scanned_partitions: int
    skipped_partitions: int
    exchange: str = DEFAULT_EXCHANGE


class DataGapDetector:
    """Finds gaps in the lake for one interval.

    Args:
        lake: The lake (or its root directory).
        interval: Candle interval, e.g. ``"1h"``.
        client: When given, forward gaps are judged against the exchange's server time and
            listings unknown to the lake are asked for; otherwise the lake's records and
            ``clock`` are used.
        start_date: Start of every symbol's expected range (None: each symbol's start as its
            collection recorded it). Either way the range starts at the first stored candle
            when that is earlier, and never before the listing.
        exchange_gap_recheck_days: An ``exchange_gap`` checked longer ago than this is
            ``recheck_due`` (fetched again by gap filling); 0 never re-checks.
        clock: Epoch seconds now (used when there is no client).
    """

    def __init__(
        self,
        lake: Lake | str | Path,
        interval: str = "1h",
        *,
        client: KlineSource | None = None,
        start_date: date | datetime | str | int | None = None,
        exchange_gap_recheck_days: float = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        exchange = client.exchange if client is not None else None
        store = lake if isinstance(lake, Lake) else Lake(lake)
        self.lake = store.for_exchange(exchange) if exchange else store
        self.interval = interval
        self.grid = Interval(interval)
        self.client = client
        self.start_ms = to_ms(start_date) if start_date is not None else None
        self.exchange_gap_recheck_days = exchange_gap_recheck_days
        self._clock = clock
        self.meta = LakeMeta(self.lake.storage, self.lake.exchange)

    # -- the original design's API ---------------------------------------------------------

    def find_all_gaps(
        self,
        crypto_symbol: str,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> list[Gap]:
        """Every gap of one symbol (backward, internal, forward), oldest first."""
        return self.scan([crypto_symbol], start_date, end_date).gaps

    def find_backward_gaps(
        self, crypto_symbol: str, start_date: date | datetime | str | int | None = None
    ) -> list[Gap]:
        """Slots from the start date (or listing) up to the earliest stored candle."""
        return [g for g in self.find_all_gaps(crypto_symbol, start_date) if g.position == "backward"]

    def find_forward_gaps(
        self, crypto_symbol: str, end_date: date | datetime | str | int | None = None
    ) -> list[Gap]:
        """Slots after the latest stored candle up to the last closed one (or ``end_date``)."""
        return [g for g in self.find_all_gaps(crypto_symbol, None, end_date) if g.position == "forward"]

    def find_internal_gaps(
        self,
        crypto_symbol: str,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> list[Gap]:
        """Missing slots and off-grid or duplicate rows inside the stored range."""
        return [
            g for g in self.find_all_gaps(crypto_symbol, start_date, end_date) if g.position == "internal"
        ]

    def get_collection_summary(
        self,
        crypto_symbol: str,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> dict[str, Any]:
        """Completeness of one symbol: expected and present candles, first and last candle,
        and gap counts by kind (``{kind: {"gaps": n, "candles": m}}``)."""
        result = self.scan([crypto_symbol], start_date, end_date)
        return summarize(result, crypto_symbol)

    # -- all symbols at once ---------------------------------------------------------------

    def find_gaps(
        self,
        symbols: Iterable[str] | None = None,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> list[Gap]:
        """Gaps of many symbols (None: every stored symbol) from one query, sorted."""
        return self.scan(symbols, start_date, end_date).gaps

    def report(
        self,
        symbols: Iterable[str] | None = None,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> GapScan:
        """:meth:`scan`, then store it as the lake's gap report (``_meta/gaps.parquet``) and
        refresh the DuckDB views (``gaps``, ``coverage``), as ``cryptolake gaps`` does. On a lake
        that cannot be written (a read-only mount), the scan is returned and nothing is stored.

        Raises:
            LakeError: there is no lake at the detector's path (nothing is created there).
        """
        if not self.lake.exists():
            raise LakeError(f"no lake at {self.lake.location}: collect into it first, or check the path")
        found = self.scan(symbols, start_date, end_date)
        try:
            save_report(self.lake, found)
        except (OSError, LakeError) as exc:
            if not self.lake.is_local:
                raise
            log.debug("gap report not saved (read-only lake?): %s", exc)
            return found
        from cryptolake.query import refresh_database  # duckdb: only when a report is kept

        refresh_database(self.lake)
        return found

    def scan(
        self,
        symbols: Iterable[str] | None = None,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> GapScan:
        """Detect gaps and measure each symbol's span, judged at ``end_date`` (exclusive; by
        default the open time of the candle now open on the exchange)."""
        wanted = list(dict.fromkeys(symbols)) if symbols is not None else self.known_symbols()
        starts = self.starts(wanted, start_date)
        end_ms = self.grid.floor(to_ms(end_date)) if end_date is not None else self._end_ms()
        stats = [s for sym in wanted for s in self.lake.partition_stats(self.interval, sym)]
        stats = [s for s in stats if s.rows]
        storage = self.lake.storage
        query = _GapQuery(
            self.grid, stats, storage.fsspec_filesystem() if isinstance(storage, ObjectStorage) else None
        )
        rows = query.run()
        listings = self._listings(starts, rows.bounds)
        windows = self.meta.windows(self.interval, wanted)
        now_ms = int(self._clock() * 1000)
        gaps: list[Gap] = []
        spans: dict[str, SymbolSpan] = {}
        for symbol in wanted:
            bounds = rows.bounds.get(symbol)
            first = self._expected_first(starts.get(symbol), listings.get(symbol), bounds)
            last = self.grid.index(end_ms) - 1
            if bounds is not None and last - bounds[1] > max(1, DAY_MS // self.grid.nominal_ms):
                last = min(last, self._exchange_last(symbol, last))
            holes = _position_holes(first, last, bounds, rows.holes.get(symbol, []))
            for lo, hi, position in holes:
                gaps.extend(self._classify(symbol, lo, hi, position, windows, now_ms))
            for kind, first_ms, last_ms, count in rows.anomalies.get(symbol, []):
                gaps.append(
                    Gap(symbol, self.interval, kind, "internal", first_ms, last_ms, count,  # type: ignore[arg-type]
                        exchange=self.lake.exchange)
                )  # fmt: skip
            spans[symbol] = SymbolSpan(
                symbol, first, last if first is not None else None,
                bounds[0] if bounds else None, bounds[1] if bounds else None,
                rows.present.get(symbol, 0), rows.present_by_month.get(symbol, {}),
            )  # fmt: skip
        gaps.sort(key=lambda g: (g.symbol, g.start_ms, g.kind))
        return GapScan(self.interval, end_ms, gaps, spans, query.scanned, query.skipped, self.lake.exchange)

    def coverage(
        self,
        symbols: Iterable[str] | None = None,
        start_date: date | datetime | str | int | None = None,
        end_date: date | datetime | str | int | None = None,
    ) -> list[dict[str, Any]]:
        """Completeness per symbol and month: expected and present candles and the percentage."""
        return coverage_rows(self.scan(symbols, start_date, end_date))

    def known_symbols(self) -> list[str]:
        """Symbols the lake holds for this interval: with stored candles, or with a recorded
        start (a collection that has not stored anything yet), sorted."""
        return sorted(set(self.lake.symbols(self.interval)) | set(self.meta.starts(self.interval)))

    def starts(
        self, symbols: Iterable[str], start_date: date | datetime | str | int | None = None
    ) -> dict[str, int]:
        """Each symbol's start, the one definition every command shares: ``start_date`` when
        given (else the detector's), otherwise the start its collection recorded; a symbol with
        neither has none (its expected range begins at its first stored candle)."""
        explicit = to_ms(start_date) if start_date is not None else self.start_ms
        if explicit is not None:
            return dict.fromkeys(symbols, explicit)
        recorded = self.meta.starts(self.interval)
        return {s: recorded[s] for s in symbols if s in recorded}

    # -- helpers ---------------------------------------------------------------------------

    def _end_ms(self) -> int:
        """Exclusive end of the expected range: the open time of the candle open right now, by
        the exchange's clock when there is a client (an exchange that cannot be asked is an
        error, never a silent switch to this machine's clock), else by ``clock``.

        Raises:
            SourceError: the exchange did not tell its time.
        """
        if self.client is not None:
            try:
                return self.grid.floor(self.client.get_server_time_ms())
            except Interrupted:
                raise
            except CryptolakeError as exc:
                raise SourceError(
                    f"cannot judge forward gaps without the exchange's clock ({exc}); try again, "
                    "or use --offline to judge them by this machine's clock"
                ) from exc
        return self.grid.floor(int(self._clock() * 1000))

    def _exchange_last(self, symbol: str, last: int) -> int:
        """The grid index of the symbol's latest candle on the exchange, when the lake's data
        stops more than a day ago: a delisted or halted symbol expects nothing after it."""
        if self.client is None:
            return last
        try:
            latest = self.client.last_open_time(symbol, self.interval)
        except Interrupted:
            raise
        except CryptolakeError:
            return last
        return last if latest is None else self.grid.index(latest)

    def _listings(self, starts: dict[str, int], bounds: dict[str, tuple[int, int]]) -> dict[str, int]:
        """First candle per symbol: recorded in the lake, else asked of the exchange when the
        stored data starts after the symbol's start (and the client is there)."""
        known = self.meta.listings(self.interval)
        for symbol, start_ms in starts.items():
            if symbol in known or self.client is None:
                continue
            stored = bounds.get(symbol)
            if stored is not None and stored[0] <= self.grid.index(self.grid.ceil(start_ms)):
                continue
            try:
                first = self.client.first_open_time(symbol, self.interval)
            except Interrupted:
                raise
            except CryptolakeError:
                continue
            if first is not None:
                known[symbol] = first
        return known

    def _expected_first(
        self, start_ms: int | None, listing_ms: int | None, bounds: tuple[int, int] | None
    ) -> int | None:
        """From the start or the first stored candle, whichever is earlier; never before the
        listing (unless something is stored there)."""
        if start_ms is None:
            return bounds[0] if bounds else None
        first = self.grid.index(self.grid.ceil(start_ms))
        if listing_ms is not None:
            first = max(first, self.grid.index(self.grid.ceil(listing_ms)))
        return first if bounds is None else min(first, bounds[0])

    def _classify(
        self, symbol: str, lo: int, hi: int, position: Position, windows: list[Window], now_ms: int
    ) -> list[Gap]:
        known = [
            (self.grid.index(w.start_ms), self.grid.index(w.end_ms), w) for w in windows if w.symbol == symbol
        ]
        recheck_ms = self.exchange_gap_recheck_days * DAY_MS
        out = []
        for a, b, window in split_by_windows(lo, hi, [(wa, wb, w) for wa, wb, w in known]):
            kind: GapKind = "missing" if window is None else window.kind
            due = bool(
                window and kind in RECHECKED_KINDS and recheck_ms and now_ms - window.checked_ms >= recheck_ms
            )
            error = window.error if window is not None and kind == "failed" else None
            out.append(
                Gap(
                    symbol,
                    self.interval,
                    kind,
                    position,
                    self.grid.at(a),
                    self.grid.at(b),
                    b - a + 1,
                    due,
                    error,
                    self.lake.exchange,
                )
            )
        return out


# -- pure logic (property-tested) -----------------------------------------------------------


def missing_runs(present: Iterable[int], first: int, last: int) -> list[tuple[int, int]]:
    """Runs ``(lo, hi)`` (inclusive) of slots in ``[first, last]`` not in ``present``."""
    runs, cursor = [], first
    for idx in sorted(set(present)):
        if idx < cursor:
            continue
        if idx > last:
            break
        if idx > cursor:
            runs.append((cursor, idx - 1))
        cursor = idx + 1
    if cursor <= last:
        runs.append((cursor, last))
    return runs


def split_by_windows(lo: int, hi: int, windows: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    """Split ``[lo, hi]`` into pieces labelled by the window covering them (None: no window).

    Where windows overlap, the one listed last wins.
    """
    cuts = {lo, hi + 1}
    for a, b, _ in windows:
        if a <= hi and b >= lo:
            cuts.update((max(a, lo), min(b, hi) + 1))
    edges = sorted(cuts)
    pieces: list[tuple[int, int, Any]] = []
    for a, b in zip(edges, edges[1:], strict=False):
        label = None
        for wa, wb, value in windows:
            if wa <= a and b - 1 <= wb:
                label = value
        if pieces and pieces[-1][2] is label and pieces[-1][1] == a - 1:
            pieces[-1] = (pieces[-1][0], b - 1, label)
        else:
            pieces.append((a, b - 1, label))
    return pieces


def _position_holes(
    first: int | None, last: int, bounds: tuple[int, int] | None, holes: list[tuple[int, int]]
) -> list[tuple[int, int, Position]]:
    if first is None or first > last:
        return []
    if bounds is None:
        return [(first, last, "backward")]
    stored_first, stored_last = bounds
    out: list[tuple[int, int, Position]] = []
    if first < stored_first:
        out.append((first, min(stored_first - 1, last), "backward"))
    for lo, hi in holes:
        lo, hi = max(lo, first), min(hi, last)
        if lo <= hi:
            out.append((lo, hi, "internal"))
    if stored_last < last:
        out.append((max(stored_last + 1, first), last, "forward"))
    return out


def summarize(result: GapScan, symbol: str) -> dict[str, Any]:
    """The collection summary of one symbol from a scan."""
    span = result.spans.get(symbol)
    grid = Interval(result.interval)
    expected = 0
    if span is not None and span.expected_first is not None and span.expected_last is not None:
        expected = max(0, span.expected_last - span.expected_first + 1)
    gaps = [g for g in result.gaps if g.symbol == symbol]
    by_kind: dict[str, dict[str, int]] = {}
    for gap in gaps:
        entry = by_kind.setdefault(gap.kind, {"gaps": 0, "candles": 0})
        entry["gaps"] += 1
        entry["candles"] += gap.count
    present = span.present if span is not None else 0
    in_range = expected - sum(g.count for g in gaps if g.kind in SLOT_KINDS)
    return {
        "symbol": symbol,
        "interval": result.interval,
        "first_candle": iso(grid.at(span.stored_first)) if span and span.stored_first is not None else None,
        "last_candle": iso(grid.at(span.stored_last)) if span and span.stored_last is not None else None,
        "expected_candles": expected,
        "present_candles": present,
        "completeness_percent": percent(in_range, expected, 4),
        "gaps_by_kind": by_kind,
        "failed_windows": [g.to_dict() for g in gaps if g.kind == "failed"],
        "judged_at": iso(result.end_ms),
    }


def percent(part: int, whole: int, digits: int) -> float:
    """``100 * part / whole`` cut (never rounded up) to ``digits`` decimals: 43,199 of 43,200 is
    99.99, not 100.0, so "< 100" finds every incomplete month. 100.0 when ``whole`` is 0."""
    if whole <= 0:
        return 100.0
    scale = 10**digits
    return min(100 * scale * max(part, 0) // whole, 100 * scale) / scale


def coverage_rows(result: GapScan) -> list[dict[str, Any]]:
    """Per symbol and month: expected slots, present candles, slots without trades (an exchange
    that sends no candle for them), completeness (%): present and no-trade slots of expected."""
    grid = Interval(result.interval)
    quiet: dict[tuple[str, str], int] = {}
    for gap in result.gaps:
        if gap.kind != "no_trades":
            continue
        lo, hi = gap.start_ms, grid.next_open(gap.end_ms)
        month_ms = _month_floor(lo)
        while month_ms < hi:
            next_ms = _next_month(month_ms)
            key = (gap.symbol, iso(month_ms)[:7])
            quiet[key] = quiet.get(key, 0) + grid.count(max(month_ms, lo), min(next_ms, hi))
            month_ms = next_ms
    out = []
    for symbol, span in sorted(result.spans.items()):
        if (
            span.expected_first is None
            or span.expected_last is None
            or span.expected_first > span.expected_last
        ):
            continue
        lo_ms, hi_ms = grid.at(span.expected_first), grid.at(span.expected_last + 1)
        month_ms = _month_floor(lo_ms)
        while month_ms < hi_ms:
            next_ms = _next_month(month_ms)
            expected = grid.count(max(month_ms, lo_ms), min(next_ms, hi_ms))
            month = iso(month_ms)[:7]
            present = span.present_by_month.get(month, 0)
            no_trades = quiet.get((symbol, month), 0)
            if expected:
                out.append({
                    "exchange": result.exchange, "symbol": symbol, "interval": result.interval, "month": month,
                    "expected": expected, "present": present, "no_trades": no_trades,
                    "completeness_percent": percent(present + no_trades, expected, 2),
                })  # fmt: skip
            month_ms = next_ms
    return out


def save_report(lake: Lake, result: GapScan) -> None:
    """Store a scan as ``<lake>/_meta/gaps.parquet`` and ``coverage.parquet`` (the DuckDB views
    ``gaps`` and ``coverage``), replacing the rows of the scanned interval and symbols."""
    judged = {"judged_at": result.end_ms}
    gaps = [{**g.to_dict(), "start_time": g.start_ms, "end_time": g.end_ms, **judged} for g in result.gaps]
    coverage = [{**row, **judged} for row in coverage_rows(result)]
    times = ("start_time", "end_time", "judged_at")
    gap_schema = {
        "exchange": pl.String,
        "symbol": pl.String,
        "interval": pl.String,
        "kind": pl.String,
        "position": pl.String,
        "start_time": pl.Int64,
        "end_time": pl.Int64,
        "count": pl.Int64,
        "judged_at": pl.Int64,
    }
    cov_schema = {
        "exchange": pl.String,
        "symbol": pl.String,
        "interval": pl.String,
        "month": pl.String,
        "expected": pl.Int64,
        "present": pl.Int64,
        "no_trades": pl.Int64,
        "completeness_percent": pl.Float64,
        "judged_at": pl.Int64,
    }
    for name, rows, schema, stamp in (
        ("gaps.parquet", gaps, gap_schema, times),
        ("coverage.parquet", coverage, cov_schema, ("judged_at",)),
    ):
        frame = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")
        frame = frame.with_columns(pl.col(c).cast(pl.Datetime("ms", "UTC")) for c in stamp)
        keep = ~(
            (pl.col("exchange") == result.exchange)
            & (pl.col("interval") == result.interval)
            & pl.col("symbol").is_in(list(result.spans))
        )

        def replace(data: bytes | None, frame: pl.DataFrame = frame, keep: pl.Expr = keep) -> bytes:
            if data is not None:
                try:
                    old = with_exchange(pl.read_parquet(io.BytesIO(data)))
                    frame = pl.concat([old.filter(keep), frame]) if old.schema == frame.schema else frame
                except pl.exceptions.PolarsError:
                    pass  # a torn or foreign report: the new one replaces it
            buffer = io.BytesIO()
            frame.sort("exchange", "interval", "symbol").write_parquet(buffer, compression="zstd")
            return buffer.getvalue()

        update_object(lake.storage, f"{META_DIR}/{name}", replace)


def forget_report(lake: Lake, interval: str, symbol: str) -> int:
    """Drop one symbol's rows from the stored gap report (``gaps`` and ``coverage``); returns how
    many rows went."""
    return sum(
        drop_report_rows(lake, name, interval, symbol) for name in ("gaps.parquet", "coverage.parquet")
    )


def drop_report_rows(lake: Lake, name: str, interval: str, symbol: str) -> int:
    """Drop one symbol's rows of ``interval`` from the report ``<lake>/_meta/<name>`` (read,
    change, conditional put); returns how many went.

    Raises:
        LakeError: the report cannot be read (move it aside).
    """
    path = f"{META_DIR}/{name}"
    hit = (
        (pl.col("exchange") == lake.exchange)
        & (pl.col("interval") == interval)
        & (pl.col("symbol") == symbol)
    )
    counted = [0]

    def drop(data: bytes | None) -> bytes | None:
        if data is None:
            return None
        try:
            frame = with_exchange(pl.read_parquet(io.BytesIO(data)))
        except pl.exceptions.PolarsError as exc:
            raise LakeError(
                f"cannot read the report {lake.storage.url}/{path} ({exc}); move it aside"
            ) from exc
        counted[0] = frame.filter(hit).height
        if not counted[0]:
            return None
        buffer = io.BytesIO()
        frame.filter(~hit).write_parquet(buffer, compression="zstd")
        return buffer.getvalue()

    update_object(lake.storage, path, drop)
    return counted[0]


def _month_floor(t_ms: int) -> int:
    return Interval("1M").floor(t_ms)


def _next_month(t_ms: int) -> int:
    return Interval("1M").next_open(t_ms)


# -- the query ------------------------------------------------------------------------------


@dataclass
class _QueryRows:
    bounds: dict[str, tuple[int, int]]
    holes: dict[str, list[tuple[int, int]]]
    anomalies: dict[str, list[tuple[str, int, int, int]]]
    present: dict[str, int]
    present_by_month: dict[str, dict[str, int]]


class _GapQuery:
    """One DuckDB query over footer ranges (contiguous partitions) and scanned partitions."""

    def __init__(self, grid: Interval, stats: list[PartitionStats], filesystem: Any = None) -> None:
        self.grid = grid
        self.filesystem = filesystem  # an fsspec filesystem for an object store's URLs
        self.contiguous = [s for s in stats if s.is_contiguous(grid)]
        self.to_scan = [s for s in stats if not s.is_contiguous(grid)]
        # Files cryptolake wrote hold each open time once; only the others can have duplicates.
        self.trusted = [s for s in self.to_scan if s.off_grid_rows is not None]
        self.foreign = [s for s in self.to_scan if s.off_grid_rows is None]
        self.scanned = len(self.to_scan)
        self.skipped = len(self.contiguous)

    def run(self) -> _QueryRows:
        rows = _QueryRows({}, {}, {}, {}, {})
        if not self.contiguous and not self.to_scan:
            return rows
        footers = pa.table({
            "symbol": pa.array([s.symbol for s in self.contiguous], pa.string()),
            "month": pa.array([s.month for s in self.contiguous], pa.string()),
            "lo": pa.array([self.grid.index(s.first_open_ms) for s in self.contiguous], pa.int64()),  # type: ignore[arg-type]
            "hi": pa.array([self.grid.index(s.last_open_ms) for s in self.contiguous], pa.int64()),  # type: ignore[arg-type]
        })  # fmt: skip
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            if self.filesystem is not None and self.to_scan:
                con.register_filesystem(self.filesystem)
            con.register("footers", footers)
            params = [[str(s.path) for s in part] for part in (self.trusted, self.foreign) if part]
            result = con.execute(self._sql(), params)
            records = result.fetchall()
        except duckdb.Error as exc:
            raise LakeError(f"gap detection failed: {exc}") from exc
        finally:
            con.close()
        for symbol, kind, month, lo, hi, count in records:
            if kind == "hole":
                rows.holes.setdefault(symbol, []).append((lo, hi))
            elif kind == "bounds":
                rows.bounds[symbol] = (lo, hi)
            elif kind == "present":
                by_month = rows.present_by_month.setdefault(symbol, {})
                by_month[month] = by_month.get(month, 0) + count  # data.parquet and stream files
                rows.present[symbol] = rows.present.get(symbol, 0) + count
            else:
                rows.anomalies.setdefault(symbol, []).append((kind, lo, hi, count))
        for symbol in rows.holes:
            rows.holes[symbol].sort()
        return rows

    def _sql(self) -> str:
        time_ms = "epoch_ms(open_time)"
        if self.grid.is_monthly:
            index = "(year(open_time) * 12 + month(open_time) - 1)"
            on_grid = "(open_time = date_trunc('month', open_time))"
        else:
            index = f"(({time_ms} - {self.grid.origin_ms}) // {self.grid.fixed_ms})"
            on_grid = f"(({time_ms} - {self.grid.origin_ms}) % {self.grid.fixed_ms} = 0)"
        empty = (
            "SELECT NULL::VARCHAR AS symbol, NULL::VARCHAR AS month, 0::BIGINT AS t, 0::BIGINT AS idx, "
            "false AS on_grid, false AS in_month WHERE false"
        )
        sources, n = [], 0
        for files, in_month in (
            (self.trusted, "true"),
            (self.foreign, "strftime(open_time, '%Y-%m') = month"),
        ):
            if files:  # cryptolake's own files hold only their month; another tool's may not
                n += 1
                sources.append(f"""
                SELECT symbol, month, {time_ms} AS t, {index} AS idx, {on_grid} AS on_grid, {in_month} AS in_month
                FROM read_parquet(${n}, hive_partitioning = true, hive_types_autocast = false)""")
            else:
                sources.append(empty)
        trusted, foreign = sources
        return f"""
        WITH trusted AS ({trusted}),
        foreign_rows AS ({foreign}),
        scanned AS (SELECT * FROM trusted UNION ALL SELECT * FROM foreign_rows),
        slots AS (
            SELECT symbol, month, idx FROM trusted WHERE on_grid
            UNION ALL SELECT DISTINCT symbol, month, idx FROM foreign_rows WHERE on_grid AND in_month
        ),
        runs AS (
            SELECT symbol, lo, hi FROM footers
            UNION ALL SELECT symbol, idx, idx FROM slots
        ),
        ordered AS (
            SELECT symbol, lo, hi, max(hi) OVER (
                PARTITION BY symbol ORDER BY lo, hi ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
            ) AS prev_hi
            FROM runs
        )
        SELECT symbol, 'hole', NULL, prev_hi + 1, lo - 1, lo - prev_hi - 1 FROM ordered WHERE lo > prev_hi + 1
        UNION ALL SELECT symbol, 'bounds', NULL, min(lo), max(hi), NULL FROM runs GROUP BY symbol
        UNION ALL SELECT symbol, 'present', month, NULL, NULL, hi - lo + 1 FROM footers
        UNION ALL SELECT symbol, 'present', month, NULL, NULL, count(*) FROM slots GROUP BY symbol, month
        UNION ALL SELECT symbol, 'off_grid', NULL, t, t, count(*) FROM scanned WHERE NOT on_grid AND in_month
            GROUP BY symbol, t
        UNION ALL SELECT symbol, 'duplicate', NULL, t, t, count(*) - 1 FROM foreign_rows WHERE on_grid AND in_month
            GROUP BY symbol, t HAVING count(*) > 1
        UNION ALL SELECT symbol, 'misplaced', month, min(t), max(t), count(*) FROM foreign_rows WHERE NOT in_month
            GROUP BY symbol, month
        """
