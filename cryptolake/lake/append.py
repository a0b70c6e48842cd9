"""The lake's path for small, frequent appends: streamed candles, a few at a time.

Rewriting a month partition (44,640 rows of 1m candles) for every closed candle would cost a
megabyte of writes per candle. Instead, :class:`Appender` writes each batch of new candles of a
partition as a small *stream file* beside its ``data.parquet``
(``month=<YYYY-MM>/stream-<first open ms>-<hex>.parquet``: temp file, fsync, rename, so a reader
sees all of it or none of it), and :meth:`Appender.compact` later absorbs a partition's stream
files into its ``data.parquet`` (:meth:`cryptolake.lake.Lake.compact_partition`). Readers that
glob ``**/*.parquet`` (DuckDB, polars, Spark, the lake's views) see both, and never a candle in
two files: an append leaves out candles the partition already holds, and any write of a
partition, a collection's included, absorbs its stream files.

Hold the lake's writer lock around :meth:`Appender.append` and :meth:`Appender.compact`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cryptolake.errors import LakeError
from cryptolake.lake import layout
from cryptolake.lake.store import ARROW_SCHEMA, Lake, footer_stats, write_stream_file

_KEY = "open_time"


@dataclass
class _Known:
    """What one partition holds, valid while its files are the ones listed: the open times of
    its stream files (few: compaction empties them), and of its data.parquet only the range from
    the footer, its open times read only when a candle falls inside that range (a repair), so
    that a month of 1m candles for hundreds of symbols is not held in memory."""

    signature: tuple[object, ...]
    data: Path
    data_range: tuple[int, int] | None = None
    data_times: set[int] | None = None
    stream_times: set[int] = field(default_factory=set)
    stream_files: int = 0

    def holds(self, t: int) -> bool:
        if t in self.stream_times:
            return True
        if self.data_range is None or not self.data_range[0] <= t <= self.data_range[1]:
            return False
        if self.data_times is None:
            self.data_times = set(_open_times(self.data))
        return t in self.data_times


class Appender:
    """Appends candles of one exchange and interval to a lake as stream files.

    It remembers each partition's open times between appends (re-read only when another writer
    changed the partition), so an append costs a folder listing, not a read of the month.
    """

    def __init__(self, lake: Lake, interval: str) -> None:
        self.lake = lake
        self.interval = interval
        layout.interval_dir(interval)
        self._known: dict[tuple[str, str], _Known] = {}

    def append(
        self, symbol: str, candles: pa.Table, *, source: str = "websocket", now_ms: int | None = None
    ) -> int:
        """Store the candles of ``symbol`` the lake does not hold yet (any months; each month's
        as one new stream file); returns how many were stored. Candles that break an error rule
        are quarantined instead, with ``source`` (as :meth:`Lake.write_klines` does)."""
        layout.validate_symbol(symbol)
        if candles.num_rows == 0:
            return 0
        if not candles.schema.equals(ARROW_SCHEMA):
            candles = candles.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)
        candles = self.lake.screen_candles(self.interval, symbol, candles, source, now_ms).kept
        if candles.num_rows == 0:
            return 0
        opens = candles.column(_KEY).cast(pa.int64())
        stored = 0
        months = {layout.month_of(t) for t in (pc.min(opens).as_py(), pc.max(opens).as_py())}
        if len(months) > 1:  # rare (a repair across a month's end): every month in between
            months = {layout.month_of(t) for t in opens.to_pylist()}
        for month in sorted(months):
            low, high = layout.month_bounds(month)
            in_month = candles.filter(pc.and_(pc.greater_equal(opens, low), pc.less(opens, high)))
            stored += self._append_month(symbol, month, in_month)
        return stored

    def _append_month(self, symbol: str, month: str, candles: pa.Table) -> int:
        folder = layout.partition_dir(self.lake.root, self.interval, symbol, month, self.lake.exchange)
        known = self._partition(symbol, month, folder)
        times = candles.column(_KEY).cast(pa.int64()).to_numpy()
        # One row per open time (the last one), none the partition holds, sorted.
        keep: dict[int, int] = {}
        for index, t in enumerate(times.tolist()):
            if not known.holds(t):
                keep[t] = index
        if not keep:
            return 0
        order = [keep[t] for t in sorted(keep)]
        fresh = candles.take(pa.array(order, pa.int64()))
        write_stream_file(folder, fresh)
        known.stream_times.update(keep)
        known.stream_files += 1
        known.signature = _signature(folder)
        return len(keep)

    def _partition(self, symbol: str, month: str, folder: Path) -> _Known:
        """What the partition holds: remembered, or read again if its files changed."""
        signature = _signature(folder)
        known = self._known.get((symbol, month))
        if known is not None and known.signature == signature:
            return known
        known = _Known(signature, folder / layout.DATA_FILE)
        if signature[0] is not None:
            stats = footer_stats(symbol, month, known.data)  # the commit record, else the footer
            if stats.rows and stats.first_open_ms is not None and stats.last_open_ms is not None:
                known.data_range = (stats.first_open_ms, stats.last_open_ms)
        names: tuple[str, ...] = signature[1]  # type: ignore[assignment]
        for name in names:
            times = _open_times(folder / name)
            known.stream_times.update(times)
            known.stream_files += bool(times)
        self._known[(symbol, month)] = known
        return known

    def pending(self) -> dict[tuple[str, str], int]:
        """``{(symbol, month): stream files}`` for partitions this appender wrote to and that
        still hold stream files, as far as it knows."""
        return {key: known.stream_files for key, known in self._known.items() if known.stream_files}

    def compact(self, symbol: str, month: str) -> bool:
        """Absorb the partition's stream files into its ``data.parquet``; False if it had none."""
        done = self.lake.compact_partition(self.interval, symbol, month)
        self._known.pop((symbol, month), None)
        return done


def _signature(folder: Path) -> tuple[object, ...]:
    """Identifies a partition's files: data.parquet's inode, size and change time, and the
    names of its stream files."""
    try:
        names = sorted(n for n in os.listdir(folder) if layout.is_stream_name(n))
    except FileNotFoundError:
        return (None, ())
    try:
        stat = os.stat(folder / layout.DATA_FILE)
        data: object = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    except FileNotFoundError:
        data = None
    return (data, tuple(names))


def _open_times(path: Path) -> list[int]:
    """The open times (ms) in one Parquet file of the partition; none if it is gone."""
    try:
        column = pq.read_table(path, columns=[_KEY]).column(_KEY)
    except FileNotFoundError:
        return []
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(f"cannot read Parquet partition {path}: {exc}") from exc
    return list(column.cast(pa.int64()).to_pylist())
