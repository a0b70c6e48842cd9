"""The collection pipeline: every window of every symbol through one bounded fetcher.

A run hands the pipeline its :class:`FetchWindow` s (for one symbol, the open times ``[lo, hi)``
to fetch, and in which order to write them). Each window is cut by :mod:`cryptolake.plan` into
full 1,000-candle pages (what is requested) and month units (what is written). Then:

- **one fetcher**: the pages of all windows go through one pool of ``client.concurrency``
  threads, taken window by window in order, so every request slot stays busy whatever the
  number of symbols, and each window's pages arrive roughly in its commit order;
- **bounded memory**: a window runs at most a few units ahead of its next commit, and the run
  holds at most :attr:`Pipeline.max_pages` requested or fetched pages, however long the history;
- **commit as soon as a unit is in**: a unit (one month partition, or part of one) is written
  once every page it needs has arrived, in its window's order (newest first when walking
  backward from stored candles, so that a killed run leaves the stored range contiguous), one
  commit at a time per symbol, several symbols at once;
- **the writer lock per commit**: commits take the lake's lock through a :class:`CommitGate`, so
  another process (a scheduled run, a second ``collect``) commits between them, and nothing
  holds the lock while waiting for the exchange.

A source may serve parts of a window whole (:meth:`KlineSource.blocks`: Binance's archive files):
each is one page of the plan, fetched by :meth:`KlineSource.get_block`, and what the lake learns
about where the candles came from (an archive file's path and checksum) is recorded with the
commit of the unit that used it last. Blocks in flight or held are bounded by their candles
(:data:`BLOCK_CANDLES_HELD`), not by their number.

A page that fails for a transient reason is asked again later in the run, after a growing pause,
up to ``window_attempts`` times; then its window fails (recorded ``failed`` in the lake's
metadata) while the other windows go on. A ban stops every request at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cryptolake.errors import CryptolakeError, Interrupted, InvalidSymbol, IPBanned, LakeLocked, Transient
from cryptolake.gaps import missing_runs
from cryptolake.lake import Lake, WriteResult, month_of
from cryptolake.lake.meta import LakeMeta, Window, WindowKind
from cryptolake.plan import PAGE_CANDLES, WindowPlan, plan_window
from cryptolake.results import Direction, ProgressEvent, SymbolResult
from cryptolake.schema import Interval
from cryptolake.sources.base import Block, BlockRows, KlineSource, SourceRecord
from cryptolake.sources.klines import rows_between
from cryptolake.timeutils import from_ms

log = logging.getLogger("cryptolake.collector")

#: Threads that write partitions. Parquet encoding, zstd and fsync release the GIL, so a few
#: overlap well even on two cores.
COMMIT_THREADS = 2
#: Candles of blocks (archive files) requested or held at once over a run (about 40 MB of
#: candles, and each file's zip while in flight): ten months of 1m candles, enough for
#: downloads to overlap, few enough to keep a backfill's memory flat.
BLOCK_CANDLES_HELD = 450_000
#: The largest block: a month of 1m candles (44,640) is one, a month of 1s (2.6 million, a
#: file of hundreds of MB) is fetched day by day.
MAX_BLOCK_CANDLES = 100_000

_FIRST = -1  # the page index of a window's first request when its start is unknown
_LISTING = -2  # the listing look-up that may follow it


@dataclass(eq=False)
class FetchWindow:
    """Open times ``[lo, hi)`` of one symbol, fetched and written in one run.

    Args:
        symbol: the pair.
        direction: the collection step the window belongs to.
        lo, hi: the slots wanted; ``hi`` is at most the run's end, so never an open candle.
        result: the :class:`SymbolResult` the window adds to (shared by a symbol's windows of
            one direction).
        descending: write the newest unit first (walking backward from stored candles).
        find_start: the symbol's first candle is unknown: the first request asks for 1,000
            candles from ``lo`` without an end (which finds it) and is the window's first page.
        record_start: record this as the symbol's start once a request of the window succeeded.
        stored: ``(first, last)`` open time stored before the run, if any (outage evidence).
        listing: the symbol's first candle, if known (outage evidence).
    """

    symbol: str
    direction: Direction
    lo: int
    hi: int
    result: SymbolResult
    descending: bool = False
    find_start: bool = False
    record_start: int | None = None
    stored: tuple[int, int] | None = None
    listing: int | None = None
    # -- run state, owned by the pipeline's coordinator thread ------------------------------
    plan: WindowPlan | None = field(default=None, repr=False)
    frames: dict[int, pa.Table] = field(default_factory=dict, repr=False)
    attempts: dict[int, int] = field(default_factory=dict, repr=False)
    next_page: int = 0
    next_unit: int = 0
    outstanding: int = 0  # pages requested or held, not yet released
    seen: tuple[int, int] | None = None  # earliest and latest candle fetched in this run
    carry: tuple[int, int] | None = None  # an unexplained hole at the edge of the last unit written
    waiting: bool = False  # for its first page (or the listing), before its plan is known
    finished: bool = False
    lookahead: int = 0  # pages it may have requested or held at once
    blocks: list[Block] = field(default_factory=list, repr=False)  # of its plan, by index
    records: dict[int, list[SourceRecord]] = field(default_factory=dict, repr=False)  # by page
    unserved: list[tuple[int, int]] = field(default_factory=list, repr=False)  # by its blocks
    # Spans of pages that had candles the data-quality rules refused: asked again next run.
    refused: list[tuple[int, int]] = field(default_factory=list, repr=False)
    first_rows: int = 0  # candles in its first page as sent (before the rules)


class CommitGate:
    """The lake's writer lock, held while commits run and released in between.

    Threads of this process enter :meth:`held` around each commit; the file lock is taken by the
    first and released when the last leaves. While commits follow one another without pause, the
    lock is still given up once it has been held ``max_hold_s`` and another process says it is
    waiting (:meth:`Lake.writers_waiting`), for ``pause_s``, longer than that process's polling
    step, so that a second writer on the lake is never starved. Temp files of killed writers are
    tidied at the first acquisition.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        on_wait: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
        max_hold_s: float = 0.5,
        pause_s: float = 0.2,
    ) -> None:
        self.lake = lake
        self._on_wait = on_wait
        self._cancel = cancel
        self.max_hold_s = max_hold_s
        self.pause_s = pause_s
        self._cond = threading.Condition()
        self._lock: Any = None
        self._users = 0
        self._since = 0.0
        self._draining = False
        self._tidied = False
        self._waited = False

    def probe(self, wait: bool) -> None:
        """Take the lock once and give it back: fails (:class:`~cryptolake.errors.LakeLocked`, or
        the ``OSError`` of a read-only lake) before anything is fetched. Without ``wait``, fails
        at once if another process holds it."""
        self.lake.acquire_writer_lock(wait=wait, on_wait=self._waiting, cancel=self._cancel).release()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._cond:
            while self._draining:
                self._cond.wait()
            if self._lock is None:
                self._lock = self.lake.acquire_writer_lock(
                    wait=True, on_wait=self._waiting, cancel=self._cancel
                )
                self._since = time.monotonic()
                if not self._tidied:
                    self._tidied = True
                    self.lake.remove_stale_temp_files()
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if not self._draining and time.monotonic() - self._since >= self.max_hold_s:
                    if self.lake.writers_waiting():
                        self._draining = True  # no new commit enters until the lock was given up
                    else:
                        self._since = time.monotonic()  # nobody waits: look again in a while
                if self._users == 0:
                    self._lock.release()
                    self._lock = None
                    if self._draining:
                        time.sleep(self.pause_s)
                        self._draining = False
                    self._cond.notify_all()

    def _waiting(self) -> None:
        if not self._waited and self._on_wait is not None:
            self._waited = True
            self._on_wait()


