"""Helpers shared by the test modules: the expected candles, built without the code under test.

``expected_klines`` turns the fake exchange's raw 12-field kline arrays into the lake's frame field
by field, as Binance documents them, so that a mistake in the client's parser (two columns
swapped, a time unit wrong) makes the tests that compare against it fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from cryptolake.schema import KLINE_SCHEMA

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expected_klines(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Binance's kline arrays (``[open time, open, high, low, close, volume, close time, quote
    volume, trades, taker buy base volume, taker buy quote volume, ignore]``, times in ms) as the
    lake's frame, sorted by open time."""

    def moment(ms: Any) -> datetime:
        return _EPOCH + timedelta(milliseconds=int(ms))

    data: dict[str, list[Any]] = {
        "open_time": [moment(r[0]) for r in rows],
        "open": [float(r[1]) for r in rows],
        "high": [float(r[2]) for r in rows],
        "low": [float(r[3]) for r in rows],
        "close": [float(r[4]) for r in rows],
        "volume": [float(r[5]) for r in rows],
        "close_time": [moment(r[6]) for r in rows],
        "quote_volume": [float(r[7]) for r in rows],
        "trades": [int(r[8]) for r in rows],
        "taker_buy_base_volume": [float(r[9]) for r in rows],
        "taker_buy_quote_volume": [float(r[10]) for r in rows],
    }
    return pl.DataFrame(data, schema=KLINE_SCHEMA).sort("open_time")
