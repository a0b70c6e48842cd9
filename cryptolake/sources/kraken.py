"""KrakenClient: Kraken spot candles over its public REST API, older ones rebuilt from trades.

Kraken's ``OHLC`` endpoint serves only the 720 newest candles of an interval, whatever its
``since`` asks, and the last of them is always the current, uncommitted one. A slot without
trades has no candle. Older history exists only as trades: ``Trades`` pages through a pair's
whole tape, 1000 trades a request, from a ``since`` cursor in nanoseconds. So a range is served
in two parts: the slots OHLC still covers from one OHLC request, the older ones aggregated from
trades (:func:`candles_from_trades`).

Where OHLC's coverage starts is only known from an answer (its last entry is the current candle,
so the 720 slots up to it); the exchange's clock only says whether a range can reach it. A range
that does is asked of OHLC first, and whatever of it lies before the answer's first slot is
rebuilt from trades; a range that cannot is rebuilt from trades alone. Either way every slot is
served, and a misjudged clock costs requests, not candles.

A pair's Trades answers are kept (the last :data:`TRADE_BATCHES`, each with the span of time it
covers completely) and reused by the pages they reach into, so consecutive pages of a pair cost
one chain of Trades requests, not one request more each. Kraken limits OHLC and Trades per IP
and pair, the other public endpoints per IP (about one request a second each): the client keeps
one pace per pair for the former, one for the rest.

Kraken answers errors with HTTP 200 and a non-empty ``error`` list, which is checked on every
answer: ``EQuery:Unknown asset pair`` is :class:`InvalidSymbol`, ``EGeneral:Too many requests``
and ``EAPI:Rate limit exceeded`` are :class:`RateLimited`, ``EService:Unavailable`` and
``EService:Busy`` are :class:`ExchangeUnavailable`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from cryptolake.errors import (
    BadPayload,
    ExchangeUnavailable,
    Interrupted,
    InvalidSymbol,
    RateLimited,
    RequestRejected,
    SourceError,
)
from cryptolake.schema import Interval
from cryptolake.sources.base import Market, normalize_asset
from cryptolake.sources.klines import EMPTY_TABLE, table_to_frame
from cryptolake.sources.ratelimit import RequestPacer
from cryptolake.sources.venue import VenueClient, candles_table

DEFAULT_BASE_URL = "https://api.kraken.com"
#: Candles an OHLC answer holds at most: the newest ones, the last of them the open one.
OHLC_WINDOW = 720
#: Trades a Trades answer holds at most.
TRADES_PAGE = 1000
#: Trades answers a client keeps for the pages they reach into.
TRADE_BATCHES = 64
#: OHLC's ``interval`` (minutes) of each lake interval Kraken serves. Kraken's 10080 (one week)
#: and 21600 (15 days) are left out: nothing says their candles open on the lake's Monday grid.
INTERVAL_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "1d": 1440}

_OHLC = "/0/public/OHLC"
_TRADES = "/0/public/Trades"
_PER_PAIR = (_OHLC, _TRADES)  # limited per IP and pair
_NS_PER_MS = 1_000_000
#: A Trades answer shorter than a page has every trade up to Kraken's now; the span it covers
#: is counted up to this long before the exchange's clock as this client reads it.
_SETTLE_MS = 60_000
#: Trades a rebuild holds before it aggregates the slots they complete.
_FLUSH_TRADES = 200_000
_TICKER_PAIRS = 50  # pairs per Ticker request
#: AssetPairs statuses of a pair that trades (limit orders still match in ``limit_only``).
_TRADING_STATUSES = ("online", "limit_only")
_RATE_LIMITED = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")
_UNKNOWN_PAIR = ("EQuery:Unknown asset pair", "EQuery:Invalid asset pair")
_UNAVAILABLE = (
    "EService:Unavailable",
    "EService:Busy",
    "EService:Deadline elapsed",
    "EGeneral:Internal error",
    "EDatabase:Internal error",
)


class KrakenClient(VenueClient):
    """Kraken spot candles (1m to 1d), its pairs by altname (``XBTUSD``), its clock and 24 h
    volumes. See the module docstring for how a range is served.

    Args: those of :class:`~cryptolake.sources.venue.VenueClient`; ``requests_per_s`` is the
    pace of each pair's OHLC/Trades requests and of the other public requests together.
    """

    exchange = "kraken"
    title = "Kraken"
    intervals = tuple(INTERVAL_MINUTES)
    page_candles = OHLC_WINDOW
    empty_candles = False
    RATE_LIMIT = 1
    RATE_PERIOD_S = 1.0
    #: How long nothing is sent on a pair (or, for other endpoints, at all) after Kraken said
    #: "too many requests" (it gives no Retry-After).
    RATE_LIMITED_PAUSE_S = 1.0

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, quote_asset: str = "USD", **options: Any) -> None:
        """``options``: as :class:`~cryptolake.sources.venue.VenueClient`'s."""
        super().__init__(base_url=base_url, quote_asset=quote_asset, **options)
        # A pair's requests evenly spaced (no burst: Kraken's per-pair burst is small), in
        # windows of 10 ms at least (the pacer counts milliseconds).
        gap_s = self._pacer.period_s / self._pacer.limit
        self._pair_pace = (math.ceil(0.01 / gap_s), math.ceil(0.01 / gap_s) * gap_s)
        self._pair_pacers: dict[str, RequestPacer] = {}
        self._pair_locks: dict[str, threading.Lock] = {}
        self._pairs_lock = threading.Lock()
        self._batches: OrderedDict[tuple[str, int], _TradeBatch] = OrderedDict()
        self._first_trade: dict[str, int | None] = {}
        self._altnames: dict[str, str] = {}

    # -- KlineSource -------------------------------------------------------------------------

    def get_klines_range(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, *, as_arrow: bool = False
    ) -> Any:
        """Every candle opening in ``[start_ms, end_ms)``: what lies before OHLC's reach in
        pages of :attr:`page_candles` slots one after the other (a pair's requests go one at a
        time anyway, and each page's rebuild continues where the Trades answers of the one
        before reach), the rest from one OHLC request."""
        grid = self.check_interval(interval)
        page = self.page_candles * self._step(grid)
        lo = grid.ceil(start_ms)
        split = min(max(lo, self._ohlc_reach(grid)), end_ms)
        parts = [self._klines(symbol, interval, a, min(a + page, split)) for a in range(lo, split, page)]
        if split < end_ms:
            parts.append(self._klines(symbol, interval, split, end_ms))
        table = pa.concat_tables(parts) if parts else EMPTY_TABLE
        return table if as_arrow else table_to_frame(table)

    def last_open_time(self, symbol: str, interval: str) -> int | None:
        """Open time of the pair's newest committed candle OHLC has (one request; None when
        the 720 newest slots had no trade, as for a pair delisted long ago)."""
        grid = self.check_interval(interval)
        table, _ = self._ohlc(symbol, grid, 0, 1 << 62)
        return int(table.column("open_time")[-1].value) if table.num_rows else None

    def first_open_time(self, symbol: str, interval: str) -> int | None:
        """The slot of the pair's first trade (one Trades request from ``since=0`` per pair,
        kept for every interval); None if it has never traded."""
        grid = self.check_interval(interval)
        key = (symbol, interval)
        if key not in self._first_open:
            if symbol not in self._first_trade:
                batch = self._trade_batch(symbol, 0)
                self._first_trade[symbol] = int(batch.time_ms[0]) if len(batch) else None
            first = self._first_trade[symbol]
            self._first_open[key] = None if first is None else grid.floor(first)
        return self._first_open[key]

    def cancel_pending(self) -> None:
        super().cancel_pending()
        with self._pairs_lock:
            pacers = list(self._pair_pacers.values())
        for pacer in pacers:
            pacer.wake()

    def markets(self) -> list[Market]:
        """Every pair of AssetPairs, by altname, with common asset names (``XBT/USD`` is
        BTC/USD); ``TRADING`` while it is ``online`` (or ``limit_only``), else Kraken's status in
        capitals (``CANCEL_ONLY``, ``POST_ONLY``, ...)."""
        result = _result(self.get_json("/0/public/AssetPairs", {}), "/0/public/AssetPairs")
        markets = []
        altnames = {}
        for name, entry in result.items():
            altname = entry.get("altname") if isinstance(entry, dict) else None
            if not isinstance(altname, str) or not altname:
                raise BadPayload(f"Kraken's AssetPairs entry {name!r} has no altname")
            base, quote = market_assets(entry)
            status = str(entry.get("status", "online"))
            markets.append(
                Market(
                    self.exchange,
                    altname,
                    base,
                    quote,
                    "TRADING" if status in _TRADING_STATUSES else status.upper(),
                )
            )
            altnames[name] = altname
        self._altnames = altnames
        return markets

    # -- the subclass's part of VenueClient --------------------------------------------------

    def _server_time_ms(self) -> int:
        result = _result(self.get_json("/0/public/Time", {}), "/0/public/Time")
        try:
            return int(result["unixtime"]) * 1000
        except (KeyError, TypeError, ValueError) as exc:
            raise BadPayload(f"Kraken's Time answer has no unixtime: {result!r:.100}") from exc

    def _volumes_24h(self, symbols: Sequence[str]) -> dict[str, float]:
        """Base volume of the last 24 h times its volume-weighted price, per pair (Ticker, 50
        pairs a request)."""
        if not self._altnames:
            self.cached_markets()
        volumes: dict[str, float] = {}
        for i in range(0, len(symbols), _TICKER_PAIRS):
            chunk = ",".join(symbols[i : i + _TICKER_PAIRS])
            result = _result(
                self.get_json("/0/public/Ticker", {"pair": chunk}, symbol=chunk), "/0/public/Ticker"
            )
            for name, ticker in result.items():
                try:
                    volume = float(ticker["v"][1])
                    price = float(ticker["p"][1]) or float(ticker["c"][0])
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    raise BadPayload(
                        f"Kraken's ticker of {name} is not as documented: {ticker!r:.100}"
                    ) from exc
                volumes[self._altnames.get(name, name)] = volume * price
        return volumes

    def _klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pa.Table:
        """The candles opening in ``[start_ms, end_ms)``: from OHLC where its answer covers
        them (asked only when the exchange's clock says the range can reach its 720 slots),
        rebuilt from trades before that; never the current candle."""
        grid = self.check_interval(interval)
        lo = grid.ceil(start_ms)
        if lo >= end_ms:
            return EMPTY_TABLE
        parts = []
        rebuild_until = end_ms
        if end_ms > self._ohlc_reach(grid):
            recent, covered_from = self._ohlc(symbol, grid, lo, end_ms)
            parts.append(recent)
            rebuild_until = min(end_ms, covered_from)
        if lo < rebuild_until:
            parts.insert(0, self._rebuilt(symbol, grid, lo, rebuild_until))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _error(self, response: httpx.Response, path: str, symbol: str | None) -> Exception | None:
        try:
            self._checked_body(response, path, symbol)
        except SourceError as exc:
            return exc
        return None

    def _send(self, path: str, params: dict[str, Any], symbol: str | None) -> Any:
        """One request at the pace of its pair (OHLC, Trades) or of the other public
        endpoints; the body, once its ``error`` list is checked."""
        if self._cancel.is_set():
            raise Interrupted(f"stopped before sending {path}")
        pacer = self._pacer_for(path, symbol)
        with self._slots:
            pacer.acquire(self._cancel)
            try:
                response = self._http.get(path, params=params)
            except httpx.TimeoutException as exc:
                raise ExchangeUnavailable(f"Kraken timed out on {path} ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise ExchangeUnavailable(
                    f"cannot reach Kraken at {self.base_url} ({type(exc).__name__}: {exc})"
                ) from exc
        return self._checked_body(response, path, symbol)

    # -- OHLC --------------------------------------------------------------------------------

    def _ohlc_reach(self, grid: Interval) -> int:
        """The oldest slot OHLC serves by the exchange's clock as this client reads it."""
        return grid.floor(self.exchange_now_ms()) - (OHLC_WINDOW - 1) * self._step(grid)

    def _ohlc(self, symbol: str, grid: Interval, lo: int, hi: int) -> tuple[pa.Table, int]:
        """One OHLC request: its committed candles with trades in ``[lo, hi)``, and the first
        slot its answer covers (``hi`` when the answer is empty: it covers nothing)."""
        step = self._step(grid)
        params: dict[str, Any] = {"pair": symbol, "interval": INTERVAL_MINUTES[grid.name]}
        if lo - step > 0:
            params["since"] = (lo - step) // 1000  # seconds; "after since", one slot to spare
        result = _result(self.get_json(_OHLC, params, symbol=symbol), _OHLC)
        rows = _pair_rows(result, _OHLC)
        if not rows:
            return EMPTY_TABLE, hi
        try:
            current = int(rows[-1][0]) * 1000
            committed = [row for row in rows[:-1] if int(row[7]) > 0]  # the last one is open
            opens = [int(row[0]) * 1000 for row in committed]
            volume = [float(row[6]) for row in committed]
            columns: dict[str, Any] = {
                "open_time": opens,
                "open": [float(row[1]) for row in committed],
                "high": [float(row[2]) for row in committed],
                "low": [float(row[3]) for row in committed],
                "close": [float(row[4]) for row in committed],
                "volume": volume,
                "close_time": [t + step - 1 for t in opens],
                "quote_volume": [float(row[5]) * v for row, v in zip(committed, volume, strict=True)],
                "trades": [int(row[7]) for row in committed],
            }
        except (IndexError, TypeError, ValueError) as exc:
            raise BadPayload(f"Kraken's OHLC rows are not as documented: {rows[:1]!r:.100}") from exc
        covered_from = max(lo, current - (OHLC_WINDOW - 1) * step)
        keep = [i for i, t in enumerate(opens) if covered_from <= t < hi]
        if len(keep) < len(opens):
            columns = {name: [values[i] for i in keep] for name, values in columns.items()}
        return candles_table(columns), covered_from

    # -- candles from trades -----------------------------------------------------------------

    def _rebuilt(self, symbol: str, grid: Interval, lo: int, hi: int) -> pa.Table:
        """The candles of ``[lo, hi)`` aggregated from the pair's trades: Trades answers from a
        cursor just before ``lo`` (kept ones where they reach) until one covers ``hi``."""
        cursor, goal = lo * _NS_PER_MS - 1, hi * _NS_PER_MS - 1
        newest = -1  # order key of the newest trade taken: a trade answered twice counts once
        held: list[_Trades] = []
        held_count = 0
        tables = []
        while cursor < goal:
            batch = self._trade_batch(symbol, max(0, cursor))
            fresh = batch.trades.newer_than(newest)
            if len(fresh):
                newest = int(fresh.key[-1])
                held.append(fresh)
                held_count += len(fresh)
            if held_count >= _FLUSH_TRADES:  # aggregate the slots complete so far
                trades = _Trades.concat(held)
                complete = grid.floor(int(trades.time_ms[-1]))
                done = trades.time_ms < complete
                tables.append(_candles_in(trades.take(done), grid, lo, hi))
                held = [trades.take(~done)]
                held_count = len(held[0])
            if batch.until <= cursor:
                break
            cursor = batch.until
        tables.append(_candles_in(_Trades.concat(held), grid, lo, hi))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _trade_batch(self, symbol: str, cursor: int) -> _TradeBatch:
        """A Trades answer that covers the trades just after ``cursor``: a kept one, else a new
        request from ``since=cursor`` (a pair's requests one at a time, so that a page waiting
        for one finds what the one before it brought)."""
        with self._pair_lock(symbol):
            with self._pairs_lock:
                for key, batch in self._batches.items():
                    if key[0] == symbol and batch.since <= cursor < batch.until:
                        self._batches.move_to_end(key)
                        return batch
            batch = self._fetch_trades(symbol, cursor)
            with self._pairs_lock:
                self._batches[(symbol, cursor)] = batch
                while len(self._batches) > TRADE_BATCHES:
                    self._batches.popitem(last=False)
            return batch

    def _fetch_trades(self, symbol: str, since: int) -> _TradeBatch:
        asked_at = self.exchange_now_ms()
        result = _result(
            self.get_json(_TRADES, {"pair": symbol, "since": str(since)}, symbol=symbol), _TRADES
        )
        rows = _pair_rows(result, _TRADES)
        try:
            last = int(result["last"])
            trades = _Trades.parse(rows)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BadPayload(f"Kraken's Trades answer is not as documented: {rows[:1]!r:.100}") from exc
        if len(rows) >= TRADES_PAGE:
            if last <= since:
                raise BadPayload(f"Kraken's Trades cursor did not move on from {since} ({symbol})")
            until = last
        else:  # every trade up to Kraken's now
            until = max(last, since, (asked_at - _SETTLE_MS) * _NS_PER_MS)
        return _TradeBatch(since, until, trades)

    # -- requests ----------------------------------------------------------------------------

    def _pacer_for(self, path: str, symbol: str | None) -> RequestPacer:
        if path not in _PER_PAIR or not symbol:
            return self._pacer
        with self._pairs_lock:
            pacer = self._pair_pacers.get(symbol)
            if pacer is None:
                pacer = self._pair_pacers[symbol] = RequestPacer(*self._pair_pace, clock=self._clock)
            return pacer

    def _pair_lock(self, symbol: str) -> threading.Lock:
        with self._pairs_lock:
            return self._pair_locks.setdefault(symbol, threading.Lock())

    def _checked_body(self, response: httpx.Response, path: str, symbol: str | None) -> Any:
        """The JSON body of a successful answer; else the error it is (see the module
        docstring), after pausing the pace it broke."""
        status = response.status_code
        if status == 429:
            wait = _retry_after_s(response, self.RATE_LIMITED_PAUSE_S)
            self._pacer_for(path, symbol).pause(wait)
            raise RateLimited(f"Kraken answered 429 on {path}", retry_after_s=wait)
        if status >= 500:
            raise ExchangeUnavailable(f"Kraken answered HTTP {status} on {path}")
        try:
            body = response.json()
        except ValueError as exc:
            if status >= 400:
                raise RequestRejected(f"Kraken answered HTTP {status} on {path}", status=status) from exc
            raise BadPayload(f"malformed JSON from Kraken {path}: {response.text[:100]!r}") from exc
        errors = body.get("error") if isinstance(body, dict) else None
        if not isinstance(errors, list):
            raise BadPayload(f"Kraken's answer to {path} has no error list: {response.text[:100]!r}")
        if errors:
            message = "; ".join(str(e) for e in errors)
            if any(str(e).startswith(_RATE_LIMITED) for e in errors):
                self._pacer_for(path, symbol).pause(self.RATE_LIMITED_PAUSE_S)
                raise RateLimited(f"Kraken: {message} ({path})", retry_after_s=self.RATE_LIMITED_PAUSE_S)
            if any(str(e).startswith(_UNKNOWN_PAIR) for e in errors):
                raise InvalidSymbol(symbol or "?", status=status, msg=message, exchange=self.title, code=None)
            if any(str(e).startswith(_UNAVAILABLE) for e in errors):
                raise ExchangeUnavailable(f"Kraken: {message} ({path})")
            raise RequestRejected(f"Kraken refused {path}: {message}", status=status, msg=message)
        if status >= 400:
            raise RequestRejected(f"Kraken answered HTTP {status} on {path}", status=status)
        return body

    @staticmethod
    def _step(grid: Interval) -> int:
        step = grid.fixed_ms
        assert step is not None, "Kraken's intervals are fixed"
        return step


