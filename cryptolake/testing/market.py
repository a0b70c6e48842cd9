"""The synthetic market: prices, candles and tickers as pure functions of symbol, time and the
exchange's "now" (for every venue and stream the fake serves)."""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from cryptolake.schema import DAY_MS, HOUR_MS, INTERVALS, MINUTE_MS, Interval
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.timeutils import to_ms

#: The exchange's "now" when none is given: 2026-01-01T00:30:00Z.
DEFAULT_NOW_MS: int = to_ms("2026-01-01T00:30:00Z")
#: Exchange-wide outage windows ``[start_ms, end_ms)`` used when none are given.
DEFAULT_OUTAGES: tuple[tuple[int, int], ...] = (
    (to_ms("2024-03-12T04:00:00Z"), to_ms("2024-03-12T09:00:00Z")),
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
