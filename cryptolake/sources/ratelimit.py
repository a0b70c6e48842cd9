"""Binance's request-weight budget and IP bans, shared by every request of a process.

Binance limits request *weight* per IP in fixed windows (6000 per minute on spot, aligned to the
clock). :class:`WeightLimiter` reserves weight before a request is sent, so that all threads of a
process together stay under a share of the limit; each response's ``X-MBX-USED-WEIGHT-<n><u>``
header corrects the estimate (other processes on the same IP count too). After a 429 nothing is
sent until its ``Retry-After`` has passed. :class:`BanBook` remembers 418 bans in memory and, when
given a file, on disk, so that a restarted process or another process waits the ban out too.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from cryptolake.atomic import write_bytes_atomic
from cryptolake.errors import Interrupted

_WEIGHT_HEADER = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DEFAULT_WEIGHT_LIMIT = 6000
DEFAULT_WINDOW_S = 60.0


@dataclass(frozen=True)
class Reservation:
    """Weight reserved for one request in one window."""

    window: int
    weight: int


class WeightLimiter:
    """A fixed-window weight budget shared by all threads that use it.

    Args:
        limit: the exchange's weight limit per window.
        window_s: window length in seconds (windows are aligned to the Unix epoch, as Binance's).
        share: fraction of ``limit`` this process allows itself (0 < share <= 1).
        clock: epoch seconds now (windows, pauses).
        sleep: how to wait for a window or a pause to pass; None (the default) waits on the
            limiter's condition, so that a release or a cancel wakes it at once. Tests give a
            function that advances their own ``clock`` instead, and no wall time passes.
    """

    def __init__(
        self,
        limit: int = DEFAULT_WEIGHT_LIMIT,
        window_s: float = DEFAULT_WINDOW_S,
        share: float = 0.9,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self._cond = threading.Condition()
        self._clock = clock
        self._sleep = sleep
        self.limit = limit
        self.window_s = window_s
        self.share = share
        self.calibrated = False
        self._window: int | None = None
        self._used = 0
        self._inflight = 0
        self._pause_until = 0.0

    @property
    def budget(self) -> int:
        """Weight this process allows itself per window."""
        return max(1, math.floor(self.limit * self.share))

    def configure(self, limit: int, window_s: float) -> None:
        """Adopt the limit and window the exchange advertises (``exchangeInfo.rateLimits``)."""
        with self._cond:
            self.limit, self.window_s, self.calibrated = limit, window_s, True
            self._window = None
            self._cond.notify_all()

    def acquire(self, weight: int, cancel: threading.Event | None = None) -> Reservation:
        """Block until ``weight`` fits in the current window's budget, then reserve it.

        Raises:
            Interrupted: ``cancel`` was set while waiting (see :meth:`wake`).
        """
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Interrupted("stopped while waiting for request weight")
                now = self._clock()
                if now < self._pause_until:
                    self._wait(self._pause_until - now)
                    continue
                window = self._window_of(now)
                if window != self._window:
                    self._roll(window)
                fits = self._used + weight <= self.budget
                if fits or (self._used == 0 and self._inflight == 0):
                    self._used += weight
                    self._inflight += weight
                    return Reservation(window, weight)
                margin = min(0.25, self.window_s * 0.02)
                self._wait((window + 1) * self.window_s + margin - now)

    def _wait(self, seconds: float) -> None:
        """Wait (holding the condition) for ``seconds``, or until notified."""
        if self._sleep is None:
            self._cond.wait(seconds)
            return
        self._cond.release()
        try:
            self._sleep(max(0.0, seconds))
        finally:
            self._cond.acquire()

    def wake(self) -> None:
        """Wake every waiting :meth:`acquire` so that it looks at its ``cancel`` again."""
        with self._cond:
            self._cond.notify_all()

    def release(self, reservation: Reservation, headers: Mapping[str, str] | None = None) -> None:
        """Return a reservation once its response (or failure) is in; learn from its headers."""
        with self._cond:
            self._inflight -= reservation.weight
            used = _used_weight(headers or {}, self.window_s)
            if used is not None and reservation.window == self._window == self._window_of(self._clock()):
                self._used = max(self._used, used)
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429's ``Retry-After``)."""
        with self._cond:
            self._pause_until = max(self._pause_until, self._clock() + seconds)
            self._cond.notify_all()

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        with self._cond:
            return max(0.0, self._pause_until - self._clock())

    def _window_of(self, now: float) -> int:
        return math.floor(now / self.window_s)

    def _roll(self, window: int) -> None:
        # Requests still in flight from the last window may be counted by the server in this one.
        self._window = window
        self._used = self._inflight


def _used_weight(headers: Mapping[str, str], window_s: float) -> int | None:
    for name, value in headers.items():
        match = _WEIGHT_HEADER.match(name)
        if match and int(match.group(1)) * _UNIT_S[match.group(2).lower()] == window_s:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def parse_rate_limits(rate_limits: list[dict[str, object]]) -> tuple[int, float] | None:
    """``(limit, window_s)`` of the REQUEST_WEIGHT entry of ``exchangeInfo.rateLimits``."""
    units = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
    for entry in rate_limits:
        if entry.get("rateLimitType") == "REQUEST_WEIGHT" and entry.get("interval") in units:
            number = int(entry.get("intervalNum", 1))  # type: ignore[call-overload]
            limit = int(entry["limit"])  # type: ignore[call-overload]
            return limit, float(units[str(entry["interval"])] * number)
    return None


#: The longest IP ban Binance gives (bans escalate "from 2 minutes to 3 days"): a recorded ban
#: that claims to last longer is not believed, and is cut to this from when it was recorded.
MAX_BAN_S = 3 * 86_400


class BanBook:
    """When each host may be called again after a 418 ban, in memory and optionally on disk.

    Bans live in one process-wide table, so every client of the process honours them. The
    file (JSON ``{host: banned_until_epoch_s}``) is re-read whenever it changes, so every process
    that shares it honours a ban any of them received. No ban lasts more than :data:`MAX_BAN_S`
    after it was recorded (for a ban read from the file: after the file was last written, by the
    earlier of its modification and change times), so a corrupt or hand-edited file cannot block
    a lake forever.
    """

    _until: dict[str, float] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._file_stamp: tuple[int, int] | None = None

    def banned_until(self, host: str) -> float:
        """Epoch seconds until which ``host`` must not be called; 0 when not banned."""
        with self._lock:
            self._reload()
            until = self._until.get(host, 0.0)
            return until if until > self._clock() else 0.0

    def record(self, host: str, retry_after_s: float) -> float:
        """Record a ban of ``retry_after_s`` seconds (at most :data:`MAX_BAN_S`); returns when it ends."""
        with self._lock, self._file_lock():
            self._reload(fresh=True)
            now = self._clock()
            until = max(min(self._until.get(host, 0.0), now + MAX_BAN_S), now + min(retry_after_s, MAX_BAN_S))
            self._until[host] = until
            self._save()
            return until

    def entries(self) -> dict[str, float]:
        """``{host: banned_until}`` for every ban still running (this process's and the file's)."""
        with self._lock:
            self._reload()
            now = self._clock()
            return {host: until for host, until in self._until.items() if until > now}

    def clear(self, host: str | None = None) -> dict[str, float]:
        """Forget the bans of ``host`` (None: every host), here and in the file; returns them.

        Only for a ban known to be over (Binance answers 418 again if it is not, and the new ban
        is recorded again)."""
        with self._lock, self._file_lock():
            self._reload(fresh=True)
            gone = {h: u for h, u in self._until.items() if host is None or h == host}
            for name in gone:
                del self._until[name]
            if self.path is not None and (gone or self.path.exists()):
                self._save()
            return gone

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Other processes' read-modify-write of the file waits for ours (``<file>.lock``), so two
        processes banned at once never lose each other's ban."""
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path.with_name(self.path.name + ".lock"), thread_local=False):
            yield

    def _reload(self, fresh: bool = False) -> None:
        """Merge the file's bans in (only when it changed, unless ``fresh``)."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._file_stamp and not fresh:
            return
        try:
            on_disk = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._file_stamp = stamp
        if not isinstance(on_disk, dict):
            return
        # No ban outlasts 3 days from when the file was written. Its modification time can be
        # set to any date (touch -d, a restored backup), its change time cannot: the earlier of
        # the two is when it was written at the latest.
        believed = min(stat.st_mtime, stat.st_ctime) + MAX_BAN_S
        for host, until in on_disk.items():
            if isinstance(until, (int, float)) and not isinstance(until, bool):
                self._until[host] = max(self._until.get(host, 0.0), min(float(until), believed))

    def _save(self) -> None:
        if self.path is None:
            return
        now = self._clock()
        live = {host: until for host, until in self._until.items() if until > now}
        write_bytes_atomic(self.path, json.dumps(live).encode("utf-8"))


_REGISTRY_LOCK = threading.Lock()
_LIMITERS: dict[tuple[Any, ...], WeightLimiter] = {}


def shared_limiter(
    host: str,
    share: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] | None = None,
) -> WeightLimiter:
    """The process-wide limiter for ``host`` and ``share``: every client of the process that
    talks to one host with one share uses one weight budget. Clients asking for different
    shares of the same host get budgets of their own (each allows itself its share), rather than
    one of them being silently ignored."""
    with _REGISTRY_LOCK:
        key = (host, float(share), clock, sleep)  # a test's own clock gets a budget of its own
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = WeightLimiter(share=share, clock=clock, sleep=sleep)
        return limiter


def forget_shared_state() -> None:
    """Forget every process-wide limiter and in-memory ban (tests; a notebook after a restart)."""
    with _REGISTRY_LOCK:
        _LIMITERS.clear()
    with BanBook._lock:
        BanBook._until.clear()


class RequestPacer:
    """At most ``limit`` requests in any ``period_s`` seconds (a sliding window, so no burst
    exceeds it; pyrate-limiter keeps the log), shared by all threads of a client, with a pause
    (a 429's ``Retry-After``) and a cancel that wakes every waiter.

    Venues other than Binance publish a request rate rather than a weight budget (Coinbase 10/s,
    Kraken about 1/s, Bybit 600 per 5 s); this is their :class:`WeightLimiter`.
    """

    def __init__(self, limit: int, period_s: float, *, clock: Callable[[], float] = time.time) -> None:
        from pyrate_limiter import InMemoryBucket, Rate, RateItem

        if limit < 1 or period_s <= 0:
            raise ValueError("limit >= 1 and period_s > 0")
        self.limit, self.period_s = limit, period_s
        self._bucket = InMemoryBucket([Rate(limit, round(period_s * 1000))])
        self._item = RateItem
        self._clock = clock
        self._cond = threading.Condition()
        self._paused_until = 0.0
        self._acquired = 0

    def acquire(self, cancel: threading.Event | None = None) -> None:
        """Wait until one more request fits; raises :class:`Interrupted` on cancel."""
        while True:
            if cancel is not None and cancel.is_set():
                raise Interrupted("stopped while waiting for the request pace")
            with self._cond:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    now_ms = int(now * 1000)
                    item = self._item("request", now_ms)
                    if self._bucket.put(item):
                        self._acquired += 1
                        if self._acquired % 256 == 0:
                            self._bucket.leak(now_ms)
                        return
                    waiting = self._bucket.waiting(item)
                    wait = max(0.001, float(waiting) / 1000 if isinstance(waiting, int | float) else 0.01)
                self._cond.wait(min(wait, 0.5))

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now."""
        with self._cond:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def wake(self) -> None:
        """Wake every waiter (to notice a cancel)."""
        with self._cond:
            self._cond.notify_all()
