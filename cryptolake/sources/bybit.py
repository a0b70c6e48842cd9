"""BybitClient: Bybit v5 spot candles over REST (``/v5/market/kline``), a :class:`VenueClient`.

What is Bybit's own, and why it is handled so:

- **Candles** come as ``[startTime, open, high, low, close, volume, turnover]``, every field a
  string, times in ms, **newest first**; ``volume`` is in the base asset and ``turnover`` in
  the quote asset (the lake's ``quote_volume``). Trade counts and taker volumes are not given:
  those columns are null. ``start`` and ``end`` are both inclusive, and when more than
  ``limit`` candles fall between them Bybit answers the *newest* ``limit`` (the documented
  example with ``limit=1`` returns the candle at ``end``). A page here never spans more than
  1000 slots, so every candle of it comes back; ``limit=1000`` is always sent (the default is
  200). The newest row is the still-open candle (there is no flag): it is returned, and the
  pipeline's floor rule drops it. A period without trades has a candle with zero volume.
- **Intervals** ``1 3 5 15 30 60 120 240 360 720`` (minutes), ``D``, ``W``, ``M``: the lake's
  ``1m`` .. ``12h``, ``1d``, ``1w`` (Monday 00:00 UTC, as the lake's) and ``1M`` (the 1st).
- **Errors** are HTTP 200 with a non-zero ``retCode``: 10001 with a message about the symbol
  ("Not supported symbols") is an unknown symbol, 10006/10018 are the API rate limit (the
  ``X-Bapi-Limit-Reset-Timestamp`` header says when it resets), 10000/10016 are server errors.
- **The IP limit** is 600 requests in any 5 s window; over it Bybit answers HTTP 403 ("access
  too frequent") and the IP must stop for at least 10 minutes. The pacer keeps that window
  plus :data:`PACE_GUARD_S` (network jitter must not push two requests paced 5 s apart into
  one window at Bybit's end), and a 403 stops every request of the client for
  :data:`BAN_S`, including those already waiting for their turn (they fail with
  :class:`~cryptolake.errors.IPBanned` at once instead of sleeping out the ban).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pyarrow as pa

from cryptolake.errors import (
    BadPayload,
    ExchangeUnavailable,
    InvalidSymbol,
    IPBanned,
    RateLimited,
    RequestRejected,
)
from cryptolake.schema import Interval
from cryptolake.sources.base import Market, normalize_asset
from cryptolake.sources.ratelimit import RequestPacer
from cryptolake.sources.venue import VenueClient, candles_table
from cryptolake.timeutils import iso

log = logging.getLogger("cryptolake.sources.bybit")

DEFAULT_BASE_URL = "https://api.bybit.com"
KLINE_PATH = "/v5/market/kline"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
TICKERS_PATH = "/v5/market/tickers"
TIME_PATH = "/v5/market/time"

#: The lake's interval names -> Bybit's ``interval`` values.
BYBIT_INTERVALS: dict[str, str] = {
    "1m": "1",
    "3m": "3",
    "5m": "5",
    "15m": "15",
    "30m": "30",
    "1h": "60",
    "2h": "120",
    "4h": "240",
    "6h": "360",
    "12h": "720",
    "1d": "D",
    "1w": "W",
    "1M": "M",
}
#: Candles one kline request returns at most (``limit`` is 1..1000).
PAGE_LIMIT = 1000
#: How long Bybit says to stop after a 403 ("wait for at least 10 minutes").
BAN_S = 600.0
#: Added to the pacer's window so that requests it spaces a full window apart still arrive a
#: full window apart when the network delays the first more than the last.
PACE_GUARD_S = 0.25

_PARAMS_ERROR = 10001
_RATE_LIMIT_CODES = frozenset({10006, 10018})  # too many visits; over the IP limit
_SERVER_CODES = frozenset({10000, 10016})  # server timeout; server error


class BybitClient(VenueClient):
    """Bybit spot candles, markets, 24 h volumes and clock (see the module docstring).

    Args: those of :class:`VenueClient`, with Bybit's host and ``USDT`` as defaults.
    """

    exchange = "bybit"
    title = "Bybit"
    intervals = tuple(BYBIT_INTERVALS)
    page_candles = PAGE_LIMIT
    empty_candles = True
    RATE_LIMIT = 600
    RATE_PERIOD_S = 5.0

    def __init__(
        self, *, base_url: str = DEFAULT_BASE_URL, quote_asset: str = "USDT", **options: Any
    ) -> None:
        """``options``: as :class:`~cryptolake.sources.venue.VenueClient`'s."""
        super().__init__(base_url=base_url, quote_asset=quote_asset, **options)
        paced = self._pacer
        self._pacer = _StoppablePacer(
            paced.limit, paced.period_s + PACE_GUARD_S, clock=self._clock, stopped=self._stopped
        )
        self._listings: dict[str, tuple[int, int] | None] = {}

    # -- candles -----------------------------------------------------------------------------

    def _klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        grid = self.check_interval(interval)
        rows = self._kline_rows(symbol, grid, start_ms, end_ms)
        return parse_candles(rows, grid, start_ms, end_ms)

    def _kline_rows(self, symbol: str, grid: Interval, start_ms: int, end_ms: int) -> list[list[Any]]:
        """One kline request for the candles opening in ``[start_ms, end_ms)`` (Bybit's ``end``
        is inclusive): the raw rows, newest first, at most :data:`PAGE_LIMIT` (the newest)."""
        params = {
            "category": "spot",
            "symbol": symbol,
            "interval": BYBIT_INTERVALS[grid.name],
            "start": start_ms,
            "end": end_ms - 1,
            "limit": PAGE_LIMIT,
        }
        result = self._result(KLINE_PATH, params, symbol=symbol)
        rows = result.get("list")
        if not isinstance(rows, list) or not all(isinstance(row, list) and len(row) >= 7 for row in rows):
            raise BadPayload(f"unexpected Bybit kline list for {symbol} {grid.name}: {str(rows)[:200]}")
        return rows

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the symbol's first candle, in one to four requests (the first
        call also asks Bybit's clock once).

        Bybit has no "oldest first" order, and a range holding more than a page answers its
        newest candles; so the listing is narrowed down from coarse to fine: the monthly candles
        of all history (one page: 1000 months), the daily candles of the oldest month, then the
        ``interval`` candles of the oldest day (two pages for ``1m``'s 1440 slots when the first
        comes back full). The listing month and day are kept per symbol, so another interval
        of the same symbol takes one request (``1d`` and ``1M`` none). ``1w`` (1000 weeks: 19
        years) is asked over all history directly. Cached per symbol and interval."""
        grid = self.check_interval(interval)
        key = (symbol, interval)
        if key not in self._first_open:
            self._first_open[key] = self._find_first_open(symbol, grid)
        return self._first_open[key]

    def _find_first_open(self, symbol: str, grid: Interval) -> int | None:
        if grid.name == "1w":
            return self._oldest_open(symbol, grid, 0, self.exchange_now_ms() + 1)
        listing = self._listing_month_and_day(symbol)
        if listing is None:
            return None
        month, day = listing
        if grid.name == "1M":
            return month
        if grid.name == "1d":
            return day
        return self._oldest_open(symbol, grid, day, Interval("1d").next_open(day))

    def _listing_month_and_day(self, symbol: str) -> tuple[int, int] | None:
        """The open times of the symbol's first monthly and first daily candle (kept)."""
        if symbol not in self._listings:
            listing = None
            month = self._oldest_open(symbol, Interval("1M"), 0, self.exchange_now_ms() + 1)
            if month is not None:
                day = self._oldest_open(symbol, Interval("1d"), month, Interval("1M").next_open(month))
                listing = None if day is None else (month, day)
            self._listings[symbol] = listing
        return self._listings[symbol]

    def _oldest_open(self, symbol: str, grid: Interval, lo: int, hi: int) -> int | None:
        """The open time of the oldest candle opening in ``[lo, hi)``; a full page (the newest
        of a longer range) is followed by the range before its oldest candle."""
        oldest: int | None = None
        while lo < hi:
            rows = self._kline_rows(symbol, grid, lo, hi)
            if not rows:
                break
            oldest = min(_as_int(row[0], "startTime") for row in rows)
            if len(rows) < PAGE_LIMIT:
                break
            hi = oldest
        return oldest

    # -- markets, volumes, clock -------------------------------------------------------------

    def markets(self) -> list[Market]:
        """Every spot market in ``instruments-info`` (Bybit lists trading ones only; the
        ``nextPageCursor`` is followed if it ever pages spot)."""
        markets: list[Market] = []
        params: dict[str, Any] = {"category": "spot", "limit": 1000}
        seen: set[str] = set()
        while True:
            result = self._result(INSTRUMENTS_PATH, params)
            entries = result.get("list")
            if not isinstance(entries, list):
                raise BadPayload(f"unexpected Bybit instruments list: {str(entries)[:200]}")
            for entry in entries:
                try:
                    status = str(entry["status"])
                    markets.append(
                        Market(
                            exchange=self.exchange,
                            symbol=str(entry["symbol"]),
                            base=normalize_asset(str(entry["baseCoin"])),
                            quote=normalize_asset(str(entry["quoteCoin"])),
                            status="TRADING" if status == "Trading" else status.upper(),
                        )
                    )
                except (KeyError, TypeError) as exc:
                    raise BadPayload(f"unexpected Bybit instrument: {str(entry)[:200]}") from exc
            cursor = result.get("nextPageCursor")
            if not cursor or cursor in seen:
                return markets
            seen.add(cursor)
            params = {"category": "spot", "limit": 1000, "cursor": cursor}

    def _volumes_24h(self, symbols: Sequence[str]) -> dict[str, float]:
        """``turnover24h`` (quote volume) of every spot ticker, in one request."""
        wanted = set(symbols)
        result = self._result(TICKERS_PATH, {"category": "spot"})
        volumes: dict[str, float] = {}
        for ticker in result.get("list") or []:
            try:
                if ticker["symbol"] in wanted:
                    volumes[ticker["symbol"]] = float(ticker["turnover24h"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BadPayload(f"unexpected Bybit ticker: {str(ticker)[:200]}") from exc
        return volumes

    def _server_time_ms(self) -> int:
        """``/v5/market/time``: ``timeNano`` (to the ms), else the envelope's ``time``."""
        body = self.get_json(TIME_PATH, {})
        result = body.get("result") if isinstance(body, dict) else None
        nano = result.get("timeNano") if isinstance(result, dict) else None
        if nano is not None:
            return _as_int(nano, "timeNano") // 1_000_000
        return _as_int(body.get("time") if isinstance(body, dict) else None, "time")

    # -- errors and bans ---------------------------------------------------------------------

    def _result(self, path: str, params: dict[str, Any], *, symbol: str | None = None) -> dict[str, Any]:
        """The ``result`` object of a successful answer."""
        body = self.get_json(path, params, symbol=symbol)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise BadPayload(f"Bybit answered {path} without a result object: {str(body)[:200]}")
        return result

    def _error(self, response: httpx.Response, path: str, symbol: str | None) -> Exception | None:
        status = response.status_code
        if status == 403:
            return self._banned(path)
        if status == 429:  # not Bybit's documented answer; honoured like its 10006
            retry_after = _header_seconds(response.headers.get("Retry-After"), 1.0)
            return self._rate_limited(path, f"HTTP 429: {response.text[:100]}", retry_after)
        if status >= 500:
            return ExchangeUnavailable(f"Bybit answered HTTP {status} on {path}: {response.text[:100]!r}")
        if status != 200:
            return RequestRejected(
                f"Bybit rejected {path} (HTTP {status}): {response.text[:100]!r}", status=status
            )
        try:
            body = response.json()
        except ValueError:
            return None  # the caller reports the malformed body
        code = body.get("retCode") if isinstance(body, dict) else None
        if not isinstance(code, int):
            return BadPayload(f"Bybit answered {path} without a retCode: {response.text[:200]!r}")
        if code == 0:
            return None
        msg = str(body.get("retMsg", ""))
        if code in _RATE_LIMIT_CODES:
            return self._rate_limited(path, f"retCode {code}: {msg}", _reset_seconds(response, body))
        if code in _SERVER_CODES:
            return ExchangeUnavailable(f"Bybit server error on {path} (retCode {code}: {msg})")
        if code == _PARAMS_ERROR and "symbol" in msg.lower():
            return InvalidSymbol(symbol or "?", status=status, msg=msg, exchange=self.title, code=code)
        return RequestRejected(
            f"Bybit rejected {path} (retCode {code}: {msg})", status=status, code=code, msg=msg
        )

    def _rate_limited(self, path: str, detail: str, retry_after_s: float) -> RateLimited:
        self.pause_requests(retry_after_s)
        log.warning(
            "Bybit rate limit hit on %s (%s); sending nothing for %.1f s", path, detail, retry_after_s
        )
        return RateLimited(f"Bybit rate limit on {path} ({detail})", retry_after_s=retry_after_s)

    def _banned(self, path: str) -> IPBanned:
        """Bybit's 403: the IP went over 600 requests in 5 s and must stop for 10 minutes."""
        self.stop_until(self._clock() + BAN_S)
        until = self._paused_until
        log.error(
            "Bybit answered 403 (access too frequent) on %s; nothing is sent until %s",
            path,
            iso(int(until * 1000)),
        )
        return IPBanned(
            f"Bybit refused this IP for going over its request limit (HTTP 403 on {path}); "
            f"nothing is sent until {iso(int(until * 1000))}",
            banned_until=until,
            retry_after_s=until - self._clock(),
        )

    def stop_until(self, until: float) -> None:
        """Record that Bybit asked us to stop until ``until`` (epoch seconds).

        Unlike :meth:`VenueClient.stop_until`, the pacer is not paused: a request waiting for
        its turn then fails with :class:`IPBanned` when the turn comes (see
        :class:`_StoppablePacer`) rather than sleeping out the ten minutes and sending."""
        self._paused_until = max(self._paused_until, until)

    def _stopped(self) -> IPBanned | None:
        until = self._paused_until
        left = until - self._clock()
        if left <= 0:
            return None
        return IPBanned(
            f"Bybit asked this IP to stop; nothing is sent until {iso(int(until * 1000))}",
            banned_until=until,
            retry_after_s=left,
        )


class _StoppablePacer(RequestPacer):
    """A :class:`RequestPacer` whose waiters give up (``stopped``'s error) when the venue told
    the IP to stop while they waited for their turn."""

    def __init__(
        self,
        limit: int,
        period_s: float,
        *,
        clock: Callable[[], float],
        stopped: Callable[[], Exception | None],
    ) -> None:
        super().__init__(limit, period_s, clock=clock)
        self._stopped = stopped

    def acquire(self, cancel: threading.Event | None = None) -> None:
        super().acquire(cancel)
        error = self._stopped()
        if error is not None:
            raise error


def parse_candles(rows: Sequence[Sequence[Any]], grid: Interval, start_ms: int, end_ms: int) -> pa.Table:
    """Bybit's kline rows (any order; Bybit sends newest first) as the lake's candles opening in
    ``[start_ms, end_ms)``, oldest first, one per open time. ``volume`` is base, ``turnover``
    quote volume; trades and taker volumes are not given (null)."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume")
    }
    try:
        for row in rows:
            open_ms = int(row[0])
            if not start_ms <= open_ms < end_ms:
                continue
            columns["open_time"].append(open_ms)
            columns["open"].append(float(row[1]))
            columns["high"].append(float(row[2]))
            columns["low"].append(float(row[3]))
            columns["close"].append(float(row[4]))
            columns["volume"].append(float(row[5]))
            columns["close_time"].append(grid.close_time(open_ms))
            columns["quote_volume"].append(float(row[6]))
    except (TypeError, ValueError, IndexError) as exc:
        raise BadPayload(f"unexpected Bybit kline row: {exc}") from exc
    return candles_table(columns)


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise BadPayload(f"Bybit's {name} is not an integer: {value!r}") from exc


def _header_seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _reset_seconds(response: httpx.Response, body: dict[str, Any]) -> float:
    """Seconds until Bybit's API limit resets: ``X-Bapi-Limit-Reset-Timestamp`` (ms, Bybit's
    clock) minus the answer's ``time`` (same clock); 1 s when either is missing."""
    try:
        reset_ms = int(response.headers["X-Bapi-Limit-Reset-Timestamp"])
        now_ms = int(body["time"])
    except (KeyError, TypeError, ValueError):
        return 1.0
    return max(0.0, (reset_ms - now_ms) / 1000)
