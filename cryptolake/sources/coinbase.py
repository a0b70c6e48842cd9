"""CoinbaseClient: Coinbase Exchange's public candles over REST (``/products/{id}/candles``).

Coinbase Exchange (``api.exchange.coinbase.com``, once Coinbase Pro and GDAX) publishes candles
per product (``BTC-USD``); everything this client shares with the other venues (pacing, retries,
pages run concurrently, the clock, the top-N universe) is :class:`~cryptolake.sources.venue.VenueClient`'s.
What is Coinbase's own, and what this module decided where its documentation is silent:

* **Candles**: ``GET /products/{product_id}/candles?granularity=<s>&start=<ISO 8601>&end=<ISO
  8601>``, granularity 60, 300, 900, 3600, 21600 or 86400 seconds only (the lake's ``1m``,
  ``5m``, ``15m``, ``1h``, ``6h``, ``1d``). Rows are ``[time, low, high, open, close, volume]``
  (low before high), time in epoch **seconds** on the granularity's UTC grid, numbers as JSON
  numbers, **newest first**. Only the base volume is given: quote volume, trade count and the
  taker columns are null.
* **Range**: a range of more than 300 buckets is rejected (HTTP 400, "Count of aggregations
  requested exceeds 300"), and the docs say candles "may precede your declared start" and do not
  say whether ``end`` is inclusive. The client asks for ``start`` = the first open time wanted
  and ``end`` = one second before the bucket after the last one wanted: whether the server reads
  ``end`` as inclusive (buckets opening at or before it; the fake does) or exclusive, that is
  exactly the wanted buckets, never more than 300; a candle outside them that comes back
  anyway is dropped.
* **Quiet periods**: a bucket without trades has **no candle** (``empty_candles`` False); a
  missing candle in a traded range is not an outage.
* **The open candle**: the newest bucket is sent while it is still open (its values change until
  it closes); it is left to the pipeline, which keeps only candles opening before the interval floor of the exchange's now.
* **Rate limit**: public endpoints allow 10 requests per second per IP with bursts of 15; over
  it Coinbase answers 429 ``{"message": "Public rate limit exceeded"}``. The client keeps 10 in
  any sliding second (one client: its threads share the pace), leaving the burst allowance to
  absorb the network's jitter. A 429 carries no documented ``Retry-After``: nothing is sent
  for one second (or for the header's value, if one comes).
* **Errors**: JSON ``{"message": ...}`` with the HTTP status. An unknown product is 404
  ``{"message": "NotFound"}`` (:class:`~cryptolake.errors.InvalidSymbol`); 5xx and 403 (the
  CDN's block) are transient; any other 4xx is :class:`~cryptolake.errors.RequestRejected`.
* **Markets**: ``GET /products``; a product trades (``TRADING``) when its status is ``online``
  and it is neither trading-disabled, cancel-only nor in an auction. Its assets are read from
  the halves of its id, as ccxt does: an auction product (``BTCAUCTION-USD``) names ``BTC`` as
  its ``base_currency``, which would make it a second BTC market.
* **24 h volume**: ``GET /products/{id}/stats`` (``volume`` in the base asset, ``last`` price),
  one request per product; the quote volume is ``volume * last``.
* **Clock**: ``GET /time`` -> ``{"iso": ..., "epoch": <seconds, float>}``.
* **Listing**: there is no "from the first candle" query; see :meth:`CoinbaseClient.first_open_time`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa

from cryptolake.errors import (
    BadPayload,
    ExchangeUnavailable,
    InvalidSymbol,
    RateLimited,
    RequestRejected,
)
from cryptolake.schema import Interval
from cryptolake.sources.base import Market, normalize_asset
from cryptolake.sources.klines import EMPTY_TABLE
from cryptolake.sources.venue import VenueClient, candles_table
from cryptolake.timeutils import iso, parse_datetime, to_ms

log = logging.getLogger("cryptolake.sources.coinbase")

DEFAULT_BASE_URL = "https://api.exchange.coinbase.com"
#: The lake's intervals Coinbase serves, and their ``granularity`` in seconds.
GRANULARITY_S: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}
#: Buckets one candles request may span at most (a larger range is rejected).
MAX_CANDLES = 300
#: Where the search for a product's first candle starts: a year before Coinbase Exchange opened
#: (January 2015), so that no product's history can begin before it.
HISTORY_START_MS = to_ms("2014-01-01")
#: Epoch seconds beyond this are not seconds (a time in ms would be year 5000 and later).
_MAX_EPOCH_S = 10**11
#: The interval whose first candle bounds an interval's first candle in :meth:`first_open_time`
#: (its span holds at most 60 of the finer buckets: one request). ``6h`` is the 6 h bucket of
#: the first hour, without a request.
_COARSER: dict[str, str] = {"1h": "1d", "6h": "1h", "15m": "1h", "5m": "1h", "1m": "1h"}


class CoinbaseClient(VenueClient):
    """Coinbase Exchange's public candles, products, 24 h stats and clock (see the module docstring).

    Args:
        base_url: the REST host (default: Coinbase Exchange's).
        quote_asset: quote asset of the default universe and of bare base assets (``BTC`` ->
            ``BTC-USD``).
        options: the rest of :class:`~cryptolake.sources.venue.VenueClient`'s arguments
            (``max_retries``, ``retry_delay``, ``timeout_s``, ``concurrency``,
            ``requests_per_s``, ``excluded_bases``, ``transport``, ``clock``, ``sleep``).
    """

    exchange = "coinbase"
    title = "Coinbase"
    intervals = tuple(GRANULARITY_S)
    page_candles = MAX_CANDLES
    empty_candles = False
    RATE_LIMIT = 10
    RATE_PERIOD_S = 1.0
    #: Where :meth:`first_open_time` starts looking (epoch ms).
    history_start_ms = HISTORY_START_MS

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, quote_asset: str = "USD", **options: Any) -> None:
        super().__init__(base_url=base_url, quote_asset=quote_asset, **options)

    # -- candles -----------------------------------------------------------------------------

    def _klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        """One request: the candles opening in ``[start_ms, end_ms)`` (at most 300 buckets),
        the open one included, oldest first, in the lake's schema."""
        grid = self.check_interval(interval)
        lo = grid.ceil(start_ms)
        if lo >= end_ms:
            return EMPTY_TABLE
        if grid.count(lo, end_ms) > self.page_candles:
            raise ValueError(
                f"{self.title} serves at most {self.page_candles} candles per request; "
                f"[{iso(lo)}, {iso(end_ms)}) holds {grid.count(lo, end_ms)} {interval} buckets"
            )
        body = self.get_json(_product_path(symbol, "candles"), candle_params(grid, lo, end_ms), symbol=symbol)
        return candles_from_rows(body, grid, lo, end_ms)

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The open time of the product's first ``interval`` candle (its listing); None if it
        has none. Cached per symbol and interval.

        Coinbase has no "from the first candle" query, and a product can stop trading for longer
        than a page spans (XRP-USD had no candle from January 2021 to July 2023), so walking
        back from now until a page comes back empty could take a relisting for the listing.
        Instead daily candles are asked 300 days at a time **forward** from
        :attr:`history_start_ms` until a page has one: its oldest candle is the first trading
        day, whatever gaps come later. A finer interval is then found inside the first candle of
        a coarser one, one request each (the first day's hours; the first hour's 1m, 5m or 15m
        buckets; the 6 h bucket of the first hour needs none), each level cached too. A product
        listed in 2015 costs four requests for its first minute, one listed in 2025 about
        sixteen; another interval of the same product then costs at most one. A symbol without
        any candle costs a page per 300 days up to now.
        """
        grid = self.check_interval(interval)
        key = (symbol, interval)
        if key not in self._first_open:
            self._first_open[key] = self._find_first_open(symbol, grid)
        return self._first_open[key]

    def _find_first_open(self, symbol: str, grid: Interval) -> int | None:
        if grid.name == "1d":
            return self._earliest(symbol, grid, grid.floor(self.history_start_ms), self.exchange_now_ms() + 1)
        coarse = Interval(_COARSER[grid.name])
        bound = self.first_open_time(symbol, coarse.name)
        if bound is None or grid.nominal_ms > coarse.nominal_ms:
            return None if bound is None else grid.floor(bound)
        found = self._earliest(symbol, grid, bound, coarse.next_open(bound))
        # None would contradict the coarser candle (it says there were trades): keep its bound.
        return grid.floor(bound) if found is None else found

    def _earliest(self, symbol: str, grid: Interval, lo: int, hi: int) -> int | None:
        """The oldest candle opening in ``[lo, hi)``, asked a page at a time from ``lo``."""
        while lo < hi:
            page_end = min(self._ahead(grid, lo, self.page_candles), hi)
            table = self._klines(symbol, grid.name, lo, page_end)
            if table.num_rows:
                return int(table.column("open_time")[0].value)
            lo = page_end
        return None

    # -- markets, volumes, clock -------------------------------------------------------------

    def markets(self) -> list[Market]:
        """Every product of ``GET /products`` (one request)."""
        body = self.get_json("/products", {})
        if not isinstance(body, list):
            raise BadPayload(f"unexpected {self.title} /products payload: {str(body)[:200]}")
        return [product_market(entry) for entry in body if isinstance(entry, dict) and entry.get("id")]

    def _volumes_24h(self, symbols: Sequence[str]) -> dict[str, float]:
        """24 h quote volume per product: ``volume * last`` of ``GET /products/{id}/stats``,
        one request per product, ``concurrency`` at a time. A product that vanished since the
        product list was read (404) has none and is logged."""

        def volume(symbol: str) -> float | None:
            try:
                stats = self.get_json(_product_path(symbol, "stats"), {}, symbol=symbol)
            except InvalidSymbol:
                log.warning("%s: no 24 h stats for %s (unknown product)", self.title, symbol)
                return None
            return stats_quote_volume(stats, symbol)

        if not symbols:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(symbols))) as pool:
            volumes = list(pool.map(volume, symbols))
        return {s: v for s, v in zip(symbols, volumes, strict=True) if v is not None}

    def _server_time_ms(self) -> int:
        """``GET /time``: ``epoch`` (seconds, float), or ``iso`` when it is missing."""
        body = self.get_json("/time", {})
        try:
            if isinstance(body.get("epoch"), int | float):
                return round(float(body["epoch"]) * 1000)
            return to_ms(parse_datetime(str(body["iso"])))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BadPayload(f"unexpected {self.title} /time payload: {str(body)[:200]}") from exc

    # -- errors ------------------------------------------------------------------------------

    def _error(self, response: httpx.Response, path: str, symbol: str | None) -> Exception | None:
        """Coinbase's ``{"message": ...}`` with an HTTP status as one of :mod:`cryptolake.errors`."""
        status = response.status_code
        if 200 <= status < 300:
            return None
        message = error_message(response)
        if status == 429:
            retry_after = _retry_after_s(response, default=self.RATE_PERIOD_S)
            self.pause_requests(retry_after)
            log.warning(
                "%s rate limit hit on %s (429); sending nothing for %.1f s", self.title, path, retry_after
            )
            return RateLimited(
                f"{self.title} rate limit exceeded on {path}: {message}", retry_after_s=retry_after
            )
        if status >= 500 or status == 403:
            return ExchangeUnavailable(f"{self.title} answered HTTP {status} on {path}: {message}")
        if status == 404 and symbol is not None:
            return InvalidSymbol(symbol, status=404, msg=message, exchange=self.title, code=None)
        return RequestRejected(
            f"{self.title} rejected {path} (HTTP {status}: {message})", status=status, msg=message
        )


# -- the wire format, as pure functions --------------------------------------------------------


def candle_params(grid: Interval, lo: int, hi: int) -> dict[str, Any]:
    """The query for the buckets opening in ``[lo, hi)`` (``lo`` on the grid, ``hi > lo``):
    ``start`` is ``lo``; ``end`` is one second before the bucket after the last one wanted, so
    that an inclusive and an exclusive reading of ``end`` both cover exactly those buckets."""
    last = grid.floor(hi - 1)
    return {
        "granularity": GRANULARITY_S[grid.name],
        "start": iso(lo),
        "end": iso(grid.next_open(last) - 1000),
    }


def candles_from_rows(body: Any, grid: Interval, lo: int, hi: int) -> pa.Table:
    """Coinbase's candle rows (``[time s, low, high, open, close, volume]``, newest first) as
    the lake's table, oldest first, keeping the candles that open in ``[lo, hi)``.

    Raises:
        BadPayload: not a list of six-number rows, or a time that is not an epoch second on
            the interval's grid.
    """
    if not isinstance(body, list):
        raise BadPayload(f"unexpected Coinbase candles payload: {str(body)[:200]}")
    step = grid.fixed_ms or 0
    times: list[int] = []
    columns: dict[str, list[Any]] = {k: [] for k in ("low", "high", "open", "close", "volume")}
    for row in body:
        if not (isinstance(row, list) and len(row) >= 6 and all(_is_number(v) for v in row[:6])):
            raise BadPayload(f"unexpected Coinbase candle row: {str(row)[:200]}")
        seconds = row[0]
        if not 0 <= seconds < _MAX_EPOCH_S or seconds != int(seconds) or (int(seconds) * 1000) % step:
            raise BadPayload(
                f"Coinbase candle time {seconds!r} is not an epoch second on the {grid.name} grid"
            )
        open_ms = int(seconds) * 1000
        if not lo <= open_ms < hi:
            continue
        times.append(open_ms)
        for name, value in zip(("low", "high", "open", "close", "volume"), row[1:6], strict=True):
            columns[name].append(float(value))
    return candles_table(
        {
            "open_time": times,
            "open": columns["open"],
            "high": columns["high"],
            "low": columns["low"],
            "close": columns["close"],
            "volume": columns["volume"],
            "close_time": [t + step - 1 for t in times],
        }
    )


def product_market(entry: dict[str, Any]) -> Market:
    """One entry of ``GET /products`` as a :class:`Market` (see the module docstring)."""
    product = str(entry["id"])
    halves = product.split("-")
    if len(halves) == 2 and all(halves):
        base, quote_asset = halves
    else:
        base, quote_asset = str(entry.get("base_currency", "")), str(entry.get("quote_currency", ""))
    status = str(entry.get("status") or "unknown").lower()
    if status != "online":
        state = status.upper()
    elif entry.get("trading_disabled"):
        state = "TRADING_DISABLED"
    elif entry.get("cancel_only"):
        state = "CANCEL_ONLY"
    elif entry.get("auction_mode"):
        state = "AUCTION"
    else:
        state = "TRADING"
    return Market("coinbase", product, normalize_asset(base), normalize_asset(quote_asset), state)


def stats_quote_volume(stats: Any, symbol: str) -> float:
    """``volume`` (base asset) times ``last`` of a ``/products/{id}/stats`` answer."""
    try:
        return float(stats.get("volume") or 0) * float(stats.get("last") or 0)
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadPayload(f"unexpected Coinbase stats for {symbol}: {str(stats)[:200]}") from exc


def error_message(response: httpx.Response) -> str:
    """The ``message`` of an error body, or the start of the body when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:200]


def _retry_after_s(response: httpx.Response, *, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return default


def _product_path(symbol: str, endpoint: str) -> str:
    return f"/products/{quote(symbol, safe='')}/{endpoint}"


def _is_number(value: Any) -> bool:
    """A finite JSON number (Python's JSON reader also takes ``NaN`` and ``Infinity``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
