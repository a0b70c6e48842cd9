"""The Parquet lake on disk: crash-safe partition writes, reads, listings and footer stats.

One file per (interval, symbol, month) partition, laid out as :mod:`cryptolake.lake.layout`
describes. A partition is replaced atomically (temp file in the same folder, fsync,
``os.replace``, fsync of the folder), so a reader sees the old file or the new one, never a
torn one. One writer per lake: hold :meth:`Lake.writer_lock` while writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from cryptolake.atomic import fsync_dir as _fsync_dir
from cryptolake.errors import LakeError, LakeLocked, SchemaMismatch
from cryptolake.lake import layout
from cryptolake.lake.merge import normalize_klines, split_by_month
from cryptolake.lake.quarantine import quarantine, read_quarantine
from cryptolake.lake.storage import LocalStorage, Storage
from cryptolake.rules import RULE, screen
from cryptolake.schema import INTERVALS, KLINE_COLUMNS, KLINE_SCHEMA, Interval, empty_klines

log = logging.getLogger("cryptolake.lake")

#: The Arrow schema of every partition file (timestamps are ``timestamp[ms, tz=UTC]``).
ARROW_SCHEMA: pa.Schema = empty_klines().to_arrow().schema
SYMBOL_COLUMN = "symbol"
#: Name prefix of the marker a process leaves in ``_meta`` while it waits for the writer lock.
WAIT_MARKER = "writer.lock.wait-"
#: ... and while it collects (takes the lock commit by commit).
ACTIVE_MARKER = "writer.active-"
_KEY = "open_time"
_VALUE_COLUMNS = KLINE_COLUMNS[1:]
_IO_THREADS = 4
TRASH_DIR = "trash"
#: Footer key-value metadata cryptolake writes into every partition file.
META_INTERVAL = "cryptolake.interval"
META_OFF_GRID_ROWS = "cryptolake.off_grid_rows"
#: ... and its row count, which an object store's reader checks against the footer's own.
META_ROWS = "cryptolake.rows"


#: A URL scheme (``gs://``, ``S3://``, ``s3a://``), which a folder name never starts with.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


class WriterLock(Protocol):
    """A held writer lock: :meth:`Lake.acquire_writer_lock`'s caller releases it."""

    def release(self) -> None: ...


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`Lake.write_klines` did.

    Attributes:
        rows_added: Candles whose ``open_time`` was not stored before.
        rows_changed: Stored candles whose values the write replaced.
        files_written: Partitions rewritten.
        files_unchanged: Partitions left alone because they already held the incoming rows.
        months: Every month the incoming frame touched, sorted.
        rows_refused: Incoming candles that broke an error rule (:mod:`cryptolake.rules`): not
            stored, quarantined (:meth:`Lake.quarantined`).
    """

    rows_added: int = 0
    rows_changed: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    months: tuple[str, ...] = ()
    rows_refused: int = 0


@dataclass(frozen=True)
class _Kept:
    """A batch after the rules: the candles to store, and how many were quarantined."""

    kept: pa.Table
    refused: int


@dataclass(frozen=True)
class PartitionStats:
    """One partition as its Parquet footer describes it (no data pages read).

    ``first_open_ms``/``last_open_ms`` are None only for a file with no rows.
    """

    symbol: str
    month: str
    rows: int
    first_open_ms: int | None
    last_open_ms: int | None
    path: Path
    size_bytes: int
    #: Rows whose open time is off the interval's grid, as recorded by cryptolake's writer in the
    #: footer; None unless cryptolake committed this very file (another tool wrote it, or
    #: rewrote it since: then only a scan can tell).
    off_grid_rows: int | None = None

    def is_contiguous(self, grid: Interval) -> bool:
        """Provably one candle per grid slot from first to last open time, from the footer alone.

        Holds when the writer recorded no off-grid rows and the row count equals the number of
        grid slots in ``[first, last]`` (cryptolake writes each ``open_time`` once).
        """
        if self.off_grid_rows != 0 or self.first_open_ms is None or self.last_open_ms is None:
            return False
        return self.rows == grid.index(self.last_open_ms) - grid.index(self.first_open_ms) + 1


class Lake:
    """A Hive-partitioned Parquet lake of candles rooted at ``root``.

    A ``Lake`` reads and writes the candles of one ``exchange`` (``exchange=<name>`` in the
    path; ``binance`` by default); :meth:`for_exchange` gives the same lake for another one.
    Creating a ``Lake`` touches nothing on disk; folders appear on the first write.
    """

    def __new__(cls, root: str | Path, exchange: str = layout.DEFAULT_EXCHANGE) -> Lake:
        if cls is Lake and str(root).startswith("s3://"):
            from cryptolake.lake.object_lake import ObjectLake  # obstore: only for such a lake

            return super().__new__(ObjectLake)
        return super().__new__(cls)

    def __init__(self, root: str | Path, exchange: str = layout.DEFAULT_EXCHANGE) -> None:
        if isinstance(root, str) and _URL_SCHEME.match(root):  # not a folder named "gs:"
            raise LakeError(f"invalid lake root {root!r}: a local folder or s3://bucket/prefix")
        self._root = Path(root)
        self.exchange = layout.validate_exchange(exchange)
        self._storage: Storage | None = None

    def __repr__(self) -> str:
        if self.exchange == layout.DEFAULT_EXCHANGE:
            return f"Lake({self.location!r})"
        return f"Lake({self.location!r}, exchange={self.exchange!r})"

    @property
    def root(self) -> Path:
        """The lake's folder."""
        return self._root

    @property
    def location(self) -> str:
        """Where the lake is, as a user would write it (a folder, or ``s3://bucket/prefix``)."""
        return str(self._root)

    @property
    def is_local(self) -> bool:
        """Whether the lake is a folder on a local disk (not object storage)."""
        return True

    @property
    def storage(self) -> Storage:
        """The lake's bytes, through the storage seam (for ``_meta`` records and documents)."""
        if self._storage is None:
            self._storage = LocalStorage(self._root)
        return self._storage

    def exists(self) -> bool:
        """Whether there is a lake folder at all."""
        return self._root.is_dir()

    def for_exchange(self, exchange: str) -> Lake:
        """The same lake, for ``exchange``'s candles."""
        return self if exchange == self.exchange else Lake(self.location, exchange)

    def exchanges(self) -> list[str]:
        """Exchanges with a folder in the lake, sorted."""
        return sorted(e for e in _keyed_dirs(layout.klines_dir(self.root), "exchange", _known_exchange))

    # -- reading -------------------------------------------------------------------------

    def read_partition(self, interval: str, symbol: str, month: str) -> pl.DataFrame:
        """Read one partition.

        Returns:
            Its candles (``KLINE_SCHEMA``, sorted as stored), or an empty frame if absent.

        Raises:
            SchemaMismatch: The file's columns or types differ from the contract.
            LakeError: The file is not readable Parquet.
        """
        path = layout.partition_path(self.root, interval, symbol, month, self.exchange)
        read = _read_table(path)
        table = _with_staged(None if read is None else read[0], _staged(path.parent)[1])
        return empty_klines() if table is None else pl.from_arrow(table)  # type: ignore[return-value]

    def partition_objects(self, interval: str, symbol: str, month: str) -> tuple[str, ...]:
        """A partition's files as :attr:`storage` paths: ``data.parquet`` (which may not exist
        yet, beside stream files), then its stream files."""
        data_file = layout.partition_path(self.root, interval, symbol, month, self.exchange)
        return tuple(
            p.relative_to(self.root).as_posix() for p in (data_file, *stream_files(data_file.parent))
        )

    def symbols(self, interval: str) -> list[str]:
        """Symbols with at least one stored partition for ``interval``, sorted."""
        base = layout.interval_root(self.root, interval, self.exchange)
        found = _keyed_dirs(base, "symbol", layout.is_valid_symbol)
        return sorted(s for s in found if self.months(interval, s))

    def months(self, interval: str, symbol: str) -> list[str]:
        """Months (``YYYY-MM``) stored for one symbol, sorted."""
        base = layout.symbol_dir(self.root, interval, symbol, self.exchange)
        found = _keyed_dirs(base, "month", layout.is_valid_month)
        return sorted(m for m in found if _holds_candles(base / f"month={m}"))

    def partition_stats(self, interval: str, symbol: str | None = None) -> list[PartitionStats]:
        """Row counts and ``open_time`` range per partition file, read from Parquet footers only.

        A partition with streamed candles not yet compacted has an entry for ``data.parquet``
        and one for each of its stream files (never trusted: ``off_grid_rows`` is None).

        Args:
            interval: Kline interval, e.g. ``"1h"``.
            symbol: One symbol, or None for every stored symbol.

        Returns:
            Stats sorted by (symbol, month).

        Raises:
            SchemaMismatch: A footer's schema differs from the contract.
        """
        symbols = [symbol] if symbol is not None else self.symbols(interval)
        found = []
        for sym in symbols:
            for month in self.months(interval, sym):
                found.extend(self._month_stats(interval, sym, month))
        return found

    def _month_stats(self, interval: str, symbol: str, month: str) -> list[PartitionStats]:
        """One partition's stats: its ``data.parquet`` and its stream files that hold candles."""
        found = []
        path = layout.partition_path(self.root, interval, symbol, month, self.exchange)
        if path.is_file():
            found.append(footer_stats(symbol, month, path))
        for staged in stream_files(path.parent):
            stats = footer_stats(symbol, month, staged)
            if stats.rows:  # an empty placeholder of an absorbed file holds nothing
                found.append(stats)
        return found

    def bounds(self, interval: str, symbol: str) -> tuple[int, int, int] | None:
        """``(first_open_ms, last_open_ms, rows)`` over a symbol's partitions; None if none."""
        stats = [s for s in self.partition_stats(interval, symbol) if s.rows]
        if not stats:
            return None
        first = min(s.first_open_ms for s in stats if s.first_open_ms is not None)
        last = max(s.last_open_ms for s in stats if s.last_open_ms is not None)
        return first, last, sum(s.rows for s in stats)

    def scan(
        self,
        interval: str,
        symbols: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pl.LazyFrame:
        """Lazily scan candles of ``interval``, with a ``symbol`` column first.

        Only partitions whose month overlaps ``[start_ms, end_ms)`` are opened.

        Args:
            interval: Kline interval.
            symbols: Symbols to include; None means every stored symbol.
            start_ms: Inclusive lower bound on ``open_time`` (None: unbounded).
            end_ms: Exclusive upper bound on ``open_time`` (None: unbounded).

        Returns:
            A LazyFrame with ``symbol`` plus ``KLINE_COLUMNS``.
        """
        wanted = self.symbols(interval) if symbols is None else list(symbols)
        scans = [self._scan_symbol(interval, sym, start_ms, end_ms) for sym in dict.fromkeys(wanted)]
        frames = [f for f in scans if f is not None]
        if not frames:
            return _empty_scan()
        lazy = pl.concat(frames, how="vertical")
        return lazy.filter(*_time_filters(start_ms, end_ms))

    def _scan_symbol(
        self, interval: str, symbol: str, start_ms: int | None, end_ms: int | None
    ) -> pl.LazyFrame | None:
        months = [m for m in self.months(interval, symbol) if _overlaps(m, start_ms, end_ms)]
        if not months:
            return None
        paths: list[Path] = []
        for month in months:
            path = layout.partition_path(self.root, interval, symbol, month, self.exchange)
            paths.extend([path] if path.is_file() else [])
            paths.extend(stream_files(path.parent))
        scan = pl.scan_parquet(paths, hive_partitioning=False)
        return scan.select(pl.lit(symbol, dtype=pl.String).alias(SYMBOL_COLUMN), *KLINE_COLUMNS)

    # -- writing -------------------------------------------------------------------------

    def write_klines(
        self,
        interval: str,
        symbol: str,
        frame: pl.DataFrame,
        *,
        source: str = "python",
        now_ms: int | None = None,
    ) -> WriteResult:
        """Merge candles into the lake, one month partition at a time.

        Every candle is first checked against the error rules (:func:`cryptolake.rules.screen`):
        one that breaks a rule is not stored but quarantined with the rule and ``source``
        (:meth:`quarantined`). Incoming rows replace stored rows with the same ``open_time``. A
        month whose stored file already holds every incoming row with identical values is not
        rewritten.

        Args:
            interval: Kline interval of the candles.
            symbol: Symbol of the candles.
            frame: Candles with at least ``KLINE_COLUMNS``.
            source: Where the candles came from, recorded with refused ones.
            now_ms: The clock (ms) that decides whether a candle is closed; default this
                machine's.

        Returns:
            Counts of added/changed/refused rows and written/unchanged files.

        Raises:
            InvalidSymbolName: The symbol is not safe as a path segment.
            SchemaMismatch: ``frame`` or a stored partition does not match the contract.
            OSError: The write failed; the old partition file is intact.
        """
        layout.validate_symbol(symbol)
        layout.interval_dir(interval)
        table = self.screen_candles(interval, symbol, normalize_klines(frame).to_arrow(), source, now_ms)
        kept = pl.from_arrow(table.kept)
        assert isinstance(kept, pl.DataFrame)
        by_month = split_by_month(kept)
        if not by_month:
            return WriteResult(rows_refused=table.refused)
        # Each month is read, merged and rewritten on its own worker: polars and pyarrow release
        # the GIL, so months overlap on the CPUs and during fsync waits.
        merge_month = partial(self._merge_month, interval, symbol)
        arrow = [part.to_arrow() for part in by_month.values()]
        counts = list(_io_pool().map(merge_month, by_month.keys(), arrow))
        return WriteResult(
            rows_added=sum(added for added, _, _ in counts),
            rows_changed=sum(changed for _, changed, _ in counts),
            files_written=sum(written for _, _, written in counts),
            files_unchanged=sum(not written for _, _, written in counts),
            months=tuple(by_month),
            rows_refused=table.refused,
        )

    def write_partition(
        self,
        interval: str,
        symbol: str,
        table: pa.Table,
        *,
        source: str = "python",
        now_ms: int | None = None,
    ) -> WriteResult:
        """Merge candles of one month, as an Arrow table, into their partition: what
        :meth:`write_klines` does, without polars, for a collection's hot path.

        Candles that are not sorted by unique ``open_time`` or span more than one month go
        through :meth:`write_klines`. Raises as :meth:`write_klines`.
        """
        layout.validate_symbol(symbol)
        layout.interval_dir(interval)
        if table.num_rows == 0:
            return WriteResult()
        times = table.column(_KEY)
        month = layout.month_of(times[0].value)
        opens = times.cast(pa.int64()).to_numpy()
        increasing = bool((opens[1:] > opens[:-1]).all())
        if (
            not increasing
            or layout.month_of(int(opens[-1])) != month
            or not table.schema.equals(ARROW_SCHEMA)
        ):
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            return self.write_klines(interval, symbol, frame, source=source, now_ms=now_ms)
        screened = self.screen_candles(interval, symbol, table, source, now_ms)
        if screened.kept.num_rows == 0:
            return WriteResult(rows_refused=screened.refused)
        added, changed, written = self._merge_month(interval, symbol, month, screened.kept)
        return WriteResult(
            rows_added=added,
            rows_changed=changed,
            files_written=int(written),
            files_unchanged=int(not written),
            months=(month,),
            rows_refused=screened.refused,
        )

    def screen_candles(
        self, interval: str, symbol: str, table: pa.Table, source: str, now_ms: int | None
    ) -> _Kept:
        """The candles of ``table`` (the lake's Arrow schema) that keep every error rule
        (:func:`cryptolake.rules.screen`: sorted, one per open time); the others are quarantined
        with ``source``. ``now_ms`` decides what is closed (default: this machine's clock)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        screened = screen(table, interval, now)
        if screened.refused.height:
            quarantine(self.storage, self.exchange, interval, symbol, screened.refused, source, now)
            log.warning(
                "%s %s: %d candle(s) refused (%s), quarantined",
                symbol,
                interval,
                screened.refused.height,
                ", ".join(sorted(set(screened.refused[RULE]))),
            )
        return _Kept(screened.kept, screened.refused.height)

    def quarantined(self, interval: str | None = None, symbols: list[str] | None = None) -> pl.DataFrame:
        """The candles this exchange's writes refused (:mod:`cryptolake.lake.quarantine`): one
        row each with the rule it broke, its values and its source, sorted by symbol and time."""
        return read_quarantine(self.storage, self.exchange, interval, symbols)

    def _merge_month(self, interval: str, symbol: str, month: str, fresh: pa.Table) -> tuple[int, int, bool]:
        """Merge one month's sorted, unique candles into its partition: ``(added, changed, written)``.

        A stored file cryptolake did not commit (or that changed since) may hold duplicate or
        unsorted open times: it is tidied first (sorted, the last row of each open time kept).
        """
        path = layout.partition_path(self.root, interval, symbol, month, self.exchange)
        read = _read_table(path)
        stored = None
        if read is not None:
            stored, committed = read
            if not committed:
                stored = _tidy(stored, path, month)
        staged_files, staged = _staged(path.parent)
        absorbing = absorbing_files(path.parent)
        if staged_files or absorbing:
            # Streamed candles not yet compacted: this write absorbs them (see _commit_absorbing).
            leftover = _read_staged(absorbing)
            if leftover is not None:
                staged = leftover if staged is None else pa.concat_tables([leftover, staged])
            if staged is not None:
                staged = _tidy(staged, path, month)
            stored = _with_staged(stored, staged)
            merged, added, changed = _merge_into(stored, fresh)
            if merged.num_rows:
                _commit_absorbing(path, merged, interval, staged_files, absorbing)
            return added, changed, True
        if fresh.num_rows == 0:
            return 0, 0, False
        added, changed = fresh.num_rows, 0
        if stored is None or stored.num_rows == 0:
            merged = fresh
        elif (before := _last_open(fresh) < _first_open(stored)) or _last_open(stored) < _first_open(fresh):
            # Disjoint ranges, the usual case (forward appends, backward prepends): no join, and
            # the Arrow columns go straight back to the writer.
            merged = pa.concat_tables([fresh, stored] if before else [stored, fresh])
        else:
            outcome = _merge_overlapping(stored, fresh)
            if outcome is None:
                return 0, 0, False
            merged, added, changed = outcome
        write_parquet_atomic(path, merged, interval=interval)
        return added, changed, True

    # -- locking -------------------------------------------------------------------------

    @contextmanager
    def writer_lock(
        self,
        wait: bool = True,
        timeout_s: float | None = None,
        on_wait: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[list[Path]]:
        """Hold the lake's single-writer lock (``<root>/_meta/writer.lock``).

        Once acquired, temp files left by killed writers are removed from the klines tree.

        Args:
            wait: Block until the lock is free; if False, fail at once when it is held.
            timeout_s: Longest wait in seconds (None: forever). Only used when ``wait``.
            on_wait: Called once, before blocking, when another process holds the lock.
            cancel: Stop waiting as soon as this is set (a Ctrl-C while another process writes).

        Yields:
            The stale temp files that were removed.

        Raises:
            LakeLocked: The lock is held and ``wait`` is False, ``timeout_s`` passed, or the wait
                was cancelled (``cancelled`` is then True).
        """
        lock = self.acquire_writer_lock(wait, timeout_s, on_wait, cancel)
        try:
            yield self.remove_stale_temp_files()
        finally:
            lock.release()

    def acquire_writer_lock(
        self,
        wait: bool = True,
        timeout_s: float | None = None,
        on_wait: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> WriterLock:
        """Take the lake's single-writer lock and return it; the caller calls ``release()`` on it
        (from any thread). Unlike :meth:`writer_lock`, it leaves temp files alone: for writers
        that take the lock once per commit (see :mod:`cryptolake.pipeline`) and tidy once per run.

        Raises:
            LakeLocked: as :meth:`writer_lock`.
        """
        lock_file = layout.lock_path(self.root)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        # Not thread-local: a collection takes the lock on one commit thread and may release it
        # on another.
        lock = FileLock(lock_file, thread_local=False)
        self._acquire(lock, wait, timeout_s, on_wait, cancel)
        return lock

    def _acquire(
        self,
        lock: FileLock,
        wait: bool,
        timeout_s: float | None,
        on_wait: Callable[[], None] | None,
        cancel: threading.Event | None = None,
    ) -> None:
        try:
            lock.acquire(blocking=False)
            return
        except Timeout:
            if not wait:
                raise self._locked("; try again when it has finished") from None
        if on_wait is not None:
            on_wait()
        # Say that this process waits, so that a writer holding the lock across many commits
        # (a collection) lets it in between two of them (see writers_waiting).
        marker = layout.lock_path(self.root).with_name(f"{WAIT_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            marker.touch()
        except OSError:
            marker = None  # type: ignore[assignment]  # a read-only lake: nobody to tell
        try:
            self._wait_for(lock, timeout_s, cancel)
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)

    def _wait_for(self, lock: FileLock, timeout_s: float | None, cancel: threading.Event | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:  # in short steps, so that a cancel is noticed at once
            step = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                lock.acquire(timeout=step)
                return
            except Timeout:
                pass
            if cancel is not None and cancel.is_set():
                error = self._locked("; stopped waiting for it")
                error.cancelled = True
                raise error from None
            if deadline is not None and time.monotonic() >= deadline:
                raise self._locked(f"; gave up after waiting {timeout_s:g} s") from None

    @contextmanager
    def active_writer(self, exclusive: bool = False) -> Iterator[None]:
        """Mark this process as writing to the lake for a while (a collection that takes the
        writer lock per commit): ``_meta/writer.active-<pid>-<token>``, removed at the end (a
        killed process's marker is ignored). With ``exclusive``, fail at once
        (:class:`~cryptolake.errors.LakeLocked`) if another live process has one.
        """
        folder = layout.meta_dir(self.root)
        if exclusive and self._live_markers(ACTIVE_MARKER):
            raise self._locked("; try again when it has finished")
        marker = folder / f"{ACTIVE_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            marker = None  # type: ignore[assignment]  # a read-only lake: its first commit says so
        try:
            yield
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)

    def writers_waiting(self) -> bool:
        """Whether another live process is waiting for the writer lock (its marker is there)."""
        return self._live_markers(WAIT_MARKER)

    def _remove_dead_markers(self) -> None:
        """Markers (waiting, collecting) left by processes that were killed."""
        folder = layout.meta_dir(self.root)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            for prefix in (WAIT_MARKER, ACTIVE_MARKER):
                pid = name[len(prefix) :].split("-", 1)[0] if name.startswith(prefix) else ""
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    (folder / name).unlink(missing_ok=True)

    def _live_markers(self, prefix: str) -> bool:
        """Whether ``_meta`` holds a ``prefix`` marker of another process that is alive."""
        try:
            names = os.listdir(layout.meta_dir(self.root))
        except OSError:
            return False
        for name in names:
            if not name.startswith(prefix):
                continue
            pid = name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                return True
        return False

    def _locked(self, tail: str) -> LakeLocked:
        return LakeLocked(
            f"another cryptolake process is writing to {self.root}{tail} "
            f"(lock file: {layout.lock_path(self.root)})",
            root=str(self.root),
        )

    def delete_symbol(self, interval: str, symbol: str) -> tuple[int, int]:
        """Delete every partition of one symbol and interval: ``(partitions, rows)`` deleted.

        The symbol's folder is first moved into ``_meta/trash/`` (one rename: readers see all of
        it or none of it), then removed; a removal cut short is finished by the next writer.
        Only while holding :meth:`writer_lock`.
        """
        counted = _counted(self, interval, symbol)
        folder = layout.symbol_dir(self.root, interval, symbol, self.exchange)
        if not folder.is_dir():
            return 0, 0
        trash = layout.meta_dir(self.root) / TRASH_DIR
        trash.mkdir(parents=True, exist_ok=True)
        target = trash / f"{secrets.token_hex(8)}"
        os.replace(folder, target)
        _fsync_dir(folder.parent)
        shutil.rmtree(target, ignore_errors=True)
        return counted

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete partition temp files (``.data.parquet.<pid>.<hex>.tmp``) under ``klines/``, and
        whatever a deletion cut short left in ``_meta/trash/``.

        Only safe while holding :meth:`writer_lock`; returns the removed paths.
        """
        trash = layout.meta_dir(self.root) / TRASH_DIR
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        self._remove_dead_markers()
        removed = []
        unfinished = []
        for folder, _dirs, files in os.walk(layout.klines_dir(self.root)):
            for name in files:
                if layout.is_temp_name(name):
                    path = Path(folder) / name
                    path.unlink(missing_ok=True)
                    removed.append(path)
                elif layout.absorbed_stream_name(name) is not None:
                    unfinished.append(Path(folder))
            if any(layout.is_stream_name(name) for name in files):
                remove_placeholders(Path(folder))
        for cut_short in dict.fromkeys(unfinished):
            self._finish_compaction(cut_short)
        return sorted(removed)

    # -- streamed candles ----------------------------------------------------------------

    def compact_partition(self, interval: str, symbol: str, month: str) -> bool:
        """Absorb a partition's stream files into its ``data.parquet`` (see :func:`_commit_absorbing`);
        False if it had none. Only while holding :meth:`writer_lock`."""
        folder = layout.partition_dir(self.root, interval, symbol, month, self.exchange)
        if not (_staged(folder)[0] or absorbing_files(folder)):
            return False
        self._merge_month(interval, symbol, month, ARROW_SCHEMA.empty_table())
        return True

    def _finish_compaction(self, folder: Path) -> None:
        """Finish a compaction that was killed after absorbing stream files (their hidden links
        are still there): their candles go into ``data.parquet``."""
        keys = dict(part.split("=", 1) for part in folder.relative_to(layout.klines_dir(self.root)).parts)
        lake = self.for_exchange(keys["exchange"])
        interval = next(i for i in INTERVALS if layout.interval_dir(i) == keys["interval"])
        lake.compact_partition(interval, keys["symbol"], keys["month"])


# -- helpers -------------------------------------------------------------------------------


def _counted(lake: Lake, interval: str, symbol: str) -> tuple[int, int]:
    """``(partitions, rows)`` of a symbol about to be deleted; an unreadable partition (the usual
    reason to delete one) is deleted all the same, its rows uncounted."""
    months = lake.months(interval, symbol)
    rows = 0
    for month in months:
        with suppress(LakeError):
            rows += sum(s.rows for s in lake._month_stats(interval, symbol, month))
    return len(months), rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def stream_files(folder: Path) -> list[Path]:
    """The stream files of one partition folder (empty placeholders included), sorted."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in sorted(names) if layout.is_stream_name(n)]


def absorbing_files(folder: Path) -> list[Path]:
    """Hidden links to stream files a killed compaction was absorbing, sorted."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in sorted(names) if layout.absorbed_stream_name(n) is not None]


def _holds_candles(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n == layout.DATA_FILE or layout.is_stream_name(n) for n in names)


def _staged(folder: Path) -> tuple[list[Path], pa.Table | None]:
    """A partition's stream files that hold candles (not placeholders), and their candles."""
    paths, tables = [], []
    for path in stream_files(folder):
        read = _read_table(path)
        if read is not None and read[0].num_rows:
            paths.append(path)
            tables.append(read[0])
    return paths, (pa.concat_tables(tables) if tables else None)


def _read_staged(paths: Sequence[Path]) -> pa.Table | None:
    """The candles of stream files as one table (unsorted; None if they hold none)."""
    tables = []
    for path in paths:
        read = _read_table(path)
        if read is not None and read[0].num_rows:
            tables.append(read[0])
    return pa.concat_tables(tables) if tables else None


def _with_staged(stored: pa.Table | None, staged: pa.Table | None) -> pa.Table | None:
    """A partition's stored candles with its streamed ones (which win on a shared open time)."""
    if staged is None or staged.num_rows == 0:
        return stored
    staged = _unique_sorted(staged)
    if stored is None or stored.num_rows == 0:
        return staged
    merged, _, _ = _merge_into(stored, staged)
    return merged


def _unique_sorted(table: pa.Table) -> pa.Table:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.unique(_KEY, keep="last", maintain_order=True).sort(_KEY).to_arrow().cast(ARROW_SCHEMA)


def _merge_into(stored: pa.Table | None, fresh: pa.Table) -> tuple[pa.Table, int, int]:
    """``stored`` with ``fresh`` merged in (both sorted, unique): ``(merged, added, changed)``."""
    if stored is None or stored.num_rows == 0:
        return fresh, fresh.num_rows, 0
    if fresh.num_rows == 0:
        return stored, 0, 0
    if _last_open(fresh) < _first_open(stored):
        return pa.concat_tables([fresh, stored]), fresh.num_rows, 0
    if _last_open(stored) < _first_open(fresh):
        return pa.concat_tables([stored, fresh]), fresh.num_rows, 0
    outcome = _merge_overlapping(stored, fresh)
    return (stored, 0, 0) if outcome is None else outcome


def write_stream_file(folder: Path, table: pa.Table) -> Path:
    """Write sorted, unique candles of one month as a new stream file in ``folder`` (crash-safe:
    temp file, fsync, rename, fsync of the folder); returns its path."""
    path = folder / layout.stream_file_name(_first_open(table), secrets.token_hex(8))
    write_parquet_atomic(path, table)
    return path


def _commit_absorbing(
    path: Path, merged: pa.Table, interval: str, staged: list[Path], absorbing: list[Path]
) -> None:
    """Replace ``path`` with ``merged``, which holds the candles of the ``staged`` stream files
    (and of ``absorbing`` links a killed compaction left), so that neither a reader nor a crash
    ever sees a candle twice or loses one for good:

    1. each stream file gets a hidden second name (a hard link), so its candles survive a crash;
    2. each is replaced, atomically, by an empty Parquet file (a placeholder: a reader that
       listed the folder before still opens a valid file; removed after
       :data:`PLACEHOLDER_GRACE_S`);
    3. ``merged`` replaces ``data.parquet`` (temp file, fsync, rename);
    4. the hidden links go.

    Stream files sort after ``data.parquet`` and readers open files in that order, so a query
    that spans steps 2-3 can miss these candles for that instant but never count them twice.
    Killed after 1 or 2, the next writer finishes it (:meth:`Lake.remove_stale_temp_files`).
    """
    folder = path.parent
    links = list(absorbing)
    for file in staged:
        link = folder / layout.absorbing_name(file.name)
        with suppress(FileExistsError):
            os.link(file, link)
        links.append(link)
    _fsync_dir(folder)
    placeholder = folder / layout.temp_name(os.getpid(), secrets.token_hex(6))
    buffer = pa.BufferOutputStream()
    pq.write_table(ARROW_SCHEMA.empty_table(), buffer, compression="zstd")
    try:
        with open(placeholder, "xb") as fh:
            fh.write(buffer.getvalue().to_pybytes())
            fh.flush()
            os.fsync(fh.fileno())
        for file in staged:
            twin = folder / layout.temp_name(os.getpid(), secrets.token_hex(6))
            os.link(placeholder, twin)
            os.replace(twin, file)
    finally:
        placeholder.unlink(missing_ok=True)
    write_parquet_atomic(path, merged, interval=interval)
    for link in dict.fromkeys(links):
        link.unlink(missing_ok=True)
    remove_placeholders(folder)


#: How long the empty placeholder of an absorbed stream file stays (a reader that listed the
#: folder before may still open it); the next writer after that removes it.
PLACEHOLDER_GRACE_S = 600.0


def remove_placeholders(folder: Path, grace_s: float | None = None) -> int:
    """Remove the empty placeholders of absorbed stream files older than ``grace_s``
    (:data:`PLACEHOLDER_GRACE_S`); returns how many went."""
    grace = PLACEHOLDER_GRACE_S if grace_s is None else grace_s
    removed = 0
    now = time.time()
    for file in stream_files(folder):
        try:
            if now - file.stat().st_mtime < grace or pq.read_metadata(file).num_rows:
                continue
            file.unlink()
            removed += 1
        except (OSError, pa.ArrowException):
            continue
    return removed


def _merge_overlapping(stored: pa.Table, fresh: pa.Table) -> tuple[pa.Table, int, int] | None:
    """Merge two candle tables (sorted, unique open times) whose ranges overlap:
    ``(merged, added, changed)``, or None when ``stored`` already holds every fresh row as is.

    Stored rows with an incoming ``open_time`` are replaced; the rest are kept. The replaced
    rows and their replacements line up (same sorted keys), so values compare row by row.
    """
    stored_keys = stored.column(_KEY).cast(pa.int64())
    fresh_keys = fresh.column(_KEY).cast(pa.int64())
    replaced = pc.is_in(stored_keys, value_set=fresh_keys)
    replacing = pc.is_in(fresh_keys, value_set=stored_keys)
    overlap = pc.sum(replacing).as_py() or 0
    added = fresh.num_rows - overlap
    changed = _changed_rows(stored.filter(replaced), fresh.filter(replacing)) if overlap else 0
    if not (added or changed):
        return None
    merged = pa.concat_tables([stored.filter(pc.invert(replaced)), fresh]).sort_by(_KEY)
    return merged, added, changed


def _changed_rows(old: pa.Table, new: pa.Table) -> int:
    """Rows whose values differ between two aligned tables (nulls equal nulls, NaN equals NaN)."""
    if old.equals(new):  # the common case, e.g. a re-fetch of final candles
        return 0
    before, after = pl.from_arrow(old), pl.from_arrow(new)
    assert isinstance(before, pl.DataFrame) and isinstance(after, pl.DataFrame)
    differs = pl.any_horizontal(before.get_column(c).ne_missing(after.get_column(c)) for c in _VALUE_COLUMNS)
    return int(pl.select(differs.sum()).item())


def _tidy(table: pa.Table, path: Path, month: str) -> pa.Table:
    """A partition another tool wrote, sorted by open time with one row per open time (the last
    one in file order).

    Raises:
        LakeError: it holds candles of other months: they belong in other partitions, and
            guessing which copy is right would risk the stored history.
    """
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if frame.height:
        low, high = layout.month_bounds(month)
        first, last = _first_open(table), _last_open(table)
        if first < low or last >= high:
            raise LakeError(
                f"partition {path} holds candles outside {month} (written by another tool?); "
                "`cryptolake gaps` lists them as misplaced: move the file aside, and the next "
                "collection fetches its month again"
            )
    return frame.unique(_KEY, keep="last", maintain_order=True).sort(_KEY).to_arrow().cast(ARROW_SCHEMA)


def is_committed(path: Path, stat: os.stat_result | None = None, footer_sha256: str | None = None) -> bool:
    """True when ``path`` is exactly the file cryptolake committed: its commit record (written
    beside it at commit) names the file's current size, modification time, change time (which
    no tool can set back: any write or ``utime`` moves it) and the SHA-256 of its Parquet footer
    (every page's offset, size and statistics).

    Only such a file's footer is trusted to prove its contents (one row per open time, the
    recorded off-grid count); a file another tool wrote or rewrote is always read in full.
    """
    record = _commit_record(path)
    if record is None:
        return False
    if stat is None or footer_sha256 is None:
        try:
            footer, _, stat = _footer_bytes(path)
        except (OSError, LakeError):
            return False
        footer_sha256 = hashlib.sha256(footer).hexdigest()
    return _matches(record, stat, footer_sha256)


def _footer_bytes(path: Path) -> tuple[bytes, bytes, os.stat_result]:
    """A Parquet file's footer bytes, its last 8 bytes and its stat (one open, two reads)."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if stat.st_size >= 12:
            handle.seek(-8, os.SEEK_END)
            tail = handle.read(8)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] == b"PAR1" and 0 < length <= stat.st_size - 12:
                handle.seek(-(8 + length), os.SEEK_END)
                return handle.read(length), tail, stat
    raise LakeError(f"cannot read Parquet footer of {path}: not a Parquet file (size {stat.st_size} bytes)")


def _record_commit(path: Path, stat: os.stat_result, footer_sha256: str, facts: dict[str, object]) -> None:
    """Write the commit record of the file just committed at ``path`` (see :func:`is_committed`),
    with what the footer would say of it (rows, first and last open time, off-grid rows), so
    that reading the stats of a committed file needs no footer parse.

    Written in place and not fsynced: a record lost or torn in a crash only makes the file
    untrusted (it no longer parses, or names an older file), which is safe.
    """
    record = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "footer_sha256": footer_sha256,
        **facts,
    }
    layout.commit_path(path).write_bytes(json.dumps(record).encode())


def _commit_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(layout.commit_path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_partition(path: Path) -> None:
    """Refuse a partition file that is not cryptolake's shape, cheaply: a file whose commit record
    still names its size and modification time was checked as it was written; any other file's
    footer schema is read and compared (what another tool wrote may not fit the contract).

    Raises:
        SchemaMismatch: its columns or types differ from the contract.
        LakeError: it is not readable Parquet.
    """
    record = _commit_record(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise LakeError(f"cannot read Parquet partition {path}: {exc}") from exc
    if (
        record is not None
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    ):
        return
    try:
        footer, tail, _ = _footer_bytes(path)
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(
            f"cannot read Parquet footer of {path}: {exc}; move the file aside: the next "
            "collection fetches its month again"
        ) from exc
    _check_schema(path, meta.schema.to_arrow_schema())


def _matches(record: dict[str, Any] | None, stat: os.stat_result, footer_sha256: str) -> bool:
    return (
        record is not None
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and record.get("ctime_ns") == stat.st_ctime_ns
        and record.get("footer_sha256") == footer_sha256
    )


def _footer_sha256(data: bytes | pa.Buffer) -> str:
    """The SHA-256 of a whole Parquet file's footer (the bytes before its last 8)."""
    view = memoryview(data)
    length = int.from_bytes(view[-8:-4], "little")
    return hashlib.sha256(view[-8 - length : -8]).hexdigest()


def _read_table(path: Path) -> tuple[pa.Table, bool] | None:
    """One partition file as Arrow, checked against the contract, and whether it is the file
    cryptolake committed (:func:`is_committed`, from the same read); None if there is no file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
            stat = os.fstat(handle.fileno())
        parquet = pq.ParquetFile(pa.BufferReader(data))
        _check_schema(path, parquet.schema_arrow)
        table = parquet.read(use_threads=False)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(
            f"cannot read Parquet partition {path}: {exc}; move the file aside: the next collection "
            "fetches its month again"
        ) from exc
    return table, is_committed(path, stat, _footer_sha256(data))


def _first_open(table: pa.Table) -> int:
    return int(pc.min(table.column(_KEY)).value)


def _last_open(table: pa.Table) -> int:
    return int(pc.max(table.column(_KEY)).value)


@cache
def _io_pool() -> ThreadPoolExecutor:
    """The process-wide pool that partition reads, merges and writes run on."""
    return ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="cryptolake-lake")


def write_parquet_atomic(path: Path, frame: pl.DataFrame | pa.Table, interval: str | None = None) -> None:
    """Replace ``path`` with ``frame`` as zstd Parquet, crash-safely.

    Writes ``.data.parquet.<pid>.<hex>.tmp`` in the same folder, fsyncs it, ``os.replace``s it
    onto ``path`` and fsyncs the folder. On any error the temp file is removed and ``path``
    is untouched. With ``interval``, the footer records it and the number of off-grid rows
    (``cryptolake.interval``, ``cryptolake.off_grid_rows``), which gap detection trusts.
    """
    table = frame if isinstance(frame, pa.Table) else normalize_klines(frame).to_arrow()
    if not table.schema.equals(ARROW_SCHEMA):  # e.g. string/large_string views from polars
        table = table.cast(ARROW_SCHEMA)
    # The open times, once: for the off-grid count and the commit record.
    times = table.column(_KEY).cast(pa.int64()).to_numpy() if interval is not None else np.empty(0, np.int64)
    off_grid = _off_grid_rows(table, Interval(interval), times) if interval is not None else 0
    if interval is not None:
        table = table.replace_schema_metadata(footer_metadata(interval, off_grid, table.num_rows))
    buffer = pa.BufferOutputStream()
    # No dictionary pages: prices and volumes hardly repeat, so dictionaries cost time and bytes.
    pq.write_table(table, buffer, compression="zstd", write_statistics=True, use_dictionary=False)
    data = buffer.getvalue()
    _make_dirs_durably(path.parent)
    tmp = path.parent / layout.temp_name(os.getpid(), secrets.token_hex(6))
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        stat = os.stat(path)  # after the rename, which sets the change time the file keeps
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    if interval is not None:
        _record_commit(
            path,
            stat,
            _footer_sha256(data),
            {
                "rows": table.num_rows,
                "off_grid_rows": off_grid,
                "interval": interval,
                "first_open_ms": int(times.min()) if len(times) else None,
                "last_open_ms": int(times.max()) if len(times) else None,
            },
        )


def footer_metadata(interval: str, off_grid: int, rows: int) -> dict[str, str]:
    """The key-value metadata cryptolake writes into a partition's footer."""
    return {META_INTERVAL: interval, META_OFF_GRID_ROWS: str(off_grid), META_ROWS: str(rows)}


def _make_dirs_durably(folder: Path) -> None:
    if folder.is_dir():
        return
    missing = []
    probe = folder
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync_dir(created.parent)


def _known_exchange(name: str) -> bool:
    return name in layout.EXCHANGES


def _keyed_dirs(base: Path, key: str, is_valid: Callable[[str], bool]) -> list[str]:
    """Values ``v`` of sub-folders named ``<key>=v`` that pass ``is_valid``."""
    if not base.is_dir():
        return []
    prefix = f"{key}="
    values = [
        entry.name[len(prefix) :]
        for entry in os.scandir(base)
        if entry.name.startswith(prefix) and entry.is_dir()
    ]
    return [v for v in values if is_valid(v)]


def _check_schema(path: Path | str, schema: pa.Schema) -> None:
    """Raise SchemaMismatch unless ``schema`` has the contract's columns, order and types."""
    if schema.equals(ARROW_SCHEMA):
        return
    found = {f.name: f.type for f in schema}
    expected = {f.name: f.type for f in ARROW_SCHEMA}
    diff = [f"missing column {n} ({t})" for n, t in expected.items() if n not in found]
    diff += [f"unexpected column {n} ({t})" for n, t in found.items() if n not in expected]
    diff += [
        f"column {n} is {found[n]}, expected {t}" for n, t in expected.items() if n in found and found[n] != t
    ]
    if not diff and list(found) != list(expected):
        diff.append(f"columns are in order {', '.join(found)}; expected {', '.join(expected)}")
    if diff:
        raise SchemaMismatch(
            f"partition {path} does not match the candle schema: {'; '.join(diff)}. "
            "Move the file aside or rewrite it with cryptolake.",
            path=str(path),
            diff=tuple(diff),
        )


def _off_grid_rows(table: pa.Table, grid: Interval, times: np.ndarray | None = None) -> int:
    """Rows whose open time is not on the interval's grid (``times``: the open times in ms, if
    the caller has them already)."""
    if table.num_rows == 0:
        return 0
    if grid.is_monthly:
        opens = pl.from_arrow(table.column(_KEY))
        assert isinstance(opens, pl.Series)
        return int((opens != opens.dt.truncate("1mo")).sum())
    step = grid.fixed_ms
    assert step is not None
    origin = grid.origin_ms
    if times is None:
        times = table.column(_KEY).cast(pa.int64()).to_numpy()
    return int(((times - origin) % step != 0).sum())


def footer_stats(symbol: str, month: str, path: Path) -> PartitionStats:
    """One partition file's stats, from its commit record when it is the file cryptolake
    committed, else from its footer."""
    try:
        footer, tail, stat = _footer_bytes(path)
    except LakeError as exc:
        raise LakeError(f"{exc}; move the file aside: the next collection fetches its month again") from exc
    except OSError as exc:
        raise LakeError(f"cannot read Parquet footer of {path}: {exc}") from exc
    footer_sha256 = hashlib.sha256(footer).hexdigest()
    record = _commit_record(path)
    if _matches(record, stat, footer_sha256) and {
        "rows",
        "first_open_ms",
        "last_open_ms",
        "off_grid_rows",
    } <= set(
        record  # type: ignore[arg-type]
    ):
        # The very file cryptolake committed (and checked against the schema as it wrote it):
        # its record says what its footer says, without parsing the footer.
        assert record is not None
        return PartitionStats(
            symbol,
            month,
            int(record["rows"]),
            record["first_open_ms"],
            record["last_open_ms"],
            path,
            stat.st_size,
            int(record["off_grid_rows"]),
        )
    try:
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
    except (pa.ArrowException, OSError) as exc:
        raise LakeError(
            f"cannot read Parquet footer of {path}: {exc}; move the file aside: the next "
            "collection fetches its month again"
        ) from exc
    arrow_schema = meta.schema.to_arrow_schema()
    _check_schema(path, arrow_schema)
    first, last = _open_time_range(path, meta)
    written = meta.metadata or {}
    off_grid = written.get(META_OFF_GRID_ROWS.encode())
    trusted = off_grid is not None and off_grid.isdigit() and _matches(record, stat, footer_sha256)
    return PartitionStats(
        symbol=symbol,
        month=month,
        rows=meta.num_rows,
        first_open_ms=first,
        last_open_ms=last,
        path=path,
        size_bytes=stat.st_size,
        off_grid_rows=int(off_grid) if trusted else None,  # type: ignore[arg-type]
    )


def _open_time_range(path: Path, meta: pq.FileMetaData) -> tuple[int | None, int | None]:
    """Min/max ``open_time`` from row-group statistics (one column read if a footer lacks them)."""
    index = meta.schema.to_arrow_schema().get_field_index(_KEY)
    lows, highs = [], []
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group)
        if chunk.num_rows == 0:
            continue
        stats = chunk.column(index).statistics
        if stats is None or not stats.has_min_max:
            return _open_time_range_from_data(path)
        lows.append(stats.min_raw)
        highs.append(stats.max_raw)
    if not lows:
        return None, None
    return int(min(lows)), int(max(highs))