# -- trades ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trades:
    """Trades as columns, oldest first: time (ms), price, volume, and an order key (the trade
    id; the time in ns for rows without one) that grows with each trade."""

    time_ms: np.ndarray
    price: np.ndarray
    volume: np.ndarray
    key: np.ndarray

    def __len__(self) -> int:
        return len(self.time_ms)

    @staticmethod
    def parse(rows: list[Any]) -> _Trades:
        """Trades rows ``[price, volume, time (s), side, type, misc, trade_id]``."""
        seconds = np.array([float(row[2]) for row in rows], dtype=np.float64)
        if all(len(row) > 6 for row in rows):
            key = np.array([int(row[6]) for row in rows], dtype=np.int64)
        else:  # the format before trade ids
            key = np.rint(seconds * 1e9).astype(np.int64)
        return _Trades(
            np.floor(seconds * 1000).astype(np.int64),
            np.array([row[0] for row in rows], dtype=np.float64),
            np.array([row[1] for row in rows], dtype=np.float64),
            key,
        )

    def newer_than(self, key: int) -> _Trades:
        return self.take(self.key > key)

    def take(self, chosen: Any) -> _Trades:
        return _Trades(self.time_ms[chosen], self.price[chosen], self.volume[chosen], self.key[chosen])

    @staticmethod
    def concat(parts: list[_Trades]) -> _Trades:
        if not parts:
            return _NO_TRADES
        return _Trades(
            np.concatenate([p.time_ms for p in parts]),
            np.concatenate([p.price for p in parts]),
            np.concatenate([p.volume for p in parts]),
            np.concatenate([p.key for p in parts]),
        )


