"""StreamCollector: Binance's live candles into the lake seconds after they close, none lost.

It reads closed candles from :class:`~cryptolake.sources.stream.KlineStream`, buffers them and
every ``flush_s`` appends them to the lake as small stream files (:mod:`cryptolake.lake.append`),
so a reader sees a candle a few seconds after it closed without any month being rewritten. In
the time between two flushes, the writer thread compacts a partition's stream files into its
``data.parquet`` once it has ``compact_files`` of them (a few partitions per gap, so a flush is
never held up), and every partition's at shutdown.

Nothing is lost: whenever a connection (re)starts, the candles between the last one stored and
the stream's first are fetched over REST before the symbol counts as live; a candle that closed
without its final update is fetched at once. A candle still missing after that (the REST
request failed too) is a gap like any other, found and filled by the next collection run.

Status (connections, reconnects, REST repairs, last candle per symbol and its delay) is written
to ``<lake>/_meta/stream.json`` at every flush, for ``cryptolake status``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from filelock import FileLock, Timeout

from cryptolake.atomic import write_bytes_atomic
from cryptolake.errors import CryptolakeError, InvalidSymbol, LakeError, LakeLocked
from cryptolake.lake import Lake, meta_dir, validate_symbol
from cryptolake.lake.append import Appender
from cryptolake.lake.layout import month_of, partition_dir
from cryptolake.lake.store import remove_placeholders
from cryptolake.query import refresh_database
from cryptolake.schema import Interval
from cryptolake.sources.binance import BinanceClient
from cryptolake.sources.klines import rows_to_table
from cryptolake.sources.stream import DEFAULT_LIFETIME_S, DEFAULT_STREAM_URL, KlineStream
from cryptolake.status import STREAM_STATUS_FILE, stream_status
from cryptolake.timeutils import iso

__all__ = ["StreamCollector", "StreamReport", "stream_status"]

log = logging.getLogger("cryptolake.streaming")

#: How long after a failed REST repair it is tried again, seconds.
REPAIR_RETRY_S = 30.0
#: At exit, the placeholders of absorbed stream files are removed once they are this old.
SHUTDOWN_GRACE_S = 2.0
#: ``<lake>/_meta/stream.lock``: held by the lake's one running stream.
STREAM_LOCK_FILE = "stream.lock"
_KLINE_FIELDS = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")


@dataclass
class StreamReport:
    """What a stream did: candles stored (from the stream and from REST repairs), repairs made
    and failed, reconnects, compactions."""

    symbols: int = 0
    interval: str = "1m"
    candles_streamed: int = 0
    candles_repaired: int = 0
    repairs: int = 0
    repairs_failed: int = 0
    reconnects: int = 0
    compactions: int = 0
    #: Whether a stream connection was ever open (False: nothing could be streamed).
    connected: bool = False
    last_connection_error: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def candles_stored(self) -> int:
        return self.candles_streamed + self.candles_repaired


class StreamCollector:
    """Keep ``symbols``' ``interval`` candles flowing into the lake from Binance's streams.

    Args:
        client: the REST client that repairs what the stream missed (and judges, by the
            exchange's clock, which candles are closed).
        lake: the lake (path or :class:`~cryptolake.lake.Lake`; Binance's candles).
        symbols: Binance symbols (``BTCUSDT``).
        interval: kline interval (``1m``).
        stream_url: Binance's WebSocket host.
        flush_s: buffered candles are written this often.
        compact_files: a partition is compacted once it holds this many stream files.
        silence_s, lifetime_s, retry_delay_s: see :class:`~cryptolake.sources.stream.KlineStream`.
        repair_retry_s: a REST repair that failed is tried again after this long.
        clock: wall clock (seconds), for the status times.

    Use :meth:`run` to stream until stopped, or :meth:`start`/:meth:`stop` (or ``with``) to
    stream in the background.
    """

    def __init__(
        self,
        client: BinanceClient,
        lake: str | Path | Lake,
        symbols: Sequence[str],
        interval: str = "1m",
        *,
        stream_url: str = DEFAULT_STREAM_URL,
        flush_s: float = 5.0,
        compact_files: int = 60,
        silence_s: float = 30.0,
        lifetime_s: float = DEFAULT_LIFETIME_S,
        retry_delay_s: float = 1.0,
        repair_retry_s: float = REPAIR_RETRY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush_s <= 0 or compact_files < 1:
            raise ValueError("flush_s > 0 and compact_files >= 1")
        self.client = client
        self.lake = lake if isinstance(lake, Lake) else Lake(lake)
        if not self.lake.is_local:
            raise LakeError(
                f"cryptolake stream needs a lake in a local folder, not {self.lake.location}: its "
                "small files are moved into data.parquet by renames, which object storage lacks"
            )
        if self.lake.exchange != "binance":
            raise ValueError("streams are Binance's: the lake must be Binance's")
        self.symbols = [validate_symbol(s) for s in dict.fromkeys(symbols)]
        if not self.symbols:
            raise ValueError("no symbols to stream")
        self.grid = Interval(interval)
        self.stream_url = stream_url
        self.flush_s = flush_s
        self.compact_files = compact_files
        self.repair_retry_s = repair_retry_s
        self.report = StreamReport(symbols=len(self.symbols), interval=self.grid.name)
        self._clock = clock
        self._latest_event_ms = 0
        self._appender = Appender(self.lake, self.grid.name)
        self._stream = KlineStream(
            self.symbols, self.grid.name, on_candle=self._on_candle, on_connected=self._on_connected,
            on_missed=self._on_missed, stream_url=stream_url, silence_s=silence_s, lifetime_s=lifetime_s,
            retry_delay_s=retry_delay_s,
        )  # fmt: skip
        self._buffer: list[tuple[str, list[Any], float]] = []
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer thread at a time in this process
        self._repairs: queue.Queue[tuple[str, int, int | None] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_stored: dict[str, int] = {}
        self._stored_at: dict[str, tuple[float, int]] = {}  # symbol: (stored at, delay ms)
        self._started_at = 0.0
        self._started_ms = 0
        self._compacted: set[tuple[str, str]] = set()
        self._views_ready = False
        self._repairing: dict[str, int] = {}  # symbol: REST repairs queued and not yet stored
        self._stream_lock: FileLock | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> StreamCollector:
        """Finish what a killed predecessor left, connect and start the writer threads; returns
        at once. Raises :class:`~cryptolake.errors.LakeLocked` if the lake cannot be written."""
        self._started_at = self._clock()
        self._take_stream_lock()
        try:
            self._prepare()
        except BaseException:
            self._release_stream_lock()
            raise
        for target, name in (
            (self._flush_loop, "flush"),
            (self._repair_loop, "repair"),
        ):
            thread = threading.Thread(target=target, name=f"cryptolake-stream-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._stream.start()
        log.debug("streaming %d symbols (%s) from %s", len(self.symbols), self.grid.name, self.stream_url)
        return self

    def _prepare(self) -> None:
        """Check the symbols with the exchange, finish what a killed predecessor left, and learn
        each symbol's last stored candle."""
        listed = self.client.symbol_statuses()
        unknown = [s for s in self.symbols if s not in listed]
        if unknown:
            raise InvalidSymbol(
                unknown[0],
                code=None,
                msg=f"not listed ({len(unknown)} of the symbols are not: {', '.join(unknown[:5])})",
            )
        self._started_ms = self.grid.floor(self.client.exchange_now_ms())
        with self._writing():
            self.lake.remove_stale_temp_files()  # also finishes a compaction cut short
        for symbol in self.symbols:
            bounds = self.lake.bounds(self.grid.name, symbol)
            if bounds is not None:
                self._last_stored[symbol] = bounds[1]

    def _take_stream_lock(self) -> None:
        """One stream per lake (``_meta/stream.lock``): a second would only duplicate the work."""
        path = meta_dir(self.lake.root) / STREAM_LOCK_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot write to the lake at {self.lake.root}: {exc.strerror or exc}") from None
        lock = FileLock(path, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            other = stream_status(self.lake) or {}
            who = f" (pid {other.get('pid')} on {other.get('host')})" if other.get("pid") else ""
            raise LakeLocked(
                f"another cryptolake stream is running on {self.lake.root}{who}; stop it first "
                f"(lock file: {path})",
                root=str(self.lake.root),
            ) from None
        self._stream_lock = lock

    def _release_stream_lock(self) -> None:
        if self._stream_lock is not None:
            self._stream_lock.release()
            self._stream_lock = None

    def stop(self) -> StreamReport:
        """Close the connections, write what is buffered, compact every partition with stream
        files, and return the report."""
        if self._stream_lock is None:
            return self.report  # not started, or stopped already
        try:
            self._stream.stop()
            self._stop.set()
            self._repairs.put(None)
            for thread in self._threads:
                thread.join()
            self._threads.clear()
            self._flush(everything=True)
            self._compact(everything=True)
            self._remove_placeholders()
            self.report.reconnects = self._stream.stats.reconnects
            self.report.connected = self._stream.stats.connections > 0
            self.report.last_connection_error = self._stream.stats.last_error
            self._write_status(running=False)
        finally:
            self._release_stream_lock()
        return self.report

    def run(
        self,
        stop: threading.Event | None = None,
        duration_s: float | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> StreamReport:
        """Stream until ``stop`` is set (or ``duration_s`` passed; or Ctrl-C), then :meth:`stop`.
        ``on_started`` is called once the stream has started."""
        self.start()
        try:
            if on_started is not None:
                on_started()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            event = stop or threading.Event()
            while not event.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                event.wait(0.2 if left is None else min(0.2, left))
        finally:
            report = self.stop()
        return report

    def __enter__(self) -> StreamCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- stream callbacks (connection threads) -------------------------------------------

    def _on_candle(self, symbol: str, kline: dict[str, Any]) -> None:
        row = [kline[k] for k in _KLINE_FIELDS]
        # How late the exchange sent it after the close (its clock), and when it arrived (ours):
        # with the time it waited here, its delay from close to stored.
        sent_late_ms = max(0, int(kline.get("E") or 0) - (int(kline["T"]) + 1))
        with self._buffer_lock:
            self._latest_event_ms = max(self._latest_event_ms, int(kline.get("E") or 0))
            self._buffer.append((symbol, row, self._clock() - sent_late_ms / 1000))

    def _on_connected(self, symbols: list[str]) -> None:
        # What closed while no connection listened: from the last stored candle on, over REST.
        for symbol in symbols:
            self._queue_repair((symbol, -1, None))

    def _on_missed(self, symbol: str, first_open_ms: int, last_open_ms: int) -> None:
        self._queue_repair((symbol, first_open_ms, last_open_ms))

    def _queue_repair(self, item: tuple[str, int, int | None]) -> None:
        # Until the repair is stored, the symbol's newer candles wait in the buffer: stored
        # before it, a crash in between would leave a hole that no restart looks behind.
        with self._buffer_lock:
            self._repairing[item[0]] = self._repairing.get(item[0], 0) + 1
        self._repairs.put(item)

    def _repaired(self, symbol: str) -> None:
        with self._buffer_lock:
            left = self._repairing.get(symbol, 0) - 1
            if left > 0:
                self._repairing[symbol] = left
            else:
                self._repairing.pop(symbol, None)

    # -- writer threads --------------------------------------------------------------------

    def _flush_loop(self) -> None:
        """Flush every ``flush_s``; in the time left before the next flush, compact what is due
        (so that compaction never holds up a flush, however many partitions are due at once)."""
        next_flush = time.monotonic() + self.flush_s
        while not self._stop.wait(max(0.0, next_flush - time.monotonic())):
            next_flush = max(next_flush + self.flush_s, time.monotonic() + self.flush_s / 2)
            try:
                self._flush()
                self._write_status(running=True)
            except LakeLocked:
                return  # stopping while another process held the lake
            except Exception as exc:  # noqa: BLE001 - a long-running writer says why and goes on
                self._error(f"writing streamed candles failed: {exc}", exc)
            try:
                self._compact(everything=False, until=next_flush - self.flush_s / 5)
            except LakeLocked:
                return
            except Exception as exc:  # noqa: BLE001 - as above
                self._error(f"compaction failed: {exc}", exc)

    def _flush(self, everything: bool = False) -> None:
        """Write the buffered candles; those of symbols with a REST repair still to be stored
        wait (unless ``everything``: at exit, a repair that never came is a gap for later)."""
        with self._buffer_lock:
            if everything or not self._repairing:
                pending, self._buffer = self._buffer, []
            else:
                pending = [entry for entry in self._buffer if entry[0] not in self._repairing]
                self._buffer = [entry for entry in self._buffer if entry[0] in self._repairing]
        if not pending:
            return
        by_symbol: dict[str, list[list[Any]]] = {}
        closed_at: dict[str, float] = {}
        for symbol, row, closed in pending:
            by_symbol.setdefault(symbol, []).append(row)
            closed_at[symbol] = closed
        tables = {symbol: rows_to_table(rows) for symbol, rows in by_symbol.items()}
        with self._writing():
            for symbol, table in tables.items():
                self.report.candles_streamed += self._store(
                    symbol, table, closed_at[symbol], source="websocket"
                )
        if not self._views_ready:
            # The lake's views (cryptolake.duckdb) read every partition's files by a glob, but
            # only once the lake has some: made again after the first write.
            self._views_ready = refresh_database(self.lake.root) is not None

    def _store(self, symbol: str, table: pa.Table, closed_at: float | None = None, *, source: str) -> int:
        """Append (holding the writer lock; candles that break a rule are quarantined, with
        ``source``); remember the last candle and its delay after its close (``closed_at``: when
        it closed on this machine's clock; None: by the exchange's)."""
        # The exchange's clock decides what is closed: the estimate from the offset measured at
        # start, or the latest time a message of the exchange's was sent at, if that is later.
        exchange_now = max(self.client.exchange_now_ms(), self._latest_event_ms)
        stored = self._appender.append(symbol, table, source=source, now_ms=exchange_now)
        if table.num_rows:
            last = int(table.column("open_time")[-1].value)
            if last > self._last_stored.get(symbol, -1):
                self._last_stored[symbol] = last
                now = self._clock()
                if closed_at is not None:
                    delay_ms = int((now - closed_at) * 1000)
                else:
                    delay_ms = self.client.exchange_now_ms() - self.grid.next_open(last)
                self._stored_at[symbol] = (now, delay_ms)
        return stored

    def _repair_loop(self) -> None:
        retry: list[tuple[float, tuple[str, int, int | None]]] = []  # (when, repair) after a failure
        while not self._stop.is_set():
            now = time.monotonic()
            for when, again in [r for r in retry if r[0] <= now]:
                retry.remove((when, again))
                self._repairs.put(again)
            try:
                item = self._repairs.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                return
            try:
                self._repair(*item)
                self._repaired(item[0])
            except LakeLocked:
                return
            except Exception as exc:  # noqa: BLE001 - tried again later; the others go on meanwhile
                self.report.repairs_failed += 1
                self._error(
                    f"REST repair of {item[0]} failed: {exc}; trying again in {self.repair_retry_s:g} s", exc
                )
                retry.append((time.monotonic() + self.repair_retry_s, item))

    def _repair(self, symbol: str, first: int, last: int | None) -> None:
        """Fetch over REST the closed candles from ``first`` (-1: after the last one stored)
        through ``last`` (None: the newest closed one), and store those the lake lacks."""
        if first < 0:
            known = self._last_stored.get(symbol)
            first = self.grid.next_open(known) if known is not None else self._started_ms
        end = None if last is None else self.grid.next_open(last)
        if end is not None and end <= first:
            return
        table = cast(pa.Table, self.client.get_klines(symbol, self.grid.name, first, end, as_arrow=True))
        self.report.repairs += 1
        if table.num_rows == 0:
            return
        with self._writing():
            added = self._store(symbol, table, source="rest")
        self.report.candles_repaired += added
        if added:
            log.info("repaired %d %s candles of %s over REST", added, self.grid.name, symbol)

    def _compact(self, everything: bool, until: float | None = None) -> None:
        """Compact partitions with ``compact_files`` stream files, or of a past month (or all),
        one at a time, each under the writer lock; stop at ``until`` (``time.monotonic()``)."""
        current = month_of(self.client.exchange_now_ms())
        with self._write_lock:  # the flush thread adds to what the appender knows
            pending = sorted(self._appender.pending().items())
        for (symbol, month), files in pending:
            if until is not None and time.monotonic() >= until:
                return  # the rest after the next flush
            if everything or files >= self.compact_files or month < current:
                with self._writing():
                    if self._appender.compact(symbol, month):
                        self.report.compactions += 1
                        self._compacted.add((symbol, month))

    def _remove_placeholders(self) -> None:
        """At exit, the empty placeholders this run's compactions left, after
        :data:`SHUTDOWN_GRACE_S` (a query that listed a folder before then has opened its files)."""
        if not self._compacted:
            return
        time.sleep(SHUTDOWN_GRACE_S)  # (placeholders older runs left in them go too)
        with self._writing():
            for symbol, month in sorted(self._compacted):
                folder = partition_dir(self.lake.root, self.grid.name, symbol, month, self.lake.exchange)
                remove_placeholders(folder, grace_s=SHUTDOWN_GRACE_S)
        self._compacted.clear()

    def _writing(self) -> _Writing:
        return _Writing(self)

    def _error(self, message: str, exc: BaseException | None = None) -> None:
        expected = exc is None or isinstance(exc, (CryptolakeError, OSError))
        log.warning("%s", message, exc_info=None if expected else exc)
        self.report.errors.append(message)
        del self.report.errors[:-20]

    # -- status ----------------------------------------------------------------------------

    def status(self, running: bool = True) -> dict[str, Any]:
        """What the stream is doing (what ``cryptolake status`` shows)."""
        stats = self._stream.stats
        now = self._clock()
        symbols = {}
        for symbol in self.symbols:
            last = self._last_stored.get(symbol)
            stored = self._stored_at.get(symbol)
            symbols[symbol] = {
                "last_open_time": iso(last) if last is not None else None,
                "stored_at": iso(int(stored[0] * 1000)) if stored else None,
                "delay_s": round(stored[1] / 1000, 3) if stored else None,
            }
        return {
            "running": running,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "exchange": self.lake.exchange,
            "interval": self.grid.name,
            "stream_url": self.stream_url,
            "started_at": iso(int(self._started_at * 1000)),
            "updated_at": iso(int(now * 1000)),
            "flush_s": self.flush_s,
            "connections": stats.open,
            "connections_wanted": self._stream.connection_count,
            "connections_opened": stats.connections,
            "reconnects": stats.reconnects,
            "messages": stats.messages,
            "candles_streamed": self.report.candles_streamed,
            "candles_repaired": self.report.candles_repaired,
            "rest_repairs": self.report.repairs,
            "rest_repairs_failed": self.report.repairs_failed,
            "missed_final_updates": stats.missed,
            "compactions": self.report.compactions,
            "last_error": self.report.errors[-1] if self.report.errors else stats.last_error,
            "last_connection_error": stats.last_error,
            "symbols": symbols,
        }

    def _write_status(self, running: bool) -> None:
        document = self.status(running)
        try:
            write_bytes_atomic(meta_dir(self.lake.root) / STREAM_STATUS_FILE, json.dumps(document).encode())
        except OSError as exc:
            log.debug("cannot write the stream status: %s", exc)


class _Writing:
    """The writer lock of the lake, and of this process's writer threads."""

    def __init__(self, owner: StreamCollector) -> None:
        self.owner = owner
        self.file_lock: Any = None

    def __enter__(self) -> None:
        self.owner._write_lock.acquire()
        try:
            self.file_lock = self.owner.lake.acquire_writer_lock(cancel=None)
        except BaseException:
            self.owner._write_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.file_lock.release()
        finally:
            self.owner._write_lock.release()
