"""The lake on S3-compatible object storage (``s3://bucket/prefix``): same layout, same API.

:class:`ObjectLake` is what ``Lake("s3://...")`` returns. Its partitions are the objects a local
lake has as files (``klines/exchange=.../interval=.../symbol=.../month=.../data.parquet``), so
DuckDB, polars and Spark read either the same way. What differs is how writers agree:

* A partition commit is one conditional ``PUT`` against the version that was read
  (:func:`~cryptolake.lake.commit.commit_partition`): a lost race re-reads, re-merges and
  retries, so collectors on several hosts never lose each other's candles, and there is no lock
  to leave behind (a ``PUT`` is all or nothing: a killed writer leaves the old object or the new).
* There is no writer lock: :meth:`ObjectLake.writer_lock` only says that conditional writes
  coordinate. ``_meta`` records are read-changed-put the same way
  (:func:`~cryptolake.lake.storage.update_object`).
* Footer stats come from two small range reads per object (the last 64 KiB, and the rest of a
  bigger footer), never the data, and are kept per object version.
* Streamed candles (``cryptolake stream``) need a local lake: an object store has no rename to
  move them into ``data.parquet``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cryptolake.errors import LakeError
from cryptolake.lake import layout
from cryptolake.lake.commit import COMMIT_METADATA, commit_partition
from cryptolake.lake.storage import ObjectInfo, ObjectStorage, open_storage
from cryptolake.lake.store import (
    _KEY,
    META_OFF_GRID_ROWS,
    META_ROWS,
    SYMBOL_COLUMN,
    Lake,
    PartitionStats,
    WriterLock,
    _check_schema,
    _counted,
    _known_exchange,
)
from cryptolake.schema import KLINE_COLUMNS, empty_klines

#: Bytes read from an object's end for its footer: cryptolake's footers are 2-3 KiB (a second
#: read fetches the rest of a bigger one).
FOOTER_PROBE_BYTES = 8 * 1024
_FOOTER_THREADS = 16


class _NoLock:
    """What a writer holds on object storage: nothing (its conditional puts coordinate)."""

    def release(self) -> None:
        return None


class ObjectLake(Lake):
    """A lake in an S3-compatible bucket. Create it as ``Lake("s3://bucket/prefix")``; the
    endpoint and credentials come from the ``AWS_*`` variables (see
    :class:`~cryptolake.lake.storage.ObjectStorage`)."""

    def __init__(
        self, root: str | Path, exchange: str = layout.DEFAULT_EXCHANGE, storage: ObjectStorage | None = None
    ) -> None:
        self._url = str(root).rstrip("/")
        self.exchange = layout.validate_exchange(exchange)
        opened = storage if storage is not None else open_storage(self._url)
        assert isinstance(opened, ObjectStorage)
        self._objects: ObjectStorage = opened
        self._storage = opened
        self._footers: dict[tuple[str, str], PartitionStats] = {}
        self._footers_lock = threading.Lock()

    @property
    def root(self) -> Path:
        raise LakeError(f"{self._url} is on object storage; this needs a lake in a local folder")

    @property
    def location(self) -> str:
        return self._url

    @property
    def is_local(self) -> bool:
        return False

    @property
    def storage(self) -> ObjectStorage:
        return self._objects

    def exists(self) -> bool:
        """Whether the prefix holds any candle or metadata object."""
        return self._objects.holds_any("klines/") or self._objects.holds_any("_meta/")

    def for_exchange(self, exchange: str) -> Lake:
        if exchange == self.exchange:
            return self
        other = ObjectLake(self._url, exchange, self._objects)
        other._footers, other._footers_lock = self._footers, self._footers_lock
        return other

    def exchanges(self) -> list[str]:
        found = {_value(name, "exchange") for name in self._objects.folders("klines/")}
        return sorted(e for e in found if e is not None and _known_exchange(e))

    # -- reading -------------------------------------------------------------------------

    def _prefix(self, interval: str, symbol: str | None = None) -> str:
        base = f"klines/exchange={self.exchange}/interval={layout.interval_dir(interval)}/"
        return base if symbol is None else f"{base}symbol={symbol}/"

    def _key(self, interval: str, symbol: str, month: str) -> str:
        return f"{self._prefix(interval, symbol)}month={month}/{layout.DATA_FILE}"

    def _partitions(self, interval: str, symbol: str | None = None) -> dict[tuple[str, str], ObjectInfo]:
        """``{(symbol, month): data.parquet object}`` of the interval (one listing)."""
        found = {}
        for info in self._objects.list(self._prefix(interval, symbol)):
            keys = _partition_keys(info)
            if keys is not None:
                found[(keys[1], keys[2])] = info
        return found

    def read_partition(self, interval: str, symbol: str, month: str) -> pl.DataFrame:
        key = self._key(interval, symbol, month)
        read = self._objects.read(key)
        if read is None:
            return empty_klines()
        table = _decode(self._objects.url_of(key), read[0])
        return pl.from_arrow(table)  # type: ignore[return-value]

    def partition_objects(self, interval: str, symbol: str, month: str) -> tuple[str, ...]:
        return (self._key(interval, symbol, month),)

    def symbols(self, interval: str) -> list[str]:
        return sorted({symbol for symbol, _ in self._partitions(interval)})

    def months(self, interval: str, symbol: str) -> list[str]:
        layout.validate_symbol(symbol)
        return sorted(month for _, month in self._partitions(interval, symbol))

    def partition_stats(self, interval: str, symbol: str | None = None) -> list[PartitionStats]:
        objects = self._partitions(interval, symbol)
        found = list(_pool().map(lambda item: self._stats(item[0][0], item[0][1], item[1]), objects.items()))
        return sorted(found, key=lambda s: (s.symbol, s.month))

    def _month_stats(self, interval: str, symbol: str, month: str) -> list[PartitionStats]:
        info = self._objects.head(self._key(interval, symbol, month))
        return [] if info is None or info.size == 0 else [self._stats(symbol, month, info)]

    def _stats(self, symbol: str, month: str, info: ObjectInfo) -> PartitionStats:
        with self._footers_lock:
            known = self._footers.get((info.path, info.version))
        if known is not None:
            return known
        stats = _footer_stats(self._objects, symbol, month, info)
        with self._footers_lock:
            self._footers[(info.path, info.version)] = stats
        return stats

    def candle_objects(self) -> list[ObjectInfo]:
        """Every partition object of the lake (any exchange and interval) the layout allows."""
        return [info for info in self._objects.list("klines/") if _partition_keys(info) is not None]

    def check_objects(self, objects: list[ObjectInfo]) -> None:
        """Refuse objects whose footer is not the candle schema (read once per version).

        Raises:
            SchemaMismatch: an object another tool wrote does not fit the contract.
        """

        def check(info: ObjectInfo) -> PartitionStats:
            _, symbol, month = _partition_keys(info) or ("", "", "")
            return self._stats(symbol, month, info)

        list(_pool().map(check, objects))

    def _scan_symbol(
        self, interval: str, symbol: str, start_ms: int | None, end_ms: int | None
    ) -> pl.LazyFrame | None:
        from cryptolake.lake.store import _overlaps

        months = [m for m in self.months(interval, symbol) if _overlaps(m, start_ms, end_ms)]
        if not months:
            return None
        urls = [self._objects.url_of(self._key(interval, symbol, m)) for m in months]
        scan = pl.scan_parquet(urls, hive_partitioning=False, storage_options=self.storage.polars_options())
        return scan.select(pl.lit(symbol, dtype=pl.String).alias(SYMBOL_COLUMN), *KLINE_COLUMNS)

    # -- writing -------------------------------------------------------------------------

    def _merge_month(self, interval: str, symbol: str, month: str, fresh: pa.Table) -> tuple[int, int, bool]:
        if fresh.num_rows == 0:
            return 0, 0, False
        result = commit_partition(self._objects, self._key(interval, symbol, month), month, fresh, interval)
        return result.added, result.changed, result.written

    # -- coordination ----------------------------------------------------------------------

    @contextmanager
    def writer_lock(
        self,
        wait: bool = True,
        timeout_s: float | None = None,
        on_wait: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[list[Path]]:
        """Nothing to hold: every commit is a conditional put (see the module docstring)."""
        yield []

    def acquire_writer_lock(
        self,
        wait: bool = True,
        timeout_s: float | None = None,
        on_wait: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> WriterLock:
        return _NoLock()

    @contextmanager
    def active_writer(self, exclusive: bool = False) -> Iterator[None]:
        yield

    def writers_waiting(self) -> bool:
        return False

    def remove_stale_temp_files(self) -> list[Path]:
        return []  # a PUT leaves nothing half-written

    def compact_partition(self, interval: str, symbol: str, month: str) -> bool:
        return False  # no stream files on object storage

    def delete_symbol(self, interval: str, symbol: str) -> tuple[int, int]:
        counted = _counted(self, interval, symbol)
        for info in self._objects.list(self._prefix(interval, symbol)):
            self._objects.delete(info.path)
        return counted


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_FOOTER_THREADS, thread_name_prefix="cryptolake-footers")


def _value(part: str, key: str) -> str | None:
    return part[len(key) + 1 :] if part.startswith(f"{key}=") else None


def _partition_keys(info: ObjectInfo) -> tuple[str, str, str] | None:
    """``(exchange, symbol, month)`` of a partition object the layout allows
    (``klines/exchange=.../interval=.../symbol=.../month=.../data.parquet``, not empty); None
    for any other object."""
    parts = info.path.split("/")
    if len(parts) != 6 or parts[0] != "klines" or parts[5] != layout.DATA_FILE or info.size == 0:
        return None
    exchange, symbol, month = (
        _value(parts[1], "exchange"),
        _value(parts[3], "symbol"),
        _value(parts[4], "month"),
    )
    if exchange is None or symbol is None or month is None or _value(parts[2], "interval") is None:
        return None
    if not (_known_exchange(exchange) and layout.is_valid_symbol(symbol) and layout.is_valid_month(month)):
        return None
    return exchange, symbol, month


def _decode(where: str, data: bytes) -> pa.Table:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        _check_schema(where, parquet.schema_arrow)
        return parquet.read(use_threads=False).replace_schema_metadata(None)
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(f"cannot read Parquet partition {where}: {exc}") from None


def _footer(storage: ObjectStorage, info: ObjectInfo) -> tuple[pq.FileMetaData, bytes, dict[str, str]]:
    """An object's Parquet footer (parsed and as bytes, with its last 8) and its user metadata,
    from one range read (two for a footer over 8 KiB)."""
    where = f"{storage.url}/{info.path}"
    advice = "; delete or move the object aside: the next collection fetches its month again"
    if info.size < 12:
        raise LakeError(
            f"cannot read Parquet footer of {where}: not a Parquet file ({info.size} bytes){advice}"
        )
    start = max(0, info.size - FOOTER_PROBE_BYTES)
    tail, metadata = storage.read_range_and_metadata(info.path, start, info.size)
    length = int.from_bytes(tail[-8:-4], "little")
    if tail[-4:] != b"PAR1" or not 0 < length <= info.size - 12:
        raise LakeError(
            f"cannot read Parquet footer of {where}: not a Parquet file ({info.size} bytes){advice}"
        )
    if length + 8 > len(tail):
        tail = storage.read_range(info.path, info.size - 8 - length, info.size)
    footer = tail[-8 - length :]
    try:
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer)), footer, metadata
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(f"cannot read Parquet footer of {where}: {exc}{advice}") from None


def _footer_stats(storage: ObjectStorage, symbol: str, month: str, info: ObjectInfo) -> PartitionStats:
    """One object's stats from its footer. Its off-grid count (what lets gap detection skip
    reading it) is trusted only for the very object cryptolake committed at this key: its user
    metadata holds the commit stamp of this key and this footer (:func:`commit_stamp`); another
    tool's rewrite, or a copy into another partition, is read in full."""
    meta, footer, metadata = _footer(storage, info)
    url = f"{storage.url}/{info.path}"
    _check_schema(url, meta.schema.to_arrow_schema())
    index = meta.schema.to_arrow_schema().get_field_index(_KEY)
    lows, highs, complete = [], [], True
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group)
        if chunk.num_rows == 0:
            continue
        stats = chunk.column(index).statistics
        if stats is None or not stats.has_min_max:
            complete = False
            break
        lows.append(int(stats.min_raw))
        highs.append(int(stats.max_raw))
    if not complete:  # another tool's file without statistics: read the one column
        data = storage.read(info.path)
        column = pq.read_table(pa.BufferReader(data[0] if data else b""), columns=[_KEY]).column(_KEY)
        times = column.cast(pa.int64()).to_pylist()
        lows, highs = ([min(times)], [max(times)]) if times else ([], [])
    written: dict[bytes, bytes] = meta.metadata or {}
    off_grid = written.get(META_OFF_GRID_ROWS.encode(), b"")
    rows = written.get(META_ROWS.encode(), b"")
    stamp = hashlib.sha256(f"{info.path}\n{hashlib.sha256(footer[:-8]).hexdigest()}".encode()).hexdigest()
    trusted = (
        off_grid.isdigit()
        and rows.isdigit()
        and int(rows) == meta.num_rows
        and metadata.get(COMMIT_METADATA) == stamp  # the very object cryptolake committed at this key
    )
    return PartitionStats(
        symbol=symbol,
        month=month,
        rows=meta.num_rows,
        first_open_ms=min(lows) if lows else None,
        last_open_ms=max(highs) if highs else None,
        path=url,  # type: ignore[arg-type]  # a URL: DuckDB and polars read it as such
        size_bytes=info.size,
        off_grid_rows=int(off_grid) if trusted else None,
    )


__all__ = ["ObjectLake"]
