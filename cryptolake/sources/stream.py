"""Binance's WebSocket kline streams: closed candles as they close, over as few connections as
Binance's limits allow, kept alive across drops, stalls, ``serverShutdown`` and the 24-hour cut.

:class:`KlineStream` reads combined streams (``/stream?streams=a@kline_1m/...``, at most
:data:`MAX_STREAMS_PER_CONNECTION` per connection) on one thread per connection, with the
``websockets`` client (which answers the server's pings). It hands on only closed candles
(``"x": true``), each once and in order per symbol, and says what it cannot vouch for, so that
the caller repairs it over REST:

- ``on_connected(symbols)``: a connection (re)started; candles between the last one handed on
  and the first one this connection closes were not seen;
- ``on_missed(symbol, first_open_ms, last_open_ms)``: a symbol's candle closed without its final
  update (Binance may skip one) -- those candles were not seen.

A connection that is silent for ``silence_s``, that announces ``serverShutdown``, or that nears
``lifetime_s`` (Binance cuts every connection after 24 hours) is replaced by a new one that is
already receiving before the old one is closed, so nothing in between is lost; duplicates from
the overlap are dropped. Reconnects back off exponentially with jitter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptolake.schema import Interval

log = logging.getLogger("cryptolake.stream")

DEFAULT_STREAM_URL = "wss://data-stream.binance.vision"
#: Binance: at most 1024 streams per connection.
MAX_STREAMS_PER_CONNECTION = 1024
#: Binance cuts a connection after 24 hours; it is replaced a little before.
DEFAULT_LIFETIME_S = 23.5 * 3600


@dataclass
class StreamStats:
    """What the stream did: connections opened, reconnects, messages, candles handed on, and
    per symbol the open time of the last closed candle handed on."""

    connections: int = 0
    #: Connections open now.
    open: int = 0
    reconnects: int = 0
    #: Why the last connection attempt or connection failed (None: none has).
    last_error: str | None = None
    messages: int = 0
    candles: int = 0
    missed: int = 0
    last_open_ms: dict[str, int] = field(default_factory=dict)


Candle = dict[str, Any]


class KlineStream:
    """Closed candles of ``symbols`` at ``interval`` from Binance's streams (see the module doc).

    Args:
        symbols: Binance symbols (``BTCUSDT``).
        interval: a kline interval (``1m``).
        on_candle: called with ``(symbol, kline)`` for each closed candle (``kline`` is the
            event's ``k`` object: ``t``, ``o``, ``h``, ``l``, ``c``, ``v``, ``T``, ``q``, ``n``,
            ``V``, ``Q`` as Binance sends them, and the event time ``E``), on a connection's
            thread.
        on_connected: called with the connection's symbols each time one (re)starts.
        on_missed: called with ``(symbol, first_open_ms, last_open_ms)`` for candles that closed
            without a final update.
        stream_url: the stream host (``wss://data-stream.binance.vision``).
        silence_s: a connection with no message for this long is replaced.
        lifetime_s: a connection older than this is replaced (before Binance's 24-hour cut).
        streams_per_connection: at most this many streams share a connection.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        interval: str,
        *,
        on_candle: Callable[[str, Candle], None],
        on_connected: Callable[[list[str]], None] | None = None,
        on_missed: Callable[[str, int, int], None] | None = None,
        stream_url: str = DEFAULT_STREAM_URL,
        silence_s: float = 30.0,
        lifetime_s: float = DEFAULT_LIFETIME_S,
        streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        retry_delay_s: float = 1.0,
    ) -> None:
        if not 1 <= streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection is 1..{MAX_STREAMS_PER_CONNECTION}")
        self.symbols = list(dict.fromkeys(symbols))
        self.grid = Interval(interval)
        self.stream_url = stream_url.rstrip("/")
        self.silence_s, self.lifetime_s, self.retry_delay_s = silence_s, lifetime_s, retry_delay_s
        self.on_candle, self.on_connected, self.on_missed = on_candle, on_connected, on_missed
        self.stats = StreamStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._groups = [
            self.symbols[i : i + streams_per_connection]
            for i in range(0, len(self.symbols), streams_per_connection)
        ]

    @property
    def connection_count(self) -> int:
        """Connections the stream keeps open (one per ``streams_per_connection`` symbols)."""
        return len(self._groups)

    def start(self) -> KlineStream:
        """Start one thread per connection; returns at once."""
        for index, group in enumerate(self._groups):
            thread = threading.Thread(
                target=self._run, args=(group,), name=f"cryptolake-stream-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every connection and wait for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def __enter__(self) -> KlineStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one group of streams ----------------------------------------------------------------

    def _url(self, group: list[str]) -> str:
        names = "/".join(f"{s.lower()}@kline_{self.grid.name}" for s in group)
        return f"{self.stream_url}/stream?streams={names}"

    def _run(self, group: list[str]) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import ClientConnection

        failures = 0
        current: ClientConnection | None = None
        opened_at = 0.0
        first = True
        while not self._stop.is_set():
            try:
                if current is None:
                    current = _open(self._url(group))
                    with self._lock:
                        self.stats.open += 1
                    opened_at = time.monotonic()
                    self._connected(group, first)
                    first = False
                handover = self._read(current, opened_at)
                failures = 0
                if handover is None:
                    break  # stopped
                # Replace the connection: the new one is receiving before the old one closes.
                successor = _open(self._url(group))
                self._connected(group, False)
                self._drain(current, successor)
                current, opened_at = successor, time.monotonic()
            except (OSError, TimeoutError, WebSocketException) as exc:
                if current is not None:
                    current.close()
                    current = None
                    with self._lock:
                        self.stats.open -= 1
                if self._stop.is_set():
                    break
                failures += 1
                with self._lock:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(60.0, self.retry_delay_s * 2 ** min(failures - 1, 6)) * (0.5 + random.random())
                # The first loss is routine (Binance cuts connections); failing again and again is not.
                level = logging.INFO if failures == 1 else logging.WARNING
                log.log(
                    level,
                    "stream connection to %s failed (%s); reconnecting in %.1f s",
                    self.stream_url,
                    exc,
                    delay,
                )
                self._stop.wait(delay)
        if current is not None:
            current.close()
            with self._lock:
                self.stats.open -= 1

    def _connected(self, group: list[str], first: bool) -> None:
        with self._lock:
            self.stats.connections += 1
            if not first:
                self.stats.reconnects += 1
        if self.on_connected is not None:
            self.on_connected(list(group))

    def _read(self, ws: Any, opened_at: float) -> str | None:
        """Hand on messages until the connection should be replaced (why) or a stop (None)."""
        heard = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - opened_at >= self.lifetime_s:
                return "lifetime"
            try:
                text = ws.recv(timeout=0.25)  # short: a stop is noticed at once
            except TimeoutError:
                if now - heard >= self.silence_s:
                    log.info("stream silent for %.0f s: replacing the connection", now - heard)
                    return "silent"
                continue
            heard = time.monotonic()
            if self._handle(text) == "serverShutdown":
                return "serverShutdown"
        return None

    def _drain(self, old: Any, new: Any) -> None:
        """Keep reading the old connection until the new one has said something, then close it."""
        from websockets.exceptions import WebSocketException

        deadline = time.monotonic() + self.silence_s
        pending: list[str] = []
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                pending.append(new.recv(timeout=0.05))
                break
            except TimeoutError:
                pass
            with contextlib.suppress(TimeoutError, WebSocketException, OSError):
                self._handle(old.recv(timeout=0.05))
        old.close()
        for text in pending:
            self._handle(text)

    def _handle(self, text: str | bytes) -> str | None:
        try:
            message = json.loads(text)
        except ValueError:
            return None
        data = message.get("data", message) if isinstance(message, dict) else None
        if not isinstance(data, dict):
            return None
        with self._lock:
            self.stats.messages += 1
        if data.get("e") == "serverShutdown":
            return "serverShutdown"
        kline = data.get("k")
        if data.get("e") != "kline" or not isinstance(kline, dict) or not kline.get("x"):
            return None  # the open candle (or not a kline): never stored
        symbol = str(data.get("s") or kline.get("s"))
        if symbol not in self.symbols or kline.get("i") != self.grid.name:
            return None  # a stream nobody asked for
        open_ms = int(kline["t"])
        with self._lock:
            last = self.stats.last_open_ms.get(symbol)
            if last is not None and open_ms <= last:
                return None  # seen already (the overlap of two connections)
            self.stats.last_open_ms[symbol] = open_ms
            self.stats.candles += 1
            gap = last is not None and self.grid.next_open(last) < open_ms
            if gap:
                self.stats.missed += 1
        if gap and last is not None and self.on_missed is not None:
            self.on_missed(symbol, self.grid.next_open(last), self.grid.floor(open_ms - 1))
        kline.setdefault("E", data.get("E"))  # when the exchange sent it (its clock)
        self.on_candle(symbol, kline)
        return None


def _open(url: str) -> Any:
    """A connected ``websockets`` client (closed by the caller's ``close()``)."""
    from websockets.sync.client import connect

    return connect(url, open_timeout=10, close_timeout=2).__enter__()
