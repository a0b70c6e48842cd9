"""Faults the fake exchange can be told to produce: injected ones (:class:`Fault`), seeded random
ones (chaos) and 429 storms."""

from __future__ import annotations

import random
from dataclasses import dataclass

from cryptolake.testing.wire import MSG_INTERNAL, MSG_SERVICE_UNAVAILABLE, MSG_UNKNOWN

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
