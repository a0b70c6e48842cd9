"""A fake Coinbase Exchange: its public REST endpoints over the shared market (:class:`FakeCoinbase`).

Served, with Coinbase's shapes (see :mod:`cryptolake.sources.coinbase` for the facts and their
sources):

* ``GET /time`` -> ``{"iso": "2026-01-01T00:30:00.000Z", "epoch": 1767227400.0}``;
* ``GET /products`` and ``GET /products/{id}``: the products listed at the fake's now
  (``online``, or ``delisted`` with ``trading_disabled`` once a symbol's ``delisted_ms`` has
  passed);
* ``GET /products/{id}/candles?granularity=&start=&end=``: rows ``[time s, low, high, open,
  close, volume]``, newest first, numbers as JSON numbers (8 decimals). Granularity 60, 300,
  900, 3600, 21600 or 86400, else 400 ``Unsupported granularity``. ``start`` and ``end`` are ISO
  8601 and go together (one without the other: both ignored, as documented); ``start`` is
  floored to its bucket (a candle may precede it) and ``end`` is **inclusive** (buckets opening
  at or before it). More than 300 buckets: 400 ``granularity too small for the requested time
  range. Count of aggregations requested exceeds 300``. Without a range: the 300 newest buckets.
  The newest candle is the open one while the fake's now is inside it.
* ``GET /products/{id}/stats`` (24 h ``open``, ``high``, ``low``, ``last``, ``volume`` in the
  base asset, as strings) and ``GET /products/{id}/ticker``.

An unknown product (or one listed after the fake's now) is 404 ``{"message": "NotFound"}``, as
is an unknown path. There is **no candle for a bucket without trades**: the exchange-wide outage
(2024-03-12 04:00-09:00 UTC by default), a symbol's ``halts`` (windows when it did not trade: by
default XRP-USD's, January 2021 to July 2023) and the hashed no-trade minutes of the
``quiet_every`` symbols (by default one 1m bucket in three of QUIET-USD; longer buckets of it
always have trades), and the open bucket at its very first instant.

Rate limit: a token bucket of ``rate_per_s`` (10) refilled, ``burst`` (15) deep; over it, 429
``{"message": "Public rate limit exceeded"}`` without ``Retry-After`` (none is documented;
``retry_after_s`` adds one).
Injected :class:`~cryptolake.testing.venue.VenueFault` kinds: ``server_error`` (``status``, 500
by default, ``{"message": "Internal server error"}``), ``rate_limit`` (the 429), ``ban`` (403
``{"message": "Forbidden"}``, what the CDN answers a blocked client), ``bad_json``, ``drop``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptolake.schema import Interval
from cryptolake.testing.market import _step_size, _tick_size
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.venue import FakeVenue, VenueFault, json_reply
from cryptolake.testing.wire import _Reply
from cryptolake.timeutils import iso, parse_datetime, to_ms

#: Coinbase's candle granularities (seconds) and the lake's names for them.
GRANULARITIES: dict[int, str] = {60: "1m", 300: "5m", 900: "15m", 3600: "1h", 21600: "6h", 86400: "1d"}
MAX_CANDLES = 300
MSG_NOT_FOUND = "NotFound"
MSG_GRANULARITY = "Unsupported granularity"
MSG_TOO_MANY = (
    "granularity too small for the requested time range. Count of aggregations requested exceeds 300"
)
MSG_RATE_LIMITED = "Public rate limit exceeded"

#: One 1m bucket in this many has no trades, per symbol, by default.
DEFAULT_QUIET_EVERY: dict[str, int] = {"QUIET-USD": 3}
#: Windows ``[start_ms, end_ms)`` in which a symbol did not trade, by default.
DEFAULT_HALTS: dict[str, tuple[tuple[int, int], ...]] = {
    "XRP-USD": ((to_ms("2021-01-19T18:00Z"), to_ms("2023-07-13T17:00Z")),),
}


def default_coinbase_symbols() -> list[FakeSymbol]:
    """The fake's products: majors in USD (BTC, ETH, SOL, XRP, DOGE, ADA, LTC), a stablecoin, a
    BTC-quoted pair, a product listed in 2025, a delisted one and an illiquid one (QUIET-USD,
    with no-trade minutes). Listings are off the hour, so that finding one down to the minute
    is tested. ``volume_scale`` values are ~1.6x apart: the 24 h volume ranking is BTC > USDT >
    ETH > SOL > XRP > DOGE > ADA > LTC > NEW > ..."""
    t = to_ms
    return [
        FakeSymbol("BTC-USD", "BTC", "USD", t("2015-07-20T21:37Z"), base_price=30_000.0, volume_scale=100.0),
        FakeSymbol(
            "USDT-USD",
            "USDT",
            "USD",
            t("2021-05-04T16:02Z"),
            base_price=1.0,
            volume_scale=60.0,
            volatility=0.002,
        ),
        FakeSymbol("ETH-USD", "ETH", "USD", t("2016-05-18T14:03Z"), base_price=2_000.0, volume_scale=37.0),
        FakeSymbol("SOL-USD", "SOL", "USD", t("2021-06-17T16:11Z"), base_price=60.0, volume_scale=23.0),
        FakeSymbol("XRP-USD", "XRP", "USD", t("2019-02-25T16:45Z"), base_price=0.5, volume_scale=14.0),
        FakeSymbol("DOGE-USD", "DOGE", "USD", t("2021-06-03T16:20Z"), base_price=0.1, volume_scale=9.0),
        FakeSymbol("ADA-USD", "ADA", "USD", t("2021-03-18T16:05Z"), base_price=0.4, volume_scale=5.5),
        FakeSymbol("LTC-USD", "LTC", "USD", t("2016-08-17T17:30Z"), base_price=80.0, volume_scale=3.4),
        FakeSymbol("NEW-USD", "NEW", "USD", t("2025-06-15T10:33Z"), base_price=1.5, volume_scale=2.1),
        FakeSymbol(
            "GONE-USD",
            "GONE",
            "USD",
            t("2020-05-14T08:00Z"),
            delisted_ms=t("2022-03-01T00:00Z"),
            base_price=5.0,
            volume_scale=1.3,
        ),
        FakeSymbol("QUIET-USD", "QUIET", "USD", t("2022-09-01T12:00Z"), base_price=0.02, volume_scale=0.05),
        FakeSymbol("ETH-BTC", "ETH", "BTC", t("2016-05-18T14:03Z"), base_price=0.06, volume_scale=0.00002),
    ]


class FakeCoinbase(FakeVenue):
    """Coinbase Exchange's public REST API on 127.0.0.1 (see the module docstring).

    Args:
        symbols: the products (default :func:`default_coinbase_symbols`).
        quiet_every: ``{symbol: n}``: one 1m bucket in ``n`` of that symbol (hashed) has no
            trades, hence no candle (default :data:`DEFAULT_QUIET_EVERY`).
        halts: ``{symbol: [(start_ms, end_ms), ...]}``: windows without trades for that symbol
            (default :data:`DEFAULT_HALTS`); a candle wholly inside one does not exist.
        retry_after_s: send ``Retry-After`` with this many seconds on a 429 (Coinbase documents
            none, so by default none is sent; for testing a client that honours one).
        now, follow_wall_clock, rate_per_s, burst, latency_s, outages, host, port, clock,
            max_log: see :class:`~cryptolake.testing.venue.FakeVenue` (rate 10/s, burst 15).
    """

    exchange = "coinbase"

    def __init__(
        self,
        *,
        symbols: list[FakeSymbol] | None = None,
        quiet_every: Mapping[str, int] | None = None,
        halts: Mapping[str, Sequence[tuple[int, int]]] | None = None,
        retry_after_s: float | None = None,
        now: int | datetime | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            symbols=default_coinbase_symbols() if symbols is None else symbols, now=now, **options
        )
        self._retry_after_s = retry_after_s
        self._quiet_every = dict(DEFAULT_QUIET_EVERY if quiet_every is None else quiet_every)
        self._halts = {
            name: tuple((int(a), int(b)) for a, b in windows)
            for name, windows in (DEFAULT_HALTS if halts is None else halts).items()
        }

    # -- what a product has ------------------------------------------------------------------

    def has_candle(self, sym: FakeSymbol, iv: Interval, open_ms: int) -> bool:
        """Whether the bucket at ``open_ms`` is outside the symbol's halts and quiet minutes
        (the exchange-wide outages are the market's own, left out before this is asked)."""
        next_open = iv.next_open(open_ms)
        if any(a <= open_ms and next_open <= b for a, b in self._halts.get(sym.symbol, ())):
            return False
        return not self.quiet(sym, iv, open_ms, self._quiet_every.get(sym.symbol, 0))

    def traded_rows(self, sym: FakeSymbol, iv: Interval, first: int, last: int, now: int) -> list[tuple]:
        """The candles opening in ``[first, last]`` at ``now`` that had trades, oldest first, as
        :meth:`FakeVenue.candle_rows` tuples (unrounded): the open bucket has none at its first
        instant, so it has no candle yet either."""
        rows = self.candle_rows(sym, iv, first, last, now)
        return [row for row in rows if row[8] > 0 and self.has_candle(sym, iv, row[0])]

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[tuple]:
        """What the candles endpoint has for ``[start_ms, end_ms)`` at the fake's now (oldest
        first, unrounded :meth:`traded_rows`), for tests' oracles."""
        now = self.now_ms()
        sym = self.lookup(symbol, now)
        if sym is None or start_ms >= end_ms:
            return []
        return self.traded_rows(sym, Interval(interval), start_ms, end_ms - 1, now)

    # -- requests ----------------------------------------------------------------------------

    def _route(self, method: str, path: str, params: dict[str, str], now: int) -> _Reply:
        parts = path.strip("/").split("/")
        if method != "GET" or not parts or parts[0] not in ("time", "products"):
            return json_reply({"message": MSG_NOT_FOUND}, 404)
        if parts == ["time"]:
            return json_reply({"iso": _iso_ms(now), "epoch": now / 1000})
        if parts == ["products"]:
            return json_reply([self._product(sym, now) for sym in self._market.visible(now)])
        sym = self.lookup(parts[1], now) if len(parts) >= 2 else None
        if sym is None or len(parts) > 3:
            return json_reply({"message": MSG_NOT_FOUND}, 404)
        endpoint = parts[2] if len(parts) == 3 else ""
        if endpoint == "":
            return json_reply(self._product(sym, now))
        if endpoint == "candles":
            return self._candles(sym, params, now)
        if endpoint == "stats":
            return json_reply(self._product_stats(sym, now))
        if endpoint == "ticker":
            return json_reply(self._product_ticker(sym, now))
        return json_reply({"message": MSG_NOT_FOUND}, 404)

    def _candles(self, sym: FakeSymbol, params: dict[str, str], now: int) -> _Reply:
        try:
            iv = Interval(GRANULARITIES[int(params.get("granularity", ""))])
        except (KeyError, ValueError):
            return json_reply({"message": MSG_GRANULARITY}, 400)
        step = iv.fixed_ms or 0
        if params.get("start") and params.get("end"):
            try:
                start, end = _parse_time(params["start"]), _parse_time(params["end"])
            except ValueError:
                return json_reply({"message": "Invalid start or end"}, 400)
            if start > end:
                return json_reply({"message": "start must be before end"}, 400)
            first, last = iv.floor(start), iv.floor(end)
        else:  # documented: without both, a range ending now
            last = iv.floor(now)
            first = last - (MAX_CANDLES - 1) * step
        if (last - first) // step + 1 > MAX_CANDLES:
            return json_reply({"message": MSG_TOO_MANY}, 400)
        body = [
            [t // 1000, _n(low), _n(high), _n(open_), _n(close), _n(volume)]
            for t, open_, high, low, close, volume, *_ in reversed(
                self.traded_rows(sym, iv, first, last, now)
            )
        ]
        return json_reply(body)

    def _product(self, sym: FakeSymbol, now: int) -> dict[str, Any]:
        delisted = sym.status_at(now) != "TRADING"
        return {
            "id": sym.symbol,
            "base_currency": sym.base_asset,
            "quote_currency": sym.quote_asset,
            "quote_increment": _decimal(_tick_size(sym.base_price)),
            "base_increment": _decimal(_step_size(sym.base_price)),
            "display_name": f"{sym.base_asset}/{sym.quote_asset}",
            "min_market_funds": "1",
            "margin_enabled": False,
            "post_only": False,
            "limit_only": False,
            "cancel_only": False,
            "status": "delisted" if delisted else "online",
            "status_message": "",
            "trading_disabled": delisted,
            "fx_stablecoin": False,
            "max_slippage_percentage": "0.03000000",
            "auction_mode": False,
            "high_bid_limit_percentage": "",
        }

    def _product_stats(self, sym: FakeSymbol, now: int) -> dict[str, Any]:
        ticker = self._market.ticker(sym, now, mini=False)
        return {
            "open": ticker["openPrice"],
            "high": ticker["highPrice"],
            "low": ticker["lowPrice"],
            "last": ticker["lastPrice"],
            "volume": ticker["volume"],
            # The model has no 30-day window: 30 times the last 24 hours.
            "volume_30day": f"{float(ticker['volume']) * 30:.8f}",
        }

    def _product_ticker(self, sym: FakeSymbol, now: int) -> dict[str, Any]:
        ticker = self._market.ticker(sym, now, mini=False)
        return {
            "ask": ticker["askPrice"],
            "bid": ticker["bidPrice"],
            "volume": ticker["volume"],
            "trade_id": max(0, int(ticker["lastId"])),
            "price": ticker["lastPrice"],
            "size": ticker["lastQty"],
            "time": _iso_ms(min(now, sym.delisted_ms or now)),
        }

    @staticmethod
    def _path_key(path: str) -> str:
        """``/products/{id}/candles`` for every product (statistics by endpoint)."""
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "products":
            parts[1] = "{id}"
        return "/" + "/".join(parts)

    def _rate_limited_reply(self, path: str) -> _Reply:
        headers = [] if self._retry_after_s is None else [("Retry-After", f"{self._retry_after_s:g}")]
        return json_reply({"message": MSG_RATE_LIMITED}, 429, headers)

    def _fault_reply(self, fault: VenueFault, path: str) -> _Reply:
        if fault.kind == "ban":
            return json_reply({"message": "Forbidden"}, 403)
        if fault.kind == "server_error":
            return json_reply({"message": "Internal server error"}, fault.status)
        return super()._fault_reply(fault, path)


def _parse_time(text: str) -> int:
    """An ISO 8601 time (``Z`` or an offset; without one, UTC) in ms; a bare number is refused."""
    if text.replace(".", "", 1).isdigit():
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    return to_ms(parse_datetime(text))


def _iso_ms(t_ms: int) -> str:
    """``2026-01-01T00:30:00.000Z``: Coinbase's times always carry the fraction."""
    text = iso(t_ms)
    return text if "." in text else text[:-1] + ".000Z"


def _n(value: float) -> float:
    """A price or volume as Coinbase sends it: a JSON number with at most 8 decimals."""
    return round(value, 8)


def _decimal(value: float) -> str:
    return f"{value:.8f}"
