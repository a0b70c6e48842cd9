"""The fake Binance spot REST exchange: clock, knobs, request admission (weights, bans, faults),
endpoints and the control API."""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptolake.schema import Interval
from cryptolake.testing import binance_archive, binance_rest, binance_stream, control
from cryptolake.testing.faults import (
    _CHAOS_5XX,
    CHAOS_KINDS,
    DEFAULT_CHAOS_KINDS,
    RATE_LIMIT_STORM,
    Fault,
    _Chaos,
)
from cryptolake.testing.market import DEFAULT_NOW_MS, DEFAULT_OUTAGES, _Market, _row_list
from cryptolake.testing.served import Served
from cryptolake.testing.stats import FakeStats, RequestRecord
from cryptolake.testing.symbols import FakeSymbol, default_symbols
from cryptolake.testing.weights import MAX_BAN_S, _window_label, request_weight
from cryptolake.testing.wire import (
    CONTROL_PREFIX,
    JSON_CONTENT_TYPE,
    MSG_BUSY,
    MSG_RESTRICTED,
    MSG_TIMEOUT,
    MSG_UNKNOWN,
    _error_body,
    _Reply,
)
from cryptolake.timeutils import to_ms

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


#: What :meth:`FakeExchange.bad_candle` can do to a candle.
BAD_CANDLE_KINDS = ("swapped_high_low", "us_time", "duplicate", "spike", "open_as_closed")
#: The client address of a request made in-process (no socket), and the fake's first budget.
DEFAULT_CLIENT_IP = "127.0.0.1"


@dataclass
class _Budget:
    """One client IP's admission state: its weight window, its 429 rule and its ban."""

    window_id: int | None = None
    used: int = 0
    retry_until: float = 0.0
    grace_left: int = 0
    banned_until: float = 0.0
    ban_count: int = 0


def _budget_field(name: str) -> Any:
    """A FakeExchange attribute that is a field of the budget being served."""
    return property(
        lambda self: getattr(self._budget, name),
        lambda self, value: setattr(self._budget, name, value),
    )


