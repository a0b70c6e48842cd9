"""Binance's WebSocket kline streams, served by the fake exchange on its own port.

``/ws/<symbol>@kline_<interval>`` (raw: each message is the event) and
``/stream?streams=a@kline_1m/b@kline_1m`` (combined: ``{"stream": ..., "data": event}``), with
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` requests at run time. Driven by the
exchange's clock (which may run fast): each subscribed stream sends its open candle (``"x":
false``) every 2 s of exchange time (1 s for ``1s``) and, once a candle's interval has passed, its
final update (``"x": true``). Faults (:class:`StreamFault`) cut connections, announce a
``serverShutdown``, stall, skip a final update, send a message for a stream nobody subscribed,
or end every connection after a given lifetime (Binance's 24 hours, shortened).

The WebSocket protocol itself is :mod:`wsproto`'s (a sans-I/O state machine); the handshake is
answered by the fake's HTTP handler, which hands the socket over to :func:`run_session`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from cryptolake.schema import Interval
from cryptolake.testing.market import _Market

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_STREAM_RE = re.compile(r"^([a-z0-9]+)@kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)$")
#: Kinds of :class:`StreamFault`.
STREAM_FAULT_KINDS = ("drop", "server_shutdown", "stall", "skip_final", "unsubscribed")
MAX_STREAMS = 1024


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()  # noqa: S324


def is_stream_path(path: str) -> bool:
    """Whether ``path`` (without the query) is a stream endpoint."""
    return path.startswith("/ws") or path == "/stream"


@dataclass
class StreamFault:
    """What the next connection(s) do (``times`` of them): ``drop`` the TCP connection after
    ``after_s`` seconds (real time) without a close frame; ``server_shutdown``: send
    ``{"e": "serverShutdown"}`` after ``after_s`` and close ``grace_s`` later; ``stall``: send
    nothing from ``after_s`` on (the connection stays open); ``skip_final``: leave out the first
    final updates (``x`` true) due after ``after_s``, of every stream; ``unsubscribed``: send one event for a stream the
    connection did not ask for."""

    kind: str
    after_s: float = 0.0
    grace_s: float = 1.0
    times: int = 1


@dataclass
class _StreamState:
    symbol: str
    interval: Interval
    last_final: int  # open time of the newest candle whose final update was due (or sent)
    next_update_ms: int = 0


@dataclass
class _Session:
    """One connection's subscriptions and its position in the exchange's time."""

    combined: bool
    streams: dict[str, _StreamState] = field(default_factory=dict)


class StreamHub:
    """The stream side of the fake exchange: sessions ask it what to send at the exchange's now."""

    def __init__(self, market: _Market, now_ms: Callable[[], int]) -> None:
        self._market = market
        self._now_ms = now_ms
        self._faults: list[StreamFault] = []
        self.lifetime_s: float | None = None  # Binance cuts every connection after 24 hours
        self.connections = 0
        self.open_connections = 0
        self.messages = 0

    def inject(self, *faults: StreamFault) -> None:
        for fault in faults:
            if fault.kind not in STREAM_FAULT_KINDS:
                raise ValueError(
                    f"unknown stream fault {fault.kind!r}; one of {', '.join(STREAM_FAULT_KINDS)}"
                )
        self._faults.extend(faults)

    def take_fault(self) -> StreamFault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, session: _Session, names: list[str]) -> str | None:
        """Add streams to a session; an error message for a bad name (nothing added then)."""
        now = self._now_ms()
        states = {}
        for name in names:
            match = _STREAM_RE.match(name)
            if match is None:
                return f"Invalid request: stream {name!r} is not a kline stream"
            symbol = match.group(1).upper()
            grid = Interval(match.group(2))
            states[name] = _StreamState(symbol, grid, grid.floor(grid.floor(now) - 1), 0)
        if len(session.streams) + len(states) > MAX_STREAMS:
            return f"Invalid request: more than {MAX_STREAMS} streams on one connection"
        for name, state in states.items():
            session.streams.setdefault(name, state)
        return None

    def due(
        self, session: _Session, skip_final: bool = False
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The events due now: final updates of candles that closed, then open-candle updates;
        with ``skip_final`` the final updates are left out. Also whether any final was due."""
        now = self._now_ms()
        out: list[tuple[str, dict[str, Any]]] = []
        finals = False
        for name, state in session.streams.items():
            sym = self._market.lookup(state.symbol, now)
            if sym is None:
                continue
            grid = state.interval
            current = grid.floor(now)
            closed = grid.floor(current - 1)
            if closed > state.last_final:
                start = max(grid.next_open(state.last_final), grid.floor(sym.listed_ms))
                opens = self._market.forward(grid, start, closed, None)
                state.last_final = closed
                finals = finals or bool(opens)
                if not skip_final:
                    for row in self._market.rows(sym, grid, opens[-3:], now):  # a late poll: the last few
                        out.append((name, _event(state.symbol, grid.name, row, now, closed=True)))
            if now >= state.next_update_ms:
                step = 1000 if grid.name == "1s" else 2000
                state.next_update_ms = now - now % step + step
                rows = self._market.rows(sym, grid, self._market.forward(grid, current, current, 1), now)
                for row in rows:
                    out.append((name, _event(state.symbol, grid.name, row, now, closed=False)))
        return out, finals

    def stray_event(self, session: _Session) -> tuple[str, dict[str, Any]]:
        """An event for a stream the session did not ask for."""
        now = self._now_ms()
        sym = next(
            s for s in self._market.visible(now) if f"{s.symbol.lower()}@kline_1m" not in session.streams
        )
        grid = Interval("1m")
        current = grid.floor(now)
        row = self._market.rows(sym, grid, [current], now)[0]
        return f"{sym.symbol.lower()}@kline_1m", _event(sym.symbol, "1m", row, now, closed=False)


def _event(symbol: str, interval: str, row: tuple, now: int, *, closed: bool) -> dict[str, Any]:
    open_t, o, h, lo, c, v, close_t, qv, n, tb, tq = row
    first_id = (open_t // 1000) * 7
    return {
        "e": "kline",
        "E": now,
        "s": symbol,
        "k": {
            "t": open_t, "T": close_t, "s": symbol, "i": interval, "f": first_id,
            "L": first_id + max(0, n - 1), "o": f"{o:.8f}", "c": f"{c:.8f}", "h": f"{h:.8f}",
            "l": f"{lo:.8f}", "v": f"{v:.8f}", "n": n, "x": closed, "q": f"{qv:.8f}",
            "V": f"{tb:.8f}", "Q": f"{tq:.8f}", "B": "0",
        },
    }  # fmt: skip


# -- one connection ------------------------------------------------------------------------------


def run_session(hub: StreamHub, sock: socket.socket, path: str, query: dict[str, str]) -> None:
    """Serve one upgraded connection until it closes (the handshake is done)."""
    ws = Connection(ConnectionType.SERVER)
    combined = path == "/stream"
    session = _Session(combined)
    names = query.get("streams", "").split("/") if combined else [path[len("/ws/") :]]
    names = [n for n in names if n]
    error = hub.subscribe(session, names) if names else None
    fault = hub.take_fault()
    began = time.monotonic()
    hub.connections += 1
    hub.open_connections += 1
    skip_final = fault is not None and fault.kind == "skip_final"
    stray_sent = False
    shutdown_at: float | None = None
    try:
        if error is not None:
            _send(sock, ws, json.dumps({"error": {"code": 2, "msg": error}}))
            _close(sock, ws, 1008)
            return
        while True:
            elapsed = time.monotonic() - began
            if fault is not None and elapsed >= fault.after_s:
                if fault.kind == "drop":
                    return  # the socket closes under the client without a close frame
                if fault.kind == "server_shutdown" and shutdown_at is None:
                    _send(sock, ws, json.dumps({"e": "serverShutdown", "E": hub._now_ms()}))
                    shutdown_at = time.monotonic() + fault.grace_s
                if fault.kind == "unsubscribed" and not stray_sent:
                    stray_sent = True
                    stream, event = hub.stray_event(session)
                    _send(sock, ws, json.dumps({"stream": stream, "data": event} if combined else event))
            if shutdown_at is not None and time.monotonic() >= shutdown_at:
                _close(sock, ws, 1001)
                return
            if hub.lifetime_s is not None and elapsed >= hub.lifetime_s:
                _close(sock, ws, 1000)
                return
            stalled = fault is not None and fault.kind == "stall" and elapsed >= fault.after_s
            if not stalled:
                skipping = skip_final and fault is not None and elapsed >= fault.after_s
                events, finals = hub.due(session, skipping)
                skip_final = skip_final and not (skipping and finals)  # one closing boundary's finals
                for stream, event in events:
                    _send(sock, ws, json.dumps({"stream": stream, "data": event} if combined else event))
                    hub.messages += 1
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                data = sock.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for ev in ws.events():
                    if isinstance(ev, Ping):
                        sock.sendall(ws.send(ev.response()))
                    elif isinstance(ev, CloseConnection):
                        sock.sendall(ws.send(ev.response()))
                        return
                    elif isinstance(ev, TextMessage):
                        _request(hub, session, sock, ws, ev.data)
    except (OSError, LocalProtocolError, RemoteProtocolError):
        return
    finally:
        hub.open_connections -= 1


def _request(hub: StreamHub, session: _Session, sock: socket.socket, ws: Connection, text: str) -> None:
    try:
        request = json.loads(text)
        method, ident = request["method"], request.get("id")
    except (ValueError, KeyError, TypeError):
        _send(sock, ws, json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
        return
    params = request.get("params") or []
    if method == "SUBSCRIBE":
        error = hub.subscribe(session, [str(p) for p in params])
        reply: dict[str, Any] = {"result": None, "id": ident}
        if error is not None:
            reply = {"error": {"code": 2, "msg": error}, "id": ident}
    elif method == "UNSUBSCRIBE":
        for name in params:
            session.streams.pop(str(name), None)
        reply = {"result": None, "id": ident}
    elif method == "LIST_SUBSCRIPTIONS":
        reply = {"result": sorted(session.streams), "id": ident}
    else:
        reply = {"error": {"code": 1, "msg": f"Invalid method {method!r}"}, "id": ident}
    _send(sock, ws, json.dumps(reply))


def _send(sock: socket.socket, ws: Connection, text: str) -> None:
    sock.sendall(ws.send(TextMessage(data=text)))


def _close(sock: socket.socket, ws: Connection, code: int) -> None:
    try:
        sock.sendall(ws.send(CloseConnection(code=code)))
        sock.shutdown(socket.SHUT_WR)
    except (OSError, LocalProtocolError):
        pass
