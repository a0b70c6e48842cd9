"""What the lake knows besides candles: fetch windows and listings, as Parquet under ``_meta/``.

- ``_meta/windows.parquet``: windows of candle slots that are missing for a known reason.
  ``exchange_gap``: the exchange returned no candles there although the symbol traded before and
  after (an outage), so refetching is pointless until the re-check policy says otherwise.
  ``failed``: a fetch of the window failed; it is retried on the next run and listed until then.
- ``_meta/listings.parquet``: each symbol's first candle on the exchange, per interval, so gap
  detection never expects candles from before a listing, even offline.
- ``_meta/starts.parquet``: the earliest start date any collection asked for, per symbol and
  interval. A symbol's expected range runs from it (or its first stored candle, if earlier), so
  every command judges a lake by the history it was collected for, not by today's default.

- ``_meta/sources.parquet``: where each partition's candles came from: one row per Binance
  archive file merged into it (its path and SHA-256, so a re-run downloads nothing already
  merged and ``verify`` finds files re-uploaded since), one per archive file that could not be
  used (why), and one summing the candles fetched over REST.

All are small, rewritten whole and atomically; plain DuckDB reads them like the candles.
Times are the first and the last open time of the window (both inclusive), in UTC.
"""

from __future__ import annotations

import functools
import io
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from cryptolake.errors import LakeError, VersionConflict
from cryptolake.lake import layout
from cryptolake.lake.storage import MAX_ATTEMPTS, Storage, open_storage
from cryptolake.schema import Interval
from cryptolake.timeutils import to_ms

WindowKind = Literal["exchange_gap", "no_trades", "failed"]
_TIMES = ("start_time", "end_time", "recorded_at", "checked_at")
WINDOWS_FILE = "windows.parquet"
LISTINGS_FILE = "listings.parquet"
STARTS_FILE = "starts.parquet"
SOURCES_FILE = "sources.parquet"
MARKETS_FILE = "markets.parquet"
_TIME = pl.Datetime("ms", "UTC")
WINDOW_SCHEMA = pl.Schema({
    "exchange": pl.String(), "interval": pl.String(), "symbol": pl.String(), "kind": pl.String(),
    "start_time": _TIME, "end_time": _TIME, "recorded_at": _TIME, "checked_at": _TIME,
    "attempts": pl.Int64(), "error": pl.String(),
})  # fmt: skip
LISTING_SCHEMA = pl.Schema({
    "exchange": pl.String(), "interval": pl.String(), "symbol": pl.String(), "first_open_time": _TIME, "checked_at": _TIME,
})  # fmt: skip
SOURCE_SCHEMA = pl.Schema({
    "exchange": pl.String(), "interval": pl.String(), "symbol": pl.String(), "month": pl.String(), "source": pl.String(),
    "file": pl.String(), "sha256": pl.String(), "rows": pl.Int64(), "off_grid": pl.Int64(),
    "recorded_at": _TIME, "note": pl.String(),
})  # fmt: skip
MARKET_SCHEMA = pl.Schema({
    "exchange": pl.String(), "symbol": pl.String(), "base": pl.String(), "quote": pl.String(),
    "status": pl.String(), "listed": _TIME, "delisted": _TIME, "checked_at": _TIME,
})  # fmt: skip
START_SCHEMA = pl.Schema({
    "exchange": pl.String(), "interval": pl.String(), "symbol": pl.String(), "start_time": _TIME, "recorded_at": _TIME,
})  # fmt: skip


_T = TypeVar("_T")