@dataclass
class _Event:
    kind: str  # "page" or "commit"
    window: FetchWindow
    index: int
    value: Any = None
    error: BaseException | None = None


class Pipeline:
    """Fetches and commits a run's windows (see the module docstring).

    Args:
        client: where candles come from.
        lake, meta: where they go, and what is recorded about them.
        gate: the writer lock, per commit.
        grid: the interval.
        batch_candles: the largest unit written at once (from ``batch_size_hours``).
        window_attempts: how often a page is asked in a run before its window fails.
        stop: set to stop: no new request or commit starts; what is being written finishes.
        backoff_s: the pause before a failed page is asked again, by failures so far.
        now_ms: this machine's clock (ms), to stamp records.
        exchange_now_ms: the exchange's clock when the run was planned: the rules refuse a
            candle that closes after it (:func:`cryptolake.rules.screen`).
        emit: receives progress events (from the coordinator thread).
    """

    def __init__(
        self,
        client: KlineSource,
        lake: Lake,
        meta: LakeMeta,
        gate: CommitGate,
        grid: Interval,
        *,
        batch_candles: int,
        window_attempts: int,
        stop: threading.Event,
        backoff_s: Callable[[int], float],
        now_ms: Callable[[], int],
        exchange_now_ms: int,
        emit: Callable[[ProgressEvent], None],
    ) -> None:
        self.client = client
        self.lake = lake
        self.meta = meta
        # Where the exchange sends no candle for a period without trades, a hole between
        # candles is such a period, not an outage.
        self._hole_kind: WindowKind = "exchange_gap" if client.empty_candles else "no_trades"
        self.gate = gate
        self.grid = grid
        self.batch_candles = batch_candles
        self.window_attempts = window_attempts
        self.stop = stop
        self.backoff_s = backoff_s
        self.now_ms = now_ms
        self.exchange_now_ms = exchange_now_ms
        self.emit = emit
        self.concurrency = max(1, int(client.concurrency))
        unit_pages = -(-batch_candles // PAGE_CANDLES) + 1
        #: Pages requested or held at once, over the whole run.
        self.max_pages = 4 * self.concurrency + 2 * unit_pages
        self.banned: str | None = None
        #: A month is fetched as one block (an archive file) when it holds at most this many
        #: candles (it is written as one unit, and it is not a month of 1s); else its days are.
        self.max_block_candles = min(int(1.5 * batch_candles), MAX_BLOCK_CANDLES)
        self._merged: dict[str, frozenset[str]] = {}
        self._block_load: dict[tuple[int, int], int] = {}  # (window id, page): candles
        self._events: queue.Queue[_Event] = queue.Queue()
        self._retries: list[tuple[float, FetchWindow, int]] = []
        self._in_flight = 0
        self._held = 0
        self._committing: set[str] = set()  # symbols with a commit running
        self._windows: list[FetchWindow] = []
        self._by_symbol: dict[str, list[FetchWindow]] = {}
        self._ready: dict[FetchWindow, None] = {}  # windows that may have a unit to commit
        self._send_cursor = 0  # windows before it have requested all their pages
        self._done_cursor = 0  # windows before it are finished
        self._fetchers: ThreadPoolExecutor | None = None

    # -- the coordinator ---------------------------------------------------------------------

    def run(self, windows: list[FetchWindow]) -> None:
        """Fetch and write every window; returns when all are finished, failed or stopped."""
        self._learn_blocks(windows)
        self._windows = [w for w in windows if not self._plan_at_once(w)]
        for window in self._windows:
            self._by_symbol.setdefault(window.symbol, []).append(window)
        fetchers = self._fetchers = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="cryptolake-fetch"
        )
        writers = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="cryptolake-commit")
        try:
            while True:
                halted = self.stop.is_set() or self.banned is not None
                if not halted:
                    self._request_more(fetchers)
                    self._commit_ready(writers)
                if self._in_flight == 0 and not self._committing and (halted or self._all_done()):
                    break
                try:
                    event = self._events.get(timeout=self._next_retry_in())
                except queue.Empty:
                    continue
                self._handle(event)
                if self.banned is not None:
                    self._commit_ready(writers)  # what is fully fetched is still good
        finally:
            fetchers.shutdown(wait=True)
            writers.shutdown(wait=True)
        self._finish()

    def _all_done(self) -> bool:
        while self._done_cursor < len(self._windows) and self._windows[self._done_cursor].finished:
            self._done_cursor += 1
        return self._done_cursor >= len(self._windows) and not self._retries

    def _next_retry_in(self) -> float:
        if not self._retries:
            return 0.25
        return max(0.0, min(0.25, min(r[0] for r in self._retries) - time.monotonic()))

    def _learn_blocks(self, windows: list[FetchWindow]) -> None:
        """Before planning: what the source serves whole (the archive lists its files) over each
        symbol's windows, and which archive files the lake has merged already."""
        spans: dict[str, tuple[int, int]] = {}
        for w in windows:
            lo, hi = spans.get(w.symbol, (w.lo, w.hi))
            spans[w.symbol] = (min(lo, w.lo), max(hi, w.hi))
        if not spans:
            return
        self.client.prepare(self.grid.name, spans, self.max_block_candles)
        # A file counts as merged while its partition is there (not deleted since).
        present = {symbol: set(self.lake.months(self.grid.name, symbol)) for symbol in spans}
        self._merged = self.meta.merged_files(self.grid.name, present)

    def _plan_at_once(self, window: FetchWindow) -> bool:
        """Plan a window whose start is known; True if it has nothing to fetch."""
        if window.find_start:
            return False
        return self._set_plan(window, window.lo, None)

    def _set_plan(self, window: FetchWindow, lo: int, prefetched: tuple[int, int] | None) -> bool:
        window.lo = lo
        start = prefetched[1] if prefetched is not None else lo
        window.blocks = list(
            self.client.blocks(
                window.symbol,
                self.grid.name,
                start,
                window.hi,
                self.max_block_candles,
                self._merged.get(window.symbol, frozenset()),
            )
            if start < window.hi
            else []
        )
        only = self.client.blocks_only
        problem = self.client.listing_error(window.symbol, self.grid.name) if only else None
        if problem is not None:
            window.result.error = problem
        window.plan = plan = plan_window(
            self.grid,
            lo,
            window.hi,
            self.batch_candles,
            window.descending,
            prefetched,
            blocks=[(b.lo, b.hi) for b in window.blocks],
            between_blocks=not only,
        )
        window.lookahead = 2 * self.concurrency + max((len(p) for p in plan.unit_pages), default=1)
        expected = self.grid.count(lo, window.hi) if lo < window.hi else 0
        window.result.expected_rows += expected
        if expected:
            self.emit(ProgressEvent("planned", window.symbol, window.direction, expected_rows=expected))
        if not window.plan.units:
            window.finished = True
        return window.finished

    # -- requests ----------------------------------------------------------------------------

    def _request_more(self, pool: ThreadPoolExecutor) -> None:
        now = time.monotonic()
        # Twice the client's concurrency: a backlog, so that no fetcher idles while this thread
        # (which needs the GIL like everyone) catches up with the pages that came back.
        while self._in_flight < 2 * self.concurrency:
            ready = [r for r in self._retries if r[0] <= now]
            if ready:
                retry = min(ready, key=lambda r: r[0])
                self._retries.remove(retry)
                _, window, index = retry
                if window.finished:
                    window.outstanding -= 1
                    self._unload(window, index)
                    continue
                self._send(pool, window, index, counted=True)
                continue
            if self._in_flight + self._held >= self.max_pages:
                return
            picked = self._next_page()
            if picked is None:
                return
            self._send(pool, *picked, counted=False)

    def _next_page(self) -> tuple[FetchWindow, int] | None:
        """The next page in window order, from the first window with room ahead of its commits."""
        windows = self._windows
        while self._send_cursor < len(windows) and _all_sent(windows[self._send_cursor]):
            self._send_cursor += 1
        for position in range(self._send_cursor, len(windows)):
            window = windows[position]
            first = position == self._send_cursor
            if window.waiting or _all_sent(window):
                continue
            if window.plan is None:  # its first request finds its start
                window.waiting = True
                return window, _FIRST
            if window.outstanding >= window.lookahead:
                continue
            index = window.next_page
            if window.plan.block_of[index] >= 0:
                lo, hi = window.plan.pages[index]
                cost = self.grid.count(lo, hi)
                held = sum(self._block_load.values())
                # Over the budget, only the first window's next unit may take more: it is what
                # the next commit needs (else a unit of more blocks than the budget holds, a
                # month of 1s, would wait forever for its own last ones).
                needed_now = (
                    first
                    and index in window.plan.unit_pages[min(window.next_unit, len(window.plan.units) - 1)]
                )
                if held and held + cost > BLOCK_CANDLES_HELD and not needed_now:
                    return None  # in order: the blocks held go first
                self._block_load[(id(window), index)] = cost
            window.next_page += 1
            return window, index
        return None

    def _send(self, pool: ThreadPoolExecutor, window: FetchWindow, index: int, *, counted: bool) -> None:
        if not counted:
            window.outstanding += 1
        self._in_flight += 1
        pool.submit(self._fetch, window, index)

    def _fetch(self, window: FetchWindow, index: int) -> None:
        """On a fetcher thread: one page (or look-up); the outcome goes to the coordinator."""
        try:
            if index == _FIRST:
                value: Any = self.client.get_klines_page(
                    window.symbol, self.grid.name, window.lo, as_arrow=True
                )
            elif index == _LISTING:
                value = self.client.first_open_time(window.symbol, self.grid.name)
            else:
                assert window.plan is not None
                block = window.plan.block_of[index]
                if block >= 0:
                    value = self.client.get_block(window.symbol, self.grid.name, window.blocks[block])
                else:
                    lo, hi = window.plan.pages[index]
                    value = self.client.get_klines_range(window.symbol, self.grid.name, lo, hi, as_arrow=True)
            if isinstance(value, pa.Table):
                value = self._screened(window.symbol, value, "rest")
            elif isinstance(value, BlockRows):
                value = self._screened(window.symbol, value.table, "archive", value)
            self._events.put(_Event("page", window, index, value))
        except BaseException as exc:  # noqa: BLE001 - every outcome is the coordinator's to judge
            self._events.put(_Event("page", window, index, error=exc))

    def _screened(
        self, symbol: str, page: pa.Table, source: str, block: BlockRows | None = None
    ) -> _ScreenedPage:
        """A page as it arrives, without the candles that break an error rule (quarantined with
        ``source``): nothing after this sees them, neither the lake nor the outage evidence."""
        now = self.exchange_now_ms
        sent = page.num_rows
        if page.num_rows:
            # The still-open candle, which says so (it closes after now), comes with a page as the
            # exchange documents: it is not asked for, not wrong, and not kept.
            opens, closes = (
                page.column("open_time").cast(pa.int64()),
                page.column("close_time").cast(pa.int64()),
            )
            still_open = pc.and_(pc.less_equal(opens, now), pc.greater_equal(closes, now))
            if pc.any(still_open).as_py():
                page = page.filter(pc.invert(still_open))
        screened = self.lake.screen_candles(self.grid.name, symbol, page, source, now)
        span = None
        if screened.refused and screened.kept.num_rows:
            # Where a refused candle belonged cannot be told (its time may be the broken value):
            # the holes of the page's span are asked again, not taken for an exchange outage.
            first, last = _time_span(screened.kept)
            span = (self.grid.floor(first), self.grid.next_open(self.grid.floor(last)))
        if block is not None:
            block.table = screened.kept
        return _ScreenedPage(screened.kept, sent, span, block)

    # -- outcomes ----------------------------------------------------------------------------

    def _handle(self, event: _Event) -> None:
        if event.kind == "commit":
            self._committed(event)
            return
        self._in_flight -= 1
        window = event.window
        if window.finished:
            window.outstanding -= 1
            self._unload(window, event.index)
            return
        if event.error is not None:
            self._page_failed(window, event.index, event.error)
            return
        if event.index == _LISTING:
            window.outstanding -= 1
            self._listing_found(window, event.value)
            return
        screened: _ScreenedPage = event.value
        if screened.block is not None:
            window.records[event.index] = screened.block.records
            window.unserved.extend(screened.block.unserved)
        if screened.refused_span is not None:
            window.refused.append(screened.refused_span)
        frame: pa.Table = screened.table
        if frame.num_rows:
            first, last = _time_span(frame)
            seen = window.seen
            window.seen = (first, last) if seen is None else (min(seen[0], first), max(seen[1], last))
        if event.index == _FIRST:
            window.first_rows = screened.sent
            self._first_page(window, frame)
            return
        window.frames[event.index] = frame
        self._held += 1
        self._ready[window] = None

    def _first_page(self, window: FetchWindow, frame: pa.Table) -> None:
        """The window's first request came back: it gives the symbol's first candle at or after
        ``lo`` and up to 1,000 candles from there, which become the window's first page."""
        window.waiting = False
        if frame.num_rows == 0:
            window.outstanding -= 1
            window.finished = True
            start, symbol = window.record_start, window.symbol
            window.record_start = None
            if window.stored is None:
                window.result.note = "the exchange has no candles for this symbol"
            elif start is not None:
                self._meta_op(
                    lambda: self.meta.record_start(
                        self.grid.name, symbol, self.grid.ceil(start), self.now_ms()
                    )
                )
            return
        window.frames[_FIRST] = frame
        self._held += 1
        first = _time_span(frame)[0]
        if first > self.grid.ceil(window.lo) and window.listing is None:
            # Nothing from lo to the first candle: a listing after lo, or an outage at lo. One
            # look-up of the symbol's very first candle tells them apart.
            window.waiting = True
            window.outstanding += 1
            self._in_flight += 1
            assert self._fetchers is not None
            self._fetchers.submit(self._fetch, window, _LISTING)
            return
        self._plan_from_first_page(window)

    def _listing_found(self, window: FetchWindow, listing: int | None) -> None:
        window.waiting = False
        if listing is not None:
            window.listing = listing
            self._meta_op(
                lambda: self.meta.record_listing(self.grid.name, window.symbol, listing, self.now_ms())
            )
        self._plan_from_first_page(window)

    def _plan_from_first_page(self, window: FetchWindow) -> None:
        frame = window.frames.pop(_FIRST)
        first, last = _time_span(frame)
        # Slots before the first candle belong to the window only when the symbol was listed
        # before them (an outage, then, to record); before a listing there is nothing to want.
        lo = window.lo if window.listing is not None and window.listing < first else self.grid.ceil(first)
        full = max(frame.num_rows, window.first_rows) >= PAGE_CANDLES  # as sent: refused rows count
        if (full or not self.client.pages_skip_empty) and last < window.hi:
            covered = min(window.hi, self.grid.next_open(self.grid.floor(last)))
        else:
            covered = window.hi  # a short page: the symbol has no candle after its last one yet
        frame = rows_between(frame, window.lo, window.hi)  # not the open candle, nor any after the window
        lo = min(lo, window.hi)
        covered = max(covered, lo)
        if self._set_plan(window, lo, (lo, covered) if lo < covered else None):
            window.outstanding -= 1
            self._held -= 1
            return
        assert window.plan is not None
        if lo < covered:
            window.frames[0] = frame
            window.next_page = 1
            self._ready[window] = None
        else:
            window.outstanding -= 1
            self._held -= 1

    def _page_failed(self, window: FetchWindow, index: int, error: BaseException) -> None:
        result = window.result
        if isinstance(error, Interrupted):
            window.outstanding -= 1
            self._unload(window, index)
            result.stopped = True
            window.finished = True
            self._release(window, everything=True)
            return
        if isinstance(error, IPBanned):
            self.banned = str(error)
        failures = window.attempts.get(index, 0) + 1
        window.attempts[index] = failures
        transient = isinstance(error, Transient) and not isinstance(error, IPBanned)
        if transient and failures < self.window_attempts and not self.stop.is_set():
            delay = self.backoff_s(failures - 1)
            log.info(
                "%s %s: a request failed (%s); asking again in %.1f s",
                window.direction,
                window.symbol,
                error,
                delay,
            )
            self._retries.append((time.monotonic() + delay, window, index))
            return
        window.outstanding -= 1
        self._unload(window, index)
        if isinstance(error, InvalidSymbol):
            for other in self._windows:
                if other.symbol == window.symbol:
                    self._fail(other, error, record=False)
                    other.result.unknown_symbol = True
            return
        if not isinstance(error, CryptolakeError):
            log.error("unexpected failure collecting %s", window.symbol, exc_info=error)
        self._fail(window, error, record=isinstance(error, CryptolakeError), failed_page=index)

    def _fail(
        self, window: FetchWindow, error: BaseException, *, record: bool, failed_page: int | None = None
    ) -> None:
        """Give up a window; with ``record``, the slots it could not fetch are recorded ``failed``
        (so ``gaps`` lists them and ``fill-gaps`` asks again)."""
        if window.finished:
            return
        window.finished = True
        text = str(error) if isinstance(error, CryptolakeError) else f"{type(error).__name__}: {error}"
        if window.result.error is None:
            window.result.error = text
        self._release(window, everything=True)
        if not record:
            return
        span = self._unwritten(window, failed_page)
        if span is None:
            return
        lo, hi = span
        start, symbol = window.record_start, window.symbol
        window.record_start = None

        def record_failure() -> None:
            now = self.now_ms()
            if start is not None:
                self.meta.record_start(self.grid.name, symbol, self.grid.ceil(start), now)
            self.meta.record_window(
                Window(self.grid.name, symbol, "failed", lo, self.grid.floor(hi - 1), now, now, error=text)
            )

        self._meta_op(record_failure)

    def _unwritten(self, window: FetchWindow, page: int | None) -> tuple[int, int] | None:
        """The slots a failed request left unfetched: its page, or the whole window if it was
        the request that was to find the window's start."""
        if window.plan is None or page is None or page < 0:
            return (window.lo, window.hi) if window.lo < window.hi else None
        lo, hi = window.plan.pages[page]
        return (lo, hi) if lo < hi else None

    def _release(self, window: FetchWindow, *, everything: bool = False, upto_unit: int = -1) -> None:
        """Drop the fetched pages no unit needs any more."""
        if window.plan is None or everything:
            dropped = list(window.frames)
        else:
            dropped = [p for p in window.frames if p >= 0 and window.plan.last_use[p] <= upto_unit]
        for page in dropped:
            del window.frames[page]
            self._held -= 1
            window.outstanding -= 1
            self._unload(window, page)

    def _unload(self, window: FetchWindow, page: int) -> None:
        """A page is no longer requested nor held: its candles leave the block budget."""
        self._block_load.pop((id(window), page), None)

    # -- commits -----------------------------------------------------------------------------

    def _commit_ready(self, pool: ThreadPoolExecutor) -> None:
        """Start the next commit of every symbol that has none running and a unit complete."""
        for window in list(self._ready):
            if self.stop.is_set():
                return
            if window.symbol in self._committing:
                continue  # looked at again when that commit is done
            del self._ready[window]
            if window.finished or window.plan is None:
                continue
            k = window.next_unit
            if k >= len(window.plan.units) or any(p not in window.frames for p in window.plan.unit_pages[k]):
                continue
            self._committing.add(window.symbol)
            needed = window.plan.unit_pages[k]
            pages = [window.frames[p] for p in needed]
            from_blocks = [window.plan.block_of[p] >= 0 for p in needed]
            records = [r for p in needed if window.plan.last_use[p] == k for r in window.records.pop(p, [])]
            evidence = _Evidence.of(window)
            start, window.record_start = window.record_start, None
            job = _UnitJob(
                k,
                pages,
                from_blocks,
                records,
                list(window.unserved),
                _carry_into(window, k),
                list(window.refused),
            )
            pool.submit(self._commit, window, job, evidence, start)

    def _commit(self, window: FetchWindow, job: _UnitJob, evidence: _Evidence, start: int | None) -> None:
        """On a commit thread: what the unit's fetch proved goes into the metadata, then its
        candles into the lake, under the writer lock."""
        assert window.plan is not None
        k = job.unit
        u_lo, u_hi = window.plan.units[k]
        try:
            unit = _unit_rows(job.pages, u_lo, u_hi)
            unserved = [(max(a, u_lo), min(b, u_hi)) for a, b in job.unserved if a < u_hi and u_lo < b]
            refused = [(max(a, u_lo), min(b, u_hi)) for a, b in job.refused if a < u_hi and u_lo < b]
            settle_lo, settle_last, outages, carry = _outages(
                self.grid, unit, u_lo, u_hi, window.descending, job.carry, evidence, unserved + refused
            )
            records = list(job.records)
            rest_rows = sum(
                rows_between(page, u_lo, u_hi).num_rows
                for page, block in zip(job.pages, job.from_blocks, strict=True)
                if not block
            )
            if rest_rows:
                records.append(SourceRecord("rest", rows=rest_rows))
            with self.gate.held():
                now = self.now_ms()
                if start is not None:
                    self.meta.record_start(self.grid.name, window.symbol, self.grid.ceil(start), now)
                # Outages first, in one rewrite: a run killed before the write leaves them
                # recorded and the slots to fetch.
                self.meta.settle_windows(
                    self.grid.name, window.symbol, settle_lo, settle_last, outages, now, self._hole_kind
                )
                for a, b in unserved:  # what the source could not serve: asked again later
                    self.meta.record_window(
                        Window(self.grid.name, window.symbol, "failed", a, self.grid.floor(b - 1), now, now,
                               error="not served by the archive")
                    )  # fmt: skip
                for a, b in refused:  # a refused candle's slot is no outage: asked again later
                    self.meta.record_window(
                        Window(self.grid.name, window.symbol, "failed", a, self.grid.floor(b - 1), now, now,
                               error="a candle was refused by the data-quality rules (cryptolake check --quarantine)")
                    )  # fmt: skip
                source = "+".join(sorted({"archive" if block else "rest" for block in job.from_blocks}))
                written = self.lake.write_partition(
                    self.grid.name, window.symbol, unit, source=source, now_ms=self.exchange_now_ms
                )
                # After the candles: a record names only files whose rows are in the lake.
                self.meta.record_sources(self.grid.name, window.symbol, month_of(u_lo), records, now)
            span = _time_span(unit) if unit.num_rows else None
            self._events.put(_Event("commit", window, k, (written, unit.num_rows, span, carry)))
        except BaseException as exc:  # noqa: BLE001 - judged on the coordinator
            self._events.put(_Event("commit", window, k, error=exc))

    def _committed(self, event: _Event) -> None:
        window, result = event.window, event.window.result
        self._committing.discard(window.symbol)
        for other in self._by_symbol.get(window.symbol, []):
            self._ready[other] = None
        if event.error is not None:
            if isinstance(event.error, LakeLocked) and event.error.cancelled:
                result.stopped = True
                window.finished = True
                self._release(window, everything=True)
                return
            if not isinstance(event.error, CryptolakeError | OSError):
                log.error("unexpected failure writing %s", window.symbol, exc_info=event.error)
            self._fail(window, event.error, record=False)
            return
        written, rows, span, carry = event.value
        assert isinstance(written, WriteResult) and window.plan is not None
        window.carry = carry
        result.rows_added += written.rows_added
        result.rows_changed += written.rows_changed
        result.files_written += written.files_written
        result.batches += 1
        if span is not None:
            first, last = from_ms(span[0]), from_ms(span[1])
            result.first_open_time = min(first, result.first_open_time or first)
            result.last_open_time = max(last, result.last_open_time or last)
        window.next_unit = event.index + 1
        self._release(window, upto_unit=event.index)
        self.emit(ProgressEvent("batch", window.symbol, window.direction, rows=rows))
        if window.next_unit >= len(window.plan.units):
            window.finished = True

    # -- metadata-only records ---------------------------------------------------------------

    def _meta_op(self, op: Callable[[], None]) -> None:
        """A metadata record outside any commit (a listing, a failed window), under the lock.
        One that cannot be written is logged: the run goes on, and a later one records it."""
        try:
            with self.gate.held():
                op()
        except LakeLocked as exc:
            if not exc.cancelled:
                log.warning("could not record metadata: %s", exc)
        except (CryptolakeError, OSError) as exc:
            log.warning("could not record metadata: %s", exc)

    def _finish(self) -> None:
        """After the last event: windows still open were stopped or cut by a ban."""
        for window in self._windows:
            if window.finished:
                continue
            window.finished = True
            if self.banned is not None and not self.stop.is_set():
                if window.result.error is None:
                    window.result.error = self.banned
            else:
                window.result.stopped = True
            self._release(window, everything=True)


