"""Data quality: the rules every candle is checked against, and the report over a stored lake.

:func:`find_problems` applies every rule to one symbol's candles of one interval (a polars
frame in the lake's schema, sorted or not) and returns one row per finding: ``symbol``,
``interval``, ``open_time``, ``rule``, ``severity`` and ``detail`` (the values that broke it).

Errors (a candle that cannot be trusted at all):

- ``duplicate_key``: an open time stored more than once;
- ``off_grid``: an open time off the interval's grid;
- ``close_time``: a close time that is not the next open time minus 1 ms;
- ``time_unit``: an open or close time not plausible in milliseconds (before 2009, or later than
  the clock allows: a microsecond or second value in a millisecond field);
- ``ohlc_order``: ``low <= min(open, close)`` or ``max(open, close) <= high`` broken;
- ``non_positive_price``: a price that is zero, negative or not a number;
- ``negative_volume``: a negative volume, quote volume, taker volume or trade count;
- ``not_closed``: a candle whose close time has not passed yet.

Warnings (kept, and reported):

- ``taker_exceeds_volume``: ``taker_buy_base_volume > volume``;
- ``zero_volume_mismatch``: no volume but trades, or prices that differ;
- ``price_spike``: a close whose log return from both neighbours is beyond ``spike_mads``
  robust deviations (median absolute deviation over ``spike_window`` candles): a jump that
  neither neighbouring candle confirms;
- ``zero_volume_run``: ``zero_volume_hours`` or more of candles in a row without volume.

:func:`check_lake` runs them over what a lake stores, one partition at a time (bounded memory).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from cryptolake.errors import LakeError
from cryptolake.lake import Lake
from cryptolake.schema import HOUR_MS, Interval
from cryptolake.timeutils import to_ms

Severity = Literal["error", "warning"]
ERROR_RULES = (
    "duplicate_key",
    "off_grid",
    "close_time",
    "time_unit",
    "ohlc_order",
    "non_positive_price",
    "negative_volume",
    "not_closed",
)
WARNING_RULES = ("taker_exceeds_volume", "zero_volume_mismatch", "price_spike", "zero_volume_run")
#: Open times before this are not plausible in milliseconds (a value in seconds lands in 1970).
EARLIEST_MS = to_ms("2009-01-01")
FINDING_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "interval": pl.String(),
        "open_time": pl.Datetime("ms", "UTC"),
        "rule": pl.String(),
        "severity": pl.String(),
        "detail": pl.String(),
    }
)
#: The least median absolute log return a spike is measured against (0.1%): over a flat stretch
#: the median is zero, and any move would otherwise be "infinitely many" deviations.
MAD_FLOOR = 1e-3
_PRICES = ("open", "high", "low", "close")
_AMOUNTS = ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume", "trades")


@dataclass(frozen=True)
class QualityRules:
    """The thresholds of the warning rules (setting section ``[quality]``)."""

    spike_mads: float = 15.0
    spike_window: int = 240
    zero_volume_hours: float = 24.0


def find_problems(
    candles: pl.DataFrame,
    symbol: str,
    interval: str,
    now_ms: int,
    rules: QualityRules = QualityRules(),
) -> pl.DataFrame:
    """Every finding of every rule in one symbol's candles of ``interval`` (see the module
    docstring), sorted by open time and rule; empty if the candles are sound."""
    grid = Interval(interval)
    if candles.is_empty():
        return pl.DataFrame(schema=FINDING_SCHEMA)
    frame = candles.with_columns(
        pl.col("open_time").dt.epoch("ms").alias("_open"),
        pl.col("close_time").dt.epoch("ms").alias("_close"),
    ).sort("_open")
    found = [
        _flag(frame, "duplicate_key", "error", pl.col("_open").is_duplicated(), ["_open"]),
        _flag(frame, "off_grid", "error", ~_on_grid(grid), ["_open"]),
        _flag(
            frame,
            "close_time",
            "error",
            pl.col("_close") != _next_open(grid) - 1,
            ["_open", "_close"],
        ),
        _flag(
            frame,
            "time_unit",
            "error",
            (pl.col("_open") < EARLIEST_MS)
            | (pl.col("_open") > now_ms + grid.nominal_ms)
            | (pl.col("_close") < EARLIEST_MS)
            | (pl.col("_close") > now_ms + 2 * grid.nominal_ms),
            ["_open", "_close"],
        ),
        _flag(
            frame,
            "ohlc_order",
            "error",
            (pl.col("low") > pl.min_horizontal("open", "close"))
            | (pl.max_horizontal("open", "close") > pl.col("high")),
            list(_PRICES),
        ),
        _flag(
            frame,
            "non_positive_price",
            "error",
            pl.any_horizontal(~(pl.col(c) > 0) for c in _PRICES),  # NaN and null too
            list(_PRICES),
        ),
        _flag(
            frame,
            "negative_volume",
            "error",
            pl.any_horizontal(pl.col(c) < 0 for c in _AMOUNTS),
            list(_AMOUNTS),
        ),
        _flag(frame, "not_closed", "error", pl.col("_close") >= now_ms, ["_close"]),
        _flag(
            frame,
            "taker_exceeds_volume",
            "warning",
            pl.col("taker_buy_base_volume") > pl.col("volume") * (1 + 1e-9) + 1e-12,
            ["taker_buy_base_volume", "volume"],
        ),
        _flag(
            frame,
            "zero_volume_mismatch",
            "warning",
            (pl.col("volume") == 0)
            & ((pl.col("trades") > 0) | (pl.min_horizontal(*_PRICES) != pl.max_horizontal(*_PRICES))),
            ["volume", "trades", *_PRICES],
        ),
        _spikes(frame, rules),
        _zero_volume_runs(frame, grid, rules),
    ]
    return (
        pl.concat(found)
        .with_columns(pl.lit(symbol).alias("symbol"), pl.lit(grid.name).alias("interval"))
        .select(FINDING_SCHEMA.names())
        .cast({"open_time": FINDING_SCHEMA["open_time"]})
        .sort("open_time", "rule")
    )


def _on_grid(grid: Interval) -> pl.Expr:
    if grid.is_monthly:
        return pl.col("open_time") == pl.col("open_time").dt.truncate("1mo")
    assert grid.fixed_ms is not None
    return (pl.col("_open") - grid.origin_ms) % grid.fixed_ms == 0


def _next_open(grid: Interval) -> pl.Expr:
    if grid.is_monthly:
        return pl.col("open_time").dt.offset_by("1mo").dt.epoch("ms")
    return pl.col("_open") + grid.nominal_ms


def _flag(
    frame: pl.DataFrame, rule: str, severity: Severity, broken: pl.Expr, shown: list[str]
) -> pl.DataFrame:
    """The rows where ``broken`` holds, as findings whose detail names the ``shown`` values."""
    detail = pl.concat_str(
        [pl.lit(f"{c.lstrip('_')}=") + pl.col(c).cast(pl.String).fill_null("null") for c in shown],
        separator=" ",
    )
    return _findings(frame.filter(broken.fill_null(True)), rule, severity, detail)


def _findings(hits: pl.DataFrame, rule: str, severity: Severity, detail: pl.Expr) -> pl.DataFrame:
    """``hits`` (with ``_open``) as findings of ``rule``; symbol and interval are filled in later."""
    return hits.select(
        pl.lit("").alias("symbol"),
        pl.lit("").alias("interval"),
        pl.from_epoch("_open", time_unit="ms").dt.replace_time_zone("UTC").alias("open_time"),
        pl.lit(rule).alias("rule"),
        pl.lit(severity).alias("severity"),
        detail.alias("detail"),
    )


def _spikes(frame: pl.DataFrame, rules: QualityRules) -> pl.DataFrame:
    """Closes that jump away from both neighbours by more than ``spike_mads`` robust deviations
    of the recent log returns (median absolute deviation, scaled to a standard deviation)."""
    window = max(5, rules.spike_window)
    returns = frame.select(
        "_open",
        "close",
        pl.col("close").log().diff().alias("_back"),
        (pl.col("close").log() - pl.col("close").log().shift(-1)).alias("_ahead"),
    ).with_columns(
        pl.col("_back").abs().rolling_median(window, min_samples=5, center=True).alias("_mad"),
    )
    # A flat stretch has no deviation at all: a floor of 0.1% keeps a tick from being a spike.
    scale = 1.4826 * pl.col("_mad").clip(lower_bound=MAD_FLOOR)
    spike = (
        (pl.col("_back").abs() > rules.spike_mads * scale)
        & (pl.col("_ahead").abs() > rules.spike_mads * scale)
        & (pl.col("_back").sign() == pl.col("_ahead").sign())  # up then down, or down then up
    )
    hits = returns.filter(spike.fill_null(False))
    detail = pl.concat_str(
        [
            pl.lit("close="),
            pl.col("close").cast(pl.String),
            pl.lit(" return="),
            pl.col("_back").round(6).cast(pl.String),
            pl.lit(" then="),
            (-pl.col("_ahead")).round(6).cast(pl.String),
        ]
    )
    return _findings(hits, "price_spike", "warning", detail)


def _zero_volume_runs(frame: pl.DataFrame, grid: Interval, rules: QualityRules) -> pl.DataFrame:
    """The first candle of each run of ``zero_volume_hours`` or more without volume."""
    needed = max(1, int(rules.zero_volume_hours * HOUR_MS // grid.nominal_ms))
    runs = (
        frame.select("_open", (pl.col("volume") == 0).alias("_zero"))
        .with_columns((pl.col("_zero") != pl.col("_zero").shift(1)).fill_null(True).cum_sum().alias("_run"))
        .filter(pl.col("_zero"))
        .group_by("_run")
        .agg(pl.col("_open").min().alias("_open"), pl.len().alias("_candles"))
        .filter(pl.col("_candles") >= needed)
    )
    return _findings(
        runs, "zero_volume_run", "warning", pl.lit("candles=") + pl.col("_candles").cast(pl.String)
    )


# -- over a stored lake ------------------------------------------------------------------------


@dataclass
class QualityReport:
    """The findings of :func:`check_lake` and what was checked."""

    interval: str
    findings: pl.DataFrame
    symbols: int
    candles: int

    @property
    def errors(self) -> int:
        return int((self.findings["severity"] == "error").sum())

    @property
    def warnings(self) -> int:
        return int((self.findings["severity"] == "warning").sum())

    def to_dicts(self) -> list[dict[str, Any]]:
        rows = self.findings.with_columns(pl.col("open_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return list(rows.iter_rows(named=True))


def check_lake(
    lake: Lake,
    interval: str,
    now_ms: int,
    symbols: Iterable[str] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    rules: QualityRules = QualityRules(),
) -> QualityReport:
    """Every rule over what ``lake`` stores for ``interval`` (one symbol at a time, so memory
    holds one symbol's candles in range), optionally for some symbols and ``[since, until)``.

    Raises:
        LakeError: there is no lake there.
    """
    if not lake.exists():
        raise LakeError(f"no lake at {lake.location}: collect into it first, or check the path")
    wanted = lake.symbols(interval) if symbols is None else list(dict.fromkeys(symbols))
    found, candles = [], 0
    for symbol in wanted:
        frame = lake.scan(interval, [symbol], since_ms, until_ms).collect().drop("symbol")
        candles += frame.height
        found.append(find_problems(frame, symbol, interval, now_ms, rules))
    findings = pl.concat(found) if found else pl.DataFrame(schema=FINDING_SCHEMA)
    return QualityReport(
        interval,
        findings.with_columns(pl.lit(lake.exchange).alias("exchange")).select(
            "exchange", *FINDING_SCHEMA.names()
        ),
        len(wanted),
        candles,
    )
