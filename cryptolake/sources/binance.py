"""BinanceClient: Binance spot market data over REST, weight-aware, concurrent inside.

This is the only module that talks HTTP to Binance and the only place where httpx errors and
Binance error codes become :mod:`cryptolake.errors` exceptions. The public API is synchronous and
thread-safe; pages are fetched concurrently on worker threads, so it works the same in a script
and in a running Jupyter kernel.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import polars as pl
import pyarrow as pa
import tenacity

from cryptolake._version import __version__
from cryptolake.config import DEFAULT_EXCLUDED_BASES
from cryptolake.errors import (
    BadPayload,
    ExchangeUnavailable,
    Interrupted,
    InvalidSymbol,
    IPBanned,
    RateLimited,
    RequestRejected,
    RestrictedLocation,
    SourceError,
    Transient,
)
from cryptolake.schema import INTERVALS, Interval
from cryptolake.sources.base import Market, WholeRangeFetch, normalize_asset
from cryptolake.sources.klines import (
    ARROW_SCHEMA,
    EMPTY_TABLE,
    parse_klines_body,
    rows_to_frame,
    table_to_frame,
)
from cryptolake.sources.ratelimit import BanBook, WeightLimiter, parse_rate_limits, shared_limiter
from cryptolake.timeutils import from_ms, iso, to_ms

log = logging.getLogger("cryptolake.binance")


DEFAULT_BASE_URL = "https://data-api.binance.vision"
PAGE_LIMIT = 1000  # Binance's maximum klines per request; never ask for more.

#: Documented request weights (Binance spot REST).
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/ticker/24hr": 80,  # all symbols; one symbol weighs 2
}

_TRANSIENT_CODES = {-1001, -1007, -1008}  # disconnected, timeout, server busy
_RESTRICTED_HINT = (
    "Binance refuses to serve this location from {url} (HTTP 451, restricted location). "
    "Point binance.base_url (env CRYPTOLAKE_BINANCE_BASE_URL, flag --base-url) at a Binance host "
    "you are allowed to use, or run from an eligible location."
)


@dataclass(frozen=True)
class TopCrypto:
    """A spot pair of the top-N universe, ranked by 24 h quote volume (1 = largest)."""

    rank: int
    symbol: str
    base_asset: str
    quote_asset: str
    current_price: float
    quote_volume_24h: float
    volume_24h: float
    price_change_percent_24h: float


@dataclass(frozen=True)
class PriceData:
    """One closed candle. Times are timezone-aware UTC datetimes."""

    symbol: str
    interval: str
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    close_time: datetime
    quote_volume: float
    trades: int
    taker_buy_base_volume: float
    taker_buy_quote_volume: float


class BinanceClient(WholeRangeFetch):
    """Binance spot market data: klines for every interval, the top-N universe, server time.

    Args:
        api_key: optional; public market data needs none. Sent as ``X-MBX-APIKEY``, never logged.
        api_secret: optional; unused by market data, kept for API compatibility, never logged.
        max_retries: retries after the first attempt for transient failures (timeouts,
            connection errors, 5xx, 429).
        retry_delay: first backoff delay in seconds; doubles per retry, with jitter.
        base_url: the Binance host (default: the market-data-only host).
        timeout_s: per-request timeout in seconds.
        concurrency: requests in flight at once, across all calls on this client.
        weight_share: the share of Binance's weight limit this process allows itself.
        quote_asset: quote asset of the top-N universe.
        excluded_bases: base assets (fnmatch patterns) left out of the top-N universe.
        ban_file: where 418 bans are recorded so that other processes honour them too.
        transport: an httpx transport (a seam for tests and proxies).
        clock: epoch seconds now: ban expiry and the weight windows.
        sleep: how to sleep between retries and, if not ``time.sleep``, for the weight budget (a
            test's virtual clock: no wall time passes).
        weight_limiter: the weight budget to draw from; default: the one this process shares
            among all clients of the same host, ``weight_share`` and ``source_address``.
        source_address: the local IP address requests leave from (a host with several
            addresses); Binance counts weight per IP, so each address has a budget of its own.
    """

    def __init__(
        self,
        api_key: str | None = None,
        api_secret: str | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        concurrency: int = 16,
        weight_share: float = 0.9,
        quote_asset: str = "USDT",
        excluded_bases: Iterable[str] = DEFAULT_EXCLUDED_BASES,
        ban_file: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        weight_limiter: WeightLimiter | None = None,
        source_address: str | None = None,
    ) -> None:
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0 or retry_delay < 0:
            raise ValueError("max_retries >= 0, concurrency >= 1, timeout_s > 0, retry_delay >= 0")
        for name, key in (("api_key", api_key), ("api_secret", api_secret)):
            if key and not all(33 <= ord(ch) <= 126 for ch in key):  # the value itself is never shown
                raise ValueError(f"{name} must be printable ASCII without spaces or control characters")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.exchange = "binance"
        self.blocks_only = False
        self.intervals = INTERVALS
        self.page_candles = PAGE_LIMIT
        self.pages_skip_empty = True
        self.empty_candles = True  # Binance sends zero-volume candles for quiet periods
        self.retry_delay = retry_delay
        self.concurrency = concurrency
        self.quote_asset = quote_asset.upper()
        self.excluded_bases = tuple(excluded_bases)
        self._api_key = api_key or None
        self._api_secret = api_secret or None
        self._host = urlsplit(self.base_url).netloc
        #: The local address requests leave from (None: the system's choice). Binance counts
        #: weight per IP, so clients from different addresses have budgets of their own.
        self.source_address = source_address or None
        # Weight and bans are per IP: an address of its own is a budget and a ban record of its own.
        self._ip_key = (
            self._host if self.source_address is None else f"{self._host} from {self.source_address}"
        )
        self._limiter: WeightLimiter = weight_limiter or shared_limiter(
            self._ip_key, weight_share, clock=clock, sleep=None if sleep is time.sleep else sleep
        )
        if transport is None and self.source_address is not None:
            transport = httpx.HTTPTransport(local_address=self.source_address)
        self._bans = BanBook(Path(ban_file) if ban_file else None, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(concurrency)
        self._cancel = threading.Event()
        self._clock_offset_ms: int | None = None
        self._info: tuple[float, dict[str, Any]] | None = None
        self._first_open: dict[tuple[str, str], int | None] = {}
        headers = {"User-Agent": f"cryptolake/{__version__}"}
        if self._api_key:
            headers["X-MBX-APIKEY"] = self._api_key
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def __repr__(self) -> str:
        return f"BinanceClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    def __enter__(self) -> BinanceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def cancel_pending(self) -> None:
        """Stop sending: requests waiting for weight, a retry or a 429's ``Retry-After``, and every
        later one, raise :class:`~cryptolake.errors.Interrupted` until :meth:`resume` (a stop
        request must not wait out a rate-limit window). Safe from a signal handler."""
        self._cancel.set()
        self._limiter.wake()

    def resume(self) -> None:
        """Send again after :meth:`cancel_pending`."""
        self._cancel.clear()

    def banned_until(self) -> float:
        """Epoch seconds until which a recorded 418 ban forbids calling this host (in this
        process or, through the ban file, any other); 0 when there is none."""
        return self._bans.banned_until(self._ip_key)

    @property
    def bans(self) -> BanBook:
        """The recorded 418 bans this client honours (``entries()``, ``clear()``)."""
        return self._bans

    # -- simple endpoints ------------------------------------------------------------------

    def test_connectivity(self) -> bool:
        """True when the exchange answers ``/api/v3/ping``; never raises for exchange errors."""
        try:
            self._get("/api/v3/ping", {}, weight=1)
        except SourceError as exc:
            log.warning("Binance connectivity test failed: %s", exc)
            return False
        return True

    def get_server_time_ms(self) -> int:
        """The exchange's clock, in ms since the epoch."""
        payload = self._get("/api/v3/time", {}, weight=1)
        try:
            return int(payload["serverTime"])
        except (TypeError, KeyError, ValueError) as exc:
            raise BadPayload(f"unexpected /api/v3/time payload: {str(payload)[:200]}") from exc

    def get_server_time(self) -> datetime:
        """The exchange's clock as a UTC datetime."""
        return from_ms(self.get_server_time_ms())

    def sync_clock(self) -> int:
        """Ask the exchange's clock once (one ``/api/v3/time``) and remember its offset from this
        machine's, so that :meth:`exchange_now_ms` needs no request; returns the server time."""
        before = self._clock()
        server = self.get_server_time_ms()
        after = self._clock()
        self._clock_offset_ms = server - int((before + after) * 500)
        return server

    def exchange_now_ms(self) -> int:
        """The exchange's clock now, from the offset :meth:`sync_clock` measured (synced on first use)."""
        if self._clock_offset_ms is None:
            return self.sync_clock()
        return int(self._clock() * 1000) + self._clock_offset_ms

    def get_exchange_info(self, symbol: str | None = None, *, max_age_s: float = 0.0) -> dict[str, Any]:
        """``/api/v3/exchangeInfo`` (all symbols, or one); adopts its advertised weight limit.

        Args:
            symbol: One symbol, or None for all.
            max_age_s: Reuse the last all-symbols answer if it is at most this old (a run asks
                once: exchange info weighs 20).
        """
        if symbol is None and self._info is not None and self._clock() - self._info[0] <= max_age_s:
            return self._info[1]
        params = {"symbol": symbol} if symbol else {}
        info = self._get("/api/v3/exchangeInfo", params, weight=20, symbol=symbol)
        if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
            raise BadPayload(f"unexpected exchangeInfo payload from {self.base_url}")
        limits = parse_rate_limits(info.get("rateLimits") or [])
        if limits is not None:
            self._limiter.configure(*limits)
        if symbol is None:
            self._info = (self._clock(), info)
        return info

    def symbol_statuses(self, max_age_s: float = 300.0) -> dict[str, str]:
        """``{symbol: status}`` (``TRADING``, ``BREAK``, ...) of every symbol the exchange lists,
        from one exchange info answer (reused for ``max_age_s``)."""
        info = self.get_exchange_info(max_age_s=max_age_s)
        return {
            str(e.get("symbol")): str(e.get("status", "")) for e in info["symbols"] if isinstance(e, dict)
        }

    def markets(self) -> list[Market]:
        """Every spot market of exchangeInfo, with its assets and status."""
        info = self.get_exchange_info(max_age_s=300.0)
        return [
            Market(
                "binance",
                str(e.get("symbol")),
                normalize_asset(str(e.get("baseAsset", ""))),
                normalize_asset(str(e.get("quoteAsset", ""))),
                str(e.get("status", "")),
            )
            for e in info["symbols"]
            if isinstance(e, dict) and _is_spot(e)
        ]

    def resolve_symbol(self, name: str) -> str:
        """``BTCUSDT`` for ``BTCUSDT``, and for ``BTC`` (in :attr:`quote_asset`)."""
        upper = name.upper()
        if upper.endswith(self.quote_asset) and len(upper) > len(self.quote_asset):
            return name
        return upper + self.quote_asset

    def get_top_by_market_cap(self, limit: int = 50) -> list[TopCrypto]:
        """The ``limit`` TRADING spot pairs in the quote asset with the largest 24 h quote volume.

        Binance publishes no market cap; 24 h quote volume stands in for it, as in the original
        design. Excluded base assets (stablecoins, leveraged tokens) are left out.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        info = self.get_exchange_info(max_age_s=60.0)
        pairs = {
            entry["symbol"]: entry
            for entry in info["symbols"]
            if entry.get("status") == "TRADING"
            and entry.get("quoteAsset") == self.quote_asset
            and _is_spot(entry)
            and not self._is_excluded(str(entry.get("baseAsset", "")))
        }
        tickers = self._get("/api/v3/ticker/24hr", {}, weight=80)
        if not isinstance(tickers, list):
            raise BadPayload("unexpected /api/v3/ticker/24hr payload: not a list")
        ranked = sorted(
            (t for t in tickers if t.get("symbol") in pairs),
            key=lambda t: float(t.get("quoteVolume", 0)),
            reverse=True,
        )[:limit]
        return [
            TopCrypto(
                rank=rank,
                symbol=t["symbol"],
                base_asset=pairs[t["symbol"]]["baseAsset"],
                quote_asset=self.quote_asset,
                current_price=float(t["lastPrice"]),
                quote_volume_24h=float(t["quoteVolume"]),
                volume_24h=float(t.get("volume", 0)),
                price_change_percent_24h=float(t.get("priceChangePercent", 0)),
            )
            for rank, t in enumerate(ranked, start=1)
        ]

    def _is_excluded(self, base: str) -> bool:
        return any(fnmatch.fnmatchcase(base, pattern) for pattern in self.excluded_bases)

    # -- klines ------------------------------------------------------------------------------

    def get_hourly_prices(
        self, symbol: str, start_time: datetime | str | int, end_time: datetime | str | int | None = None
    ) -> list[PriceData]:
        """Closed 1h candles with ``start_time <= open_time < end_time`` as records.

        Naive datetimes are UTC. Without ``end_time``: up to the last closed candle.
        """
        frame = self.get_klines(symbol, "1h", start_time, end_time)
        return [PriceData(symbol=symbol, interval="1h", **row) for row in frame.iter_rows(named=True)]

    def get_klines(
        self,
        symbol: str,
        interval: str,
        start: datetime | str | int,
        end: datetime | str | int | None = None,
        *,
        as_arrow: bool = False,
    ) -> pl.DataFrame:
        """Every closed candle of ``symbol`` with ``start <= open_time < end``, oldest first.

        Pages of 1000 candles are fetched concurrently. A start before the symbol's listing
        gives history from its first candle. The still-open candle is never returned: only
        candles whose close time is before the exchange's clock are.

        Args:
            symbol: a Binance spot symbol such as ``"BTCUSDT"``.
            interval: a Binance interval, ``1s`` ... ``1M`` (case-sensitive).
            start: first open time (datetime, ISO text or epoch ms; naive means UTC).
            end: end of the range, exclusive; default: now.
            as_arrow: return a ``pyarrow.Table`` instead of a polars DataFrame.

        Returns:
            A frame with :data:`cryptolake.schema.KLINE_COLUMNS` (open/close times UTC).

        Raises:
            InvalidSymbol: Binance does not know the symbol.
            SourceError: the exchange could not be read after retries.
        """
        grid = _interval(interval)
        start_ms = to_ms(start)
        end_ms = to_ms(end) if end is not None else None
        long_range = end_ms is None or grid.count(start_ms, end_ms) > PAGE_LIMIT
        with ThreadPoolExecutor(max_workers=3) as pool:
            # The exchange's clock decides which candles are closed; for ranges longer than a
            # page, the symbol's first and last candles bound it, so no page is spent before
            # the listing or after a delisting. The three requests go out together.
            server_now = pool.submit(self.get_server_time_ms)
            first = pool.submit(self.first_open_time, symbol, grid.name) if long_range else None
            last = pool.submit(self.last_open_time, symbol, grid.name) if long_range else None
            now_ms = server_now.result()
            end_ms = now_ms if end_ms is None else min(end_ms, now_ms)
            if first is not None and last is not None:
                first_ms, last_ms = first.result(), last.result()
                if first_ms is None or last_ms is None:
                    end_ms = start_ms
                else:
                    start_ms, end_ms = max(start_ms, first_ms), min(end_ms, last_ms + 1)
        frame = self._fetch_range(symbol, grid, start_ms, end_ms)
        frame = frame.filter(pl.col("close_time") < from_ms(now_ms))
        return frame.to_arrow() if as_arrow else frame

    def get_klines_page(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        limit: int = PAGE_LIMIT,
        *,
        as_arrow: bool = False,
    ) -> pl.DataFrame:
        """One klines request: up to ``limit`` candles opening at or after ``start_ms`` (and
        before ``end_ms``, if given), open or closed. No server time, no look-ups: the caller
        decides which candles are closed. Without ``end_ms`` it finds a symbol's first candle at
        or after ``start_ms`` and the ones after it in the same request."""
        grid = _interval(interval)
        params: dict[str, Any] = {"startTime": start_ms, "limit": min(limit, PAGE_LIMIT)}
        if end_ms is not None:
            params["endTime"] = end_ms - 1
        table = self._klines_table(symbol, grid.name, params)
        return table if as_arrow else table_to_frame(table)

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> pl.DataFrame:
        """Every candle opening in ``[start_ms, end_ms)`` in as few requests as the range allows
        (one per 1,000 candles, one more only if off-grid candles fill a page early). No server
        time, no look-ups: the caller bounds the range by the exchange's clock."""
        grid = _interval(interval)
        table = self._fetch_table(symbol, grid, start_ms, end_ms) if start_ms < end_ms else EMPTY_TABLE
        return table if as_arrow else table_to_frame(table)

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the symbol's first candle for ``interval``; None if it has none."""
        key = (symbol, interval)
        if key not in self._first_open:
            rows = self._klines_page(symbol, interval, {"startTime": 0, "limit": 1})
            self._first_open[key] = int(rows[0][0]) if rows else None
        return self._first_open[key]

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the symbol's latest candle (the open one, for a live market)."""
        rows = self._klines_page(symbol, interval, {"limit": 1})
        return int(rows[-1][0]) if rows else None

    def _fetch_range(self, symbol: str, grid: Interval, start_ms: int, end_ms: int) -> pl.DataFrame:
        if start_ms >= end_ms:
            return rows_to_frame([])
        pages = _plan_pages(grid, start_ms, end_ms)
        if len(pages) == 1:
            rows = self._fetch_page(symbol, grid, *pages[0])
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pages))) as pool:
                chunks = list(pool.map(lambda p: self._fetch_page(symbol, grid, *p), pages))
            rows = [row for chunk in chunks for row in chunk]
        return rows_to_frame(rows)

    def _fetch_page(self, symbol: str, grid: Interval, start_ms: int, end_ms: int) -> list[list[Any]]:
        """Candles with open time in [start_ms, end_ms); follows on if a page comes back full."""
        rows: list[list[Any]] = []
        cursor = start_ms
        while cursor < end_ms:
            params = {"startTime": cursor, "endTime": end_ms - 1, "limit": PAGE_LIMIT}
            page = self._klines_page(symbol, grid.name, params)
            rows.extend(page)
            # A full page that stops short of the range end means more candles than the grid
            # has slots (off-grid candles in old history): ask for the rest.
            cursor = int(page[-1][0]) + 1 if len(page) == PAGE_LIMIT else end_ms
            if cursor < end_ms and grid.ceil(_as_ms(cursor)) >= end_ms:
                break
        return rows

    def _klines_table(self, symbol: str, interval: str, params: dict[str, Any]) -> pa.Table:
        """One klines request, parsed straight into an Arrow table (see :func:`parse_klines_body`)."""
        query = {"symbol": symbol, "interval": interval, **params}
        return self._get("/api/v3/klines", query, weight=2, symbol=symbol, parse=parse_klines_body)

    def _fetch_table(self, symbol: str, grid: Interval, start_ms: int, end_ms: int) -> pa.Table:
        """:meth:`_fetch_page` as an Arrow table."""
        parts: list[pa.Table] = []
        cursor = start_ms
        while cursor < end_ms:
            params = {"startTime": cursor, "endTime": end_ms - 1, "limit": PAGE_LIMIT}
            page = self._klines_table(symbol, grid.name, params)
            parts.append(page)
            # A full page that stops short of the range end means more candles than the grid
            # has slots (off-grid candles in old history): ask for the rest.
            cursor = page.column("open_time")[-1].value + 1 if page.num_rows == PAGE_LIMIT else end_ms
            if cursor < end_ms and grid.ceil(cursor) >= end_ms:
                break
        if len(parts) == 1:
            return parts[0]
        frame = pl.from_arrow(pa.concat_tables(parts))
        assert isinstance(frame, pl.DataFrame)
        return frame.unique("open_time", keep="last").sort("open_time").to_arrow().cast(ARROW_SCHEMA)

    def _klines_page(self, symbol: str, interval: str, params: dict[str, Any]) -> list[list[Any]]:
        query = {"symbol": symbol, "interval": interval, **params}
        page = self._get("/api/v3/klines", query, weight=2, symbol=symbol)
        # Checked with builtins mapped over the rows (C speed: this runs for every page).
        if not isinstance(page, list) or (
            page and (set(map(type, page)) != {list} or min(map(len, page)) < 11)
        ):
            raise BadPayload(f"unexpected klines payload for {symbol} {interval}: {str(page)[:200]}")
        return page

    # -- transport, weight, retries, errors ------------------------------------------------

    def _get(
        self,
        path: str,
        params: dict[str, Any],
        *,
        weight: int,
        symbol: str | None = None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> Any:
        if weight > 1 and not self._limiter.calibrated and path != "/api/v3/exchangeInfo":
            self._calibrate(symbol)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._backoff,
            sleep=self._pause,
            reraise=True,
            before_sleep=_log_retry,
        )
        for attempt in retrying:
            with attempt:
                return self._send(path, params, weight, symbol, parse)
        raise AssertionError("unreachable")  # pragma: no cover

    def _calibrate(self, symbol: str | None) -> None:
        """Learn the exchange's weight limit and window from exchangeInfo, once per host."""
        try:
            self.get_exchange_info(symbol)
        except InvalidSymbol:
            raise
        except RequestRejected:
            self.get_exchange_info()

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return 0.0  # the limiter itself holds every request until Retry-After has passed
        wait = tenacity.wait_exponential_jitter(multiplier=self.retry_delay, max=60, jitter=self.retry_delay)
        return float(wait(state))

    def _pause(self, seconds: float) -> None:
        """Sleep between retries; a cancel cuts it short."""
        if self._sleep is time.sleep:
            self._cancel.wait(seconds)
        else:
            self._sleep(seconds)

    def _send(
        self,
        path: str,
        params: dict[str, Any],
        weight: int,
        symbol: str | None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> Any:
        if self._cancel.is_set():
            raise Interrupted(f"stopped before sending {path}")
        banned_until = self._bans.banned_until(self._ip_key)
        if banned_until:
            raise _banned(self._ip_key, banned_until, banned_until - self._clock(), self._bans.path)
        with self._slots:
            reservation = self._limiter.acquire(weight, self._cancel)
            headers: httpx.Headers | None = None
            try:
                response = self._http.get(path, params=params)
                headers = response.headers
            except httpx.TimeoutException as exc:
                raise ExchangeUnavailable(f"Binance timed out on {path} ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise ExchangeUnavailable(
                    f"cannot reach Binance at {self.base_url} ({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                self._limiter.release(reservation, headers)
        return self._payload(response, path, symbol, parse)

    def _payload(
        self,
        response: httpx.Response,
        path: str,
        symbol: str | None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> Any:
        status = response.status_code
        if status == 200:
            try:
                return response.json() if parse is None else parse(response.content)
            except ValueError as exc:
                raise BadPayload(f"malformed JSON from {path}: {response.text[:100]!r}") from exc
        code, msg = _error_body(response)
        retry_after = _retry_after_s(response)
        if status == 418:
            until = self._bans.record(self._ip_key, retry_after)
            raise _banned(self._ip_key, until, retry_after, self._bans.path)
        if status == 429 or code == -1003:
            self._limiter.pause(retry_after)
            log.warning("Binance rate limit hit (429); sending nothing for %.0f s", retry_after)
            raise RateLimited(
                f"Binance rate limit exceeded on {path}: {msg} (another process on this IP may be using the "
                "weight; try again in a minute, or lower binance.weight_share)",
                retry_after_s=retry_after,
            )
        if status == 451:
            raise RestrictedLocation(_RESTRICTED_HINT.format(url=self.base_url))
        if status >= 500 or status == 403 or code in _TRANSIENT_CODES:
            raise ExchangeUnavailable(
                f"Binance answered HTTP {status} on {path}: {msg or response.text[:100]}"
            )
        if code == -1121:
            raise InvalidSymbol(symbol or "?", status=status, msg=msg)
        raise RequestRejected(
            f"Binance rejected {path} (HTTP {status}, code {code}: {msg})", status=status, code=code, msg=msg
        )


def _as_ms(t: int) -> int:
    """Milliseconds, whether Binance answered in ms or (with the µs time unit) in µs."""
    return t // 1000 if t > 10**14 else t


def _is_spot(entry: dict[str, Any]) -> bool:
    if entry.get("isSpotTradingAllowed") is True:
        return True
    sets = entry.get("permissionSets") or []
    return "SPOT" in (entry.get("permissions") or []) or any("SPOT" in s for s in sets)


def _interval(interval: str) -> Interval:
    try:
        return Interval(interval)
    except ValueError as exc:
        raise RequestRejected(str(exc), status=400, code=-1120, msg="Invalid interval.") from exc


def _plan_pages(grid: Interval, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Split [start_ms, end_ms) into ranges that each hold at most one page of grid candles."""
    pages = []
    cursor = start_ms
    while cursor < end_ms:
        stop = min(end_ms, grid.add(grid.floor(cursor), PAGE_LIMIT))
        pages.append((cursor, stop))
        cursor = stop
    return pages


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("msg", ""))
    return None, str(body)[:200]


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return max(1.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return 60.0 if response.status_code == 418 else 1.0


def _banned(host: str, until: float, retry_after_s: float, ban_file: Path | None = None) -> IPBanned:
    where = (
        (
            f" (recorded in {ban_file}; `cryptolake bans` shows it, `cryptolake bans --clear` forgets it "
            "once it is over)"
        )
        if ban_file is not None
        else ""
    )
    return IPBanned(
        f"Binance has banned this IP on {host} until {iso(int(until * 1000))} (HTTP 418); "
        f"nothing is sent until then{where}",
        banned_until=until,
        retry_after_s=max(0.0, retry_after_s),
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("retrying after attempt %d: %s", state.attempt_number, exc)
