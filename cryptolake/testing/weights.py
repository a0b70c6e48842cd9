"""Request weights and bans as Binance documents them."""

from __future__ import annotations

from cryptolake.testing.wire import _ApiError, _symbols_param

MAX_BAN_S = 3 * 86_400


def _ticker_weight(params: dict[str, str]) -> int:
    """Binance's weight for ticker/24hr: 2 for 1-20 symbols, 40 for 21-100, 80 above/all."""
    if params.get("symbol"):
        return 2
    try:
        names = _symbols_param(params)
    except _ApiError:
        return 2
    if names is None:
        return 80
    return 2 if len(names) <= 20 else 40 if len(names) <= 100 else 80


_FIXED_WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
}


def request_weight(path: str, params: dict[str, str]) -> int:
    """The request weight Binance charges for ``path`` with ``params`` (0 if unknown)."""
    if path == "/api/v3/ticker/24hr":
        return _ticker_weight(params)
    return _FIXED_WEIGHTS.get(path, 0)


def _window_label(window_s: int) -> tuple[int, str]:
    """(intervalNum, interval) for a weight window: 60 s -> (1, MINUTE), 10 s -> (10, SECOND)."""
    if window_s % 60 == 0:
        return window_s // 60, "MINUTE"
    return window_s, "SECOND"
