"""Binance's kline interval names and lengths: plain constants, no third-party imports.

Kept apart from :mod:`cryptolake.schema` (which needs polars) so that the settings, and with
them ``cryptolake config`` and ``cryptolake --help``, can check an interval without loading polars.
"""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

#: Length in milliseconds of every interval but the calendar month.
FIXED_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}

#: Every kline interval Binance spot serves, shortest first (case-sensitive: "1m" != "1M").
INTERVALS: tuple[str, ...] = (*FIXED_MS, "1M")
