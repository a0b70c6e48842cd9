"""A fake Bybit v5 (spot public market data) over the shared market: :class:`FakeBybit`.

It serves ``/v5/market/kline``, ``/v5/market/instruments-info``, ``/v5/market/tickers`` and
``/v5/market/time`` as Bybit documents them:

- every answer is HTTP 200 with ``{"retCode", "retMsg", "result", "retExtInfo", "time"}``; an
  error is a non-zero ``retCode`` (10001 "Not supported symbols" for an unknown symbol, 10001
  for other bad parameters, 10017 for an unknown path);
- kline rows are ``[startTime, open, high, low, close, volume, turnover]``, all strings, times
  in ms, newest first; ``start`` and ``end`` are both inclusive and, when more than ``limit``
  (1..1000, default 200) candles fall between them, the newest ``limit`` are answered; the
  newest row may be the open candle; an illiquid market's minutes without trades are candles
  with zero volume at the last traded price (``quiet_every``);
- ``instruments-info`` lists the trading spot markets only (Bybit's spot has no other status),
  in one page unless ``instruments_page`` asks for ``nextPageCursor`` pages;
- the IP limit: no more than ``burst`` requests in any ``burst / rate_per_s`` seconds (600 in
  5 s); the request over it gets HTTP 403 "access too frequent" and starts a ban of ``ban_s``
  seconds (Bybit: at least 10 minutes) during which every request gets 403.

Faults (:class:`~cryptolake.testing.venue.VenueFault`): ``rate_limit`` is Bybit's API limit
(retCode 10006 "Too many visits!", with ``X-Bapi-Limit-Reset-Timestamp`` ``limit_reset_ms``
ahead), ``ban`` a 403 that starts the ban, ``server_error`` an HTTP ``status`` (5xx) or, with
``status=200``, retCode 10016; ``bad_json`` and ``drop`` as every venue. The 403s and 10006s
are counted in :attr:`~cryptolake.testing.venue.VenueStats.rate_limited`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cryptolake.schema import MINUTE_MS, Interval
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.venue import FakeVenue, VenueFault, json_reply
from cryptolake.testing.wire import _Reply
from cryptolake.timeutils import to_ms

#: Bybit's ``interval`` values -> the lake's names.
INTERVALS: dict[str, str] = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
    "M": "1M",
}
#: The illiquid market of the default universe and how often it has a minute without trades.
DEFAULT_QUIET_EVERY = {"DUSTUSDT": 3}
NOT_SUPPORTED = "Not supported symbols"


def default_bybit_symbols() -> list[FakeSymbol]:
    """Bybit's default spot universe: majors, a USDC quote, Bybit's own token, a 2025 listing,
    a delisted market and an illiquid one (``DUSTUSDT``: one minute in three without trades).
    ``volume_scale`` values differ enough for a deterministic 24 h turnover ranking
    (BTC > ETH > SOL > XRP > DOGE > USDC > MNT > ... in USDT)."""
    t = to_ms
    return [
        FakeSymbol("BTCUSDT", "BTC", "USDT", t("2021-07-05T10:17Z"), base_price=30_000.0, volume_scale=100.0),
        FakeSymbol("ETHUSDT", "ETH", "USDT", t("2021-07-05T10:17Z"), base_price=2_000.0, volume_scale=40.0),
        FakeSymbol("SOLUSDT", "SOL", "USDT", t("2021-09-09T08:00Z"), base_price=60.0, volume_scale=18.0),
        FakeSymbol("XRPUSDT", "XRP", "USDT", t("2021-07-20T06:00Z"), base_price=0.5, volume_scale=9.0),
        FakeSymbol("DOGEUSDT", "DOGE", "USDT", t("2021-08-02T14:00Z"), base_price=0.1, volume_scale=5.5),
        FakeSymbol(
            "USDCUSDT",
            "USDC",
            "USDT",
            t("2022-03-01T08:00Z"),
            base_price=1.0,
            volume_scale=3.0,
            volatility=0.002,
        ),
        FakeSymbol("MNTUSDT", "MNT", "USDT", t("2023-07-13T12:00Z"), base_price=0.5, volume_scale=1.7),
        FakeSymbol("BTCUSDC", "BTC", "USDC", t("2022-06-01T09:00Z"), base_price=30_000.0, volume_scale=2.2),
        FakeSymbol("NEWUSDT", "NEW", "USDT", t("2025-06-15T10:30Z"), base_price=1.5, volume_scale=0.5),
        FakeSymbol(
            "LUNAUSDT",
            "LUNA",
            "USDT",
            t("2021-09-01T08:00Z"),
            delisted_ms=t("2022-05-13T00:00Z"),
            base_price=50.0,
            volume_scale=1.2,
        ),
        FakeSymbol("DUSTUSDT", "DUST", "USDT", t("2024-02-20T13:37Z"), base_price=0.002, volume_scale=0.01),
    ]


class _BybitError(Exception):
    """An answer with a non-zero ``retCode``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class FakeBybit(FakeVenue):
    """Bybit v5's spot market endpoints (see the module docstring).

    Args:
        symbols: the markets (default :func:`default_bybit_symbols`).
        rate_per_s, burst: the IP limit, ``burst`` requests in any ``burst / rate_per_s``
            seconds (default 600 in 5 s).
        ban_s: how long the IP is refused (403) once over the limit.
        quiet_every: ``{symbol: n}``: one 1m slot in ``n`` (hashed) of the symbol has no trades
            (a zero-volume candle); default :data:`DEFAULT_QUIET_EVERY`.
        instruments_page: entries per ``instruments-info`` page (None: all in one, as Bybit
            answers spot).
        limit_reset_ms: how far ahead ``X-Bapi-Limit-Reset-Timestamp`` is on a 10006 answer.
        options: the rest of :class:`~cryptolake.testing.venue.FakeVenue`'s arguments (``now``,
            ``follow_wall_clock``, ``latency_s``, ``outages``, ``host``, ``port``, ``clock``).
    """

    exchange = "bybit"

    def __init__(
        self,
        symbols: list[FakeSymbol] | None = None,
        *,
        rate_per_s: float = 120.0,
        burst: int = 600,
        ban_s: float = 600.0,
        quiet_every: dict[str, int] | None = None,
        instruments_page: int | None = None,
        limit_reset_ms: int = 1000,
        **options: Any,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or ban_s < 0:
            raise ValueError("rate_per_s > 0, burst >= 1 and ban_s >= 0")
        self._ban_s = ban_s
        self._quiet_every = dict(DEFAULT_QUIET_EVERY if quiet_every is None else quiet_every)
        self._instruments_page = instruments_page
        self._limit_reset_ms = limit_reset_ms
        self.window_s = burst / rate_per_s
        super().__init__(
            symbols=default_bybit_symbols() if symbols is None else symbols,
            rate_per_s=rate_per_s,
            burst=burst,
            **options,
        )

    # -- the IP limit and its ban ------------------------------------------------------------

    def _reset_state(self) -> None:
        super()._reset_state()
        self._banned_until = 0.0

    def set_rate_limit(self, rate_per_s: float, burst: int) -> None:
        """``burst`` requests in any ``burst / rate_per_s`` seconds from now on."""
        super().set_rate_limit(rate_per_s, burst)
        with self._lock:
            self.window_s = burst / rate_per_s

    def banned_for(self) -> float:
        """Seconds left of the IP ban (0 when there is none)."""
        with self._lock:
            return max(0.0, self._banned_until - self._clock())

    def _admit(self, t: float) -> bool:
        """Admit a request if fewer than ``burst`` were admitted in the last ``window_s``
        seconds and no ban runs; the one over the limit starts the ban (caller holds the lock)."""
        if t < self._banned_until:
            return False
        window = self._admitted
        while window and window[0] <= t - self.window_s:
            window.popleft()
        if len(window) >= self._burst:
            self._banned_until = t + self._ban_s
            return False
        window.append(t)
        self._stats.max_in_window = max(self._stats.max_in_window, len(window))
        return True

    def _rate_limited_reply(self, path: str) -> _Reply:
        """Bybit's answer over the IP limit and during the ban."""
        with self._lock:
            self._stats.rate_limited += 1
        return _Reply(403, b"access too frequent", [("Content-Type", "text/plain")])

    def _fault_reply(self, fault: VenueFault, path: str) -> _Reply:
        now = self.now_ms()
        if fault.kind == "ban":
            with self._lock:
                self._banned_until = max(self._banned_until, self._clock() + self._ban_s)
            return self._rate_limited_reply(path)
        if fault.kind == "rate_limit":
            with self._lock:
                self._stats.rate_limited += 1
            headers = [
                ("X-Bapi-Limit", "600"),
                ("X-Bapi-Limit-Status", "0"),
                ("X-Bapi-Limit-Reset-Timestamp", str(now + self._limit_reset_ms)),
            ]
            return json_reply(_envelope(10006, "Too many visits!", {}, now), headers=headers)
        if fault.kind == "server_error":
            if fault.status == 200:
                return json_reply(_envelope(10016, "Server error.", {}, now))
            return _Reply(
                fault.status, b"<html><body>Bad Gateway</body></html>", [("Content-Type", "text/html")]
            )
        return super()._fault_reply(fault, path)

    # -- endpoints ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, params: dict[str, str], now: int) -> _Reply:
        handler = _ENDPOINTS.get(path)
        if handler is None or method != "GET":
            return json_reply(_envelope(10017, f"route not found: {method} {path}", {}, now), 404)
        try:
            if path != "/v5/market/time" and params.get("category") != "spot":
                raise _BybitError(10001, "params error: this fake serves category=spot only")
            result = handler(self, params, now)
        except _BybitError as exc:
            return json_reply(_envelope(exc.code, exc.msg, {}, now))
        return json_reply(_envelope(0, "OK", result, now))

    def _kline(self, params: dict[str, str], now: int) -> dict[str, Any]:
        name = params.get("symbol") or ""
        if not name:
            raise _BybitError(10001, "params error: symbol is required")
        lake_name = INTERVALS.get(params.get("interval", ""))
        if lake_name is None:
            raise _BybitError(10001, "Invalid period!")
        limit = _int_param(params, "limit", 200)
        if not 1 <= limit <= 1000:
            raise _BybitError(10001, "params error: limit must be in [1, 1000]")
        start = _int_param(params, "start", 0)
        end = _int_param(params, "end", now)
        if start > end:
            raise _BybitError(10001, "params error: start must not be after end")
        sym = self.lookup(name, now)
        if sym is None:
            raise _BybitError(10001, NOT_SUPPORTED)
        iv = Interval(lake_name)
        rows = [
            [str(row[0]), *(_decimal(x) for x in row[1:6]), _decimal(row[7])]
            for row in reversed(self.newest_candles(sym, iv, start, end, limit, now))
        ]
        return {"category": "spot", "symbol": sym.symbol, "list": rows}

    def newest_candles(
        self, sym: FakeSymbol, iv: Interval, start: int, end: int, limit: int, now: int
    ) -> list[tuple]:
        """The newest ``limit`` candles opening in ``[start, end]`` (both inclusive), oldest
        first, as :meth:`~cryptolake.testing.venue.FakeVenue.candle_rows`' tuples, with the
        quiet minutes of an illiquid market as zero-volume candles at the last traded price."""
        bounds = self._market.bounds(sym, iv, now)
        if bounds is None:
            return []
        first, last = bounds
        lo, top = max(first, iv.ceil(start)), min(last, iv.floor(end))
        if lo > top:
            return []
        opens = self._market.backward(iv, top, lo, limit)
        rows = self._market.rows(sym, iv, opens, now)
        every = self._quiet_every.get(sym.symbol, 0)
        return [
            self._flat(sym, iv, row, now) if self.is_quiet(sym, iv, row[0], every) else row for row in rows
        ]

    def is_quiet(self, sym: FakeSymbol, iv: Interval, open_ms: int, every: int) -> bool:
        """:meth:`~cryptolake.testing.venue.FakeVenue.quiet`, except the listing minute (the
        first trade)."""
        return open_ms > iv.floor(sym.listed_ms) and self.quiet(sym, iv, open_ms, every)

    def _flat(self, sym: FakeSymbol, iv: Interval, row: tuple, now: int) -> tuple:
        """A candle without trades: open = high = low = close = the last traded price."""
        every = self._quiet_every.get(sym.symbol, 0)
        traded = row[0] - MINUTE_MS
        while self.is_quiet(sym, iv, traded, every):
            traded -= MINUTE_MS
        price = self._market.rows(sym, iv, [traded], now)[0][4]
        return (row[0], price, price, price, price, 0.0, row[6], 0.0, 0, 0.0, 0.0)

    def _instruments(self, params: dict[str, str], now: int) -> dict[str, Any]:
        chosen = self._chosen(params, now)
        status = params.get("status")
        entries = [self._instrument(sym, now) for sym in chosen if status in (None, "", "Trading")]
        cursor = ""
        if self._instruments_page is not None:
            offset = _int_param(params, "cursor", 0)
            cursor = (
                str(offset + self._instruments_page) if offset + self._instruments_page < len(entries) else ""
            )
            entries = entries[offset : offset + self._instruments_page]
        return {"category": "spot", "list": entries, "nextPageCursor": cursor}

    def _instrument(self, sym: FakeSymbol, now: int) -> dict[str, Any]:
        info = self._market.symbol_info(sym, now)
        price, lot = info["filters"][0], info["filters"][1]
        return {
            "symbol": sym.symbol,
            "baseCoin": sym.base_asset,
            "quoteCoin": sym.quote_asset,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly" if info["isMarginTradingAllowed"] else "none",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": lot["stepSize"],
                "quotePrecision": "0.00000001",
                "minOrderQty": lot["minQty"],
                "maxOrderQty": lot["maxQty"],
                "minOrderAmt": "1",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": price["tickSize"]},
            "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
        }

    def _tickers(self, params: dict[str, str], now: int) -> dict[str, Any]:
        tickers = []
        for sym in self._chosen(params, now):
            data = self._market.ticker(sym, now, mini=False)
            opened, last = float(data["openPrice"]), float(data["lastPrice"])
            tickers.append(
                {
                    "symbol": sym.symbol,
                    "bid1Price": data["bidPrice"],
                    "bid1Size": data["bidQty"],
                    "ask1Price": data["askPrice"],
                    "ask1Size": data["askQty"],
                    "lastPrice": data["lastPrice"],
                    "prevPrice24h": data["openPrice"],
                    "price24hPcnt": f"{last / opened - 1:.4f}",
                    "highPrice24h": data["highPrice"],
                    "lowPrice24h": data["lowPrice"],
                    "turnover24h": data["quoteVolume"],
                    "volume24h": data["volume"],
                    "usdIndexPrice": data["lastPrice"],
                }
            )
        return {"category": "spot", "list": tickers}

    def _chosen(self, params: dict[str, str], now: int) -> list[FakeSymbol]:
        """The trading markets, or the one ``symbol`` names (10001 if it is not one)."""
        trading = [sym for sym in self._market.visible(now) if sym.status_at(now) == "TRADING"]
        name = params.get("symbol")
        if not name:
            return trading
        chosen = [sym for sym in trading if sym.symbol == name]
        if not chosen:
            raise _BybitError(10001, NOT_SUPPORTED)
        return chosen

    def _time(self, params: dict[str, str], now: int) -> dict[str, Any]:
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}


def _envelope(code: int, msg: str, result: dict[str, Any], now: int) -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise _BybitError(10001, f"params error: {name} must be a non-negative integer")
    return int(value)


def _decimal(x: float) -> str:
    """A number as Bybit writes it: plain decimal digits (no exponent), exact for the float."""
    text = format(Decimal(repr(float(x))), "f")
    return text[:-2] if text.endswith(".0") else text


_ENDPOINTS: dict[str, Callable[[FakeBybit, dict[str, str], int], dict[str, Any]]] = {
    "/v5/market/kline": FakeBybit._kline,
    "/v5/market/instruments-info": FakeBybit._instruments,
    "/v5/market/tickers": FakeBybit._tickers,
    "/v5/market/time": FakeBybit._time,
}
