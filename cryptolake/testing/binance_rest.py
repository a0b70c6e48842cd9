"""Binance's spot REST market-data endpoints (``/api/v3/ping``, ``time``, ``exchangeInfo``,
``ticker/24hr``, ``klines``, ``uiKlines``) over the shared market: the first venue of the fake
exchange; another venue is a module like this one beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptolake.schema import INTERVALS, Interval
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.weights import _window_label
from cryptolake.testing.wire import (
    _STATUSES,
    MSG_INVALID_PARAM,
    _ApiError,
    _error_body,
    _illegal,
    _json_bytes,
    _long_param,
    _mandatory,
    _Reply,
    _symbols_param,
    _zero_offset,
)

if TYPE_CHECKING:
    from cryptolake.testing.exchange import FakeExchange


def answer(
    exchange: FakeExchange, method: str, path: str, params: dict[str, str], micro: bool, now: int
) -> _Reply:
    """Run the endpoint for ``path``; Binance errors become 4xx JSON answers."""
    handler = _ENDPOINTS.get(path)
    if handler is None:
        return _Reply(404, _error_body(-1000, f"Unknown endpoint: {path}"))
    if method != "GET":
        return _Reply(405, _error_body(-1000, f"Method {method} not allowed for {path}"))
    try:
        body = handler(exchange, params, micro, now)
    except _ApiError as exc:
        return _Reply(exc.status, _error_body(exc.code, exc.msg))
    return _Reply(200, body)


def _ep_ping(exchange: FakeExchange, params: dict[str, str], micro: bool, now: int) -> bytes:
    return b"{}"


def _ep_time(exchange: FakeExchange, params: dict[str, str], micro: bool, now: int) -> bytes:
    return _json_bytes({"serverTime": now * 1000 if micro else now})


def _ep_exchange_info(exchange: FakeExchange, params: dict[str, str], micro: bool, now: int) -> bytes:
    status = params.get("symbolStatus") or None
    if status is not None and status not in _STATUSES:
        raise _ApiError(-1122, "Invalid symbolStatus.")
    chosen = _chosen_symbols(exchange, params, now)
    if status is not None:
        if chosen is not None:
            raise _ApiError(-1128, "Combination of optional parameters invalid.")
        chosen = [s for s in exchange._market.visible(now) if s.status_at(now) == status]
    if chosen is None:
        chosen = exchange._market.visible(now)
    num, unit = _window_label(exchange._window_s)
    data = {
        "timezone": "UTC",
        "serverTime": now * 1000 if micro else now,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": unit,
                "intervalNum": num,
                "limit": exchange._weight_limit,
            },
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
        ],
        "exchangeFilters": [],
        "symbols": [exchange._market.symbol_info(sym, now) for sym in chosen],
    }
    return _json_bytes(data)


def _chosen_symbols(exchange: FakeExchange, params: dict[str, str], now: int) -> list[FakeSymbol] | None:
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
        sym = exchange._market.lookup(name, now)
        if sym is None:
            raise _ApiError(-1121, "Invalid symbol.")
        chosen.append(sym)
    return chosen


def _ep_ticker(exchange: FakeExchange, params: dict[str, str], micro: bool, now: int) -> bytes:
    kind = params.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise _illegal("type", "FULL, MINI")
    status = params.get("symbolStatus") or None
    if status is not None and status not in _STATUSES:
        raise _ApiError(-1122, "Invalid symbolStatus.")
    chosen = _chosen_symbols(exchange, params, now)
    single = params.get("symbol") is not None
    if chosen is None:
        chosen = exchange._market.visible(now)
    if status is not None:
        if single and chosen[0].status_at(now) != status:
            raise _ApiError(-1220, "The symbol's status does not match the requested symbolStatus.")
        chosen = [s for s in chosen if s.status_at(now) == status]
    tickers = [exchange._market.ticker(sym, now, kind == "MINI") for sym in chosen]
    if micro:
        for ticker in tickers:
            ticker["openTime"] *= 1000
            ticker["closeTime"] *= 1000
    return _json_bytes(tickers[0] if single else tickers)


def _ep_klines(exchange: FakeExchange, params: dict[str, str], micro: bool, now: int) -> bytes:
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
    sym = exchange._market.lookup(name, now)
    if sym is None:
        raise _ApiError(-1121, "Invalid symbol.")
    if micro:  # open_us >= start_us  <=>  open_ms >= ceil(start_us / 1000)
        start = None if start is None else -(-start // 1000)
        end = None if end is None else end // 1000
    iv = Interval(interval)
    opens = exchange._market.select(sym, iv, now, start, end, limit)
    rows = exchange._spoil(
        sym.symbol, iv.name, opens, exchange._market.rows_json(sym, iv, opens, now, micro), now
    )
    return ("[" + ",".join(rows) + "]").encode()


_ENDPOINTS: dict[str, Callable[[Any, dict[str, str], bool, int], bytes]] = {
    "/api/v3/ping": _ep_ping,
    "/api/v3/time": _ep_time,
    "/api/v3/exchangeInfo": _ep_exchange_info,
    "/api/v3/ticker/24hr": _ep_ticker,
    "/api/v3/klines": _ep_klines,
    "/api/v3/uiKlines": _ep_klines,
}