def _open_time_range_from_data(path: Path) -> tuple[int | None, int | None]:
    column = pq.ParquetFile(path).read(columns=[_KEY]).column(_KEY)  # one open: a whole file
    times = pl.Series(_KEY, column).dt.epoch("ms")
    return (None, None) if times.is_empty() else (int(cast(int, times.min())), int(cast(int, times.max())))


def _overlaps(month: str, start_ms: int | None, end_ms: int | None) -> bool:
    lo, hi = layout.month_bounds(month)
    return (start_ms is None or hi > start_ms) and (end_ms is None or lo < end_ms)


def _ms_literal(t_ms: int) -> pl.Expr:
    return pl.lit(t_ms, dtype=pl.Int64).cast(KLINE_SCHEMA[_KEY])


def _time_filters(start_ms: int | None, end_ms: int | None) -> list[pl.Expr]:
    filters = [pl.lit(True)]
    if start_ms is not None:
        filters.append(pl.col(_KEY) >= _ms_literal(start_ms))
    if end_ms is not None:
        filters.append(pl.col(_KEY) < _ms_literal(end_ms))
    return filters


def _empty_scan() -> pl.LazyFrame:
    schema = {SYMBOL_COLUMN: pl.String(), **KLINE_SCHEMA}
    return pl.LazyFrame(schema=schema)
