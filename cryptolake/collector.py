"""CryptoCollector: fills the lake from the exchange, backward and forward, batch by batch.

The collector is the only module that joins an exchange client and the lake. Each symbol's
history is fetched in batches of ``batch_size_hours`` and every batch is written as it arrives,
so memory stays bounded however long the history is. Backward collection walks from the earliest
stored candle back towards the start date and forward collection from the latest stored candle
up to the last closed one; both extend the stored range without leaving holes, so a run killed
at any point is simply resumed by the next one. One symbol's failure never stops the others.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from cryptolake.atomic import write_bytes_atomic
from cryptolake.errors import CryptolakeError, Interrupted, InvalidSymbol, IPBanned, LakeLocked, Transient
from cryptolake.gaps import DataGapDetector, Gap, GapScan, forget_report, missing_runs, save_report
from cryptolake.lake import Lake, meta_dir, split_by_month, validate_symbol
from cryptolake.lake.meta import LakeMeta, Window
from cryptolake.schema import HOUR_MS, Interval
from cryptolake.sources.binance import BinanceClient
from cryptolake.timeutils import from_ms, iso, to_ms

log = logging.getLogger("cryptolake.collector")

Direction = Literal["backward", "forward", "gaps"]
STATE_FILE = "collection_state.json"


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
                s: {**asdict(r), "first_open_time": _iso_dt(r.first_open_time),
                    "last_open_time": _iso_dt(r.last_open_time)}
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


class CryptoCollector:
    """Collects candles of a universe of symbols into the Parquet lake.

    Args:
        binance_client: where candles come from.
        top_n_cryptos: size of the default universe (top N by 24 h quote volume).
        batch_size_hours: hours of candles fetched and written per batch.
        lake: the lake (a :class:`~cryptolake.lake.Lake` or its root directory).
        interval: candle interval, ``1s`` ... ``1M``.
        wait_for_lock: when another process is writing to the lake, wait (True) or fail at once.
        on_progress: called with a :class:`ProgressEvent` from worker threads.
        on_lock_wait: called once when the collector has to wait for another writer.
        clock: epoch seconds now, used to stamp runs in the collection state.
        exchange_gap_recheck_days: gap filling fetches a confirmed exchange gap again once its
            last check is this many days old; 0 never re-checks.
        window_attempts: how many times one batch window is fetched in a run before its symbol
            fails; between attempts the window waits at the back of the queue, with backoff
            (each attempt is itself one client call with the client's own retries).
    """

    def __init__(
        self,
        binance_client: BinanceClient,
        top_n_cryptos: int = 50,
        batch_size_hours: int = 720,
        *,
        lake: Lake | str | Path = "data/lake",
        interval: str = "1h",
        wait_for_lock: bool = True,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        on_lock_wait: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        exchange_gap_recheck_days: float = 30,
        window_attempts: int = 5,
    ) -> None:
        if top_n_cryptos < 1 or batch_size_hours < 1 or window_attempts < 1:
            raise ValueError("top_n_cryptos, batch_size_hours and window_attempts must be at least 1")
        self.client = binance_client
        self.top_n_cryptos = top_n_cryptos
        self.batch_size_hours = batch_size_hours
        self.lake = lake if isinstance(lake, Lake) else Lake(lake)
        self.grid = Interval(interval)
        self.interval = interval
        self.wait_for_lock = wait_for_lock
        self.on_progress = on_progress
        self.on_lock_wait = on_lock_wait
        self._clock = clock
        self.exchange_gap_recheck_days = exchange_gap_recheck_days
        self.meta = LakeMeta(self.lake.root)
        self.window_attempts = window_attempts
        self._stop = threading.Event()
        self._banned: str | None = None
        self._end_ms: int | None = None
        self._state_lock = threading.Lock()
        self._gap_plan: dict[str, list[Gap]] = {}

    # -- universe --------------------------------------------------------------------------

    def resolve_symbols(self, crypto_symbols: Iterable[str] | None = None) -> list[str]:
        """Pairs to collect: base assets ("BTC") or pairs ("BTCUSDT"); None means the top N.

        Raises:
            InvalidSymbolName: a name that is not a safe, Binance-like symbol.
        """
        if crypto_symbols is None:
            top = self.client.get_top_by_market_cap(self.top_n_cryptos)
            return [t.symbol for t in top]
        return pair_symbols(crypto_symbols, self.client.quote_asset)

    def stored_symbols(self) -> list[str]:
        """Symbols with candles of this interval in the lake."""
        return self.lake.symbols(self.interval)

    def known_symbols(self) -> list[str]:
        """Symbols the lake holds for this interval: stored candles or a recorded start."""
        return self.detector().known_symbols()

    # -- collection --------------------------------------------------------------------------

    def collect_backward(
        self, start_date: date | datetime | str | int, crypto_symbols: Sequence[str] | None = None
    ) -> CollectionReport:
        """Fetch history from ``start_date`` (or the listing, if later) up to the earliest
        stored candle; for a symbol with nothing stored, up to the last closed candle."""
        symbols = self.resolve_symbols(crypto_symbols)
        return self._run("backward", symbols, to_ms(start_date))

    def collect_forward(self, crypto_symbols: Sequence[str] | None = None) -> CollectionReport:
        """Fetch from the latest stored candle up to the last closed one.

        Without symbols: every symbol stored in the lake for this interval.
        """
        symbols = self.resolve_symbols(crypto_symbols) if crypto_symbols is not None else self.stored_symbols()
        return self._run("forward", symbols, None)

    def detect_and_fill_gaps(
        self,
        crypto_symbols: Sequence[str] | None = None,
        start_date: date | datetime | str | int | None = None,
    ) -> CollectionReport:
        """Find the gaps of the lake's symbols (or ``crypto_symbols``) and fetch exactly those
        windows: missing and failed ones, and confirmed exchange gaps due for a re-check; the
        same gaps :class:`DataGapDetector` reports, backward ones included.

        Each symbol's expected range starts at the start its collection recorded, or at
        ``start_date`` when given (which is then recorded), or at its first stored candle,
        whichever is earliest. ``report.remaining`` gives the candles still missing, by kind.
        """
        symbols = self.resolve_symbols(crypto_symbols) if crypto_symbols is not None else self.known_symbols()
        start_ms = to_ms(start_date) if start_date is not None else None
        report = self._run("gaps", symbols, start_ms)
        # Judged at the run's end (the exchange's clock as the run read it): asking again could
        # fail after a good run, or move the end past what was fetched.
        if report.stopped:
            return report  # asked to stop: no new report (remaining stays None)
        after = self.detector().scan(symbols, start_ms, self._end_ms)
        save_report(self.lake, after)
        report.remaining = self._remaining(after)
        return report

    def detector(self) -> DataGapDetector:
        """A gap detector over this collector's lake, interval and exchange."""
        return DataGapDetector(
            self.lake, self.interval, client=self.client, clock=self._clock,
            exchange_gap_recheck_days=self.exchange_gap_recheck_days,
        )  # fmt: skip

    @staticmethod
    def _remaining(scan: GapScan) -> dict[str, int]:
        remaining: dict[str, int] = {}
        for gap in scan.gaps:
            remaining[gap.kind] = remaining.get(gap.kind, 0) + gap.count
        return remaining

    def request_stop(self) -> None:
        """Finish the partition being written, record the run, then stop (safe from a signal
        handler): requests waiting for weight or a retry give up at once. A collection that
        starts afterwards runs normally."""
        self._stop.set()
        cancel = getattr(self.client, "cancel_pending", None)
        if cancel is not None:
            cancel()

    def _run(self, direction: Direction, symbols: list[str], start_ms: int | None) -> CollectionReport:
        report = CollectionReport(direction, self.interval, started_at=from_ms(int(self._clock() * 1000)))
        self._stop.clear()
        resume = getattr(self.client, "resume", None)
        if resume is not None:
            resume()
        self._banned = None
        self._end_ms = None
        if not symbols:
            report.finished_at = report.started_at
            return report
        with ExitStack() as held:
            try:
                held.enter_context(self.lake.writer_lock(wait=self.wait_for_lock, on_wait=self.on_lock_wait,
                                                         cancel=self._stop))
            except LakeLocked as exc:
                if not exc.cancelled:
                    raise
                # Stopped while another process was writing: nothing was done, nothing to record.
                report.results = {s: SymbolResult(s, direction, stopped=True) for s in symbols}
                report.finished_at = from_ms(self._now_ms())
                return report
            # The exchange's clock, not ours, decides which candles are closed.
            end_ms = self._end_ms = self.grid.floor(self.client.get_server_time_ms())
            if direction == "gaps":
                try:
                    scan = self.detector().scan(symbols, start_ms, end_ms)
                except Interrupted:  # stopped while the detector asked the exchange for listings
                    report.results = {s: SymbolResult(s, direction, stopped=True) for s in symbols}
                    report.finished_at = from_ms(self._now_ms())
                    return report
                self._gap_plan = {s: [g for g in scan.gaps if g.symbol == s and _fetchable(g)] for s in symbols}
            workers = max(1, min(len(symbols), self.client.concurrency))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collect") as pool:
                results = pool.map(lambda s: self._collect_symbol(direction, s, start_ms, end_ms), symbols)
                report.results = {r.symbol: r for r in results}
            report.finished_at = from_ms(int(self._clock() * 1000))
            self._save_state(report)
        return report

    def _collect_symbol(self, direction: Direction, symbol: str, start_ms: int | None, end_ms: int) -> SymbolResult:
        result = SymbolResult(symbol, direction)
        try:
            batches = self._plan_patiently(direction, symbol, start_ms, end_ms, result)
            result.expected_rows = sum(self.grid.count(lo, hi) for lo, hi in batches)
            self._emit(ProgressEvent("planned", symbol, direction, expected_rows=result.expected_rows))
            wanted_from = start_ms if direction != "forward" else None
            if wanted_from is not None and (direction == "gaps" or self.lake.bounds(self.interval, symbol)
                                            or (not batches and result.note is None)):
                self._record_start(symbol, wanted_from)
                wanted_from = None
            self._collect_batches(symbol, batches, result, wanted_from)
        except Interrupted:
            result.stopped = True  # a stop request cut a wait or a request short: not a failure
        except IPBanned as exc:
            self._banned = str(exc)  # a ban stops everything: no symbol may send another request
            result.error = str(exc)
        except InvalidSymbol as exc:
            result.error, result.unknown_symbol = str(exc), True
        except CryptolakeError as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one symbol's bug must not stop the others
            log.exception("unexpected failure collecting %s", symbol)
            result.error = f"{type(exc).__name__}: {exc}"
        if result.error:
            log.warning("%s %s: %s", direction, symbol, result.error)
            self._emit(ProgressEvent("failed", symbol, direction, error=result.error))
        elif not result.stopped:
            self._emit(ProgressEvent("done", symbol, direction, expected_rows=result.expected_rows))
        return result

    def _collect_batches(
        self, symbol: str, batches: list[tuple[int, int]], result: SymbolResult, start_ms: int | None
    ) -> None:
        """Fetch and write the batches in order. A batch whose fetch fails for a transient reason
        (its request retries spent) goes to the back of the queue and is tried again later in this
        run, after a growing pause; only one that keeps failing (:attr:`window_attempts` times,
        over a stretch of about ``30 x retry_delay`` seconds) or fails for a reason that will not
        pass (an unknown symbol, a ban) fails the symbol. ``start_ms``: record it as the symbol's
        start once a fetch has succeeded (the exchange knows the symbol)."""
        pending: deque[tuple[int, int, int, float]] = deque((lo, hi, 0, 0.0) for lo, hi in batches)
        while pending:
            if self._stop.is_set():
                result.stopped = True
                return
            if self._banned is not None:
                raise IPBanned(self._banned, banned_until=self.client.banned_until(), retry_after_s=0)
            lo, hi, failures, ready_at = pending.popleft()
            wait = ready_at - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                continue  # stopped while waiting: the loop reports it
            try:
                self._collect_batch(symbol, lo, hi, result)
            except CryptolakeError as exc:
                if not isinstance(exc, Transient) or failures + 1 >= self.window_attempts:
                    raise
                delay = self._window_backoff_s(failures)
                log.info("%s %s: window from %s failed (%s); trying it again in %.1f s",
                         result.direction, symbol, iso(lo), exc, delay)
                pending.append((lo, hi, failures + 1, time.monotonic() + delay))
                continue
            if start_ms is not None:
                self._record_start(symbol, start_ms)
                start_ms = None

    def _plan_patiently(
        self, direction: Direction, symbol: str, start_ms: int | None, end_ms: int, result: SymbolResult
    ) -> list[tuple[int, int]]:
        """:meth:`_plan`, whose look-ups (the listing, the latest candle) are tried again after a
        transient failure as a batch window is (:attr:`window_attempts` times, with backoff). If
        they keep failing when walking backward, the whole range is recorded as a ``failed``
        window (and the symbol's start), so that `gaps` lists it and `fill-gaps` retries it."""
        for failures in range(self.window_attempts):
            try:
                return self._plan(direction, symbol, start_ms, end_ms, result)
            except CryptolakeError as exc:
                if not isinstance(exc, Transient):
                    raise
                if failures + 1 >= self.window_attempts:
                    if direction == "backward" and start_ms is not None:
                        stored = self.lake.bounds(self.interval, symbol)
                        hi = stored[0] if stored else end_ms
                        lo, now = self.grid.ceil(start_ms), self._now_ms()
                        if lo < hi:
                            self._record_start(symbol, start_ms)
                            self.meta.record_window(Window(self.interval, symbol, "failed", lo,
                                                           self.grid.floor(hi - 1), now, now, error=str(exc)))
                    raise
                if self._stop.wait(self._window_backoff_s(failures)):
                    raise Interrupted("stopped while waiting to plan again") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _window_backoff_s(self, failures: int) -> float:
        """The pause before a failed window is tried again: 2, 4, 8, 16 ... x the client's first
        retry delay (capped at a minute), with up to 25% jitter."""
        base = max(0.0, float(getattr(self.client, "retry_delay", 1.0)))
        delay = min(60.0, base * 2 ** (failures + 1))
        return delay * (1 + 0.25 * random.random())

    def _record_start(self, symbol: str, start_ms: int) -> None:
        self.meta.record_start(self.interval, symbol, self.grid.ceil(start_ms), self._now_ms())

    def _plan(
        self, direction: Direction, symbol: str, start_ms: int | None, end_ms: int, result: SymbolResult
    ) -> list[tuple[int, int]]:
        """Batches ``[lo, hi)`` in the order they are fetched; empty when nothing is missing."""
        if direction == "gaps":
            return [b for gap in self._gap_plan.get(symbol, []) for b in self._batches(
                gap.start_ms, self.grid.next_open(gap.end_ms))]  # fmt: skip
        stored = self.lake.bounds(self.interval, symbol)
        if direction == "backward":
            assert start_ms is not None
            hi = stored[0] if stored else end_ms
            if self.grid.count(start_ms, hi) > self._batch_candles():
                first = self.client.first_open_time(symbol, self.interval)
                if first is None:
                    result.note = "the exchange has no candles for this symbol"
                    return []
                self.meta.record_listing(self.interval, symbol, first, self._now_ms())
                start_ms = max(start_ms, first)
            return list(reversed(self._batches(start_ms, hi)))
        if stored is None:
            result.note = "nothing stored yet: collect backward first"
            return []
        lo = stored[1] + 1
        if self.grid.count(lo, end_ms) > self._batch_candles():
            last = self.client.last_open_time(symbol, self.interval)
            end_ms = min(end_ms, last + 1) if last is not None else lo
        return self._batches(lo, end_ms)

    def _batch_candles(self) -> int:
        return max(1, self.batch_size_hours * HOUR_MS // self.grid.nominal_ms)

    def _batches(self, lo: int, hi: int) -> list[tuple[int, int]]:
        batches, cursor, size = [], self.grid.ceil(lo), self._batch_candles()
        while cursor < hi:
            stop = min(hi, self.grid.add(cursor, size))
            batches.append((cursor, stop))
            cursor = stop
        return batches

    def _collect_batch(self, symbol: str, lo: int, hi: int, result: SymbolResult) -> None:
        last = self.grid.floor(hi - 1)
        try:
            frame = self.client.get_klines(symbol, self.interval, lo, hi)
        except (InvalidSymbol, Interrupted):
            raise  # nothing to record: the exchange does not know the symbol, or a stop was asked
        except CryptolakeError as exc:
            # Listed as `failed` until a later fetch of these slots succeeds.
            now = self._now_ms()
            self.meta.record_window(Window(self.interval, symbol, "failed", lo, last, now, now, error=str(exc)))
            raise
        # What this fetch proved goes into the metadata before the candles are written, in one
        # rewrite: a run killed in between leaves the outages recorded and the slots to fetch.
        self.meta.settle_windows(self.interval, symbol, lo, last, self._outages(symbol, lo, last, frame),
                                 self._now_ms())
        # Write the month next to the stored range first (the newest one when walking backward):
        # a run stopped between two partition writes then leaves no hole that bounds-based
        # resumption would never fill.
        months = split_by_month(frame)
        for month in sorted(months, reverse=result.direction == "backward"):
            written = self.lake.write_klines(self.interval, symbol, months[month])
            result.rows_added += written.rows_added
            result.rows_changed += written.rows_changed
            result.files_written += written.files_written
        result.batches += 1
        if frame.height:
            first, last_open = frame["open_time"][0], frame["open_time"][-1]
            result.first_open_time = min(filter(None, (result.first_open_time, first)))
            result.last_open_time = max(filter(None, (result.last_open_time, last_open)))
        self._emit(ProgressEvent("batch", symbol, result.direction, rows=frame.height))

    def _outages(self, symbol: str, lo: int, last: int, frame: Any) -> list[tuple[int, int]]:
        """The runs ``(first, last open time)`` of ``[lo, last]`` the exchange returned nothing for
        although the symbol has candles before and after them: an outage (or a halt).

        Evidence of candles before a run: a fetched or stored candle, or the symbol's recorded
        listing; after it: a fetched or stored candle. So a run at the oldest edge of a backward
        batch is known for an outage at once, without waiting for the next batch.
        """
        fetched = [self.grid.index(t) for t in frame["open_time"].dt.epoch("ms").to_list()]
        fetched = [i for i in fetched if self.grid.is_on_grid(self.grid.at(i))]
        holes = missing_runs(fetched, self.grid.index(lo), self.grid.index(last))
        if not holes:
            return []
        stored = self.lake.bounds(self.interval, symbol)
        listed = self.meta.listings(self.interval).get(symbol)
        earlier = [*fetched, *([self.grid.index(stored[0])] if stored else [])]
        earlier += [self.grid.index(self.grid.ceil(listed))] if listed is not None else []
        later = [*fetched, *([self.grid.index(stored[1])] if stored else [])]
        before, after = min(earlier, default=None), max(later, default=None)
        return [(self.grid.at(a), self.grid.at(b)) for a, b in holes
                if before is not None and after is not None and before < a and b < after]

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    # -- forgetting ------------------------------------------------------------------------

    def forget_symbols(self, crypto_symbols: Sequence[str], *, data: bool = False) -> dict[str, dict[str, int]]:
        """Remove what the lake remembers of some symbols for this interval: their collection
        state, recorded start, listing, outage and failed windows, and gap-report rows; with
        ``data``, their partitions too. Under the writer lock.

        Returns:
            Per pair: ``state`` (1 if a state entry went), ``records``, ``report_rows``,
            ``partitions`` and ``rows`` removed.

        Raises:
            InvalidSymbolName: a name that is not a safe, Binance-like symbol.
        """
        pairs = self.resolve_symbols(crypto_symbols)
        out: dict[str, dict[str, int]] = {}
        self._stop.clear()
        with self.lake.writer_lock(wait=self.wait_for_lock, on_wait=self.on_lock_wait, cancel=self._stop):
            for pair in pairs:
                if self._stop.is_set():
                    break  # asked to stop: the symbols done so far are done whole
                partitions, rows = self.lake.delete_symbol(self.interval, pair) if data else (0, 0)
                out[pair] = {
                    "state": int(self._forget_state(pair)),
                    "records": self.meta.forget_symbol(self.interval, pair),
                    "report_rows": forget_report(self.lake, self.interval, pair),
                    "partitions": partitions,
                    "rows": rows,
                }
        return out

    def _forget_state(self, symbol: str) -> bool:
        with self._state_lock:
            document = self._state_document()
            if symbol not in document.get(self.interval, {}):
                return False
            del document[self.interval][symbol]
            _write_json_atomic(self._state_path(), document)
            return True

    # -- state and status ------------------------------------------------------------------

    def get_collection_status(self) -> dict[str, Any]:
        """Rows, first and last candle per symbol (from Parquet footers), plus each symbol's
        last run and last error, and ``total_records_collected`` over the interval. Every symbol
        the lake knows is listed: with candles, a collection state or a recorded start."""
        stats = self.lake.partition_stats(self.interval)
        state = self._load_state()
        symbols: dict[str, dict[str, Any]] = {}
        for part in stats:
            entry = symbols.setdefault(part.symbol, {"rows": 0, "months": 0, "first": None, "last": None})
            entry["rows"] += part.rows
            entry["months"] += 1
            if part.first_open_ms is not None:
                entry["first"] = min(filter(None, (entry["first"], part.first_open_ms)))
                entry["last"] = max(filter(None, (entry["last"], part.last_open_ms)))
        for symbol in [*state, *self.meta.starts(self.interval)]:  # known without candles yet, too
            symbols.setdefault(symbol, {"rows": 0, "months": 0, "first": None, "last": None})
        return {
            "lake": str(self.lake.root),
            "interval": self.interval,
            "total_records_collected": sum(e["rows"] for e in symbols.values()),
            "symbols": {
                symbol: {
                    "rows": e["rows"],
                    "months": e["months"],
                    "first_open_time": iso(e["first"]) if e["first"] is not None else None,
                    "last_open_time": iso(e["last"]) if e["last"] is not None else None,
                    **state.get(symbol, {}),
                }
                for symbol, e in sorted(symbols.items())
            },
        }

    def _state_path(self) -> Path:
        return meta_dir(self.lake.root) / STATE_FILE

    def _load_state(self) -> dict[str, dict[str, Any]]:
        return dict(self._state_document().get(self.interval, {}))

    def _state_document(self) -> dict[str, Any]:
        """The whole collection state (every interval); empty if there is none or it is torn."""
        try:
            document = json.loads(self._state_path().read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def _save_state(self, report: CollectionReport) -> None:
        with self._state_lock:
            document = self._state_document()
            section = document.setdefault(self.interval, {})
            for symbol, result in report.results.items():
                if result.ok and not result.batches and not result.stopped:
                    continue  # nothing was attempted: keep the last real run's record
                if result.unknown_symbol and symbol not in section:
                    continue  # the exchange does not know it: a typo must not stay in the lake
                section[symbol] = {
                    "last_run_at": _iso_dt(report.finished_at),
                    "last_direction": result.direction,
                    "last_rows_added": result.rows_added,
                    "last_error": result.error,
                    "last_outcome": "stopped" if result.stopped else ("failed" if result.error else "succeeded"),
                }
            _write_json_atomic(self._state_path(), document)


def pair_symbols(names: Iterable[str], quote_asset: str) -> list[str]:
    """Pairs for base assets ("BTC") or pairs ("BTCUSDT"), validated, without repeats.

    Raises:
        InvalidSymbolName: a name that is not a safe, Binance-like symbol.
    """
    pairs = []
    for name in names:
        text = name.strip()
        upper = text.upper() if text.isascii() else text
        pair = upper if upper.endswith(quote_asset) and len(upper) > len(quote_asset) else upper + quote_asset
        pairs.append(validate_symbol(pair if text else text))
    return list(dict.fromkeys(pairs))


def _fetchable(gap: Gap) -> bool:
    """Gap filling fetches missing and failed slots, and exchange gaps due for a re-check."""
    return gap.kind in ("missing", "failed") or (gap.kind == "exchange_gap" and gap.recheck_due)


def _iso_dt(value: datetime | None) -> str | None:
    return iso(to_ms(value)) if value is not None else None


def _write_json_atomic(path: Path, document: Any) -> None:
    write_bytes_atomic(path, json.dumps(document, indent=1, sort_keys=True).encode("utf-8"))