@dataclass
class _UnitJob:
    """What a commit thread needs of one unit: its pages (and which came from blocks), the
    source records to write with it, the ranges the source could not serve, the carried hole."""

    unit: int
    pages: list[pa.Table]
    from_blocks: list[bool]
    records: list[SourceRecord]
    unserved: list[tuple[int, int]]
    carry: tuple[int, int] | None
    refused: list[tuple[int, int]]


@dataclass
class _ScreenedPage:
    """A page or block after the data-quality rules: the candles kept, how many were sent, the
    span to ask again when some were refused, and the block it came in (if one)."""

    table: pa.Table
    sent: int
    refused_span: tuple[int, int] | None
    block: BlockRows | None = None


def _carry_into(window: FetchWindow, k: int) -> tuple[int, int] | None:
    """The hole carried from the unit written before, if unit ``k`` continues it (units of a
    window that fetches only blocks may not touch)."""
    plan = window.plan
    if window.carry is None or plan is None or k == 0:
        return window.carry
    (a_lo, a_hi), (b_lo, b_hi) = plan.units[k - 1], plan.units[k]
    touching = a_hi == b_lo or b_hi == a_lo
    return window.carry if touching else None


@dataclass(frozen=True)
class _Evidence:
    """Candles known to exist before and after a unit: stored, listed or fetched in this run."""

    earliest: int | None
    latest: int | None

    @staticmethod
    def of(window: FetchWindow) -> _Evidence:
        before = [
            t
            for t in (
                window.stored[0] if window.stored else None,
                window.listing,
                window.seen[0] if window.seen else None,
            )
            if t is not None
        ]
        after = [
            t
            for t in (window.stored[1] if window.stored else None, window.seen[1] if window.seen else None)
            if t is not None
        ]
        return _Evidence(min(before, default=None), max(after, default=None))


