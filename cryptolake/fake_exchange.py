"""A deterministic, offline stand-in for Binance's spot REST market-data API.

:class:`FakeExchange` serves ``/api/v3/{ping,time,exchangeInfo,ticker/24hr,klines,uiKlines}``
over real HTTP/1.1 (keep-alive) on 127.0.0.1 with Binance's JSON shapes, error codes, request
weights, ``X-MBX-USED-WEIGHT-*`` headers, 429 -> 418 escalation and 451 geo-blocking, plus
injectable faults, a seeded random fault mode (:meth:`FakeExchange.set_chaos`) and 429 storms
(:meth:`FakeExchange.rate_limit_storm`). It is used by tests, benchmarks and by users without
network (``cryptolake fake-exchange``).

Candles are a pure function of ``(symbol, interval, open_time)`` (and of the exchange's "now"
for the still-open candle): the price is ``base_price * exp(smooth waves + small hashed noise)``
sampled at grid points, so a candle's close is exactly the next candle's open, and the same
request always gives the same bytes. Nothing is cached that grows with traffic, except the
bounded request log.

Only the standard library and ``cryptolake.schema`` / ``cryptolake.timeutils`` are used, so the
module runs anywhere (``http.server.ThreadingHTTPServer``).

Deviations from Binance worth knowing:

* ``timeZone`` accepts only offsets equal to zero (``0``, ``+00:00``, ...); others get -1130.
* A symbol whose ``listed_ms`` is after the exchange's "now" does not exist yet (-1121).
* Real time drives the weight windows and bans (as on Binance); the fake "now" drives candles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptolake.schema import DAY_MS, HOUR_MS, INTERVALS, MINUTE_MS, Interval
from cryptolake.timeutils import to_ms

__all__ = [
    "CHAOS_KINDS",
    "DEFAULT_CHAOS_KINDS",
    "DEFAULT_NOW_MS",
    "DEFAULT_OUTAGES",
    "FakeExchange",
    "FakeStats",
    "FakeSymbol",
    "Fault",
    "RATE_LIMIT_STORM",
    "RequestRecord",
    "default_symbols",
    "serve",
]

#: The exchange's "now" when none is given: 2026-01-01T00:30:00Z.
DEFAULT_NOW_MS: int = to_ms("2026-01-01T00:30:00Z")
#: Exchange-wide outage windows ``[start_ms, end_ms)`` used when none are given.
DEFAULT_OUTAGES: tuple[tuple[int, int], ...] = (
    (to_ms("2024-03-12T04:00:00Z"), to_ms("2024-03-12T09:00:00Z")),
)

MAX_BAN_S = 3 * 86_400
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
API_PREFIX = "/api/"
CONTROL_PREFIX = "/fake/"

MSG_UNKNOWN = "An unknown error occurred while processing the request."
MSG_RESTRICTED = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
MSG_INVALID_PARAM = "Invalid data sent for a parameter."
MSG_INTERNAL = "Internal error; unable to process your request. Please try again."
MSG_SERVICE_UNAVAILABLE = "Service Unavailable."
MSG_TIMEOUT = (
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
)
MSG_BUSY = "Server is currently overloaded with other requests. Please try again in a few minutes."
_LONG_RANGE = "^[0-9]{1,20}$"
_SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK", "CANCEL_ONLY")

# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSymbol:
    """One spot market of the fake exchange.

    ``listed_ms`` is the first trade: each interval's first candle opens at
    ``Interval(i).floor(listed_ms)``. No candle opens at or after ``delisted_ms``; once the
    exchange's now passes it the status reads ``BREAK`` (klines still answer).
    ``volatility`` scales the price swings (stablecoins use a tiny one).
    """

    symbol: str
    base_asset: str
    quote_asset: str
    listed_ms: int
    delisted_ms: int | None = None
    status: str = "TRADING"
    base_price: float = 100.0
    volume_scale: float = 1.0
    volatility: float = 1.0

    def status_at(self, now_ms: int) -> str:
        """The exchangeInfo status at ``now_ms``: ``BREAK`` once delisted."""
        if self.delisted_ms is not None and now_ms >= self.delisted_ms:
            return "BREAK"
        return self.status


def default_symbols() -> list[FakeSymbol]:
    """The default universe: majors, a late listing, stablecoins, delistings, a BTC quote and
    a non-ASCII symbol. ``volume_scale`` values are ~1.6x apart so the 24 h quoteVolume
    ranking is deterministic (BTC > USDC > FDUSD > ETH > SOL > XRP > DOGE > BNB > ADA > ...).
    """
    t = to_ms
    return [
        FakeSymbol("BTCUSDT", "BTC", "USDT", t("2017-08-17T04:00Z"), base_price=30_000.0, volume_scale=100.0),
        FakeSymbol("ETHUSDT", "ETH", "USDT", t("2017-08-17T04:00Z"), base_price=2_000.0, volume_scale=23.0),
        FakeSymbol("BNBUSDT", "BNB", "USDT", t("2017-11-06T03:00Z"), base_price=300.0, volume_scale=3.4),
        FakeSymbol("XRPUSDT", "XRP", "USDT", t("2018-05-04T08:00Z"), base_price=0.5, volume_scale=9.0),
        FakeSymbol("ADAUSDT", "ADA", "USDT", t("2018-04-17T04:00Z"), base_price=0.4, volume_scale=1.3),
        FakeSymbol("DOGEUSDT", "DOGE", "USDT", t("2019-07-05T12:00Z"), base_price=0.1, volume_scale=5.5),
        FakeSymbol("SOLUSDT", "SOL", "USDT", t("2020-08-11T06:00Z"), base_price=60.0, volume_scale=14.0),
        FakeSymbol("NEWUSDT", "NEW", "USDT", t("2025-06-15T10:30Z"), base_price=1.5, volume_scale=0.5),
        FakeSymbol(
            "USDCUSDT",
            "USDC",
            "USDT",
            t("2018-12-15T04:00Z"),
            base_price=1.0,
            volume_scale=60.0,
            volatility=0.002,
        ),
        FakeSymbol(
            "FDUSDUSDT",
            "FDUSD",
            "USDT",
            t("2023-07-26T08:00Z"),
            base_price=1.0,
            volume_scale=37.0,
            volatility=0.002,
        ),
        FakeSymbol(
            "BTCUPUSDT",
            "BTCUP",
            "USDT",
            t("2020-05-14T08:00Z"),
            delisted_ms=t("2022-03-01T00:00Z"),
            base_price=5.0,
            volume_scale=0.3,
        ),
        FakeSymbol(
            "LUNAUSDT",
            "LUNA",
            "USDT",
            t("2020-08-21T10:00Z"),
            delisted_ms=t("2022-05-13T00:00Z"),
            base_price=50.0,
            volume_scale=2.1,
        ),
        FakeSymbol("ETHBTC", "ETH", "BTC", t("2017-07-14T04:00Z"), base_price=0.06, volume_scale=0.00002),
        FakeSymbol(
            "币安人生USDT", "币安人生", "USDT", t("2025-10-08T08:00Z"), base_price=0.2, volume_scale=0.8
        ),
    ]


_FAULT_KINDS = ("status", "drop", "malformed", "slow", "rate_limit", "ban")

#: Chaos kinds (see :meth:`FakeExchange.set_chaos`); ``slow`` is opt-in.
CHAOS_KINDS: tuple[str, ...] = ("5xx", "timeout", "busy", "drop", "malformed", "slow")
#: The kinds drawn from when none are given: every kind that makes the request fail.
DEFAULT_CHAOS_KINDS: tuple[str, ...] = ("5xx", "timeout", "busy", "drop", "malformed")
#: ``RequestRecord.chaos`` of a 429 sent by a :meth:`FakeExchange.rate_limit_storm`.
RATE_LIMIT_STORM = "rate_limit_storm"
# HTTP status -> Binance error body of the ``5xx`` chaos kind (no Retry-After, as on Binance).
_CHAOS_5XX: dict[int, tuple[int, str]] = {
    500: (-1001, MSG_INTERNAL),
    502: (-1000, MSG_UNKNOWN),
    503: (-1000, MSG_SERVICE_UNAVAILABLE),
    504: (-1000, MSG_UNKNOWN),
}


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject (see :meth:`FakeExchange.inject`).

    Kinds: ``status`` (that HTTP status with a Binance error body), ``drop`` (close the socket
    without answering), ``malformed`` (200 with a truncated JSON body), ``slow`` (sleep
    ``delay_s`` then answer normally), ``rate_limit`` (429 with ``retry_after_s``; arms the 418
    rule like a real 429) and ``ban`` (418; the ban holds ``retry_after_s`` seconds).
    Only requests whose path equals ``path`` consume it (``None``: any API path); it is
    consumed by ``times`` requests.
    """

    kind: str
    status: int = 500
    code: int | None = None
    msg: str | None = None
    delay_s: float = 0.0
    retry_after_s: int = 1
    path: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_FAULT_KINDS}")
        if self.times < 1:
            raise ValueError("a fault must be consumed at least once (times >= 1)")

    @classmethod
    def http(
        cls,
        status: int,
        code: int | None = None,
        msg: str | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> Fault:
        """Answer with HTTP ``status`` and body ``{"code": code or -1000, "msg": ...}``."""
        return cls("status", status=status, code=code, msg=msg, path=path, times=times)

    @classmethod
    def drop(cls, path: str | None = None, times: int = 1) -> Fault:
        """Close the connection without sending a response."""
        return cls("drop", path=path, times=times)

    @classmethod
    def malformed(cls, path: str | None = None, times: int = 1) -> Fault:
        """Answer 200 with the first half of the real body (invalid JSON)."""
        return cls("malformed", path=path, times=times)

    @classmethod
    def slow(cls, delay_s: float, path: str | None = None, times: int = 1) -> Fault:
        """Sleep ``delay_s`` seconds, then answer normally."""
        return cls("slow", delay_s=delay_s, path=path, times=times)

    @classmethod
    def rate_limit(cls, retry_after_s: int = 1, path: str | None = None, times: int = 1) -> Fault:
        """Answer 429 with ``Retry-After: retry_after_s``."""
        return cls("rate_limit", status=429, retry_after_s=retry_after_s, path=path, times=times)

    @classmethod
    def ban(cls, retry_after_s: int = 2, path: str | None = None, times: int = 1) -> Fault:
        """Answer 418 and ban the IP for ``retry_after_s`` seconds."""
        return cls("ban", status=418, retry_after_s=retry_after_s, path=path, times=times)


@dataclass
class RequestRecord:
    """One API request as the fake saw it. ``status`` 0 means the connection was dropped;
    ``chaos`` names the chaos kind (or ``"rate_limit_storm"``) that answered it, if any."""

    t: float
    path: str
    params: dict[str, str]
    status: int
    weight: int
    used_weight: int
    chaos: str | None = None


@dataclass
class FakeStats:
    """Counters since start or the last :meth:`FakeExchange.reset` (control calls excluded).

    ``chaos_faults`` counts chaos faults by kind; ``storm_rate_limited`` counts the 429s of
    rate-limit storms (they are in ``rate_limited`` too).
    """

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    banned: int = 0
    chaos_faults: dict[str, int] = field(default_factory=dict)
    storm_rate_limited: int = 0
    max_window_weight: int = 0
    window_weights: list[tuple[float, int]] = field(default_factory=list)
    log: list[RequestRecord] = field(default_factory=list)

    def to_json(self, include_log: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (``by_status`` keys become strings, as JSON requires)."""
        data: dict[str, Any] = {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "rate_limited": self.rate_limited,
            "banned": self.banned,
            "chaos_faults": dict(self.chaos_faults),
            "storm_rate_limited": self.storm_rate_limited,
            "max_window_weight": self.max_window_weight,
            "window_weights": [[start, weight] for start, weight in self.window_weights],
        }
        if include_log:
            data["log"] = [asdict(record) for record in self.log]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FakeStats:
        """Inverse of :meth:`to_json` (for tests that read ``GET /fake/stats``)."""
        return cls(
            requests=data["requests"],
            by_path=dict(data["by_path"]),
            by_status={int(k): v for k, v in data["by_status"].items()},
            rate_limited=data["rate_limited"],
            banned=data["banned"],
            chaos_faults=dict(data.get("chaos_faults", {})),
            storm_rate_limited=data.get("storm_rate_limited", 0),
            max_window_weight=data["max_window_weight"],
            window_weights=[(float(s), int(w)) for s, w in data["window_weights"]],
            log=[RequestRecord(**record) for record in data.get("log", [])],
        )


# --------------------------------------------------------------------------------------------
# The synthetic market: prices, candles, tickers (pure functions of symbol, time and "now")
# --------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_U16 = 1.0 / 65536.0
_U53 = 1.0 / (1 << 53)
# (period, amplitude of log-price) of the smooth part of every series.
_WAVES = (
    (3 * 365.25 * DAY_MS, 0.35),
    (97 * DAY_MS, 0.14),
    (9.3 * DAY_MS, 0.05),
    (31 * HOUR_MS, 0.018),
    (3.7 * HOUR_MS, 0.006),
)
_NOISE_MINUTE = 0.003  # log-price noise at each minute (peak to peak)
_NOISE_SECOND = 0.0006  # extra noise between minutes (for 1s candles)
_WICK = 0.004  # wick size for a 1 h candle, grows with sqrt(duration)
_QUOTE_PER_HOUR = 1e6  # quote volume per hour at volume_scale 1
_TRADES_PER_HOUR = 3000.0


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a fast, well-mixed 64-bit hash of an int."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _seed(text: str) -> int:
    """A 64-bit seed that is stable across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _tick_size(price: float) -> float:
    """A Binance-like tick: about 1e-5 of the price level, between 1e-8 and 0.01."""
    exponent = math.floor(math.log10(price)) - 5
    return min(0.01, max(1e-8, 10.0**exponent))


def _step_size(price: float) -> float:
    """A Binance-like LOT_SIZE step: about 1/10 of a 10-quote-unit order, between 1e-8 and 1."""
    exponent = math.floor(math.log10(10.0 / price)) - 1
    return min(1.0, max(1e-8, 10.0**exponent))


class _Series:
    """The deterministic price/volume model of one symbol."""

    def __init__(self, sym: FakeSymbol) -> None:
        seed = _seed(sym.symbol)
        self.sym = sym
        self.tick = _tick_size(sym.base_price)
        self.step = _step_size(sym.base_price)
        self._log_base = math.log(sym.base_price)
        waves = []
        for i, (period, amplitude) in enumerate(_WAVES):
            phase = (_mix64(seed ^ (100 + i)) >> 11) * _U53 * 2 * math.pi
            waves.append((2 * math.pi / period, phase, amplitude * sym.volatility))
        (
            (self._w0, self._p0, self._a0),
            (self._w1, self._p1, self._a1),
            (self._w2, self._p2, self._a2),
            (self._w3, self._p3, self._a3),
            (self._w4, self._p4, self._a4),
        ) = waves
        self._noise_seed = _mix64(seed ^ 1)
        self._second_seed = _mix64(seed ^ 2)
        self._candle_seed = _mix64(seed ^ 3)
        self._noise_minute = _NOISE_MINUTE * sym.volatility
        self._noise_second = _NOISE_SECOND * sym.volatility
        self._wick = _WICK * sym.volatility
        self.quote_per_ms = sym.volume_scale * _QUOTE_PER_HOUR / HOUR_MS
        self.trades_per_ms = _TRADES_PER_HOUR * max(sym.volume_scale, 0.05) ** 0.7 / HOUR_MS
        self._interval_seeds = {name: _mix64(self._candle_seed ^ _seed(name)) for name in INTERVALS}

    # -- prices ------------------------------------------------------------------------------

    def _node(self, seed: int, index: int) -> float:
        """Uniform noise in [-0.5, 0.5) at grid node ``index``."""
        return (_mix64(seed + index * _GOLDEN) >> 11) * _U53 - 0.5

    def _noise(self, t: int) -> float:
        """Hashed noise at minute nodes (plus second nodes), linearly interpolated: continuous."""
        minute, rest = divmod(t, MINUTE_MS)
        a = self._node(self._noise_seed, minute)
        if rest == 0:
            return self._noise_minute * a
        b = self._node(self._noise_seed, minute + 1)
        value = self._noise_minute * (a + (b - a) * (rest / MINUTE_MS))
        second, rest = divmod(t, 1000)
        s0 = 0.0 if second % 60 == 0 else self._node(self._second_seed, second)
        s1 = 0.0 if (second + 1) % 60 == 0 else self._node(self._second_seed, second + 1)
        return value + self._noise_second * (s0 + (s1 - s0) * (rest / 1000))

    def price(self, t: int) -> float:
        """The traded price at ``t`` (ms), rounded to the tick size."""
        sin = math.sin
        if t % MINUTE_MS == 0:  # fast path: every grid point of 1m and longer intervals
            z = (self._noise_seed + (t // MINUTE_MS) * _GOLDEN + _GOLDEN) & _MASK64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            noise = self._noise_minute * (((z ^ (z >> 31)) >> 11) * _U53 - 0.5)
        else:
            noise = self._noise(t)
        x = (
            self._log_base
            + self._a0 * sin(self._w0 * t + self._p0)
            + self._a1 * sin(self._w1 * t + self._p1)
            + self._a2 * sin(self._w2 * t + self._p2)
            + self._a3 * sin(self._w3 * t + self._p3)
            + self._a4 * sin(self._w4 * t + self._p4)
            + noise
        )
        tick = self.tick
        return round(math.exp(x) / tick) * tick

    def quantity(self, t: int) -> float:
        """A plausible small order quantity at ``t`` (for lastQty / bidQty / askQty)."""
        return ((_mix64(self._candle_seed + t) & 0xFFFF) + 1) * _U16 * 10 * self.step

    def trade_id(self, t: int) -> int:
        """A plausible cumulative trade id at ``t`` (first trade at listing has id 0)."""
        return max(0, int((t - self.sym.listed_ms) * self.trades_per_ms))

    # -- candles -----------------------------------------------------------------------------

    def interval_seed(self, interval: str) -> int:
        """The hash seed of this symbol's candles of ``interval``."""
        return self._interval_seeds[interval]

    def candle(self, seed: int, open_t: int, next_t: int, end: int, o: float, c: float) -> tuple:
        """Raw values of the candle ``[open_t, next_t)`` as of ``end`` (``end == next_t``:
        final), given its open ``o = price(open_t)`` and close ``c = price(end)``; ``seed`` is
        :meth:`interval_seed`.

        Returns ``(open_time, o, h, l, c, volume, close_time, quote_volume, trades,
        taker_buy_base, taker_buy_quote)`` with floats for prices and volumes.
        """
        duration = next_t - open_t
        elapsed = (end - open_t) / duration
        h = _mix64(seed + open_t * _GOLDEN)
        u_high = (h & 0xFFFF) * _U16
        u_low = ((h >> 16) & 0xFFFF) * _U16
        activity = 0.6 + 0.8 * ((h >> 32) & 0xFFFF) * _U16
        taker = 0.35 + 0.3 * (h >> 48) * _U16
        tick = self.tick
        spread = self._wick * math.sqrt(duration / HOUR_MS * elapsed)
        top, bottom = (o, c) if o >= c else (c, o)
        high = math.ceil(top * (1.0 + spread * u_high) / tick) * tick
        low = max(tick, math.floor(bottom * (1.0 - spread * u_low) / tick) * tick)
        if low > bottom:  # only when bottom is a tick or less: keep low <= min(o, c)
            low = bottom
        trades = int(self.trades_per_ms * duration * activity * elapsed)
        if trades > 0:
            typical = (o + high + low + c) * 0.25
            volume = self.quote_per_ms * duration * activity * elapsed / typical
            quote_volume = volume * typical
        else:
            volume = quote_volume = 0.0
        return (
            open_t,
            o,
            high,
            low,
            c,
            volume,
            next_t - 1,
            quote_volume,
            trades,
            volume * taker,
            quote_volume * taker,
        )


_ROW_FORMAT = '[%d,"%.8f","%.8f","%.8f","%.8f","%.8f",%d,"%.8f",%d,"%.8f","%.8f","0"]'


def _row_json(row: tuple, micro: bool) -> str:
    """One kline as Binance's JSON array text."""
    if micro:
        row = (row[0] * 1000, *row[1:6], row[6] * 1000 + 999, *row[7:])
    return _ROW_FORMAT % row


def _row_list(row: tuple) -> list:
    """One kline as the decoded JSON array (ms times)."""
    open_t, o, h, lo, c, v, close_t, qv, n, tb, tq = row
    return [
        open_t,
        f"{o:.8f}",
        f"{h:.8f}",
        f"{lo:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        close_t,
        f"{qv:.8f}",
        n,
        f"{tb:.8f}",
        f"{tq:.8f}",
        "0",
    ]


def _d8(x: float) -> str:
    return f"{x:.8f}"


class _Market:
    """Symbols, outages and the candle/ticker/exchangeInfo views at a given "now"."""

    def __init__(
        self, symbols: Iterable[FakeSymbol], outages: Iterable[tuple[int, int]], cache_rows: int = 0
    ) -> None:
        self.symbols: dict[str, FakeSymbol] = {}
        for sym in symbols:
            if sym.symbol in self.symbols:
                raise ValueError(f"duplicate symbol {sym.symbol!r}")
            self.symbols[sym.symbol] = sym
        self._series = {name: _Series(sym) for name, sym in self.symbols.items()}
        self.outages: tuple[tuple[int, int], ...] = tuple(sorted((int(s), int(e)) for s, e in outages))
        # The JSON text of closed candles, oldest entry evicted first. A closed candle never
        # changes, so serving it again from here is what the exchange would answer; it keeps
        # the fake from being the slowest part of a load test.
        self._cache_rows = max(0, int(cache_rows))
        self._json_cache: OrderedDict[tuple[str, str, bool, int], str] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- symbols -----------------------------------------------------------------------------

    def visible(self, now: int) -> list[FakeSymbol]:
        """Symbols that exist at ``now`` (listed already), in universe order."""
        return [sym for sym in self.symbols.values() if sym.listed_ms <= now]

    def lookup(self, name: str, now: int) -> FakeSymbol | None:
        sym = self.symbols.get(name)
        return sym if sym is not None and sym.listed_ms <= now else None

    # -- candle selection --------------------------------------------------------------------

    @staticmethod
    def bounds(sym: FakeSymbol, iv: Interval, now: int) -> tuple[int, int] | None:
        """First and last open time of ``sym``'s candles at ``now`` (outages ignored)."""
        first = iv.floor(sym.listed_ms)
        last = iv.floor(now)
        if sym.delisted_ms is not None:
            last = min(last, iv.floor(sym.delisted_ms - 1))
        return (first, last) if sym.listed_ms <= now and first <= last else None

    def _outage_hit(self, t: int, next_t: int) -> tuple[int, int] | None:
        """The outage that swallows the whole candle ``[t, next_t)``, if any."""
        for start, end in self.outages:
            if start <= t and next_t <= end:
                return start, end
        return None

    def _clear(self, start: int, end: int) -> bool:
        """True if no outage overlaps ``[start, end)``."""
        return not any(s < end and start < e for s, e in self.outages)

    def forward(self, iv: Interval, t: int, stop: int, limit: int | None) -> list[int]:
        """Existing open times from grid point ``t`` up to ``stop`` (inclusive), oldest first."""
        step = iv.fixed_ms
        if step and t <= stop:  # fast path: a plain range when no outage is in the way
            count = (stop - t) // step + 1
            if limit is not None:
                count = min(count, limit)
            if self._clear(t, t + count * step):
                return list(range(t, t + count * step, step))
        out: list[int] = []
        while t <= stop and (limit is None or len(out) < limit):
            next_t = iv.next_open(t)
            hit = self._outage_hit(t, next_t)
            if hit is not None:
                t = iv.floor(hit[1])  # first candle that is not wholly inside the outage
                continue
            out.append(t)
            t = next_t
        return out

    def backward(self, iv: Interval, t: int, first: int, limit: int) -> list[int]:
        """The last ``limit`` existing open times from ``t`` down to ``first``, oldest first."""
        step = iv.fixed_ms
        if step and t >= first:
            low = t - (min((t - first) // step + 1, limit) - 1) * step
            if self._clear(low, t + step):
                return list(range(low, t + 1, step))
        out: list[int] = []
        while t >= first and len(out) < limit:
            next_t = iv.next_open(t)
            hit = self._outage_hit(t, next_t)
            if hit is not None:
                t = iv.floor(hit[0] - 1)  # last candle opening before the outage
                continue
            out.append(t)
            t = iv.floor(t - 1)
        out.reverse()
        return out

    def select(
        self, sym: FakeSymbol, iv: Interval, now: int, start: int | None, end: int | None, limit: int
    ) -> list[int]:
        """Open times Binance's klines endpoint returns for these parameters."""
        bounds = self.bounds(sym, iv, now)
        if bounds is None:
            return []
        first, last = bounds
        if start is not None:
            stop = last if end is None else min(last, end)
            return self.forward(iv, max(first, iv.ceil(start)), stop, limit)
        top = last if end is None else min(last, iv.floor(end))
        return self.backward(iv, top, first, limit)

    def rows(self, sym: FakeSymbol, iv: Interval, opens: list[int], now: int) -> list[tuple]:
        """Raw candle tuples for ``opens`` (existing open times, ascending) at ``now``."""
        series = self._series[sym.symbol]
        as_of = now if sym.delisted_ms is None else min(now, sym.delisted_ms)
        seed = series.interval_seed(iv.name)
        step = iv.fixed_ms
        price, candle = series.price, series.candle
        out = []
        chain_t, chain_price = None, 0.0
        for t in opens:
            next_t = t + step if step else iv.next_open(t)
            o = chain_price if t == chain_t else price(t)
            end = next_t if next_t <= as_of else max(t, as_of)
            c = price(end)
            out.append(candle(seed, t, next_t, end, o, c))
            chain_t, chain_price = (next_t, c) if end == next_t else (None, 0.0)
        return out

    def rows_json(self, sym: FakeSymbol, iv: Interval, opens: list[int], now: int, micro: bool) -> list[str]:
        """The candles at ``opens`` as Binance's JSON array texts, closed ones from the cache."""
        if not self._cache_rows or not opens:
            return [_row_json(row, micro) for row in self.rows(sym, iv, opens, now)]
        cache, key = self._json_cache, (sym.symbol, iv.name, micro)
        with self._cache_lock:
            texts = [cache.get((*key, t)) for t in opens]
        missing = [t for t, text in zip(opens, texts, strict=True) if text is None]
        if not missing:
            return texts  # type: ignore[return-value]
        fresh = {row[0]: _row_json(row, micro) for row in self.rows(sym, iv, missing, now)}
        as_of = now if sym.delisted_ms is None else min(now, sym.delisted_ms)
        with self._cache_lock:
            for t, text in fresh.items():
                if iv.next_open(t) <= as_of:  # closed: it will not change
                    cache[(*key, t)] = text
            while len(cache) > self._cache_rows:
                cache.popitem(last=False)
        return [text if text is not None else fresh[t] for t, text in zip(opens, texts, strict=True)]

    # -- tickers -----------------------------------------------------------------------------

    def ticker(self, sym: FakeSymbol, now: int, mini: bool) -> dict[str, Any]:
        """The rolling 24 h ticker of ``sym`` at ``now`` (from its 1 h candles)."""
        series = self._series[sym.symbol]
        iv = Interval("1h")
        window_start = now - DAY_MS
        as_of = now if sym.delisted_ms is None else min(now, sym.delisted_ms)
        first_trade = max(window_start, sym.listed_ms)
        open_price = series.price(min(first_trade, as_of))
        last_price = series.price(as_of)
        high, low = max(open_price, last_price), min(open_price, last_price)
        volume = quote_volume = 0.0
        count = 0
        bounds = self.bounds(sym, iv, now)
        if bounds is not None and as_of > window_start:
            first, last = bounds
            opens = self.forward(iv, max(first, iv.floor(window_start)), last, None)
            for row in self.rows(sym, iv, opens, now):
                t, _, h, lo, _, v, close_t, qv, n = row[:9]
                end = min(close_t + 1, as_of)
                if end <= window_start or end <= t:
                    continue
                share = (end - max(t, window_start)) / (end - t)
                volume += v * share
                quote_volume += qv * share
                count += int(n * share)
                if v > 0:
                    high, low = max(high, h), min(low, lo)
        if count == 0:
            volume = quote_volume = 0.0
        first_id = series.trade_id(first_trade) if count else -1
        last_id = first_id + count - 1 if count else -1
        data: dict[str, Any] = {"symbol": sym.symbol}
        if not mini:
            change = last_price - open_price
            trading = sym.status_at(now) == "TRADING"
            tick = series.tick
            quantity = series.quantity(now)
            data.update(
                priceChange=_d8(change),
                priceChangePercent=f"{100.0 * change / open_price:.3f}",
                weightedAvgPrice=_d8(quote_volume / volume if volume else 0.0),
                prevClosePrice=_d8(series.price(min(first_trade, as_of) - MINUTE_MS)),
                lastPrice=_d8(last_price),
                lastQty=_d8(quantity if count else 0.0),
                bidPrice=_d8(max(tick, last_price - tick) if trading else 0.0),
                bidQty=_d8(quantity * 3 if trading else 0.0),
                askPrice=_d8(last_price + tick if trading else 0.0),
                askQty=_d8(quantity * 2 if trading else 0.0),
            )
        data.update(
            openPrice=_d8(open_price),
            highPrice=_d8(high),
            lowPrice=_d8(low),
            lastPrice=_d8(last_price),
            volume=_d8(volume),
            quoteVolume=_d8(quote_volume),
            openTime=window_start,
            closeTime=now,
            firstId=first_id,
            lastId=last_id,
            count=count,
        )
        return data

    # -- exchangeInfo ------------------------------------------------------------------------

    def symbol_info(self, sym: FakeSymbol, now: int) -> dict[str, Any]:
        """One entry of exchangeInfo's ``symbols``."""
        series = self._series[sym.symbol]
        margin = sym.quote_asset == "USDT" and sym.volume_scale >= 1.0 and sym.volatility >= 1.0
        return {
            "symbol": sym.symbol,
            "status": sym.status_at(now),
            "baseAsset": sym.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": sym.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": margin,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _d8(series.tick),
                    "maxPrice": _d8(max(1000.0, sym.base_price * 1000)),
                    "tickSize": _d8(series.tick),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _d8(series.step),
                    "maxQty": _d8(9_000.0 if sym.base_price >= 100 else 90_000_000.0),
                    "stepSize": _d8(series.step),
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


# --------------------------------------------------------------------------------------------
# Request parsing and API endpoints
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Binance error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> _ApiError:
    return _ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _illegal(name: str, legal: str) -> _ApiError:
    return _ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def _long_param(params: dict[str, str], name: str) -> int | None:
    """An optional non-negative integer parameter (-1100 if it is not one)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 20 or int(value) >= 1 << 63:
        raise _illegal(name, _LONG_RANGE)
    return int(value)


def _symbols_param(params: dict[str, str]) -> list[str] | None:
    """The ``symbols`` JSON array parameter, or None when absent."""
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        raise _illegal("symbols", _SYMBOLS_RANGE) from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise _illegal("symbols", _SYMBOLS_RANGE)
    return names


def _zero_offset(text: str) -> bool:
    """True if a ``timeZone`` value means UTC (``0``, ``+0``, ``00:00``, ``-0:00``...)."""
    body = text.lstrip("+-")
    parts = body.split(":")
    return 1 <= len(parts) <= 2 and all(p.isdigit() and int(p) == 0 for p in parts)


def _ticker_weight(params: dict[str, str]) -> int:
    """Binance's weight for ticker/24hr: 2 for 1-20 symbols, 40 for 21-100, 80 above/all."""
    if params.get("symbol"):
        return 2
    try:
        names = _symbols_param(params)
    except _ApiError:
        return 2
    if names is None:
        return 80
    return 2 if len(names) <= 20 else 40 if len(names) <= 100 else 80


_FIXED_WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
}


def request_weight(path: str, params: dict[str, str]) -> int:
    """The request weight Binance charges for ``path`` with ``params`` (0 if unknown)."""
    if path == "/api/v3/ticker/24hr":
        return _ticker_weight(params)
    return _FIXED_WEIGHTS.get(path, 0)


def _window_label(window_s: int) -> tuple[int, str]:
    """(intervalNum, interval) for a weight window: 60 s -> (1, MINUTE), 10 s -> (10, SECOND)."""
    if window_s % 60 == 0:
        return window_s // 60, "MINUTE"
    return window_s, "SECOND"


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _error_body(code: int, msg: str) -> bytes:
    return _json_bytes({"code": code, "msg": msg})


@dataclass
class _Reply:
    """What the HTTP handler sends (or, with ``drop``, doesn't)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    drop: bool = False


@dataclass
class _Chaos:
    """Random-fault settings of :meth:`FakeExchange.set_chaos` (with their own seeded RNG)."""

    rate: float
    kinds: tuple[str, ...]
    paths: frozenset[str] | None
    slow_s: float
    rng: random.Random

    def draw(self, path: str) -> str | None:
        """The chaos kind for one request on ``path``, or None (answer normally)."""
        if self.paths is not None and path not in self.paths:
            return None
        if self.rng.random() >= self.rate:
            return None
        return self.kinds[self.rng.randrange(len(self.kinds))]


# --------------------------------------------------------------------------------------------
# The exchange
# --------------------------------------------------------------------------------------------


def _as_ms(value: int | datetime) -> int:
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int milliseconds or a datetime, got {type(value).__name__}")
    return value


def _delta_ms(delta: int | timedelta) -> int:
    if isinstance(delta, timedelta):
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return _as_ms(delta)


class FakeExchange:
    """A Binance-spot-compatible REST server on 127.0.0.1 (see the module docstring).

    ``now`` is the exchange's clock for candles (frozen unless ``follow_wall_clock``);
    weight windows and bans follow real time from ``clock`` (``time.time``; tests may inject
    their own). ``max_log`` bounds the request log (and the number of weight windows kept).
    ``cache_rows``: keep the JSON text of up to this many closed candles and serve them again
    without recomputing (0: none); for load tests, where the fake must not be the bottleneck.

    ``ban_grace_requests``: Binance bans an IP that keeps sending after a 429 but does not say
    how many requests that were already in flight it forgives. With the default 0 the first
    request to arrive inside a 429's ``Retry-After`` is banned; with N, the first N such requests
    get a 429 too (a concurrent client with N requests in flight when the 429 reaches it is not
    banned for those; the next one is).
    """

    def __init__(
        self,
        *,
        symbols: list[FakeSymbol] | None = None,
        now: int | datetime | None = None,
        follow_wall_clock: bool = False,
        weight_limit: int = 6000,
        weight_window_s: int = 60,
        latency_s: float = 0.0,
        outages: list[tuple[int, int]] | None = None,
        ban_s: float = 120.0,
        ban_grace_requests: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        max_log: int = 100_000,
        cache_rows: int = 0,
    ) -> None:
        self._market = _Market(
            default_symbols() if symbols is None else symbols,
            DEFAULT_OUTAGES if outages is None else outages,
            cache_rows,
        )
        self._clock = clock
        self._follow = follow_wall_clock
        self._now_anchor = DEFAULT_NOW_MS if now is None else _as_ms(now)
        self._wall_anchor = clock()
        self._host, self._port = host, port
        self._ban_s = ban_s
        self._ban_grace = max(0, int(ban_grace_requests))
        self._max_log = max_log
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._latency_s = latency_s
        self._weight_limit, self._window_s = weight_limit, weight_window_s
        self._reset_state()

    def _reset_state(self) -> None:
        """Forget faults, stats, bans and weight (caller holds the lock or is __init__)."""
        self._faults: list[list[Any]] = []  # [fault, remaining uses]
        self._chaos: _Chaos | None = None
        self._storm_until = 0.0
        self._storm_retry_s = 1
        self._restricted = False
        self._window_id: int | None = None
        self._used = 0
        self._retry_until = 0.0  # a request before this (after a 429) gets banned
        self._grace_left = 0  # ... unless it is one of the requests in flight that are forgiven
        self._banned_until = 0.0
        self._ban_count = 0
        self._requests = 0
        self._by_path: dict[str, int] = {}
        self._by_status: dict[int, int] = {}
        self._rate_limited = 0
        self._banned = 0
        self._chaos_faults: dict[str, int] = {}
        self._storm_rate_limited = 0
        self._max_window_weight = 0
        self._window_weights: dict[int, int] = {}
        self._log: deque[RequestRecord] = deque(maxlen=self._max_log)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeExchange:
        """Bind (port 0: the OS picks one) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.exchange = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-exchange-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    # -- clock and knobs ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's current time in ms."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> int:
        if not self._follow:
            return self._now_anchor
        return self._now_anchor + int((self._clock() - self._wall_anchor) * 1000)

    def set_now(self, t: int | datetime) -> None:
        """Set the exchange's time (it keeps following the wall clock if it did)."""
        with self._lock:
            self._now_anchor, self._wall_anchor = _as_ms(t), self._clock()

    def advance(self, delta: int | timedelta) -> None:
        """Move the exchange's time forward by ``delta`` (int: ms)."""
        with self._lock:
            self._now_anchor += _delta_ms(delta)

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each is consumed, in order, by the next matching API requests."""
        with self._lock:
            self._faults.extend([fault, fault.times] for fault in faults)

    def set_chaos(
        self,
        rate: float,
        *,
        kinds: Iterable[str] = DEFAULT_CHAOS_KINDS,
        seed: int = 0,
        paths: Iterable[str] | None = ("/api/v3/klines",),
        slow_s: float = 1.0,
    ) -> None:
        """Make each API request on ``paths`` (None: every API path) fail with probability
        ``rate`` (0 turns chaos off), the kind drawn uniformly from ``kinds`` by a
        ``random.Random(seed)``: the same seed and request sequence give the same outcomes.

        Kinds: ``5xx`` (500/502/503/504 with a Binance error body), ``timeout`` (504, -1007),
        ``busy`` (503, -1008), ``drop`` (close the connection unanswered), ``malformed`` (200
        with the first half of the real body) and the opt-in ``slow`` (the normal answer after
        ``slow_s`` seconds). Failed requests cost no weight and never arm the 429 -> 418 rule;
        ``slow`` answers are normal ones and are charged. Injected faults, bans, storms and the
        weight limit come first; a request they answer draws nothing.
        """
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"chaos rate must be within [0, 1], got {rate}")
        chosen = tuple(dict.fromkeys(kinds))
        unknown = [kind for kind in chosen if kind not in CHAOS_KINDS]
        if unknown or not chosen:
            raise ValueError(f"chaos kinds must be a non-empty subset of {CHAOS_KINDS}, got {list(chosen)}")
        if slow_s < 0:
            raise ValueError("slow_s must be >= 0")
        if isinstance(paths, str):
            paths = (paths,)
        chaos = _Chaos(
            rate, chosen, None if paths is None else frozenset(paths), float(slow_s), random.Random(seed)
        )
        with self._lock:
            self._chaos = chaos if rate > 0 else None

    def rate_limit_storm(self, seconds: float, retry_after_s: int = 1) -> None:
        """For the next ``seconds`` (of ``clock``), answer every API request with a real 429
        and ``Retry-After: retry_after_s``: it arms the 418 rule like any 429, so a client that
        sends again before Retry-After has passed gets banned. ``seconds <= 0`` ends a storm.
        """
        if retry_after_s < 1:
            raise ValueError("retry_after_s must be >= 1")
        with self._lock:
            self._storm_until = self._clock() + float(seconds)
            self._storm_retry_s = int(retry_after_s)

    def set_restricted(self, restricted: bool) -> None:
        """True: every API request gets Binance's HTTP 451 geo-block."""
        with self._lock:
            self._restricted = bool(restricted)

    def set_latency(self, latency_s: float) -> None:
        """Seconds added before every API response."""
        with self._lock:
            self._latency_s = float(latency_s)

    def set_weight_limit(self, limit: int, window_s: int | None = None) -> None:
        """Change the REQUEST_WEIGHT limit (and window length)."""
        with self._lock:
            self._weight_limit = int(limit)
            if window_s is not None:
                self._window_s = int(window_s)

    def reset(self) -> None:
        """Clear faults, chaos, storms, stats, bans, weight counters and the restricted flag.

        Symbols, now, outages, latency and the weight limit are kept.
        """
        with self._lock:
            self._reset_state()

    def stats(self) -> FakeStats:
        """A snapshot of the counters."""
        with self._lock:
            return FakeStats(
                requests=self._requests,
                by_path=dict(self._by_path),
                by_status=dict(self._by_status),
                rate_limited=self._rate_limited,
                banned=self._banned,
                chaos_faults=dict(self._chaos_faults),
                storm_rate_limited=self._storm_rate_limited,
                max_window_weight=self._max_window_weight,
                window_weights=[(float(wid * self._window_s), w) for wid, w in self._window_weights.items()],
                log=list(self._log),
            )

    @property
    def symbols(self) -> list[FakeSymbol]:
        """The universe (including symbols not listed yet at now)."""
        return list(self._market.symbols.values())

    def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, closed_only: bool = True
    ) -> list[list]:
        """Oracle: the 12-field arrays the API returns for candles opening in
        ``[start_ms, end_ms)``; ``closed_only`` drops the still-open candle."""
        now = self.now_ms()
        sym = self._market.symbols.get(symbol)
        if sym is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        iv = Interval(interval)
        bounds = self._market.bounds(sym, iv, now)
        if bounds is None or end_ms <= start_ms:
            return []
        first, last = bounds
        opens = self._market.forward(iv, max(first, iv.ceil(start_ms)), min(last, end_ms - 1), None)
        rows = self._market.rows(sym, iv, opens, now)
        if closed_only and rows and rows[-1][6] >= now:
            rows.pop()
        return [_row_list(row) for row in rows]

    # -- request handling --------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        """Answer one HTTP request (called from handler threads)."""
        parts = urlsplit(target)
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(key, value)
        if parts.path.startswith(CONTROL_PREFIX):
            return self._control(method, parts.path, params, body)
        micro = (headers.get("X-MBX-TIME-UNIT") or "").upper() == "MICROSECOND"
        return self._api(method, parts.path, params, micro)

    def _api(self, method: str, path: str, params: dict[str, str], micro: bool) -> _Reply:
        """The API pipeline: 451, bans, storms, faults, weight, chaos, then the endpoint."""
        weight = request_weight(path, params) if method == "GET" else 0
        with self._lock:
            reply, fault, charged, chaos = self._admit(path, weight)
            now = self._now_locked()
            latency = self._latency_s
        if reply is None:
            reply = self._endpoint(method, path, params, micro, now)
            if fault is not None:
                reply = self._apply_fault(fault, reply)
        with self._lock:
            used = self._used
            self._record(path, params, 0 if reply.drop else reply.status, charged, used, chaos)
        reply.headers.append((self._weight_header(), str(used)))
        reply.headers.append(("Content-Type", JSON_CONTENT_TYPE))
        reply.delay_s += latency
        return reply

    def _weight_header(self) -> str:
        num, unit = _window_label(self._window_s)
        return f"X-MBX-USED-WEIGHT-{num}{unit[0]}"

    def _admit(self, path: str, weight: int) -> tuple[_Reply | None, Fault | None, int, str | None]:
        """Decide, under the lock, whether the request is refused before reaching the endpoint.

        Returns (refusal or None, fault to apply to the normal answer or None, weight charged,
        chaos kind or ``RATE_LIMIT_STORM`` or None).
        """
        t = self._clock()
        window_id = int(t // self._window_s)
        if window_id != self._window_id:
            self._window_id, self._used = window_id, 0
        self._touch_window()
        if self._restricted:
            return _Reply(451, _error_body(0, MSG_RESTRICTED)), None, 0, None
        if t < self._banned_until:
            return self._ban_reply(t), None, 0, None
        if t < self._retry_until and self._grace_left > 0:
            self._grace_left -= 1  # was in flight when the 429 went out: another 429, no ban
            num, unit = _window_label(self._window_s)
            retry = max(1, math.ceil(self._retry_until - t))
            return (
                _Reply(
                    429,
                    _error_body(
                        -1003,
                        f"Too much request weight used; current limit is "
                        f"{self._weight_limit} request weight per {num} {unit}.",
                    ),
                    [("Retry-After", str(retry))],
                ),
                None,
                0,
                None,
            )
        if t < self._retry_until:
            length = min(self._ban_s * 2**self._ban_count, MAX_BAN_S)
            self._ban_count += 1
            self._banned_until = t + length
            return self._ban_reply(t), None, 0, None
        if t < self._storm_until:
            return self._rate_limit_reply(t, self._storm_retry_s), None, 0, RATE_LIMIT_STORM
        fault = self._peek_fault(path)
        if fault is not None and fault.kind in ("drop", "rate_limit", "ban"):
            self._consume_fault(fault)
            return self._fault_refusal(fault, t), None, 0, None
        if self._used + weight > self._weight_limit:
            retry = max(1, math.ceil((window_id + 1) * self._window_s - t))
            return self._rate_limit_reply(t, retry), None, 0, None
        chaos = None
        if fault is not None:
            self._consume_fault(fault)
        elif self._chaos is not None:
            chaos = self._chaos.draw(path)
            if chaos == "malformed":  # the real body, cut; no weight, like every chaos failure
                return None, Fault.malformed(), 0, chaos
            if chaos == "slow":  # a normal (charged) answer, only late
                fault = Fault.slow(self._chaos.slow_s)
            elif chaos is not None:
                return self._chaos_reply(chaos), None, 0, chaos
        self._used += weight
        self._touch_window()
        return None, fault, weight, chaos

    def _touch_window(self) -> None:
        """Record the current window's weight (every window that saw traffic)."""
        assert self._window_id is not None
        self._window_weights[self._window_id] = self._used
        self._max_window_weight = max(self._max_window_weight, self._used)
        while len(self._window_weights) > self._max_log:
            del self._window_weights[next(iter(self._window_weights))]

    def _peek_fault(self, path: str) -> Fault | None:
        for fault, _ in self._faults:
            if fault.path is None or fault.path == path:
                return fault
        return None

    def _consume_fault(self, fault: Fault) -> None:
        for i, entry in enumerate(self._faults):
            if entry[0] is fault:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._faults[i]
                return

    def _fault_refusal(self, fault: Fault, t: float) -> _Reply:
        """The answer to a ``drop``, ``rate_limit`` or ``ban`` fault."""
        if fault.kind == "drop":
            return _Reply(0, drop=True)
        if fault.kind == "rate_limit":
            return self._rate_limit_reply(t, fault.retry_after_s)
        self._banned_until = max(self._banned_until, t + fault.retry_after_s)
        return self._ban_reply(t)

    def _chaos_reply(self, kind: str) -> _Reply:
        """The refusal of a failing chaos kind (``5xx``, ``timeout``, ``busy``, ``drop``).

        Nothing here arms the 418 rule: these are Binance-side failures, not rate limits.
        """
        assert self._chaos is not None
        if kind == "drop":
            return _Reply(0, drop=True)
        if kind == "timeout":  # Binance's backend timeout: 504 with -1007, status unknown
            return _Reply(504, _error_body(-1007, MSG_TIMEOUT))
        if kind == "busy":
            return _Reply(503, _error_body(-1008, MSG_BUSY))
        status = sorted(_CHAOS_5XX)[self._chaos.rng.randrange(len(_CHAOS_5XX))]
        return _Reply(status, _error_body(*_CHAOS_5XX[status]))

    def _rate_limit_reply(self, t: float, retry_after_s: int) -> _Reply:
        """A 429 that arms the ban rule until ``Retry-After`` has passed."""
        if t >= self._retry_until:
            self._grace_left = self._ban_grace
        self._retry_until = max(self._retry_until, t + retry_after_s)
        num, unit = _window_label(self._window_s)
        msg = (
            f"Too much request weight used; current limit is {self._weight_limit} request "
            f"weight per {num} {unit}. Please use WebSocket Streams for live updates to avoid "
            "polling the API."
        )
        return _Reply(429, _error_body(-1003, msg), [("Retry-After", str(retry_after_s))])

    def _ban_reply(self, t: float) -> _Reply:
        """A 418 for the current ban."""
        until_ms = int(self._banned_until * 1000)
        msg = (
            f"Way too much request weight used; IP banned until {until_ms}. Please use "
            "WebSocket Streams for live updates to avoid bans."
        )
        retry = max(1, math.ceil(self._banned_until - t))
        return _Reply(418, _error_body(-1003, msg), [("Retry-After", str(retry))])

    @staticmethod
    def _apply_fault(fault: Fault, reply: _Reply) -> _Reply:
        """Turn the normal answer into a ``status``, ``malformed`` or ``slow`` fault's answer."""
        if fault.kind == "status":
            code = -1000 if fault.code is None else fault.code
            return _Reply(fault.status, _error_body(code, fault.msg or MSG_UNKNOWN))
        if fault.kind == "malformed":
            return _Reply(200, reply.body[: max(1, len(reply.body) // 2)])
        reply.delay_s += fault.delay_s
        return reply

    def _record(
        self, path: str, params: dict[str, str], status: int, weight: int, used: int, chaos: str | None = None
    ) -> None:
        self._requests += 1
        self._by_path[path] = self._by_path.get(path, 0) + 1
        self._by_status[status] = self._by_status.get(status, 0) + 1
        if status == 429:
            self._rate_limited += 1
        elif status == 418:
            self._banned += 1
        if chaos == RATE_LIMIT_STORM:
            self._storm_rate_limited += 1
        elif chaos is not None:
            self._chaos_faults[chaos] = self._chaos_faults.get(chaos, 0) + 1
        self._log.append(RequestRecord(time.monotonic(), path, dict(params), status, weight, used, chaos))

    # -- endpoints ---------------------------------------------------------------------------

    def _endpoint(self, method: str, path: str, params: dict[str, str], micro: bool, now: int) -> _Reply:
        """Run the endpoint for ``path``; Binance errors become 4xx JSON answers."""
        handler = _ENDPOINTS.get(path)
        if handler is None:
            return _Reply(404, _error_body(-1000, f"Unknown endpoint: {path}"))
        if method != "GET":
            return _Reply(405, _error_body(-1000, f"Method {method} not allowed for {path}"))
        try:
            body = handler(self, params, micro, now)
        except _ApiError as exc:
            return _Reply(exc.status, _error_body(exc.code, exc.msg))
        return _Reply(200, body)

    def _ep_ping(self, params: dict[str, str], micro: bool, now: int) -> bytes:
        return b"{}"

    def _ep_time(self, params: dict[str, str], micro: bool, now: int) -> bytes:
        return _json_bytes({"serverTime": now * 1000 if micro else now})

    def _ep_exchange_info(self, params: dict[str, str], micro: bool, now: int) -> bytes:
        status = params.get("symbolStatus") or None
        if status is not None and status not in _STATUSES:
            raise _ApiError(-1122, "Invalid symbolStatus.")
        chosen = self._chosen_symbols(params, now)
        if status is not None:
            if chosen is not None:
                raise _ApiError(-1128, "Combination of optional parameters invalid.")
            chosen = [s for s in self._market.visible(now) if s.status_at(now) == status]
        if chosen is None:
            chosen = self._market.visible(now)
        num, unit = _window_label(self._window_s)
        data = {
            "timezone": "UTC",
            "serverTime": now * 1000 if micro else now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": unit,
                    "intervalNum": num,
                    "limit": self._weight_limit,
                },
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
            ],
            "exchangeFilters": [],
            "symbols": [self._market.symbol_info(sym, now) for sym in chosen],
        }
        return _json_bytes(data)

    def _chosen_symbols(self, params: dict[str, str], now: int) -> list[FakeSymbol] | None:
        """Symbols named by ``symbol`` or ``symbols`` (-1121 if unknown); None if neither."""
        single = params.get("symbol")
        names = _symbols_param(params)
        if single is not None and names is not None:
            raise _ApiError(-1128, "Combination of optional parameters invalid.")
        if single is not None:
            names = [single]
        if names is None:
            return None
        chosen = []
        for name in names:
            sym = self._market.lookup(name, now)
            if sym is None:
                raise _ApiError(-1121, "Invalid symbol.")
            chosen.append(sym)
        return chosen

    def _ep_ticker(self, params: dict[str, str], micro: bool, now: int) -> bytes:
        kind = params.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise _illegal("type", "FULL, MINI")
        status = params.get("symbolStatus") or None
        if status is not None and status not in _STATUSES:
            raise _ApiError(-1122, "Invalid symbolStatus.")
        chosen = self._chosen_symbols(params, now)
        single = params.get("symbol") is not None
        if chosen is None:
            chosen = self._market.visible(now)
        if status is not None:
            if single and chosen[0].status_at(now) != status:
                raise _ApiError(-1220, "The symbol's status does not match the requested symbolStatus.")
            chosen = [s for s in chosen if s.status_at(now) == status]
        tickers = [self._market.ticker(sym, now, kind == "MINI") for sym in chosen]
        if micro:
            for ticker in tickers:
                ticker["openTime"] *= 1000
                ticker["closeTime"] *= 1000
        return _json_bytes(tickers[0] if single else tickers)

    def _ep_klines(self, params: dict[str, str], micro: bool, now: int) -> bytes:
        name = params.get("symbol")
        if not name:
            raise _mandatory("symbol")
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        start = _long_param(params, "startTime")
        end = _long_param(params, "endTime")
        limit = _long_param(params, "limit")
        if interval not in INTERVALS:
            raise _ApiError(-1120, "Invalid interval.")
        if limit is None:
            limit = 500
        elif not 1 <= limit <= 1000:
            raise _ApiError(-1130, MSG_INVALID_PARAM)
        zone = params.get("timeZone")
        if zone is not None and zone != "" and not _zero_offset(zone):
            raise _ApiError(-1130, MSG_INVALID_PARAM)
        if start is not None and end is not None and start > end:
            raise _ApiError(-1023, "Start time is greater than end time.")
        sym = self._market.lookup(name, now)
        if sym is None:
            raise _ApiError(-1121, "Invalid symbol.")
        if micro:  # open_us >= start_us  <=>  open_ms >= ceil(start_us / 1000)
            start = None if start is None else -(-start // 1000)
            end = None if end is None else end // 1000
        iv = Interval(interval)
        opens = self._market.select(sym, iv, now, start, end, limit)
        return ("[" + ",".join(self._market.rows_json(sym, iv, opens, now, micro)) + "]").encode()

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, method: str, path: str, params: dict[str, str], body: bytes) -> _Reply:
        """``/fake/*``: drive the fake from another process (no weight, not in stats)."""
        try:
            data = self._control_action(method, path, params, body)
        except (KeyError, ValueError, TypeError) as exc:
            return _Reply(
                400,
                _json_bytes({"error": f"{type(exc).__name__}: {exc}"}),
                [("Content-Type", JSON_CONTENT_TYPE)],
            )
        if data is None:
            return _Reply(
                404,
                _json_bytes({"error": f"unknown control call {method} {path}"}),
                [("Content-Type", JSON_CONTENT_TYPE)],
            )
        return _Reply(200, _json_bytes(data), [("Content-Type", JSON_CONTENT_TYPE)])

    def _control_action(
        self, method: str, path: str, params: dict[str, str], body: bytes
    ) -> dict[str, Any] | None:
        action = path[len(CONTROL_PREFIX) :]
        if method == "GET" and action == "stats":
            return self.stats().to_json(include_log=params.get("log") in ("1", "true"))
        if method != "POST":
            return None
        if action == "now":
            self.set_now(int(params["ms"]))
        elif action == "advance":
            self.advance(int(params["ms"]))
        elif action == "reset":
            self.reset()
        elif action == "faults":
            items = json.loads(body or b"[]")
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of faults")
            self.inject(*(Fault(**item) for item in items))
        elif action == "chaos":
            self.set_chaos(float(params["rate"]), **_chaos_options(params))
        elif action == "storm":
            self.rate_limit_storm(float(params["seconds"]), int(params.get("retry_after", "1")))
        elif action == "restricted":
            self.set_restricted(params.get("on", "1") in ("1", "true"))
        elif action == "latency":
            self.set_latency(float(params["s"]))
        elif action == "weight":
            window = params.get("window_s")
            self.set_weight_limit(int(params["limit"]), None if window is None else int(window))
        else:
            return None
        return {"ok": True, "now": self.now_ms()}


def _chaos_options(params: dict[str, str]) -> dict[str, Any]:
    """``set_chaos`` keywords from ``/fake/chaos`` query parameters (``kinds`` and ``paths``
    comma-separated; ``paths=*`` means every API path)."""
    options: dict[str, Any] = {}
    if params.get("kinds"):
        options["kinds"] = [kind.strip() for kind in params["kinds"].split(",") if kind.strip()]
    if "seed" in params:
        options["seed"] = int(params["seed"])
    if "paths" in params:
        raw = params["paths"].strip()
        options["paths"] = None if raw in ("", "*") else [p.strip() for p in raw.split(",")]
    if "slow_s" in params:
        options["slow_s"] = float(params["slow_s"])
    return options


_ENDPOINTS: dict[str, Callable[[FakeExchange, dict[str, str], bool, int], bytes]] = {
    "/api/v3/ping": FakeExchange._ep_ping,
    "/api/v3/time": FakeExchange._ep_time,
    "/api/v3/exchangeInfo": FakeExchange._ep_exchange_info,
    "/api/v3/ticker/24hr": FakeExchange._ep_ticker,
    "/api/v3/klines": FakeExchange._ep_klines,
    "/api/v3/uiKlines": FakeExchange._ep_klines,
}


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    exchange: FakeExchange

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up early (timeouts, tests) are normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 keep-alive adapter around :meth:`FakeExchange._dispatch`."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeBinance/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        exchange = self.server.exchange
        with exchange._lock:
            exchange._connections.add(self.connection)

    def finish(self) -> None:
        exchange = self.server.exchange
        with exchange._lock:
            exchange._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        reply = self.server.exchange._dispatch(method, self.path, self.headers, body)
        if reply.drop:
            self.close_connection = True
            return
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client went away (e.g. it timed out during latency)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the per-request stderr log."""


def serve(*, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Run a :class:`FakeExchange` in the foreground until SIGINT/SIGTERM.

    ``options`` go to :class:`FakeExchange`, except ``chaos_rate``, ``chaos_seed`` and
    ``chaos_kinds``, which go to :meth:`FakeExchange.set_chaos` (rate 0 or None: no chaos);
    ``follow_wall_clock`` defaults to True here so the exchange's time advances like a real
    one. Prints one line with the base URL (and, with chaos, a second one describing it).
    """
    chaos_rate = float(options.pop("chaos_rate", None) or 0.0)
    chaos_seed = int(options.pop("chaos_seed", None) or 0)
    chaos_kinds = options.pop("chaos_kinds", None) or DEFAULT_CHAOS_KINDS
    if isinstance(chaos_kinds, str):
        chaos_kinds = [kind.strip() for kind in chaos_kinds.split(",") if kind.strip()]
    chaos_kinds = tuple(dict.fromkeys(chaos_kinds))
    options.setdefault("follow_wall_clock", True)
    exchange = FakeExchange(host=host, port=port, **options)
    exchange.set_chaos(chaos_rate, kinds=chaos_kinds, seed=chaos_seed)  # bad values raise here
    stopping = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stopping.set())
    try:
        with exchange:
            print(f"Fake Binance exchange listening on {exchange.base_url}", flush=True)
            if chaos_rate > 0:
                print(
                    f"Chaos: {chaos_rate * 100:g}% of /api/v3/klines requests fail "
                    f"({', '.join(chaos_kinds)}; seed {chaos_seed})",
                    flush=True,
                )
            while not stopping.wait(0.2):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