def _retried(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a read-change-write of the records again when another writer changed a file between
    this one's read and its write (a conditional put lost): nobody's record is lost."""

    @functools.wraps(method)
    def retrying(self: LakeMeta, *args: Any, **kwargs: Any) -> _T:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return method(self, *args, **kwargs)
            except VersionConflict:
                time.sleep(min(0.5, 0.005 * 2**attempt) * random.random())
        raise LakeError(f"gave up recording lake metadata after {MAX_ATTEMPTS} lost races with other writers")

    return retrying


@dataclass(frozen=True, order=True)
class Window:
    """Candle slots ``[start_ms, end_ms]`` (open times, inclusive) missing for a known reason."""

    interval: str
    symbol: str
    kind: WindowKind
    start_ms: int
    end_ms: int
    recorded_ms: int
    checked_ms: int
    attempts: int = 1
    error: str | None = None

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        return self.start_ms <= end_ms and start_ms <= self.end_ms


class LakeMeta:
    """Reads and rewrites the lake's window and listing records (thread-safe in one process).

    Every record method reads a file, changes it and puts it back only if it is still the
    version read (:meth:`Storage.put_if`); when another writer got there first, the method runs
    again on the new version (:func:`_retried`), so writers on several hosts sharing a lake on
    object storage never lose each other's records. On a folder, writers also hold the lake's
    writer lock.
    """

    def __init__(self, root: str | Path | Storage, exchange: str = layout.DEFAULT_EXCHANGE) -> None:
        self.storage: Storage = open_storage(root) if isinstance(root, str | Path) else root
        self.exchange = layout.validate_exchange(exchange)
        self._lock = threading.Lock()
        # The last read of each file, by its version: a collection settles its windows once per
        # partition commit, and the file rarely changes.
        self._cache: dict[str, tuple[str, pl.DataFrame, dict[tuple[str, str, str], list[Any]]]] = {}
        # The version of each file this thread read last: its write must replace that version.
        self._read_versions = threading.local()

    windows_path = f"{layout.META_DIR}/{WINDOWS_FILE}"
    listings_path = f"{layout.META_DIR}/{LISTINGS_FILE}"
    starts_path = f"{layout.META_DIR}/{STARTS_FILE}"
    sources_path = f"{layout.META_DIR}/{SOURCES_FILE}"
    markets_path = f"{layout.META_DIR}/{MARKETS_FILE}"

    # -- windows -------------------------------------------------------------------------

    def windows(
        self, interval: str, symbols: Iterable[str] | None = None, kind: WindowKind | None = None
    ) -> list[Window]:
        """Recorded windows of ``interval`` (optionally of some symbols or one kind), sorted."""
        frame = self._read(self.windows_path, WINDOW_SCHEMA).filter(self._key(interval))
        if symbols is not None:
            frame = frame.filter(pl.col("symbol").is_in(list(symbols)))
        if kind is not None:
            frame = frame.filter(pl.col("kind") == kind)
        return sorted(_window(row) for row in frame.iter_rows(named=True))

    @_retried
    def record_window(self, window: Window) -> None:
        """Add a window; one of the same kind over the same slots is replaced (attempts add up)."""
        with self._lock:
            frame = self._read(self.windows_path, WINDOW_SCHEMA)
            same = (
                self._key(window.interval) & (pl.col("symbol") == window.symbol)
                & (pl.col("kind") == window.kind) & (pl.col("start_time") == _ms(window.start_ms))
                & (pl.col("end_time") == _ms(window.end_ms))
            )  # fmt: skip
            previous = frame.filter(same)
            attempts = window.attempts
            recorded = window.recorded_ms
            if previous.height:
                attempts += int(previous["attempts"].max() or 0)  # type: ignore[arg-type]
                recorded = min(recorded, int(previous["recorded_at"].dt.epoch("ms").min()))  # type: ignore[arg-type]
            row = pl.DataFrame([{
                "exchange": self.exchange, "interval": window.interval, "symbol": window.symbol, "kind": window.kind,
                "start_time": window.start_ms, "end_time": window.end_ms, "recorded_at": recorded,
                "checked_at": window.checked_ms, "attempts": attempts, "error": window.error,
            }]).with_columns(pl.col(c).cast(pl.Int64).cast(_TIME) for c in (
                "start_time", "end_time", "recorded_at", "checked_at"))  # fmt: skip
            self._write(self.windows_path, pl.concat([frame.filter(~same), row.cast(WINDOW_SCHEMA)]))

    @_retried
    def forget_windows(
        self,
        interval: str,
        symbol: str,
        kind: WindowKind,
        start_ms: int,
        end_ms: int,
        *,
        within: bool = False,
    ) -> list[Window]:
        """Drop ``kind`` windows of a symbol that overlap ``[start_ms, end_ms]`` (with ``within``:
        that lie inside it); returns them."""
        with self._lock:
            frame = self._read(self.windows_path, WINDOW_SCHEMA)
            lo, hi = (
                (pl.col("start_time"), pl.col("end_time"))
                if within
                else (pl.col("end_time"), pl.col("start_time"))
            )
            hit = (
                self._key(interval) & (pl.col("symbol") == symbol) & (pl.col("kind") == kind)
                & (lo >= _ms(start_ms)) & (hi <= _ms(end_ms))
            )  # fmt: skip
            dropped = frame.filter(hit)
            if dropped.height:
                self._write(self.windows_path, frame.filter(~hit))
            return [_window(row) for row in dropped.iter_rows(named=True)]

    @_retried
    def settle_windows(
        self,
        interval: str,
        symbol: str,
        start_ms: int,
        end_ms: int,
        outages: list[tuple[int, int]],
        now_ms: int,
        kind: WindowKind = "exchange_gap",
    ) -> None:
        """Record what one successful fetch of ``[start_ms, end_ms]`` proved, in one rewrite: its
        ``failed`` windows are gone, its old ``kind`` windows (``exchange_gap``; ``no_trades``
        on an exchange that sends no candle for a period without trades) are replaced by
        ``outages`` (``(first, last open time)`` runs found empty). An outage found empty again keeps its
        first record time and counts one more check (``attempts``)."""
        with self._lock:
            frame = self._read(self.windows_path, WINDOW_SCHEMA)
            if not outages and not any(
                start_ms <= end and start <= end_ms
                if was == "failed"
                else start_ms <= start and end <= end_ms
                for was, start, end in self._windows_index(self.windows_path).get(
                    (self.exchange, interval, symbol), ()
                )
                if was in ("failed", kind)
            ):
                return  # no record the fetch settles and nothing found: nothing to rewrite
            mine = self._key(interval) & (pl.col("symbol") == symbol)
            failed = (
                mine
                & (pl.col("kind") == "failed")
                & (pl.col("end_time") >= _ms(start_ms))
                & (pl.col("start_time") <= _ms(end_ms))
            )
            gaps = (
                mine
                & (pl.col("kind") == kind)
                & (pl.col("start_time") >= _ms(start_ms))
                & (pl.col("end_time") <= _ms(end_ms))
            )
            old = {(w.start_ms, w.end_ms): w for w in map(_window, frame.filter(gaps).iter_rows(named=True))}
            if not outages and frame.filter(failed | gaps).is_empty():
                return
            grid = Interval(interval)
            neighbours = [
                w
                for w in map(
                    _window,
                    frame.filter(mine & (pl.col("kind") == kind) & ~gaps).iter_rows(named=True),
                )
            ]
            merged: list[Window] = []
            rows = []
            for first, last in outages:
                previous = old.get((first, last))
                recorded, attempts = (
                    (previous.recorded_ms, previous.attempts + 1) if previous else (now_ms, 1)
                )
                # One outage cut by a batch edge is found in two fetches: the halves join up.
                for w in neighbours:
                    if grid.next_open(w.end_ms) == first or grid.next_open(last) == w.start_ms:
                        first, last = min(first, w.start_ms), max(last, w.end_ms)
                        recorded, attempts = min(recorded, w.recorded_ms), max(attempts, w.attempts)
                        merged.append(w)
                rows.append(
                    {
                        "exchange": self.exchange,
                        "interval": interval,
                        "symbol": symbol,
                        "kind": kind,
                        "start_time": first,
                        "end_time": last,
                        "recorded_at": recorded,
                        "checked_at": now_ms,
                        "attempts": attempts,
                        "error": None,
                    }
                )
            for w in merged:
                gaps = gaps | (
                    mine
                    & (pl.col("kind") == kind)
                    & (pl.col("start_time") == _ms(w.start_ms))
                    & (pl.col("end_time") == _ms(w.end_ms))
                )
            added = pl.DataFrame(
                rows, schema={**WINDOW_SCHEMA, **{c: pl.Int64() for c in _TIMES}}, orient="row"
            )
            added = added.with_columns(pl.col(c).cast(_TIME) for c in _TIMES).cast(WINDOW_SCHEMA)
            self._write(self.windows_path, pl.concat([frame.filter(~(failed | gaps)), added]))

    # -- listings ------------------------------------------------------------------------

    def listings(self, interval: str) -> dict[str, int]:
        """``{symbol: first open time (ms)}`` recorded for ``interval``."""
        frame = self._read(self.listings_path, LISTING_SCHEMA).filter(self._key(interval))
        return dict(
            zip(frame["symbol"].to_list(), frame["first_open_time"].dt.epoch("ms").to_list(), strict=True)
        )

    @_retried
    def record_listing(self, interval: str, symbol: str, first_open_ms: int, checked_ms: int) -> None:
        """Remember a symbol's first candle for ``interval`` (replacing an older record)."""
        with self._lock:
            frame = self._read(self.listings_path, LISTING_SCHEMA)
            same = self._key(interval) & (pl.col("symbol") == symbol)
            row = pl.DataFrame(
                {
                    "exchange": [self.exchange],
                    "interval": [interval],
                    "symbol": [symbol],
                    "first_open_time": [first_open_ms],
                    "checked_at": [checked_ms],
                }
            ).with_columns(pl.col("first_open_time", "checked_at").cast(_TIME))
            self._write(self.listings_path, pl.concat([frame.filter(~same), row.cast(LISTING_SCHEMA)]))

    # -- starts --------------------------------------------------------------------------

    def starts(self, interval: str) -> dict[str, int]:
        """``{symbol: start (ms)}``: the earliest start a collection asked for, per symbol."""
        frame = self._read(self.starts_path, START_SCHEMA).filter(self._key(interval))
        return dict(zip(frame["symbol"].to_list(), frame["start_time"].dt.epoch("ms").to_list(), strict=True))

    @_retried
    def record_start(self, interval: str, symbol: str, start_ms: int, recorded_ms: int) -> None:
        """Remember that ``symbol``'s history is wanted from ``start_ms`` (an earlier record wins)."""
        with self._lock:
            frame = self._read(self.starts_path, START_SCHEMA)
            same = self._key(interval) & (pl.col("symbol") == symbol)
            previous = frame.filter(same)["start_time"].dt.epoch("ms").to_list()
            if previous and min(previous) <= start_ms:
                return
            row = pl.DataFrame(
                {
                    "exchange": [self.exchange],
                    "interval": [interval],
                    "symbol": [symbol],
                    "start_time": [start_ms],
                    "recorded_at": [recorded_ms],
                }
            ).with_columns(pl.col("start_time", "recorded_at").cast(_TIME))
            self._write(self.starts_path, pl.concat([frame.filter(~same), row.cast(START_SCHEMA)]))

    # -- sources -------------------------------------------------------------------------

    def sources(self, interval: str, symbols: Iterable[str] | None = None) -> pl.DataFrame:
        """The source records of ``interval`` (optionally of some symbols), one row each:
        interval, symbol, month, source (``archive``, ``archive_rejected``, ``rest``), file,
        sha256, rows, off_grid, recorded_at, note."""
        frame = self._read(self.sources_path, SOURCE_SCHEMA).filter(self._key(interval))
        if symbols is not None:
            frame = frame.filter(pl.col("symbol").is_in(list(symbols)))
        return frame.sort("symbol", "month", "source", "file")

    def merged_files(
        self, interval: str, months: dict[str, set[str]] | None = None
    ) -> dict[str, frozenset[str]]:
        """``{symbol: archive file paths merged}`` for ``interval``; with ``months`` (the
        partitions that exist, by symbol), only files of partitions still there."""
        frame = self.sources(interval).filter(pl.col("source") == "archive")
        out: dict[str, set[str]] = {}
        rows = zip(frame["symbol"].to_list(), frame["month"].to_list(), frame["file"].to_list(), strict=True)
        for symbol, month, key in rows:
            if months is None or month in months.get(symbol, ()):
                out.setdefault(symbol, set()).add(key)
        return {symbol: frozenset(keys) for symbol, keys in out.items()}

    @_retried
    def record_sources(
        self, interval: str, symbol: str, month: str, records: Iterable[Any], recorded_ms: int
    ) -> None:
        """Add where some of a partition's candles came from (:class:`SourceRecord` s): an
        archive file's record replaces the one of the same file; REST rows add up."""
        records = list(records)
        if not records:
            return
        with self._lock:
            frame = self._read(self.sources_path, SOURCE_SCHEMA)
            here = self._key(interval) & (pl.col("symbol") == symbol) & (pl.col("month") == month)
            rows: list[dict[str, Any]] = []
            rest = [r for r in records if r.source == "rest"]
            if rest:
                old = frame.filter(here & (pl.col("source") == "rest"))
                before = int(old["rows"].sum()) if old.height else 0
                rows.append(
                    _source_row(
                        self.exchange,
                        interval,
                        symbol,
                        month,
                        "rest",
                        "",
                        "",
                        before + sum(r.rows for r in rest),
                        0,
                        recorded_ms,
                        "",
                    )
                )
                frame = frame.filter(~(here & (pl.col("source") == "rest")))
            files = {r.key: r for r in records if r.source != "rest" and r.key}
            if files:
                frame = frame.filter(
                    ~(here & pl.col("file").is_in(list(files)) & (pl.col("source") != "rest"))
                )
                for r in files.values():
                    rows.append(
                        _source_row(
                            self.exchange,
                            interval,
                            symbol,
                            month,
                            r.source,
                            r.key,
                            r.sha256,
                            r.rows,
                            r.off_grid,
                            recorded_ms,
                            r.note,
                        )
                    )
            added = pl.DataFrame(rows, schema={**SOURCE_SCHEMA, "recorded_at": pl.Int64()}).with_columns(
                pl.col("recorded_at").cast(_TIME)
            )
            self._write(self.sources_path, pl.concat([frame, added.cast(SOURCE_SCHEMA)]))

    # -- markets ---------------------------------------------------------------------------

    def markets(self) -> pl.DataFrame:
        """This exchange's markets as last recorded: exchange, symbol, base, quote (common
        asset names), status, listed, delisted, checked_at."""
        frame = self._read(self.markets_path, MARKET_SCHEMA)
        return frame.filter(pl.col("exchange") == self.exchange).sort("symbol")

    @_retried
    def record_markets(self, markets: Iterable[Any], checked_ms: int) -> None:
        """Replace this exchange's markets (:class:`~cryptolake.sources.base.Market` s). A
        market's listing, when the exchange does not say it, is its earliest first candle the
        lake learnt (``listings``), of any interval."""
        listed: dict[str, int] = {}
        with self._lock:
            known = self._read(self.listings_path, LISTING_SCHEMA).filter(pl.col("exchange") == self.exchange)
            for symbol, first in zip(
                known["symbol"].to_list(), known["first_open_time"].dt.epoch("ms").to_list(), strict=True
            ):
                listed[symbol] = min(first, listed.get(symbol, first))
            rows = [
                {
                    "exchange": self.exchange,
                    "symbol": m.symbol,
                    "base": m.base,
                    "quote": m.quote,
                    "status": m.status,
                    "listed": m.listed_ms if m.listed_ms is not None else listed.get(m.symbol),
                    "delisted": m.delisted_ms,
                    "checked_at": checked_ms,
                }  # fmt: skip
                for m in markets
            ]
            if not rows:
                return
            times = ("listed", "delisted", "checked_at")
            added = pl.DataFrame(
                rows, schema={**MARKET_SCHEMA, **{c: pl.Int64() for c in times}}, orient="row"
            ).with_columns(pl.col(c).cast(_TIME) for c in times)
            frame = self._read(self.markets_path, MARKET_SCHEMA)
            frame = frame.filter(pl.col("exchange") != self.exchange)
            self._write(self.markets_path, pl.concat([frame, added.cast(MARKET_SCHEMA)]))

    # -- forgetting ------------------------------------------------------------------------

    def symbols(self, interval: str) -> set[str]:
        """Symbols the metadata knows for ``interval`` (a start, a listing or a window)."""
        found: set[str] = set()
        for path, schema in (
            (self.starts_path, START_SCHEMA),
            (self.listings_path, LISTING_SCHEMA),
            (self.windows_path, WINDOW_SCHEMA),
            (self.sources_path, SOURCE_SCHEMA),
        ):
            frame = self._read(path, schema).filter(self._key(interval))
            found.update(frame["symbol"].to_list())
        return found

    @_retried
    def forget_symbol(self, interval: str, symbol: str) -> int:
        """Drop every record of ``symbol`` for ``interval`` (start, listing, windows, sources);
        returns how many records went."""
        dropped = 0
        with self._lock:
            for path, schema in (
                (self.starts_path, START_SCHEMA),
                (self.listings_path, LISTING_SCHEMA),
                (self.windows_path, WINDOW_SCHEMA),
                (self.sources_path, SOURCE_SCHEMA),
            ):
                frame = self._read(path, schema)
                hit = self._key(interval) & (pl.col("symbol") == symbol)
                count = frame.filter(hit).height
                if count:
                    self._write(path, frame.filter(~hit))
                    dropped += count
        return dropped

    # -- files ---------------------------------------------------------------------------

    def _key(self, interval: str) -> pl.Expr:
        """Rows of this exchange and ``interval``."""
        return (pl.col("exchange") == self.exchange) & (pl.col("interval") == interval)

    def _read(self, path: str, schema: pl.Schema) -> pl.DataFrame:
        versions = self._versions()
        info = self.storage.head(path)
        if info is None:
            self._cache.pop(path, None)
            versions[path] = None
            return pl.DataFrame(schema=schema)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == info.version:
            versions[path] = info.version
            return cached[1]
        read = self.storage.read(path)  # the bytes once, then parse: never a torn file
        if read is None:
            versions[path] = None
            return pl.DataFrame(schema=schema)
        data, version = read
        where = f"{self.storage.url}/{path}"
        try:
            frame = pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise LakeError(
                f"cannot read lake metadata {where} ({exc}); move it aside: cryptolake starts "
                "a new one and learns its records again"
            ) from exc
        if "exchange" in schema:
            frame = with_exchange(frame)
        if frame.schema != schema:
            raise LakeError(
                f"lake metadata {where} has columns {dict(frame.schema)}; expected {dict(schema)}; "
                "move it aside: cryptolake starts a new one and learns its records again"
            )
        keys: dict[tuple[str, str, str], list[Any]] = {}
        if "kind" in frame.columns:  # the windows file: each one's kind and slots, for a quick look
            spans = zip(
                frame["exchange"].to_list(),
                frame["interval"].to_list(),
                frame["symbol"].to_list(),
                frame["kind"].to_list(),
                frame["start_time"].dt.epoch("ms").to_list(),
                frame["end_time"].dt.epoch("ms").to_list(),
                strict=True,
            )
            for exchange, interval, symbol, kind, start, end in spans:
                keys.setdefault((exchange, interval, symbol), []).append((kind, start, end))
        self._cache[path] = (version, frame, keys)
        versions[path] = version
        return frame

    def _versions(self) -> dict[str, str | None]:
        found: dict[str, str | None] | None = getattr(self._read_versions, "versions", None)
        if found is None:
            found = self._read_versions.versions = {}
        return found

    def _windows_index(self, path: str) -> dict[tuple[str, str, str], list[Any]]:
        """``{(exchange, interval, symbol): [(kind, start ms, end ms), ...]}`` of the windows file as last
        read (after :meth:`_read`)."""
        cached = self._cache.get(path)
        return cached[2] if cached is not None else {}

    def _write(self, path: str, frame: pl.DataFrame) -> None:
        """Replace the file, only if it is still the version this thread read (else
        :class:`VersionConflict`, and the record method runs again)."""
        buffer = io.BytesIO()
        frame.sort(frame.columns[:4]).write_parquet(buffer, compression="zstd")
        self.storage.put_if(path, buffer.getvalue(), self._versions().get(path))


def with_exchange(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with an ``exchange`` column first: metadata written before the lake held other
    exchanges has none, and every record of it is Binance's."""
    if "exchange" in frame.columns:
        return frame
    return frame.select(pl.lit(layout.DEFAULT_EXCHANGE).alias("exchange"), pl.all())


def _source_row(
    exchange: str, interval: str, symbol: str, month: str, source: str, file: str, sha256: str,
    rows: int, off_grid: int, recorded_ms: int, note: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "exchange": exchange, "interval": interval, "symbol": symbol, "month": month, "source": source, "file": file,
        "sha256": sha256, "rows": rows, "off_grid": off_grid, "recorded_at": recorded_ms, "note": note,
    }  # fmt: skip


def _ms(t_ms: int) -> pl.Expr:
    return pl.lit(t_ms, dtype=pl.Int64).cast(_TIME)


def _window(row: dict) -> Window:
    return Window(
        interval=row["interval"], symbol=row["symbol"], kind=row["kind"],
        start_ms=_to_ms(row["start_time"]), end_ms=_to_ms(row["end_time"]),
        recorded_ms=_to_ms(row["recorded_at"]), checked_ms=_to_ms(row["checked_at"]),
        attempts=row["attempts"], error=row["error"],
    )  # fmt: skip


def _to_ms(value: object) -> int:
    return to_ms(value)  # type: ignore[arg-type]