_NO_TRADES = _Trades(np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int64))


@dataclass(frozen=True)
class _TradeBatch:
    """One Trades answer, asked from ``since`` (ns): every trade with ``since < time <=
    until`` is among its trades (``until`` is the answer's ``last`` for a full page, Kraken's
    now less a margin for a shorter one)."""

    since: int
    until: int
    trades: _Trades

    def __len__(self) -> int:
        return len(self.trades)

    @property
    def time_ms(self) -> np.ndarray:
        return self.trades.time_ms


def _candles_in(trades: _Trades, grid: Interval, lo: int, hi: int) -> pa.Table:
    inside = (trades.time_ms >= lo) & (trades.time_ms < hi)
    return candles_from_trades(trades.time_ms[inside], trades.price[inside], trades.volume[inside], grid)


def candles_from_trades(
    time_ms: np.ndarray, price: np.ndarray, volume: np.ndarray, grid: Interval
) -> pa.Table:
    """Candles of ``grid`` from trades in time order (a pure function): per slot with trades,
    open = the first trade's price, high, low, close = the last one's, volume = the sum,
    quote volume = the sum of price x volume, trades = how many; no candle for a slot without
    trades; taker volumes null (a trade's side is not the lake's taker split)."""
    step = grid.fixed_ms
    if step is None:
        raise ValueError("candles from trades need a fixed interval")
    if len(time_ms) == 0:
        return EMPTY_TABLE
    time_ms = np.asarray(time_ms, dtype=np.int64)
    price = np.asarray(price, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    slots = time_ms - (time_ms - grid.origin_ms) % step
    starts = np.flatnonzero(np.diff(slots, prepend=slots[0] - 1))
    ends = np.append(starts[1:], len(slots)) - 1
    columns: dict[str, Any] = {
        "open_time": slots[starts],
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[ends],
        "volume": np.add.reduceat(volume, starts),
        "close_time": slots[starts] + step - 1,
        "quote_volume": np.add.reduceat(price * volume, starts),
        "trades": ends - starts + 1,
    }
    return candles_table(columns)


# -- markets -----------------------------------------------------------------------------------


def kraken_asset(code: str) -> str:
    """The common name of a Kraken asset code: a legacy four-letter code loses its X/Z prefix
    (``XXBT`` -> ``XBT``, ``ZUSD`` -> ``USD``), then ``XBT`` -> ``BTC`` and ``XDG`` -> ``DOGE``."""
    upper = code.upper()
    if len(upper) == 4 and upper[0] in "XZ" and upper[1:] in _LEGACY_ASSETS:
        upper = upper[1:]
    return normalize_asset(upper)


#: Assets Kraken named with an X (crypto) or Z (fiat) prefix before 2018.
_LEGACY_ASSETS = frozenset(
    {"XBT", "ETH", "ETC", "LTC", "XRP", "XLM", "XMR", "ZEC", "MLN", "REP", "XDG", "NMC", "XVN", "DAO", "ICN"}
    | {"USD", "EUR", "GBP", "JPY", "CAD", "AUD"}
)


def market_assets(entry: dict[str, Any]) -> tuple[str, str]:
    """Base and quote of an AssetPairs entry by their common names: from ``wsname``
    (``XBT/USD``: Kraken's altnames, which never carry the legacy prefix), else from the
    ``base`` and ``quote`` codes."""
    wsname = entry.get("wsname")
    if isinstance(wsname, str) and wsname.count("/") == 1:
        base, quote = wsname.split("/")
        return normalize_asset(base), normalize_asset(quote)
    try:
        return kraken_asset(str(entry["base"])), kraken_asset(str(entry["quote"]))
    except KeyError as exc:
        raise BadPayload(
            f"Kraken's AssetPairs entry has neither wsname nor base/quote: {entry!r:.100}"
        ) from exc


# -- answers -----------------------------------------------------------------------------------


def _result(body: Any, path: str) -> dict[str, Any]:
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, dict):
        raise BadPayload(f"Kraken's answer to {path} has no result object")
    return result


def _pair_rows(result: dict[str, Any], path: str) -> list[Any]:
    """The rows of an OHLC or Trades result: its one key besides ``last`` (Kraken's pair name,
    ``XXBTZUSD`` for ``XBTUSD``)."""
    lists = [value for key, value in result.items() if key != "last"]
    if len(lists) != 1 or not isinstance(lists[0], list):
        raise BadPayload(f"Kraken's answer to {path} has not one pair's rows: {sorted(result)}")
    return lists[0]


def _retry_after_s(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default
