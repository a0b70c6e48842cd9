"""What every REST candle source of an exchange other than Binance shares: :class:`VenueClient`.

A venue (Coinbase, Kraken, Bybit) differs in its endpoint, its row format, its error shape, its
rate limit and its open-candle rule; the rest is the same and lives here: one httpx client, a
request pacer (the venue's documented requests per second, never exceeded), retries with
backoff (tenacity) for transient failures, cancellation, the exchange's clock, the range
fetch split into the venue's pages and run concurrently, the trivial block methods of the
:class:`~cryptolake.sources.base.KlineSource` protocol, and the symbol statuses and top-N
universe from the venue's markets.

A subclass implements :meth:`VenueClient._klines` (one request: the candles of a range, in the
lake's schema, closed or not), :meth:`VenueClient._error` (the venue's error shape to
:mod:`cryptolake.errors`), :meth:`VenueClient.markets`, :meth:`VenueClient._server_time_ms`,
:meth:`VenueClient._volumes_24h` and :meth:`VenueClient.first_open_time`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import tenacity

from cryptolake._version import __version__
from cryptolake.errors import (
    BadPayload,
    ExchangeUnavailable,
    Interrupted,
    IPBanned,
    RateLimited,
    SourceError,
)
from cryptolake.schema import Interval
from cryptolake.sources.base import Market, TopSymbol, WholeRangeFetch
from cryptolake.sources.klines import ARROW_SCHEMA, EMPTY_TABLE, table_to_frame
from cryptolake.sources.ratelimit import RequestPacer

log = logging.getLogger("cryptolake.sources")


class VenueClient(WholeRangeFetch):
    """The shared machinery of a venue's REST candle source (see the module docstring).

    Args:
        base_url: the venue's REST host.
        quote_asset: quote asset of the default universe and of bare base assets.
        max_retries: retries after the first attempt for transient failures.
        retry_delay: first backoff delay in seconds; doubles per retry, with jitter.
        timeout_s: per-request timeout.
        concurrency: requests in flight at once.
        requests_per_s: the pace this client keeps (the venue's documented public limit, or
            less); a sliding window, so no burst ever exceeds it.
        excluded_bases: base assets (fnmatch patterns) left out of the top-N universe.
        transport: an httpx transport (a seam for tests and proxies).
        clock: epoch seconds now (pauses, the exchange's clock when it has none).
        sleep: how to sleep between retries.
    """

    #: The lake's ``exchange=`` key and the name in messages.
    exchange = ""
    #: The venue's name in messages (``Coinbase``).
    title = ""
    #: Intervals the venue serves (the lake's names: ``1m``, ``1h``, ...).
    intervals: tuple[str, ...] = ()
    #: Candles one request returns at most.
    page_candles = 1000
    #: Whether the venue sends a candle (zero volume) for a period without trades. When it
    #: does not, a slot without a candle inside a traded range is a ``no_trades`` window.
    empty_candles = True
    #: A page covers a fixed span of slots (see :class:`~cryptolake.sources.base.KlineSource`).
    pages_skip_empty = False
    #: The venue's documented public limit: requests per ``RATE_PERIOD_S``.
    RATE_LIMIT = 10
    RATE_PERIOD_S = 1.0

    def __init__(
        self,
        *,
        base_url: str,
        quote_asset: str = "USDT",
        max_retries: int = 3,
        retry_delay: float = 1.0,
        timeout_s: float = 10.0,
        concurrency: int = 4,
        requests_per_s: float | None = None,
        excluded_bases: Iterable[str] = (),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0 or retry_delay < 0:
            raise ValueError("max_retries >= 0, concurrency >= 1, timeout_s > 0, retry_delay >= 0")
        self.base_url = base_url.rstrip("/")
        self.quote_asset = quote_asset.upper()
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.concurrency = concurrency
        self.blocks_only = False
        self.excluded_bases = tuple(excluded_bases)
        self._host = urlsplit(self.base_url).netloc
        self._clock = clock
        self._sleep = sleep
        self._cancel = threading.Event()
        self._slots = threading.BoundedSemaphore(concurrency)
        limit, period = self.RATE_LIMIT, self.RATE_PERIOD_S
        if requests_per_s is not None:
            limit, period = max(1, round(requests_per_s * period)), period
        self._pacer = RequestPacer(limit, period, clock=clock)
        self._paused_until = 0.0
        self._clock_offset_ms: int | None = None
        self._clock_lock = threading.Lock()
        self._first_open: dict[tuple[str, str], int | None] = {}
        self._markets: tuple[float, list[Market]] | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"User-Agent": f"cryptolake/{__version__}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, concurrency={self.concurrency})"

    def __enter__(self) -> VenueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the subclass's part -----------------------------------------------------------------

    def _klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        """One request: the candles opening in ``[start_ms, end_ms)`` (at most
        :attr:`page_candles` slots), closed or open, sorted by unique open time, in the lake's
        schema (columns the venue does not give are null)."""
        raise NotImplementedError

    def _error(self, response: httpx.Response, path: str, symbol: str | None) -> Exception | None:
        """The exception for a response that is an error (None when it is a success)."""
        raise NotImplementedError

    def markets(self) -> list[Market]:
        """Every spot market the venue lists (one or two requests; cached for 5 minutes by
        :meth:`cached_markets`)."""
        raise NotImplementedError

    def _server_time_ms(self) -> int:
        """The venue's clock (one request)."""
        raise NotImplementedError

    def _volumes_24h(self, symbols: Sequence[str]) -> dict[str, float]:
        """24 h volume in the quote asset, per symbol (as few requests as the venue allows)."""
        raise NotImplementedError

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's first candle for ``interval``; None if it has none."""
        raise NotImplementedError

    # -- KlineSource -------------------------------------------------------------------------

    def cancel_pending(self) -> None:
        """Make requests waiting for the pace or a retry give up at once (see BinanceClient)."""
        self._cancel.set()
        self._pacer.wake()

    def resume(self) -> None:
        """Send again after :meth:`cancel_pending`."""
        self._cancel.clear()

    def banned_until(self) -> float:
        """Epoch seconds until which the venue told us to stop (Bybit's 403); 0 otherwise."""
        return self._paused_until if self._paused_until > self._clock() else 0.0

    def get_server_time_ms(self) -> int:
        """The exchange's clock, in ms since the epoch."""
        return self._server_time_ms()

    def sync_clock(self) -> int:
        """Ask the venue's clock once and keep its offset; returns the venue's time."""
        before = self._clock()
        server = self._server_time_ms()
        after = self._clock()
        self._clock_offset_ms = server - int((before + after) * 500)
        return server

    def exchange_now_ms(self) -> int:
        """The venue's clock now, from the offset :meth:`sync_clock` measured (asked once,
        however many pages want it at once)."""
        with self._clock_lock:
            if self._clock_offset_ms is None:
                return self.sync_clock()
        return int(self._clock() * 1000) + self._clock_offset_ms

    def cached_markets(self, max_age_s: float = 300.0) -> list[Market]:
        """:meth:`markets`, asked again only when older than ``max_age_s``."""
        now = self._clock()
        if self._markets is None or now - self._markets[0] > max_age_s:
            self._markets = (now, self.markets())
        return self._markets[1]

    def symbol_statuses(self, max_age_s: float = 300.0) -> dict[str, str]:
        """``{symbol: status}`` of every market (``TRADING`` for a live one)."""
        return {m.symbol: m.status for m in self.cached_markets(max_age_s)}

    def resolve_symbol(self, name: str) -> str:
        """The venue's symbol for ``name``: the venue's own symbol, or a base asset (``BTC``,
        normalised names accepted) in :attr:`quote_asset`. Unknown names come back unchanged
        (the request then fails for that symbol alone)."""
        markets = self.cached_markets()
        upper = name.upper()
        for market in markets:
            if market.symbol.upper() == upper:
                return market.symbol
        for market in markets:
            if market.base == upper and market.quote == self.quote_asset:
                return market.symbol
        return name

    def get_top_by_market_cap(self, limit: int = 50) -> list[TopSymbol]:
        """The ``limit`` trading markets in :attr:`quote_asset` with the largest 24 h quote
        volume (market cap is not published; volume is the proxy, as for Binance)."""
        import fnmatch

        live = [
            m
            for m in self.cached_markets()
            if m.status == "TRADING"
            and m.quote == self.quote_asset
            and not any(fnmatch.fnmatchcase(m.base, pattern) for pattern in self.excluded_bases)
        ]
        volumes = self._volumes_24h([m.symbol for m in live])
        ranked = sorted(live, key=lambda m: (-volumes.get(m.symbol, 0.0), m.symbol))[:limit]
        return [
            TopSymbol(rank, m.symbol, m.base, m.quote, volumes.get(m.symbol, 0.0))
            for rank, m in enumerate(ranked, start=1)
        ]

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """Open time of the symbol's latest candle (the open one, for a live market)."""
        grid = Interval(interval)
        now = self.exchange_now_ms()
        hi = grid.next_open(grid.floor(now))
        table = self._klines(symbol, interval, self._back(grid, hi, self.page_candles), hi)
        if table.num_rows == 0:
            return None
        return int(table.column("open_time")[-1].value)

    def get_klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = 1000,
        *,
        as_arrow: bool = False,
    ) -> Any:
        """Up to ``limit`` (at most :attr:`page_candles`) slots from ``start_ms``, in one request.

        Without ``end_ms``, the first candle at or after ``start_ms`` and the slots after it:
        a start before the listing moves to the listing, and pages without a candle (no trades,
        an outage) are skipped up to the exchange's now (more than one request then)."""
        grid = self.check_interval(interval)
        lo = grid.ceil(start_ms)
        slots = min(limit, self.page_candles)
        if end_ms is not None:
            hi = min(self._ahead(grid, lo, slots), end_ms)
            table = self._klines(symbol, interval, lo, hi) if lo < hi else EMPTY_TABLE
            return table if as_arrow else table_to_frame(table)
        first = self.first_open_time(symbol, interval)
        table = EMPTY_TABLE
        if first is not None:
            lo = max(lo, first)
            now_hi = grid.next_open(grid.floor(self.exchange_now_ms()))
            while lo < now_hi:
                hi = min(self._ahead(grid, lo, slots), now_hi)
                table = self._klines(symbol, interval, lo, hi)
                if table.num_rows:
                    break
                lo = hi
        return table if as_arrow else table_to_frame(table)

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        """Every candle opening in ``[start_ms, end_ms)``: one request per
        :attr:`page_candles` slots, run concurrently (an interval the venue does not serve is
        refused even when the range holds no slot of it)."""
        grid = self.check_interval(interval)
        pages: list[tuple[int, int]] = []
        lo = grid.ceil(start_ms)
        while lo < end_ms:
            hi = min(self._ahead(grid, lo, self.page_candles), end_ms)
            pages.append((lo, hi))
            lo = hi
        if not pages:
            table = EMPTY_TABLE
        elif len(pages) == 1:
            table = self._klines(symbol, interval, *pages[0])
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pages))) as pool:
                parts = list(pool.map(lambda page: self._klines(symbol, interval, *page), pages))
            table = pa.concat_tables(parts)
        return table if as_arrow else table_to_frame(table)

    # -- helpers for subclasses --------------------------------------------------------------

    def check_interval(self, interval: str) -> Interval:
        """The interval, if the venue serves it; else a clear error."""
        if interval not in self.intervals:
            raise ValueError(
                f"{self.title} has no {interval!r} candles; it serves {', '.join(self.intervals)}"
            )
        return Interval(interval)

    @staticmethod
    def _ahead(grid: Interval, lo: int, slots: int) -> int:
        step = grid.fixed_ms
        if step:
            return lo + slots * step
        t = lo
        for _ in range(slots):
            t = grid.next_open(t)
        return t

    @staticmethod
    def _back(grid: Interval, hi: int, slots: int) -> int:
        step = grid.fixed_ms
        if step:
            return max(0, hi - slots * step)
        t = grid.floor(hi - 1)
        for _ in range(slots - 1):
            t = grid.floor(t - 1)
        return t

    def get_json(self, path: str, params: dict[str, Any], *, symbol: str | None = None) -> Any:
        """GET ``path`` at the venue's pace, retried on transient failures; the JSON body, or
        the exception :meth:`_error` maps an error to."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._backoff,
            sleep=self._pause,
            reraise=True,
            before_sleep=self._log_retry,
        )
        for attempt in retrying:
            with attempt:
                return self._send(path, params, symbol)
        raise AssertionError("unreachable")  # pragma: no cover

    def pause_requests(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the venue said to wait: 429's Retry-After, 403)."""
        self._pacer.pause(seconds)

    def stop_until(self, until: float) -> None:
        """Record that the venue asked us to stop until ``until`` (epoch seconds)."""
        self._paused_until = max(self._paused_until, until)
        self._pacer.pause(until - self._clock())

    def _send(self, path: str, params: dict[str, Any], symbol: str | None) -> Any:
        if self._cancel.is_set():
            raise Interrupted(f"stopped before sending {path}")
        if self._paused_until > self._clock():
            raise IPBanned(
                f"{self.title} asked this IP to stop; nothing is sent until the pause ends",
                banned_until=self._paused_until,
                retry_after_s=self._paused_until - self._clock(),
            )
        with self._slots:
            self._pacer.acquire(self._cancel)
            try:
                response = self._http.get(path, params=params)
            except httpx.TimeoutException as exc:
                raise ExchangeUnavailable(f"{self.title} timed out on {path} ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise ExchangeUnavailable(
                    f"cannot reach {self.title} at {self.base_url} ({type(exc).__name__}: {exc})"
                ) from exc
        error = self._error(response, path, symbol)
        if error is not None:
            raise error
        try:
            return response.json()
        except ValueError as exc:
            raise BadPayload(f"malformed JSON from {self.title} {path}: {response.text[:100]!r}") from exc

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return 0.0  # the pacer holds every request until Retry-After has passed
        wait = tenacity.wait_exponential_jitter(multiplier=self.retry_delay, max=60, jitter=self.retry_delay)
        return float(wait(state))

    def _pause(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            self._cancel.wait(seconds)
        else:
            self._sleep(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("%s: retrying after %s (attempt %d)", self.title, exc, state.attempt_number)


def _is_transient(exc: BaseException) -> bool:
    from cryptolake.errors import Transient

    return isinstance(exc, Transient) and isinstance(exc, SourceError)


def candles_table(columns: dict[str, list[Any]]) -> pa.Table:
    """Candles from Python lists (times in ms; a missing column is null), sorted by unique open
    time, in the lake's schema."""
    count = len(columns["open_time"])
    arrays = []
    for field in ARROW_SCHEMA:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(count, field.type))
        elif field.name in ("open_time", "close_time"):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    table = pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
    if count > 1:
        table = table.sort_by("open_time")
        times = table.column("open_time").to_pylist()
        if len(set(times)) != count:
            keep = [i for i in range(count) if i + 1 == count or times[i] != times[i + 1]]
            table = table.take(keep)
    return table