class FakeExchange(Served):
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

    ``clock_speed``: with ``follow_wall_clock``, how many exchange seconds pass per real second
    (60: a 1m candle closes every real second), for streams and long-running tests.

    Binance's WebSocket kline streams (:mod:`~cryptolake.testing.binance_stream`) are served on
    the same port (``ws://.../ws/<stream>``, ``/stream?streams=...``); :attr:`streams` holds
    their faults, lifetime and counters.

    The bulk archive (data.binance.vision, :mod:`~cryptolake.testing.binance_archive`) is served
    on the same port: ``/data/spot/...`` files and the S3 listing at ``/``. A daily file is
    published ``archive_daily_delay_s`` after its day ends, a monthly one
    ``archive_monthly_delay_s`` after its month ends (on the exchange's clock).
    ``archive_max_keys`` caps a listing page (at most 1000, as S3); ``archive_cache_bytes`` bounds
    the built files kept in memory; files of periods starting at or after
    ``archive_header_from_ms`` have a CSV header row; ``archive_list_exact_rows``: see
    :class:`~cryptolake.testing.binance_archive.Archive`. Archive requests cost no weight and
    escape bans, 429s, 451, injected faults and chaos (another host in reality), but get
    ``latency_s``; their own faults are :meth:`archive_fault`.
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
        archive_daily_delay_s: float = 8 * 3600,
        archive_monthly_delay_s: float = 3 * 86400,
        archive_max_keys: int = 1000,
        archive_cache_bytes: int = 512 * 2**20,
        archive_header_from_ms: int | datetime | None = None,
        archive_list_exact_rows: int = 1000,
        clock_speed: float = 1.0,
    ) -> None:
        self._market = _Market(
            default_symbols() if symbols is None else symbols,
            DEFAULT_OUTAGES if outages is None else outages,
            cache_rows,
        )
        self._clock = clock
        self._follow = follow_wall_clock
        self._speed = float(clock_speed)
        self._now_anchor = DEFAULT_NOW_MS if now is None else _as_ms(now)
        self._wall_anchor = clock()
        self._host, self._port = host, port
        self._ban_s = ban_s
        self._ban_grace = max(0, int(ban_grace_requests))
        self._max_log = max_log
        self._lock = threading.Lock()
        #: The address of the client whose request this thread serves (set by the HTTP server).
        self.client_ip = threading.local()
        self._server: Any = None  # a server.HTTPServer while started
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._latency_s = latency_s
        self._weight_limit, self._window_s = weight_limit, weight_window_s
        self._archive = binance_archive.Archive(
            self._market,
            daily_delay_ms=round(archive_daily_delay_s * 1000),
            monthly_delay_ms=round(archive_monthly_delay_s * 1000),
            max_keys=archive_max_keys,
            cache_bytes=archive_cache_bytes,
            header_from_ms=None if archive_header_from_ms is None else _as_ms(archive_header_from_ms),
            list_exact_rows=archive_list_exact_rows,
        )
        #: Binance's WebSocket kline streams on the same port (:mod:`binance_stream`).
        self.streams = binance_stream.StreamHub(self._market, self.now_ms)
        self._reset_state()

    def _reset_state(self) -> None:
        """Forget faults (the archive's too), stats, bans and weight (caller holds the lock or is
        __init__)."""
        self._faults: list[list[Any]] = []  # [fault, remaining uses]
        self._bad_candles: dict[tuple[str, str, int], str] = {}  # (symbol, interval, open ms) -> kind
        self._archive.clear_faults()
        self._archive_requests = 0
        self._archive_bytes = 0
        self._archive_by_kind: dict[str, int] = {}
        self._chaos: _Chaos | None = None
        self._storm_until = 0.0
        self._storm_retry_s = 1
        self._restricted = False
        # Weight, 429s and bans are Binance's per IP: each client address has its own budget.
        self._budgets: dict[str, _Budget] = {}
        self._budget = self._budget_of(DEFAULT_CLIENT_IP)
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

    # -- clock and knobs ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's current time in ms."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> int:
        if not self._follow:
            return self._now_anchor
        return self._now_anchor + int((self._clock() - self._wall_anchor) * 1000 * self._speed)

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
        """Clear faults (archive faults and re-uploads too), chaos, storms, stats, bans, weight
        counters and the restricted flag.

        Symbols, now, outages, latency, the weight limit, the archive's delays and its cache of
        built files are kept.
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
                archive_requests=self._archive_requests,
                archive_bytes=self._archive_bytes,
                archive_by_kind=dict(self._archive_by_kind),
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

    # -- bad candles ---------------------------------------------------------------------------

    def bad_candle(self, kind: str, symbol: str, interval: str, open_ms: int) -> None:
        """Serve one REST candle wrong from now on (until :meth:`reset`), as exchanges have:
        ``swapped_high_low``, ``us_time`` (its open time in microseconds in a millisecond
        field), ``duplicate`` (the row twice), ``spike`` (close and high ten times too high) or
        ``open_as_closed`` (the still-open candle with a close time already past)."""
        if kind not in BAD_CANDLE_KINDS:
            raise ValueError(f"unknown bad candle {kind!r}; expected one of {', '.join(BAD_CANDLE_KINDS)}")
        Interval(interval)  # ValueError for an unknown one
        with self._lock:
            self._bad_candles[(symbol, interval, int(open_ms))] = kind

    def _spoil(self, symbol: str, interval: str, opens: list[int], rows: list[str], now: int) -> list[str]:
        """``rows`` (JSON array texts of the candles at ``opens``) with the bad candles applied."""
        with self._lock:
            bad = {t: k for (sym, iv, t), k in self._bad_candles.items() if sym == symbol and iv == interval}
        if not bad:
            return rows
        out = []
        for t, text in zip(opens, rows, strict=True):
            kind = bad.get(t)
            if kind is None:
                out.append(text)
                continue
            row = json.loads(text)
            if kind == "swapped_high_low":
                row[2], row[3] = row[3], row[2]
            elif kind == "us_time":
                row[0] = int(row[0]) * 1000
            elif kind == "spike":
                row[2], row[4] = str(float(row[2]) * 10), str(float(row[4]) * 10)
            elif kind == "open_as_closed":
                row[6] = min(int(row[6]), now - 1)
            spoiled = json.dumps(row, separators=(",", ":"))
            out.extend([spoiled, spoiled] if kind == "duplicate" else [spoiled])
        return out

    # -- the bulk archive (data.binance.vision) -----------------------------------------------

    def archive_fault(
        self, kind: str, symbol: str, interval: str, period: str, *, times: int | None = None, **kw: Any
    ) -> None:
        """Make one archive file misbehave. ``period`` is ``"YYYY-MM"`` (the monthly file) or
        ``"YYYY-MM-DD"`` (the daily one); faults are keyed by (symbol, interval, period), one of
        each kind per file (setting a kind again replaces it; ``reupload`` bumps the version).

        ``times`` (None: until :meth:`archive_clear_faults` / :meth:`reset`) applies to
        ``missing``, ``corrupt_zip`` and ``wrong_checksum`` only and counts the GETs of the zip
        that the fault affects (made while the file would otherwise be served; HEAD and
        ``.CHECKSUM`` GETs do not count):

        - ``missing``: the zip and its CHECKSUM are unlisted and 404; each zip GET uses one.
        - ``corrupt_zip``: the zip is cut in the middle and the CHECKSUM holds the SHA-256 of the
          cut bytes (the check passes, unzipping fails); each zip GET uses one.
        - ``wrong_checksum``: the CHECKSUM holds another hash; each zip GET uses one. A client
          that fetches the CHECKSUM then the zip sees ``times`` mismatched pairs: with
          ``times=1`` its retry of both is consistent.

        The others describe the published file and hold until cleared (``times`` must be None):

        - ``late`` (``delay_s``): published ``delay_s`` later than usual.
        - ``header``: the CSV starts with a header row (``binance_archive.CSV_HEADER``).
        - ``empty``: the zip holds an empty CSV (the file is listed and served).
        - ``off_grid`` (``start_ms``, ``end_ms``; default the whole period): the candles opening
          in ``[start_ms, end_ms)`` have open and close times shifted by +1,694,789 ms in the
          file (as in the real 2018-02 files); REST keeps them on the grid.
        - ``reupload`` (``changed=3``): a new version of the file from now on (new bytes and
          checksum, LastModified = now, or its publication if later): ``changed`` evenly spread
          candles get ``close * (1 + version / 1000)`` (on the tick) and ``high = max(high,
          close)``; REST keeps the originals. Each call is a new version.
        """
        f = self._archive.file(symbol, interval, period)
        self._archive.add_fault(kind, f, times, self.now_ms(), **kw)

    def archive_clear_faults(self) -> None:
        """Forget every archive fault (files are back to their first version)."""
        self._archive.clear_faults()

    def set_archive_delays(self, daily_s: float | None = None, monthly_s: float | None = None) -> None:
        """Change when daily / monthly archive files are published (after their period ends)."""
        if daily_s is not None:
            self._archive.daily_delay_ms = round(float(daily_s) * 1000)
        if monthly_s is not None:
            self._archive.monthly_delay_ms = round(float(monthly_s) * 1000)

    def prebuild_archive(
        self,
        symbols: str | Iterable[str],
        interval: str,
        start_ms: int | datetime,
        end_ms: int | datetime,
        *,
        kinds: Iterable[str] = ("monthly", "daily"),
    ) -> int:
        """Build and cache every published (at now) monthly and daily file of ``symbols`` and
        ``interval`` whose period overlaps ``[start_ms, end_ms)``, in their current state (faults
        included), so that serving them later costs no building, like a static file host.
        Returns the number of files. Mind ``archive_cache_bytes``: a 1m monthly file is ~2.7 MB
        (~0.25 s to build), a 1m daily one ~90 kB; a RuntimeWarning says when files built here
        were evicted again.
        """
        names = [symbols] if isinstance(symbols, str) else list(symbols)
        return self._archive.prebuild(
            names, Interval(interval).name, _as_ms(start_ms), _as_ms(end_ms), self.now_ms(), kinds
        )

    def archive_klines(self, symbol: str, interval: str, period: str) -> list[list]:
        """Oracle: the candles the archive file for ``period`` holds without faults, as the
        REST API's 12-field arrays (ms times; the file writes µs from 2025), whether or not it
        is published yet (empty if it would not exist)."""
        f = self._archive.file(symbol, interval, period)
        return [_row_list(row) for row in self._archive.expected_rows(f)]

    def archive_cache_info(self) -> dict[str, int]:
        """``{"files": n, "bytes": total}`` of the archive's built-file cache."""
        return self._archive.cache_info()

    def _archive_request(self, method: str, path: str, params: dict[str, str]) -> _Reply:
        """An archive request: no weight, no admission; latency and stats like the API."""
        with self._lock:
            now = self._now_locked()
            latency = self._latency_s
        reply, kind, label = self._archive.answer(method, path, params, now)
        sent = 0 if method == "HEAD" else len(reply.body)
        with self._lock:
            self._archive_requests += 1
            self._archive_bytes += sent
            self._archive_by_kind[kind] = self._archive_by_kind.get(kind, 0) + 1
            self._requests += 1
            self._by_path[label] = self._by_path.get(label, 0) + 1
            self._by_status[reply.status] = self._by_status.get(reply.status, 0) + 1
            self._log.append(
                RequestRecord(time.monotonic(), unquote(path), dict(params), reply.status, 0, self._used)
            )
        reply.delay_s += latency
        return reply

    # -- request handling --------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        """Answer one HTTP request (called from handler threads)."""
        parts = urlsplit(target)
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(key, value)
        if parts.path.startswith(CONTROL_PREFIX):
            return self._control(method, parts.path, params, body)
        if parts.path == "/" or parts.path.startswith("/data/"):
            return self._archive_request(method, parts.path, params)
        micro = (headers.get("X-MBX-TIME-UNIT") or "").upper() == "MICROSECOND"
        return self._api(method, parts.path, params, micro)

    def _budget_of(self, ip: str) -> _Budget:
        budget = self._budgets.get(ip)
        if budget is None:
            budget = self._budgets[ip] = _Budget()
        return budget

    # The admission state of the IP being served (set under the lock for each request).
    _window_id = _budget_field("window_id")
    _used = _budget_field("used")
    _retry_until = _budget_field("retry_until")  # a request before this (after a 429) gets banned
    _grace_left = _budget_field("grace_left")  # ... unless it is a request in flight, forgiven
    _banned_until = _budget_field("banned_until")
    _ban_count = _budget_field("ban_count")

    def _api(self, method: str, path: str, params: dict[str, str], micro: bool) -> _Reply:
        """The API pipeline: 451, bans, storms, faults, weight, chaos, then the endpoint."""
        weight = request_weight(path, params) if method == "GET" else 0
        with self._lock:
            budget = self._budget = self._budget_of(getattr(self.client_ip, "value", DEFAULT_CLIENT_IP))
            reply, fault, charged, chaos = self._admit(path, weight)
            now = self._now_locked()
            latency = self._latency_s
        if reply is None:
            reply = self._endpoint(method, path, params, micro, now)
            if fault is not None:
                reply = self._apply_fault(fault, reply)
        with self._lock:
            used = budget.used
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
        self._touch_window(weight)
        return None, fault, weight, chaos

    def _touch_window(self, weight: int = 0) -> None:
        """Record the current window's weight (every window that saw traffic): ``window_weights``
        sums every IP's, ``max_window_weight`` is the most one IP used in a window."""
        assert self._window_id is not None
        total = self._window_weights.get(self._window_id, 0) + weight
        self._window_weights[self._window_id] = total
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

    # -- the venues and the control API (one module each) --------------------------------------

    def _endpoint(self, method: str, path: str, params: dict[str, str], micro: bool, now: int) -> _Reply:
        return binance_rest.answer(self, method, path, params, micro, now)

    def _control(self, method: str, path: str, params: dict[str, str], body: bytes) -> _Reply:
        return control.answer(self, method, path, params, body)
