"""The candle schema and Binance's interval grid.

Everything here is pure: no I/O, no clock. Times are integer milliseconds since the Unix epoch
(UTC) unless a name says otherwise.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

# The interval names and lengths live in a module without polars (the settings check them);
# "X as X" re-exports them from here, where they have always been importable.
from cryptolake.intervals import DAY_MS as DAY_MS
from cryptolake.intervals import FIXED_MS as _FIXED_MS
from cryptolake.intervals import HOUR_MS as HOUR_MS
from cryptolake.intervals import INTERVALS as INTERVALS
from cryptolake.intervals import MINUTE_MS as MINUTE_MS
from cryptolake.intervals import WEEK_MS as WEEK_MS

#: Columns of a stored candle, in file order (the lake layout contract).
KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)

_UTC_MS = pl.Datetime("ms", "UTC")

#: polars dtypes of the stored candle columns.
KLINE_SCHEMA: dict[str, pl.DataType] = {
    "open_time": _UTC_MS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "close_time": _UTC_MS,
    "quote_volume": pl.Float64(),
    "trades": pl.Int64(),
    "taker_buy_base_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
}

# 1970-01-01 was a Thursday; Binance weeks open on Monday 00:00 UTC (1970-01-05).
_WEEK_ORIGIN_MS = 4 * DAY_MS


@dataclass(frozen=True)
class Interval:
    """One of Binance's kline intervals, with its UTC grid.

    Fixed intervals sit on a grid counted from the Unix epoch, except ``1w`` whose candles open
    on Monday 00:00 UTC; ``1M`` candles open on the first of each calendar month.
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in INTERVALS:
            raise ValueError(f"unknown interval {self.name!r}; expected one of {', '.join(INTERVALS)}")

    @property
    def is_monthly(self) -> bool:
        return self.name == "1M"

    @property
    def fixed_ms(self) -> int | None:
        """Length in milliseconds, or None for the calendar month."""
        return _FIXED_MS.get(self.name)

    @property
    def nominal_ms(self) -> int:
        """Length in milliseconds; 31 days for ``1M`` (an upper bound, for planning)."""
        return _FIXED_MS.get(self.name, 31 * DAY_MS)

    def floor(self, t_ms: int) -> int:
        """Open time of the candle that contains ``t_ms``."""
        if self.is_monthly:
            year, month = _year_month(t_ms)
            return _month_start_ms(year, month)
        return t_ms - (t_ms - self.origin_ms) % _FIXED_MS[self.name]

    def ceil(self, t_ms: int) -> int:
        """First grid open time at or after ``t_ms``."""
        floor = self.floor(t_ms)
        return floor if floor == t_ms else self.next_open(floor)

    def next_open(self, open_ms: int) -> int:
        """Open time of the candle after the one opening at ``open_ms`` (which is on the grid)."""
        if self.is_monthly:
            year, month = _year_month(open_ms)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            return _month_start_ms(year, month)
        return open_ms + _FIXED_MS[self.name]

    def add(self, open_ms: int, count: int) -> int:
        """Open time ``count`` candles after ``open_ms`` (``count`` >= 0)."""
        if not self.is_monthly:
            return open_ms + count * _FIXED_MS[self.name]
        year, month = _year_month(open_ms)
        months = year * 12 + (month - 1) + count
        return _month_start_ms(months // 12, months % 12 + 1)

    def close_time(self, open_ms: int) -> int:
        """Binance's close time for a candle: the next open time minus one millisecond."""
        return self.next_open(open_ms) - 1

    def count(self, start_ms: int, end_ms: int) -> int:
        """Number of grid open times in ``[start_ms, end_ms)``."""
        first = self.ceil(start_ms)
        if first >= end_ms:
            return 0
        if not self.is_monthly:
            return (end_ms - first - 1) // _FIXED_MS[self.name] + 1
        y0, m0 = _year_month(first)
        y1, m1 = _year_month(self.floor(end_ms - 1))
        return (y1 * 12 + m1) - (y0 * 12 + m0) + 1

    def index(self, t_ms: int) -> int:
        """Position on the grid of the candle containing ``t_ms``: consecutive candles differ by 1."""
        if self.is_monthly:
            year, month = _year_month(t_ms)
            return year * 12 + month - 1
        return (t_ms - self.origin_ms) // _FIXED_MS[self.name]

    def at(self, index: int) -> int:
        """Open time of the candle at grid position ``index`` (the inverse of :meth:`index`)."""
        if self.is_monthly:
            return _month_start_ms(index // 12, index % 12 + 1)
        return self.origin_ms + index * _FIXED_MS[self.name]

    def is_on_grid(self, t_ms: int) -> bool:
        """True when a candle may open at ``t_ms``."""
        return self.floor(t_ms) == t_ms

    @property
    def origin_ms(self) -> int:
        """A grid open time the fixed grid is counted from (Monday 1970-01-05 for ``1w``)."""
        return _WEEK_ORIGIN_MS if self.name == "1w" else 0

    def open_times(self, start_ms: int, end_ms: int) -> Iterator[int]:
        """Grid open times in ``[start_ms, end_ms)``."""
        t = self.ceil(start_ms)
        while t < end_ms:
            yield t
            t = self.next_open(t)

    def __str__(self) -> str:
        return self.name


def _year_month(t_ms: int) -> tuple[int, int]:
    days = t_ms // DAY_MS
    # civil-from-days (Howard Hinnant), exact for any int, no datetime range limits.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return (year + 1 if month <= 2 else year), month


def _month_start_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def empty_klines() -> pl.DataFrame:
    """An empty frame with the stored candle schema."""
    return pl.DataFrame(schema=KLINE_SCHEMA)
