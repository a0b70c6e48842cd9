"""What every fake exchange other than Binance shares: :class:`FakeVenue`.

A fake venue (Coinbase, Kraken, Bybit) serves that exchange's REST endpoints over real HTTP/1.1
on 127.0.0.1, from the same deterministic market model as the fake Binance
(:mod:`cryptolake.testing.market`: candles are pure functions of symbol, interval and time), on
its own clock, with the venue's rate limit (a token bucket: ``rate_per_s`` refilled, ``burst``
deep; a request over it gets the venue's 429), latency, an exchange-wide outage (no candles),
periods without trades (no candle where the venue sends none) and injected faults.

A subclass names its symbols and implements :meth:`FakeVenue._route` (path, params, now) ->
:class:`~cryptolake.testing.wire._Reply`, :meth:`FakeVenue._rate_limited_reply` and
:meth:`FakeVenue._fault_reply`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptolake.schema import Interval
from cryptolake.testing.market import DEFAULT_NOW_MS, DEFAULT_OUTAGES, _Market, _mix64, _seed
from cryptolake.testing.served import Served
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.wire import _Reply
from cryptolake.timeutils import to_ms

JSON = "application/json"


@dataclass
class VenueStats:
    """What a fake venue saw since start or :meth:`FakeVenue.reset`: requests by path and by
    status, 429s, and the most requests admitted in any ``window_s`` (its rate window)."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_in_window: int = 0
    log: list[tuple[float, str, dict[str, str], int]] = field(default_factory=list)


@dataclass
class VenueFault:
    """The next ``times`` requests whose path contains ``path`` get HTTP ``status`` with the
    venue's error body for ``kind`` (``server_error``, ``rate_limit``, ``ban``, ``bad_json``,
    ``drop``: the connection closes without an answer)."""

    kind: str
    path: str = ""
    times: int = 1
    status: int = 500


