"""A fake Kraken: the public REST endpoints ``/0/public/{Time,AssetPairs,Ticker,OHLC,Trades}``.

Kraken's candles are made of its trades, and so are the fake's: every pair trades a
deterministic tape (a pure function of pair and time: :meth:`FakeKraken.trades_between`), about
``trades_per_hour`` trades an hour (scaled down for an illiquid pair), each at the shared
market model's price path (:mod:`cryptolake.testing.market`, less its sub-minute noise) at its
millisecond. Many minutes have no trade. The first trade is at the pair's ``listed_ms``; nothing trades at or after its
``delisted_ms``, during an exchange-wide outage, or after the venue's "now".

``Trades`` pages through that tape as Kraken does (at most 1000 trades after a ``since``
cursor in nanoseconds, and ``last``, the cursor of the next page). ``OHLC`` aggregates the same
tape, so the two endpoints agree by construction; as Kraken's, it serves only the newest 720
candles of an interval, whatever ``since`` asks, and its last entry is always the current,
uncommitted candle (a flat one, count 0, while it has no trade). Slots without a trade have no
candle, unless ``flat_empty_candles`` (what ccxt's sample answer shows: a flat candle with count
0).

Kraken answers errors with HTTP 200 and a non-empty ``error`` list (``EQuery:Unknown asset
pair``, ``EGeneral:Too many requests``, ``EService:Unavailable``); so does the fake. Its rate
limit is two sets of token buckets: one per IP for ``Time``, ``AssetPairs`` and ``Ticker``
(``rate_per_s``, ``burst``), and one per pair for ``OHLC`` and ``Trades``
(``pair_rate_per_s``, ``pair_burst``), which Kraken limits per IP and pair. A request over its
bucket gets ``EGeneral:Too many requests`` (counted in :attr:`VenueStats.rate_limited`);
:attr:`VenueStats.max_in_window` is the most requests any one bucket admitted in a second.

Injected :class:`~cryptolake.testing.venue.VenueFault` kinds: ``server_error`` (HTTP
``status``, an HTML page as a proxy in front of Kraken sends), ``unavailable`` and ``busy``
(``EService:Unavailable`` / ``EService:Busy``), ``rate_limit`` (``EGeneral:Too many
requests``), ``api_rate_limit`` (``EAPI:Rate limit exceeded``), ``bad_json``, ``drop``. The
error-list kinds answer HTTP 200, as Kraken does, whatever the fault's ``status``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from cryptolake.schema import DAY_MS, MINUTE_MS, Interval
from cryptolake.testing.market import _GOLDEN, _U53, _WAVES, _seed
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.venue import FakeVenue, VenueFault, json_reply
from cryptolake.testing.wire import _Reply
from cryptolake.timeutils import to_ms

#: Kraken's OHLC intervals in minutes (10080 and 21600 too: the fake serves every one).
OHLC_MINUTES = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
#: Candles an OHLC answer holds at most: the newest, the last of them the open one.
OHLC_WINDOW = 720
#: Trades a Trades answer holds at most (its ``count`` parameter may ask for fewer).
TRADES_PAGE = 1000
#: Paths whose rate limit is per IP and pair.
PAIR_LIMITED = ("/0/public/OHLC", "/0/public/Trades")

#: Pair names of Kraken's legacy pairs: ``base + quote`` asset codes. Newer pairs are named by
#: their altname (``SOLUSD``, and ``XDGUSD`` although its base is ``XXDG``).
LEGACY_PAIR_NAMES = {
    "XBTUSD": "XXBTZUSD",
    "ETHUSD": "XETHZUSD",
    "XRPUSD": "XXRPZUSD",
    "MLNUSD": "XMLNZUSD",
    "ETHXBT": "XETHXXBT",
    "USDTUSD": "USDTZUSD",
}
#: Kraken's own names (``wsname`` parts) of the legacy asset codes of the default pairs; any
#: other code is its own name.
_ALTNAMES = {"XXBT": "XBT", "XETH": "ETH", "XXRP": "XRP", "XXDG": "XDG", "XMLN": "MLN", "ZUSD": "USD"}

_MINUTE_US = MINUTE_MS * 1000
_MAX_PER_MINUTE = 1023  # trade ids are minute * 1024 + rank
_SCAN_MINUTES = 4096  # minutes a first pass of a look-up for some trades draws
_MAX_SCAN_MINUTES = 1 << 20  # minutes one pass draws at most (two years)


def default_kraken_symbols() -> list[FakeSymbol]:
    """The fake Kraken's pairs, by Kraken's altnames with Kraken's asset codes: legacy pairs
    (``XBTUSD`` of ``XXBT``/``ZUSD``), newer ones (``SOLUSD``), ``XDGUSD`` (DOGE), a BTC quote
    (``ETHXBT``), a stablecoin, a 2025 listing (``NEWUSD``), a delisting (``LUNAUSD``) and an
    illiquid pair with mostly empty minutes (``MLNUSD``, about one trade an hour)."""
    t = to_ms
    return [
        FakeSymbol(
            "XBTUSD", "XXBT", "ZUSD", t("2013-10-06T21:34:15Z"), base_price=30_000.0, volume_scale=100.0
        ),
        FakeSymbol(
            "ETHUSD", "XETH", "ZUSD", t("2015-08-07T15:10:00Z"), base_price=2_000.0, volume_scale=23.0
        ),
        FakeSymbol("SOLUSD", "SOL", "ZUSD", t("2021-06-10T14:02:30Z"), base_price=60.0, volume_scale=14.0),
        FakeSymbol("XRPUSD", "XXRP", "ZUSD", t("2017-05-18T08:00:00Z"), base_price=0.5, volume_scale=9.0),
        FakeSymbol("XDGUSD", "XXDG", "ZUSD", t("2019-08-20T10:00:00Z"), base_price=0.1, volume_scale=5.5),
        FakeSymbol("ADAUSD", "ADA", "ZUSD", t("2018-09-27T12:00:00Z"), base_price=0.4, volume_scale=1.3),
        FakeSymbol(
            "USDTUSD",
            "USDT",
            "ZUSD",
            t("2020-04-01T00:00:00Z"),
            base_price=1.0,
            volume_scale=37.0,
            volatility=0.002,
        ),
        FakeSymbol("ETHXBT", "XETH", "XXBT", t("2015-08-07T15:10:00Z"), base_price=0.06, volume_scale=1.0),
        FakeSymbol("NEWUSD", "NEW", "ZUSD", t("2025-06-15T10:37:00Z"), base_price=1.5, volume_scale=0.5),
        FakeSymbol(
            "LUNAUSD",
            "LUNA",
            "ZUSD",
            t("2021-03-04T16:00:00Z"),
            delisted_ms=t("2022-05-13T00:00:00Z"),
            base_price=50.0,
            volume_scale=2.1,
        ),
        FakeSymbol("MLNUSD", "XMLN", "ZUSD", t("2017-06-01T12:00:00Z"), base_price=20.0, volume_scale=0.05),
    ]


@dataclass(frozen=True)
class Trade:
    """One trade of the fake's tape: time in µs since the epoch, price and volume as they are
    sent (rounded to the pair's decimals), side ``b``/``s``, type ``m``/``l`` and its id."""

    time_us: int
    price: float
    volume: float
    side: str
    kind: str
    trade_id: int

    @property
    def time_ms(self) -> int:
        return self.time_us // 1000


@dataclass(frozen=True)
class FakeCandle:
    """A candle of the fake's OHLC: open time (ms), prices, vwap, volume, trade count."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    vwap: float
    volume: float
    count: int


@dataclass
class _Bucket:
    """A token bucket and the times of the requests it admitted in the last window."""

    tokens: float
    refilled: float
    admitted: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class _Tape:
    """Trades as columns, oldest first: time (µs), price and volume (as sent), the hash the
    side and type come from, the trade id."""

    time_us: np.ndarray
    price: np.ndarray
    volume: np.ndarray
    draw: np.ndarray
    trade_id: np.ndarray

    def __len__(self) -> int:
        return len(self.time_us)

    def take(self, chosen: Any) -> _Tape:
        return _Tape(*(column[chosen] for column in self._columns()))

    def trades(self) -> list[Trade]:
        return [
            Trade(int(t), float(p), float(v), "b" if h & 1 else "s", "m" if h & 2 else "l", int(i))
            for t, p, v, h, i in zip(*(column.tolist() for column in self._columns()), strict=True)
        ]

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.time_us, self.price, self.volume, self.draw, self.trade_id)

    @staticmethod
    def concat(parts: list[_Tape]) -> _Tape:
        if not parts:
            return _EMPTY_TAPE
        return _Tape(
            *(np.concatenate(columns) for columns in zip(*(p._columns() for p in parts), strict=True))
        )


_EMPTY_TAPE = _Tape(
    np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.uint64), np.empty(0, np.int64)
)


class _Pair:
    """One pair: its names, its price decimals and the trades its hash draws."""

    def __init__(self, sym: FakeSymbol, series: Any, trades_per_hour: float) -> None:
        self.sym = sym
        self.altname = sym.symbol
        self.name = LEGACY_PAIR_NAMES.get(sym.symbol, sym.symbol)
        base, quote = (_ALTNAMES.get(code, code) for code in (sym.base_asset, sym.quote_asset))
        self.wsname = f"{base}/{quote}"
        self.series = series
        self.decimals = max(0, round(-math.log10(series.tick)))
        self.seed = _seed("kraken-trades:" + sym.symbol)
        self.listing_minute = sym.listed_ms // MINUTE_MS
        rate = trades_per_hour * min(1.0, sym.volume_scale) / 60.0  # trades a minute
        # Cumulative Poisson probabilities of 0, 1, 2, ... trades in a minute.
        cdf: list[float] = []
        p, total = math.exp(-rate), 0.0
        while len(cdf) <= _MAX_PER_MINUTE and total < 1.0 - 1e-12:
            total += p
            cdf.append(total)
            p *= rate / len(cdf)
        self._cdf = np.array(cdf)

    def price_text(self, price: float) -> str:
        return f"{price:.{self.decimals}f}"

    def minutes(self, first: int, stop: int) -> _Tape:
        """Every trade the hash draws in the minutes ``[first, stop)``, oldest first: a
        Poisson number of trades a minute at hashed microseconds (in the listing minute only
        those after the listing, and one at the listing itself)."""
        index = np.arange(first, stop, dtype=np.uint64)
        root = _mix64_array(np.uint64(self.seed) ^ (index * np.uint64(_GOLDEN)))
        uniform = (root >> np.uint64(11)).astype(np.float64) * _U53
        counts = np.minimum(np.searchsorted(self._cdf, uniform, side="right"), _MAX_PER_MINUTE)
        minute = np.repeat(index, counts)
        rank = np.arange(len(minute)) - np.repeat(np.cumsum(counts) - counts, counts)
        draw = _mix64_array(np.repeat(root, counts) + (rank + 1).astype(np.uint64) * np.uint64(_GOLDEN))
        time_us = minute.astype(np.int64) * _MINUTE_US + (draw % np.uint64(_MINUTE_US)).astype(np.int64)
        if first <= self.listing_minute < stop:
            listed_us = self.sym.listed_ms * 1000
            keep = (minute != self.listing_minute) | (time_us > listed_us)
            time_us = np.append(time_us[keep], listed_us)
            draw = np.append(draw[keep], root[self.listing_minute - first])
            minute = np.append(minute[keep], np.uint64(self.listing_minute))
        order = np.argsort(time_us, kind="stable")
        time_us, draw, minute = time_us[order], draw[order], minute[order].astype(np.int64)
        starts = np.flatnonzero(np.diff(minute, prepend=-1))
        rank = np.arange(len(minute)) - np.repeat(starts, np.diff(np.append(starts, len(minute))))
        size = (
            self.sym.volume_scale
            * 10.0
            * (0.1 + 1.9 * ((draw >> np.uint64(24)) & np.uint64(0xFFFF)) / 65536.0)
        )
        return _Tape(
            time_us,
            np.round(_model_prices(self.series, time_us // 1000), self.decimals),
            np.maximum(1e-8, np.round(size / self.sym.base_price, 8)),
            draw,
            minute * (_MAX_PER_MINUTE + 1) + rank,
        )


class FakeKraken(FakeVenue):
    """Kraken's public REST market data over HTTP on 127.0.0.1 (see the module docstring).

    Args:
        symbols: the pairs (FakeSymbol by altname, with Kraken's asset codes); default
            :func:`default_kraken_symbols`.
        now: the venue's clock (frozen unless ``follow_wall_clock``).
        rate_per_s, burst: the per-IP bucket of ``Time``, ``AssetPairs`` and ``Ticker``.
        pair_rate_per_s, pair_burst: each pair's bucket of ``OHLC`` and ``Trades``.
        latency_s: added to every answer.
        outages: exchange-wide windows ``[start_ms, end_ms)`` without trades.
        trades_per_hour: a liquid pair's mean trade rate (scaled by ``volume_scale`` below 1).
        flat_empty_candles: OHLC sends a flat candle with count 0 for a slot without trades
            (as ccxt's sample answer shows) instead of none.
        host, port, clock, max_log: as :class:`~cryptolake.testing.venue.FakeVenue`'s.
    """

    exchange = "kraken"

    def __init__(
        self,
        *,
        symbols: list[FakeSymbol] | None = None,
        now: int | datetime | None = None,
        follow_wall_clock: bool = False,
        rate_per_s: float = 1.0,
        burst: int = 3,
        pair_rate_per_s: float = 1.0,
        pair_burst: int = 3,
        latency_s: float = 0.0,
        outages: Iterable[tuple[int, int]] | None = None,
        trades_per_hour: float = 20.0,
        flat_empty_candles: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        max_log: int = 100_000,
    ) -> None:
        if trades_per_hour <= 0 or trades_per_hour > 60 * 200:
            raise ValueError("trades_per_hour must be in (0, 12000]")
        self._pair_rate, self._pair_burst = pair_rate_per_s, pair_burst
        self._request_bucket = threading.local()
        super().__init__(
            symbols=default_kraken_symbols() if symbols is None else symbols,
            now=now,
            follow_wall_clock=follow_wall_clock,
            rate_per_s=rate_per_s,
            burst=burst,
            latency_s=latency_s,
            outages=outages,
            host=host,
            port=port,
            clock=clock,
            max_log=max_log,
        )
        self.flat_empty_candles = flat_empty_candles
        self._pairs: dict[str, _Pair] = {}
        for sym in self._market.symbols.values():
            pair = _Pair(sym, self._market._series[sym.symbol], trades_per_hour)
            self._pairs[pair.altname.upper()] = self._pairs[pair.name.upper()] = pair

    def _reset_state(self) -> None:
        super()._reset_state()
        self._pair_buckets: dict[str, _Bucket] = {}

    def set_pair_rate_limit(self, rate_per_s: float, burst: int) -> None:
        """Change every pair's OHLC/Trades bucket."""
        with self._lock:
            self._pair_rate, self._pair_burst = rate_per_s, burst
            for bucket in self._pair_buckets.values():
                bucket.tokens = min(bucket.tokens, float(burst))

    # -- the tape ----------------------------------------------------------------------------

    def pair(self, name: str) -> _Pair | None:
        """The pair named ``name`` (altname or Kraken's pair name, any case), listed or not."""
        return self._pairs.get(name.upper())

    def trades_between(self, name: str, start_ms: int, end_ms: int) -> list[Trade]:
        """Every trade of pair ``name`` in ``[start_ms, end_ms)``, oldest first (the venue's
        clock is not applied: ask up to :meth:`now_ms` for what it has served)."""
        pair = self.pair(name)
        if pair is None:
            raise KeyError(name)
        return self._tape(pair, start_ms * 1000, end_ms * 1000).trades()

    def candles(
        self, name: str, interval: str, start_ms: int, end_ms: int, now: int | None = None
    ) -> list[FakeCandle]:
        """The candles (slots with trades) opening in ``[start_ms, end_ms)`` from the trades
        before ``now`` (default: the venue's clock): the tape aggregated per slot, as OHLC
        sends them."""
        pair = self.pair(name)
        if pair is None:
            raise KeyError(name)
        step = Interval(interval).fixed_ms
        if step is None:
            raise ValueError("Kraken's candles are fixed intervals")
        first = -(-start_ms // step) * step
        return self._aggregate(pair, step, first, end_ms, self.now_ms() if now is None else now)

    def _tape(self, pair: _Pair, start_us: int, end_us: int, limit: int | None = None) -> _Tape:
        """The pair's trades with ``start_us <= time < end_us``, oldest first; with ``limit``,
        only the first ``limit`` of them."""
        sym = pair.sym
        start_us = max(start_us, sym.listed_ms * 1000)
        if sym.delisted_ms is not None:
            end_us = min(end_us, sym.delisted_ms * 1000)
        minute, stop = start_us // _MINUTE_US, (end_us - 1) // _MINUTE_US + 1
        span = _SCAN_MINUTES if limit is not None else _MAX_SCAN_MINUTES
        parts: list[_Tape] = []
        found = 0
        while minute < stop and (limit is None or found < limit):
            upto = min(stop, minute + span)
            tape = pair.minutes(minute, upto)
            t = tape.time_us
            keep = (t >= start_us) & (t < end_us)
            for s, e in self._market.outages:
                keep &= (t < s * 1000) | (t >= e * 1000)
            parts.append(tape.take(keep))
            found += len(parts[-1])
            minute = upto
            span = min(2 * span, _MAX_SCAN_MINUTES)
        tape = _Tape.concat(parts)
        return tape if limit is None else tape.take(slice(0, limit))

    def _tape_before(self, pair: _Pair, end_us: int, count: int) -> _Tape:
        """The last ``count`` trades before ``end_us``, oldest first."""
        parts: list[_Tape] = []
        found = 0
        first_us = pair.sym.listed_ms * 1000
        hi, span_us = end_us, _SCAN_MINUTES * _MINUTE_US
        while hi > first_us and found < count:
            lo = max(first_us, hi - span_us)
            parts.insert(0, self._tape(pair, lo, hi))
            found += len(parts[0])
            hi, span_us = lo, min(2 * span_us, _MAX_SCAN_MINUTES * _MINUTE_US)
        tape = _Tape.concat(parts)
        return tape.take(slice(max(0, len(tape) - count), None))

    def _aggregate(self, pair: _Pair, step: int, first: int, stop: int, now: int) -> list[FakeCandle]:
        """Candles of the slots of ``step`` ms opening in ``[first, stop)`` (``first`` on the
        grid) that have trades before ``now``."""
        if first >= stop:
            return []
        end = min(stop - 1 - (stop - 1) % step + step, now)
        tape = self._tape(pair, first * 1000, end * 1000)
        if not len(tape):
            return []
        time_ms = tape.time_us // 1000
        slots = time_ms - time_ms % step
        starts = np.flatnonzero(np.diff(slots, prepend=slots[0] - 1))
        ends = np.append(starts[1:], len(slots)) - 1
        price, volume = tape.price, tape.volume
        volumes = np.add.reduceat(volume, starts)
        columns = (
            slots[starts],
            price[starts],
            np.maximum.reduceat(price, starts),
            np.minimum.reduceat(price, starts),
            price[ends],
            np.add.reduceat(price * volume, starts) / volumes,
            volumes,
            ends - starts + 1,
        )
        return [
            FakeCandle(int(t), o, h, lo, c, vwap, v, int(n))
            for t, o, h, lo, c, vwap, v, n in zip(*(column.tolist() for column in columns), strict=True)
        ]

    # -- requests ----------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        split = urlsplit(target)
        path = unquote(split.path)
        bucket = None
        if path in PAIR_LIMITED:
            name = dict(parse_qsl(split.query)).get("pair", "").upper()
            pair = self._pairs.get(name)
            bucket = pair.name if pair is not None else name
        self._request_bucket.key = bucket
        try:
            return super()._dispatch(method, target, headers, body)
        finally:
            self._request_bucket.key = None

    def _admit(self, t: float) -> bool:
        """Take a token from the request's bucket: its pair's for OHLC and Trades, the IP's
        otherwise (the caller holds the lock)."""
        key = getattr(self._request_bucket, "key", None)
        if key is None:
            return super()._admit(t)
        bucket = self._pair_buckets.get(key)
        if bucket is None:
            bucket = self._pair_buckets[key] = _Bucket(float(self._pair_burst), t)
        bucket.tokens = min(float(self._pair_burst), bucket.tokens + (t - bucket.refilled) * self._pair_rate)
        bucket.refilled = t
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        window = bucket.admitted
        window.append(t)
        while window and window[0] <= t - self.window_s:
            window.popleft()
        self._stats.max_in_window = max(self._stats.max_in_window, len(window))
        return True

    def _rate_limited_reply(self, path: str) -> _Reply:
        with self._lock:
            self._stats.rate_limited += 1
        return _error_reply("EGeneral:Too many requests")

    def _fault_reply(self, fault: VenueFault, path: str) -> _Reply:
        if fault.kind == "server_error":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return _Reply(fault.status, page, [("Content-Type", "text/html")])
        if fault.kind == "unavailable":
            return _error_reply("EService:Unavailable")
        if fault.kind == "busy":
            return _error_reply("EService:Busy")
        if fault.kind == "api_rate_limit":
            with self._lock:
                self._stats.rate_limited += 1
            return _error_reply("EAPI:Rate limit exceeded")
        return super()._fault_reply(fault, path)

    def _route(self, method: str, path: str, params: dict[str, str], now: int) -> _Reply:
        handler = _ENDPOINTS.get(path)
        if handler is None:
            return json_reply({"error": ["EGeneral:Unknown method"]}, 404)
        try:
            return json_reply({"error": [], "result": handler(self, params, now)})
        except _KrakenError as exc:
            return _error_reply(exc.message)

    def _listed_pair(self, name: str, now: int) -> _Pair:
        pair = self._pairs.get(name.upper()) if name else None
        if pair is None or pair.sym.listed_ms > now:
            raise _KrakenError("EQuery:Unknown asset pair")
        return pair

    # -- endpoints ---------------------------------------------------------------------------

    def _time(self, params: dict[str, str], now: int) -> dict[str, Any]:
        clock = datetime.fromtimestamp(now / 1000, UTC)
        return {"unixtime": now // 1000, "rfc1123": clock.strftime("%a, %d %b %y %H:%M:%S +0000")}

    def _asset_pairs(self, params: dict[str, str], now: int) -> dict[str, Any]:
        if params.get("pair"):
            chosen = [self._listed_pair(name, now) for name in params["pair"].split(",")]
        else:
            chosen = [p for p in self._distinct_pairs() if p.sym.listed_ms <= now]
        return {pair.name: _pair_info(pair, now) for pair in chosen}

    def _ticker(self, params: dict[str, str], now: int) -> dict[str, Any]:
        if params.get("pair"):
            chosen = [self._listed_pair(name, now) for name in params["pair"].split(",")]
        else:
            chosen = [p for p in self._distinct_pairs() if p.sym.listed_ms <= now]
        return {pair.name: self.ticker(pair.altname, now) for pair in chosen}

    def ticker(self, name: str, now: int | None = None) -> dict[str, Any]:
        """Kraken's ticker of pair ``name`` at ``now`` (default: the venue's clock), from its
        trades since midnight UTC (the first of each pair of values) and in the last 24 h."""
        pair = self.pair(name)
        if pair is None:
            raise KeyError(name)
        now = self.now_ms() if now is None else now
        day = self._tape(pair, (now - DAY_MS) * 1000, now * 1000).trades()
        midnight_us = (now - now % DAY_MS) * 1000
        today = [t for t in day if t.time_us >= midnight_us]
        earlier = day or self._tape_before(pair, now * 1000, 1).trades()
        last = earlier[-1] if earlier else None
        last_price = last.price if last is not None else pair.sym.base_price
        text = pair.price_text
        tick = 10.0**-pair.decimals

        def stats(trades: list[Trade]) -> tuple[float, float, float, float]:
            volume = sum(t.volume for t in trades)
            vwap = sum(t.price * t.volume for t in trades) / volume if volume else 0.0
            high = max((t.price for t in trades), default=last_price)
            low = min((t.price for t in trades), default=last_price)
            return volume, vwap, high, low

        v0, p0, h0, l0 = stats(today)
        v1, p1, h1, l1 = stats(day)
        opening = today[0].price if today else last_price
        return {
            "a": [text(last_price + tick), "1", "1.000"],
            "b": [text(max(tick, last_price - tick)), "2", "2.000"],
            "c": [text(last_price), f"{last.volume:.8f}" if last is not None else "0.00000000"],
            "v": [f"{v0:.8f}", f"{v1:.8f}"],
            "p": [text(p0), text(p1)],
            "t": [len(today), len(day)],
            "l": [text(l0), text(l1)],
            "h": [text(h0), text(h1)],
            "o": text(opening),
        }

    def _ohlc(self, params: dict[str, str], now: int) -> dict[str, Any]:
        pair = self._listed_pair(params.get("pair", ""), now)
        minutes = _int_param(params, "interval", 1)
        if minutes not in OHLC_MINUTES:
            raise _KrakenError("EGeneral:Invalid arguments")
        since = _int_param(params, "since", 0)
        if since > 10**11:  # ccxt sends nanoseconds
            since //= 10**9
        step = minutes * MINUTE_MS
        current = now - now % step
        first = max(current - (OHLC_WINDOW - 1) * step, pair.sym.listed_ms - pair.sym.listed_ms % step)
        candles = self._window(pair, step, first, current, now)
        rows = [
            _ohlc_row(pair, c)
            for c in candles
            if c.open_ms // 1000 > since or c.open_ms == current  # the current one is always there
        ]
        return {pair.name: rows, "last": (current - step) // 1000}

    def _window(self, pair: _Pair, step: int, first: int, current: int, now: int) -> list[FakeCandle]:
        """OHLC's candles from ``first`` to the current one (slots with trades; all slots when
        :attr:`flat_empty_candles`), the current one always (flat while it has no trade)."""
        traded = {c.open_ms: c for c in self._aggregate(pair, step, first, current + step, now)}
        if current not in traded or self.flat_empty_candles:
            before = self._tape_before(pair, first * 1000, 1)
            close = float(before.price[-1]) if len(before) else None
            out = []
            for open_ms in range(first, current + 1, step):
                candle = traded.get(open_ms)
                if candle is not None:
                    close = candle.close
                    out.append(candle)
                elif close is not None and (self.flat_empty_candles or open_ms == current):
                    out.append(FakeCandle(open_ms, close, close, close, close, 0.0, 0.0, 0))
            return out
        return list(traded.values())

    def _trades(self, params: dict[str, str], now: int) -> dict[str, Any]:
        pair = self._listed_pair(params.get("pair", ""), now)
        count = min(TRADES_PAGE, max(1, _int_param(params, "count", TRADES_PAGE)))
        if "since" in params:
            since_ns = _int_param(params, "since", 0)
            if since_ns < 10**11:  # a timestamp in seconds
                since_ns *= 10**9
            start_us = since_ns // 1000 + 1  # after the cursor (µs resolution)
            trades = self._tape(pair, start_us, now * 1000, limit=count).trades()
        else:
            since_ns = 0
            trades = self._tape_before(pair, now * 1000, count).trades()
        last = trades[-1].time_us * 1000 if trades else since_ns
        return {pair.name: [_trade_row(pair, t) for t in trades], "last": str(last)}

    def _distinct_pairs(self) -> list[_Pair]:
        return list({id(p): p for p in self._pairs.values()}.values())


class _KrakenError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_ENDPOINTS = {
    "/0/public/Time": FakeKraken._time,
    "/0/public/AssetPairs": FakeKraken._asset_pairs,
    "/0/public/Ticker": FakeKraken._ticker,
    "/0/public/OHLC": FakeKraken._ohlc,
    "/0/public/Trades": FakeKraken._trades,
}


def _error_reply(message: str) -> _Reply:
    return json_reply({"error": [message]})


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _KrakenError(f"EGeneral:Invalid arguments:{name}") from None


def _ohlc_row(pair: _Pair, c: FakeCandle) -> list[Any]:
    text = pair.price_text
    return [
        c.open_ms // 1000,
        text(c.open),
        text(c.high),
        text(c.low),
        text(c.close),
        text(c.vwap),
        f"{c.volume:.8f}",
        c.count,
    ]


def _trade_row(pair: _Pair, trade: Trade) -> list[Any]:
    return [
        pair.price_text(trade.price),
        f"{trade.volume:.8f}",
        trade.time_us / 1e6,
        trade.side,
        trade.kind,
        "",
        trade.trade_id,
    ]


def _pair_info(pair: _Pair, now: int) -> dict[str, Any]:
    sym = pair.sym
    delisted = sym.delisted_ms is not None and now >= sym.delisted_ms
    return {
        "altname": pair.altname,
        "wsname": pair.wsname,
        "aclass_base": "currency",
        "base": sym.base_asset,
        "aclass_quote": "currency",
        "quote": sym.quote_asset,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": pair.decimals,
        "lot_decimals": 8,
        "lot_multiplier": 1,
        "fees": [[0, 0.26], [50000, 0.24]],
        "fees_maker": [[0, 0.16], [50000, 0.14]],
        "fee_volume_currency": "ZUSD",
        "ordermin": "0.0001",
        "costmin": "0.5",
        "tick_size": pair.price_text(10.0**-pair.decimals),
        "status": "cancel_only" if delisted else "online",
    }


def _model_prices(series: Any, time_ms: np.ndarray) -> np.ndarray:
    """The shared market model's price path (``_Series.price``) at ``time_ms``, vectorised:
    its waves and its minute noise (interpolated between minutes), without the sub-minute
    noise, rounded to its tick."""
    t = time_ms.astype(np.float64)
    x = np.full(t.shape, series._log_base)
    for k in range(len(_WAVES)):
        x += getattr(series, f"_a{k}") * np.sin(getattr(series, f"_w{k}") * t + getattr(series, f"_p{k}"))
    minute, rest = np.divmod(time_ms, MINUTE_MS)
    seed = np.uint64(series._noise_seed)
    a, b = (
        (_mix64_array(seed + (m.astype(np.uint64) * np.uint64(_GOLDEN))) >> np.uint64(11)).astype(np.float64)
        * _U53
        - 0.5
        for m in (minute, minute + 1)
    )
    x += series._noise_minute * (a + (b - a) * (rest / MINUTE_MS))
    return np.round(np.exp(x) / series.tick) * series.tick


def _mix64_array(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer over uint64 numbers (the same as :func:`market._mix64`)."""
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
