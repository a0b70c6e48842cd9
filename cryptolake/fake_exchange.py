"""The fake Binance exchange, now the package :mod:`cryptolake.testing` (one module per concern).

This module keeps ``from cryptolake.fake_exchange import FakeExchange`` and the other public names
working.
"""

from __future__ import annotations

from cryptolake.testing import (
    CHAOS_KINDS,
    DEFAULT_CHAOS_KINDS,
    DEFAULT_NOW_MS,
    DEFAULT_OUTAGES,
    MAX_BAN_S,
    RATE_LIMIT_STORM,
    FakeExchange,
    FakeStats,
    FakeSymbol,
    Fault,
    RequestRecord,
    default_symbols,
    request_weight,
    serve,
)

__all__ = [
    "CHAOS_KINDS",
    "DEFAULT_CHAOS_KINDS",
    "DEFAULT_NOW_MS",
    "DEFAULT_OUTAGES",
    "MAX_BAN_S",
    "RATE_LIMIT_STORM",
    "FakeExchange",
    "FakeStats",
    "FakeSymbol",
    "Fault",
    "RequestRecord",
    "default_symbols",
    "request_weight",
    "serve",
]