def json_reply(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    """A JSON reply."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return _Reply(status, body, [("Content-Type", JSON), *headers])


class FakeVenue(Served):
    """The shared part of a fake venue (see the module docstring).

    Args:
        symbols: the venue's markets (FakeSymbol with the venue's own symbol names).
        now: the venue's clock for candles (frozen unless ``follow_wall_clock``).
        rate_per_s: the token bucket's refill rate (requests per second).
        burst: the bucket's depth (requests at once after a quiet spell).
        latency_s: added to every answer.
        outages: exchange-wide windows ``[start_ms, end_ms)`` without candles.
        clock: real seconds (rate limit, wall-clock following).
    """

    #: The venue's name (``coinbase``).
    exchange = ""
    thread_prefix = "fake-venue"
    #: The rate window over which :attr:`VenueStats.max_in_window` is counted.
    window_s = 1.0

    def __init__(
        self,
        *,
        symbols: list[FakeSymbol],
        now: int | datetime | None = None,
        follow_wall_clock: bool = False,
        rate_per_s: float = 10.0,
        burst: int = 15,
        latency_s: float = 0.0,
        outages: Iterable[tuple[int, int]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        max_log: int = 100_000,
    ) -> None:
        self._market = _Market(symbols, DEFAULT_OUTAGES if outages is None else outages)
        self._clock = clock
        self._follow = follow_wall_clock
        self._now_anchor = DEFAULT_NOW_MS if now is None else _as_ms(now)
        self._wall_anchor = clock()
        self._host, self._port = host, port
        self._rate, self._burst = rate_per_s, burst
        self._latency_s = latency_s
        self._max_log = max_log
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._reset_state()

    def _reset_state(self) -> None:
        self._tokens = float(self._burst)
        self._refilled = self._clock()
        self._faults: list[VenueFault] = []
        self._stats = VenueStats()
        self._admitted: deque[float] = deque()
        self._log: deque[tuple[float, str, dict[str, str], int]] = deque(maxlen=self._max_log)

    # -- clock and knobs ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """The venue's clock (ms)."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> int:
        if self._follow:
            return self._now_anchor + int((self._clock() - self._wall_anchor) * 1000)
        return self._now_anchor

    def set_now(self, t: int | datetime) -> None:
        with self._lock:
            self._now_anchor = _as_ms(t)
            self._wall_anchor = self._clock()

    def advance(self, delta_ms: int) -> None:
        with self._lock:
            self._now_anchor += delta_ms

    def set_latency(self, latency_s: float) -> None:
        with self._lock:
            self._latency_s = latency_s

    def set_rate_limit(self, rate_per_s: float, burst: int) -> None:
        with self._lock:
            self._rate, self._burst = rate_per_s, burst
            self._tokens = min(self._tokens, float(burst))

    def inject(self, *faults: VenueFault) -> None:
        """Answer the next matching requests with these faults (in order)."""
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget faults, statistics and the rate state."""
        with self._lock:
            self._reset_state()

    def stats(self) -> VenueStats:
        with self._lock:
            out = VenueStats(
                requests=self._stats.requests,
                by_path=dict(self._stats.by_path),
                by_status=dict(self._stats.by_status),
                rate_limited=self._stats.rate_limited,
                max_in_window=self._stats.max_in_window,
                log=list(self._log),
            )
        return out

    @property
    def symbols(self) -> list[FakeSymbol]:
        return list(self._market.symbols.values())

    # -- the market, as every venue sees it --------------------------------------------------

    def lookup(self, symbol: str, now: int) -> FakeSymbol | None:
        """The market named ``symbol`` if it is listed at ``now``."""
        return self._market.lookup(symbol, now)

    def candle_rows(
        self, sym: FakeSymbol, iv: Interval, start: int, stop: int, now: int, limit: int | None = None
    ) -> list[tuple]:
        """The market's candles opening in ``[start, stop]`` (both open times; outages left
        out), oldest first, each ``(open_ms, open, high, low, close, volume, close_ms,
        quote_volume, trades, taker_base, taker_quote)`` as floats/ints. The last one may be
        open (``now`` inside it)."""
        bounds = self._market.bounds(sym, iv, now)
        if bounds is None:
            return []
        first, last = bounds
        lo, hi = max(first, iv.ceil(start)), min(last, stop)
        if lo > hi:
            return []
        opens = self._market.forward(iv, lo, hi, limit)
        return self._market.rows(sym, iv, opens, now)

    def quiet(self, sym: FakeSymbol, iv: Interval, open_ms: int, every: int = 0) -> bool:
        """Whether the candle at ``open_ms`` had no trades: one in ``every`` of the symbol's
        1m slots (hashed), and every longer candle only if its whole span is quiet. ``every``
        0: never."""
        if every <= 0:
            return False
        step = iv.fixed_ms or 0
        minutes = max(1, step // 60_000)
        if minutes > 1:
            return False
        return _mix64(_seed(sym.symbol) ^ (open_ms // 60_000)) % every == 0

    # -- requests ----------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        split = urlsplit(target)
        path = unquote(split.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        with self._lock:
            t = self._clock()
            now = self._now_locked()
            latency = self._latency_s
            fault = self._take_fault(path)
            limited = fault is None and not self._admit(t)
            self._stats.requests += 1
            key = self._path_key(path)
            self._stats.by_path[key] = self._stats.by_path.get(key, 0) + 1
        if fault is not None:
            reply = self._fault_reply(fault, path)
        elif limited:
            reply = self._rate_limited_reply(path)
        else:
            try:
                reply = self._route(method, path, params, now)
            except Exception as exc:  # noqa: BLE001 - a bug in a fake must show, not hang the client
                reply = json_reply({"message": f"fake {self.exchange} error: {exc}"}, 500)
        reply.delay_s += latency
        with self._lock:
            status = 0 if reply.drop else reply.status
            self._stats.by_status[status] = self._stats.by_status.get(status, 0) + 1
            if status == 429:
                self._stats.rate_limited += 1
            self._log.append((t, path, params, status))
        return reply

    def _admit(self, t: float) -> bool:
        """Take a token from the bucket (caller holds the lock); False when it is empty."""
        self._tokens = min(float(self._burst), self._tokens + (t - self._refilled) * self._rate)
        self._refilled = t
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        window = self._admitted
        window.append(t)
        while window and window[0] <= t - self.window_s:
            window.popleft()
        self._stats.max_in_window = max(self._stats.max_in_window, len(window))
        return True

    def _take_fault(self, path: str) -> VenueFault | None:
        for fault in self._faults:
            if fault.path in path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _path_key(path: str) -> str:
        return path

    # -- the subclass's part -----------------------------------------------------------------

    def _route(self, method: str, path: str, params: dict[str, str], now: int) -> _Reply:
        raise NotImplementedError

    def _rate_limited_reply(self, path: str) -> _Reply:
        return json_reply({"message": "Rate limit exceeded"}, 429)

    def _fault_reply(self, fault: VenueFault, path: str) -> _Reply:
        if fault.kind == "drop":
            return _Reply(0, drop=True)
        if fault.kind == "bad_json":
            return _Reply(200, b"{not json", [("Content-Type", JSON)])
        if fault.kind == "rate_limit":
            return self._rate_limited_reply(path)
        return json_reply({"message": "Internal server error"}, fault.status)


def _as_ms(value: int | datetime) -> int:
    if isinstance(value, datetime):
        return to_ms(value)
    return int(value)


def serve_venue(venue: FakeVenue) -> None:
    """Run ``venue`` in the foreground until SIGINT/SIGTERM; prints its base URL."""
    from cryptolake.testing.server import serve_until_stopped

    serve_until_stopped(venue, [f"Fake {venue.exchange.capitalize()} exchange listening on {{url}}"])
