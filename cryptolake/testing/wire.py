"""Binance's wire format as the fake speaks it: messages, content types, parameter checks,
error bodies and the reply a handler sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
API_PREFIX = "/api/"
CONTROL_PREFIX = "/fake/"

MSG_UNKNOWN = "An unknown error occurred while processing the request."
MSG_RESTRICTED = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
MSG_INVALID_PARAM = "Invalid data sent for a parameter."
MSG_INTERNAL = "Internal error; unable to process your request. Please try again."
MSG_SERVICE_UNAVAILABLE = "Service Unavailable."
MSG_TIMEOUT = (
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
)
MSG_BUSY = "Server is currently overloaded with other requests. Please try again in a few minutes."
_LONG_RANGE = "^[0-9]{1,20}$"
_SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK", "CANCEL_ONLY")


# --------------------------------------------------------------------------------------------
# Request parsing and API endpoints
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Binance error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> _ApiError:
    return _ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _illegal(name: str, legal: str) -> _ApiError:
    return _ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def _long_param(params: dict[str, str], name: str) -> int | None:
    """An optional non-negative integer parameter (-1100 if it is not one)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 20 or int(value) >= 1 << 63:
        raise _illegal(name, _LONG_RANGE)
    return int(value)


def _symbols_param(params: dict[str, str]) -> list[str] | None:
    """The ``symbols`` JSON array parameter, or None when absent."""
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        raise _illegal("symbols", _SYMBOLS_RANGE) from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise _illegal("symbols", _SYMBOLS_RANGE)
    return names


def _zero_offset(text: str) -> bool:
    """True if a ``timeZone`` value means UTC (``0``, ``+0``, ``00:00``, ``-0:00``...)."""
    body = text.lstrip("+-")
    parts = body.split(":")
    return 1 <= len(parts) <= 2 and all(p.isdigit() and int(p) == 0 for p in parts)


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _error_body(code: int, msg: str) -> bytes:
    return _json_bytes({"code": code, "msg": msg})


@dataclass
class _Reply:
    """What the HTTP handler sends (or, with ``drop``, doesn't)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    drop: bool = False
