"""CryptoCollector: fills the lake from the exchange, backward, forward and into gaps.

The collector decides *what* a run fetches: for each symbol, the windows of open times it
lacks (backward from the earliest stored candle to the start date, forward from the latest one
to the last closed candle, or the gaps the detector finds), bounded by the exchange's clock and
by what the exchange lists. :mod:`cryptolake.pipeline` does the fetching and writing of all of
them at once. Both directions extend the stored range without leaving holes, so a run killed at
any point is resumed by the next one; one symbol's failure never stops the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptolake.errors import CryptolakeError, Interrupted, InvalidSymbol, LakeLocked
from cryptolake.gaps import RECHECKED_KINDS, DataGapDetector, Gap, GapScan, forget_report, save_report
from cryptolake.lake import Lake, validate_symbol
from cryptolake.lake.layout import DEFAULT_EXCHANGE
from cryptolake.lake.meta import LakeMeta
from cryptolake.lake.storage import update_object
from cryptolake.pipeline import CommitGate, FetchWindow, Pipeline
from cryptolake.quality import forget_findings
from cryptolake.results import CollectionReport, Direction, ProgressEvent, SymbolResult, _iso_dt
from cryptolake.schema import DAY_MS, HOUR_MS, Interval
from cryptolake.sharding import Shard
from cryptolake.sources.base import KlineSource, Market
from cryptolake.status import STATE_PATH, collection_status, parse_state, state_document, state_section
from cryptolake.timeutils import from_ms, iso, to_ms

__all__ = [
    "CollectionReport",
    "CryptoCollector",
    "Direction",
    "ProgressEvent",
    "SymbolResult",
    "pair_symbols",
]

log = logging.getLogger("cryptolake.collector")


class CryptoCollector:
    """Collects candles of a universe of symbols into the Parquet lake.

    Args:
        binance_client: where candles come from.
        top_n_cryptos: size of the default universe (top N by 24 h quote volume).
        batch_size_hours: the most hours of candles written at once (and so held in memory per
            symbol): a month partition is written whole unless it holds more than 1.5 times
            this. Requests are always full pages of 1,000 candles, whatever this is.
        lake: the lake (a :class:`~cryptolake.lake.Lake` or its root directory).
        interval: candle interval, ``1s`` ... ``1M``.
        wait_for_lock: when another process is writing to the lake as a run starts, wait for it
            (True) or fail at once. The lake's writer lock is taken per partition commit, so
            runs on one lake interleave.
        on_progress: called with a :class:`ProgressEvent` as the run goes.
        on_lock_wait: called once per run when a commit has to wait for another writer.
        clock: epoch seconds now, used to stamp runs in the collection state.
        exchange_gap_recheck_days: gap filling fetches a confirmed exchange gap again once its
            last check is this many days old; 0 never re-checks.
        window_attempts: how many times one page is asked in a run before its window fails;
            between attempts it waits, with backoff, while the other pages go on (each attempt
            is itself one client call with the client's own retries).
        shard: ``"K/N"`` or a :class:`~cryptolake.sharding.Shard`: collect (and fill the gaps
            of) only the symbols of shard K of N, so that N processes on N hosts share the
            universe; None collects every symbol.
    """

    def __init__(
        self,
        binance_client: KlineSource,
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
        shard: Shard | str | None = None,
    ) -> None:
        if top_n_cryptos < 1 or batch_size_hours < 1 or window_attempts < 1:
            raise ValueError("top_n_cryptos, batch_size_hours and window_attempts must be at least 1")
        self.client = binance_client
        self.top_n_cryptos = top_n_cryptos
        self.batch_size_hours = batch_size_hours
        # The candles of the client's exchange: its own part of the lake and of the metadata.
        exchange = binance_client.exchange
        self.lake = lake.for_exchange(exchange) if isinstance(lake, Lake) else Lake(lake, exchange)
        self.grid = Interval(interval)
        self.interval = interval
        self.wait_for_lock = wait_for_lock
        self.on_progress = on_progress
        self.on_lock_wait = on_lock_wait
        self._clock = clock
        self.exchange_gap_recheck_days = exchange_gap_recheck_days
        self.meta = LakeMeta(self.lake.storage, self.lake.exchange)
        self.window_attempts = window_attempts
        #: Collect only this shard's symbols (see :mod:`cryptolake.sharding`); None: all.
        self.shard = Shard.parse(shard) if isinstance(shard, str) else shard
        self._stop = threading.Event()
        self._end_ms: int | None = None
        self._exchange_now_ms = 0  # the exchange's clock when the run was planned
        self._state_lock = threading.Lock()

    # -- universe --------------------------------------------------------------------------

    def resolve_symbols(self, crypto_symbols: Iterable[str] | None = None) -> list[str]:
        """Pairs to collect: base assets ("BTC") or pairs ("BTCUSDT"); None means the top N.

        Raises:
            InvalidSymbolName: a name that is not a safe, Binance-like symbol.
        """
        if crypto_symbols is None:
            top = self.client.get_top_by_market_cap(self.top_n_cryptos)
            return [t.symbol for t in top]
        if self.lake.exchange == DEFAULT_EXCHANGE:
            return pair_symbols(crypto_symbols, self.client.quote_asset)
        # A symbol the lake already knows is taken as it is: no request (forget works offline).
        known = set(self.lake.symbols(self.interval)) | set(self.meta.starts(self.interval))
        known |= set(self.meta.markets()["symbol"].to_list())
        names = [name.strip() for name in crypto_symbols]
        return list(
            dict.fromkeys(
                validate_symbol(n if not n or n in known else self.client.resolve_symbol(n)) for n in names
            )
        )

    def own_symbols(self, symbols: list[str]) -> list[str]:
        """The symbols this collector's shard owns (all of them without a shard)."""
        return symbols if self.shard is None else self.shard.select(self.lake.exchange, symbols)

    def stored_symbols(self) -> list[str]:
        """Symbols with candles of this interval in the lake."""
        return self.lake.symbols(self.interval)

    def known_symbols(self) -> list[str]:
        """Symbols the lake holds for this interval: stored candles or a recorded start."""
        return self.detector().known_symbols()

    # -- collection --------------------------------------------------------------------------

    def collect(
        self,
        start_date: date | datetime | str | int,
        crypto_symbols: Sequence[str] | None = None,
        *,
        until: date | datetime | str | int | None = None,
        backward: bool = True,
        forward: bool = True,
    ) -> list[CollectionReport]:
        """Backward and forward collection in one run (what ``cryptolake collect`` does): every
        window of every symbol goes through one pipeline, so the requests of all of them share
        the exchange's weight and the connections, and the exchange's clock and symbol list are
        asked once.

        Args:
            start_date: fetch history from here (or from the listing, if later).
            crypto_symbols: base assets or pairs; None: the top N.
            until: the last open time wanted, inclusive (a date means that whole day); default:
                the last closed candle.
            backward, forward: which of the two steps to run.

        Returns:
            One report per step run, backward first.

        Raises:
            ValueError: ``until`` is before ``start_date``.
        """
        start_ms = to_ms(start_date)
        if until is not None and self._until_end(until) <= self.grid.ceil(start_ms):
            raise ValueError(f"until ({until}) is before the start ({iso(start_ms)}): nothing to collect")
        symbols = self.resolve_symbols(crypto_symbols)
        wanted: tuple[tuple[Direction, bool], ...] = (("backward", backward), ("forward", forward))
        steps: list[Direction] = [d for d, on in wanted if on]
        return self._run(steps, symbols, start_ms, until)

    def collect_backward(
        self,
        start_date: date | datetime | str | int,
        crypto_symbols: Sequence[str] | None = None,
    ) -> CollectionReport:
        """Fetch history from ``start_date`` (or the listing, if later) up to the earliest
        stored candle; for a symbol with nothing stored, up to the last closed candle.
        (:meth:`collect` does this and the forward step in one run, and takes an end.)"""
        symbols = self.resolve_symbols(crypto_symbols)
        return self._run(["backward"], symbols, to_ms(start_date), None)[0]

    def collect_forward(self, crypto_symbols: Sequence[str] | None = None) -> CollectionReport:
        """Fetch from the latest stored candle up to the last closed one.

        Without symbols: every symbol stored in the lake for this interval.
        """
        symbols = (
            self.resolve_symbols(crypto_symbols) if crypto_symbols is not None else self.stored_symbols()
        )
        return self._run(["forward"], symbols, None, None)[0]

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
        symbols = self.own_symbols(symbols)
        start_ms = to_ms(start_date) if start_date is not None else None
        report = self._run(["gaps"], symbols, start_ms, None)[0]
        # Judged at the run's end (the exchange's clock as the run read it): asking again could
        # fail after a good run, or move the end past what was fetched.
        if report.stopped or self._end_ms is None:
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
        self.client.cancel_pending()

    # -- one run -----------------------------------------------------------------------------

    def _run(
        self,
        steps: list[Direction],
        symbols: list[str],
        start_ms: int | None,
        until: date | datetime | str | int | None,
    ) -> list[CollectionReport]:
        symbols = self.own_symbols(symbols)
        started = from_ms(self._now_ms())
        reports = {step: CollectionReport(step, self.interval, started_at=started) for step in steps}
        results = {step: {s: SymbolResult(s, step) for s in symbols} for step in steps}
        self._stop.clear()
        self.client.resume()
        self._end_ms = None
        gate = CommitGate(self.lake, on_wait=self.on_lock_wait, cancel=self._stop)
        with contextlib.ExitStack() as active:
            try:
                if symbols:
                    # Before any request: the lake can be written (not read-only, not locked for
                    # good); without wait_for_lock, fail at once while another process collects.
                    gate.probe(wait=self.wait_for_lock)
                    active.enter_context(self.lake.active_writer(exclusive=not self.wait_for_lock))
                planned = self._plan_run(steps, symbols, start_ms, until, results) if symbols else None
            except (Interrupted, LakeLocked) as exc:  # stopped while waiting for the lock or the exchange
                if isinstance(exc, LakeLocked) and not exc.cancelled:
                    raise
                planned = None
                for by_symbol in results.values():
                    for result in by_symbol.values():
                        result.stopped = True
            return self._carry_out(steps, symbols, planned, gate, reports, results)

    def _carry_out(
        self,
        steps: list[Direction],
        symbols: list[str],
        planned: Any,
        gate: CommitGate,
        reports: dict[Direction, CollectionReport],
        results: dict[Direction, dict[str, SymbolResult]],
    ) -> list[CollectionReport]:
        """Fetch and write the planned windows, then report and record the run."""
        if planned is not None:
            windows, starts = planned
            pipeline = Pipeline(
                self.client, self.lake, self.meta, gate, self.grid, batch_candles=self._batch_candles(),
                window_attempts=self.window_attempts, stop=self._stop, backoff_s=self._window_backoff_s,
                now_ms=self._now_ms, exchange_now_ms=self._exchange_now_ms, emit=self._emit,
            )  # fmt: skip
            pipeline.run(windows)
            self._settle_starts(gate, starts, results)
        finished = from_ms(self._now_ms())
        told: set[tuple[str, str]] = set()  # a symbol's failure is reported once per run, not once per step
        for step, report in reports.items():
            report.results = results[step]
            report.finished_at = finished
            if symbols:
                self._report_symbols(report, told)
        if symbols:
            self._record_run(gate, list(reports.values()))
        return list(reports.values())

    def _plan_run(
        self,
        steps: list[Direction],
        symbols: list[str],
        start_ms: int | None,
        until: date | datetime | str | int | None,
        results: dict[Direction, dict[str, SymbolResult]],
    ) -> tuple[list[FetchWindow], dict[str, int]]:
        """The run's windows, in the order they are fetched, and the starts to record for the
        symbols that have nothing to fetch. Asks the exchange's clock and symbol list once."""
        # The exchange's clock, not ours, decides which candles are closed.
        self._exchange_now_ms = self.client.sync_clock()
        end_ms = self.grid.floor(self._exchange_now_ms)
        if until is not None:
            end_ms = min(end_ms, self._until_end(until))
        self._end_ms = end_ms
        statuses = self._statuses()
        known = []
        for symbol in symbols:
            if statuses is not None and symbol not in statuses:
                # No request needed: the exchange lists none such (Binance's message keeps its code).
                named = self.lake.exchange.capitalize()
                error = str(
                    InvalidSymbol(symbol)
                    if named == "Binance"
                    else InvalidSymbol(symbol, exchange=named, code=None, msg="not in its list of markets")
                )
                for by_symbol in results.values():
                    by_symbol[symbol].error, by_symbol[symbol].unknown_symbol = error, True
            else:
                known.append(symbol)
        gap_plan: dict[str, list[Gap]] = {}
        if "gaps" in steps:
            scan = self.detector().scan(known, start_ms, end_ms)
            gap_plan = {s: [g for g in scan.gaps if g.symbol == s and _fetchable(g)] for s in known}
        listings = self.meta.listings(self.interval)
        windows: list[FetchWindow] = []
        starts: dict[str, int] = {}
        for symbol in known:
            stored_bounds = self.lake.bounds(self.interval, symbol)
            stored = (stored_bounds[0], stored_bounds[1]) if stored_bounds else None
            trading = statuses is None or statuses.get(symbol) == "TRADING"
            end = end_ms if trading else self._last_candle_end(symbol, end_ms)
            for step in steps:
                result = results[step][symbol]
                made = self._windows(
                    step,
                    symbol,
                    start_ms,
                    end,
                    stored,
                    listings.get(symbol),
                    result,
                    gap_plan.get(symbol, []),
                    fresh_backward="backward" in steps,
                    until_ms=end if until is not None else None,
                )
                windows.extend(made)
                if start_ms is not None and step != "forward" and not made and result.note is None:
                    starts[symbol] = start_ms  # nothing to fetch: the start is still the symbol's
        return windows, starts

    def _windows(
        self,
        step: Direction,
        symbol: str,
        start_ms: int | None,
        end_ms: int,
        stored: tuple[int, int] | None,
        listing: int | None,
        result: SymbolResult,
        gaps: list[Gap],
        fresh_backward: bool,
        until_ms: int | None = None,
    ) -> list[FetchWindow]:
        """One symbol's windows for one step (several for gaps), in commit order. ``until_ms``
        bounds what lies after the stored range, never the way back to it: backward collection
        always reaches the earliest stored candle, so the stored range stays contiguous."""

        def window(
            lo: int,
            hi: int,
            *,
            descending: bool = False,
            find_start: bool = False,
            record_start: int | None = None,
        ) -> FetchWindow:
            return FetchWindow(
                symbol,
                step,
                lo,
                hi,
                result,
                descending=descending,
                find_start=find_start,
                record_start=record_start,
                stored=stored,
                listing=listing,
            )

        if step == "gaps":
            return [
                window(g.start_ms, min(end_ms, self.grid.next_open(g.end_ms)), record_start=start_ms)
                for g in gaps
                if g.start_ms < end_ms
            ]
        if step == "backward":
            assert start_ms is not None
            lo = self.grid.ceil(start_ms)
            if listing is not None:
                lo = max(lo, self.grid.ceil(listing))
            hi = stored[0] if stored else end_ms
            if stored and until_ms is not None and until_ms < stored[0]:
                result.note = (
                    f"collected up to the earliest stored candle ({iso(stored[0])}), past --until, "
                    "so that the stored range stays contiguous"
                )
            if lo >= hi:
                return []
            # The newest month is written first, so a run cut short leaves the stored range
            # contiguous, and the next backward run goes on from its earliest candle.
            return [window(lo, hi, descending=True, find_start=listing is None, record_start=start_ms)]
        if stored is None:
            if not fresh_backward:
                result.note = "nothing stored yet: collect backward first"
            return []
        lo = self.grid.next_open(self.grid.floor(stored[1]))
        return [window(lo, end_ms)] if lo < end_ms else []

    def _until_end(self, until: date | datetime | str | int) -> int:
        """The exclusive end of an inclusive ``until``: a date includes its whole day."""
        if isinstance(until, date) and not isinstance(until, datetime):
            return to_ms(until) + DAY_MS
        if isinstance(until, str) and len(until.strip()) == 10:  # YYYY-MM-DD
            return to_ms(until) + DAY_MS
        return self.grid.next_open(self.grid.floor(to_ms(until)))

    def _statuses(self) -> dict[str, str] | None:
        """``{symbol: status}`` from one exchange-info answer; None if it cannot be had (the
        klines requests then tell an unknown symbol)."""
        try:
            return dict(self.client.symbol_statuses())
        except Interrupted:
            raise
        except CryptolakeError as exc:
            log.warning(
                "cannot read the exchange's symbol list (%s); symbols are checked by their requests", exc
            )
            return None

    def _markets(self) -> list[Market]:
        """The exchange's markets for the ``markets`` view (Binance's from the exchange info
        already asked; other exchanges: one request); none when they cannot be had."""
        if self._stop.is_set():
            return []
        try:
            return list(self.client.markets())
        except Interrupted:
            return []
        except CryptolakeError as exc:
            log.info("cannot read the exchange's markets (%s); the markets view keeps its last list", exc)
            return []

    def _last_candle_end(self, symbol: str, end_ms: int) -> int:
        """For a symbol not trading (delisted, halted): the end of its last candle, so that no
        request is spent after it; ``end_ms`` if that cannot be asked."""
        try:
            last = self.client.last_open_time(symbol, self.interval)
        except Interrupted:
            raise
        except CryptolakeError as exc:
            log.info("%s: cannot ask for its latest candle (%s)", symbol, exc)
            return end_ms
        return end_ms if last is None else min(end_ms, self.grid.next_open(last))

    def _settle_starts(
        self, gate: CommitGate, starts: dict[str, int], results: dict[Direction, dict[str, SymbolResult]]
    ) -> None:
        """Record the starts of the symbols that had nothing to fetch (not when stopped)."""
        wanted = {
            s: t
            for s, t in starts.items()
            if not any(r[s].stopped or r[s].error for r in results.values() if s in r)
        }
        if not wanted or self._stop.is_set():
            return
        with gate.held():
            for symbol, start in wanted.items():
                self._record_start(symbol, start)

    def _report_symbols(self, report: CollectionReport, told: set[tuple[str, str]]) -> None:
        for symbol, result in report.results.items():
            if result.error and (symbol, result.error) not in told:
                told.add((symbol, result.error))
                log.warning("%s %s: %s", report.direction, symbol, result.error)
                self._emit(ProgressEvent("failed", symbol, report.direction, error=result.error))
            elif not result.stopped:
                self._emit(
                    ProgressEvent("done", symbol, report.direction, expected_rows=result.expected_rows)
                )

    def _record_run(self, gate: CommitGate, reports: list[CollectionReport]) -> None:
        markets = self._markets()
        try:
            with gate.held():
                for report in reports:
                    self._save_state(report)
                if markets:
                    self.meta.record_markets(markets, self._now_ms())
        except LakeLocked as exc:
            if not exc.cancelled:
                raise
            # Stopped while another process held the lock: the run is not recorded.

    def _window_backoff_s(self, failures: int) -> float:
        """The pause before a failed page is asked again: 2, 4, 8, 16 ... x the client's first
        retry delay (capped at a minute), with up to 25% jitter."""
        base = max(0.0, float(self.client.retry_delay))
        delay = min(60.0, base * 2 ** (failures + 1))
        return delay * (1 + 0.25 * random.random())

    def _record_start(self, symbol: str, start_ms: int) -> None:
        self.meta.record_start(self.interval, symbol, self.grid.ceil(start_ms), self._now_ms())

    def _batch_candles(self) -> int:
        return max(1, self.batch_size_hours * HOUR_MS // self.grid.nominal_ms)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    # -- forgetting ------------------------------------------------------------------------

    def forget_symbols(
        self, crypto_symbols: Sequence[str], *, data: bool = False
    ) -> dict[str, dict[str, int]]:
        """Remove what the lake remembers of some symbols for this interval: their collection
        state, recorded start, listing, outage and failed windows, and gap-report and
        quality-report rows; with ``data``, their partitions too (their quarantined candles stay:
        what an exchange sent is never thrown away). Under the writer lock.

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
                    "report_rows": forget_report(self.lake, self.interval, pair)
                    + forget_findings(self.lake, self.interval, pair),
                    "partitions": partitions,
                    "rows": rows,
                }
        return out

    def _forget_state(self, symbol: str) -> bool:
        section = state_section(self.lake.exchange, self.interval)

        def forget(data: bytes | None) -> bytes | None:
            document = parse_state(data)
            if symbol not in document.get(section, {}):
                return None
            del document[section][symbol]
            return _json(document)

        with self._state_lock:
            return update_object(self.lake.storage, STATE_PATH, forget)

    # -- state and status ------------------------------------------------------------------

    def get_collection_status(self) -> dict[str, Any]:
        """:func:`collection_status` of this collector's lake and interval."""
        return collection_status(self.lake, self.interval)

    def _load_state(self) -> dict[str, dict[str, Any]]:
        return dict(self._state_document().get(state_section(self.lake.exchange, self.interval), {}))

    def _state_document(self) -> dict[str, Any]:
        """The whole collection state (every interval); empty if there is none or it is torn."""
        return state_document(self.lake)

    def _save_state(self, report: CollectionReport) -> None:
        section_name = state_section(self.lake.exchange, self.interval)

        def save(data: bytes | None) -> bytes | None:
            document = parse_state(data)
            section = document.setdefault(section_name, {})
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
                    "last_outcome": "stopped"
                    if result.stopped
                    else ("failed" if result.error else "succeeded"),
                }
            return _json(document)

        with self._state_lock:  # other hosts' collectors: the conditional put
            update_object(self.lake.storage, STATE_PATH, save)


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
    return gap.kind in ("missing", "failed") or (gap.kind in RECHECKED_KINDS and gap.recheck_due)


def _json(document: Any) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