def _outages(
    grid: Interval,
    unit: pa.Table,
    u_lo: int,
    u_hi: int,
    descending: bool,
    carry: tuple[int, int] | None,
    evidence: _Evidence,
    unserved: list[tuple[int, int]] | None = None,
) -> tuple[int, int, list[tuple[int, int]], Any]:
    """What one unit's fetch proved: ``(first, last slot settled, outages, carry)``.

    An outage is a run of slots the exchange returned nothing for although the symbol has candles
    before and after it. A hole at the unit's far edge (in commit order) with no candle known
    beyond it yet is carried into the next unit, which settles it with its own slots.
    """
    first, last = u_lo, grid.floor(u_hi - 1)
    if carry is not None:
        first, last = min(first, carry[0]), max(last, carry[1])
    rows = unit.num_rows
    # Slots the source could not serve were asked of nobody: no evidence of an outage.
    blind = [(grid.index(a), grid.index(grid.floor(b - 1))) for a, b in unserved or []]
    if carry is None and rows and rows == grid.count(first, last + 1) and _time_span(unit) == (first, last):
        return first, last, [], None  # every slot, in order, unique: no hole (the usual case)
    fetched = [
        grid.index(t) for t in unit.column("open_time").cast(pa.int64()).to_pylist() if grid.is_on_grid(t)
    ]
    holes = missing_runs(fetched, grid.index(first), grid.index(last))
    lowest = min(
        [*fetched, *([grid.index(evidence.earliest)] if evidence.earliest is not None else [])], default=None
    )
    highest = max(
        [*fetched, *([grid.index(evidence.latest)] if evidence.latest is not None else [])], default=None
    )
    outages, next_carry = [], None
    for a, b in holes:
        if any(x <= b and a <= y for x, y in blind):
            continue
        if lowest is not None and highest is not None and lowest < a and b < highest:
            outages.append((grid.at(a), grid.at(b)))
        elif (descending and a == grid.index(first)) or (not descending and b == grid.index(last)):
            next_carry = (grid.at(a), grid.at(b))
    return first, last, outages, next_carry


def _unit_rows(pages: list[pa.Table], lo: int, hi: int) -> pa.Table:
    """The candles of the pages (each sorted, none overlapping) opening in ``[lo, hi)``, sorted."""
    parts = [part for part in (rows_between(page, lo, hi) for page in pages) if part.num_rows]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return pages[0].slice(0, 0)
    parts.sort(key=lambda part: part.column("open_time")[0].value)
    return pa.concat_tables(parts)


def _all_sent(window: FetchWindow) -> bool:
    """Nothing more to request for the window (finished, or every page of its plan asked)."""
    return window.finished or (window.plan is not None and window.next_page >= len(window.plan.pages))


def _time_span(table: pa.Table) -> tuple[int, int]:
    """First and last open time (ms) of a non-empty table sorted by open time."""
    times = table.column("open_time")
    return int(times[0].value), int(times[-1].value)
