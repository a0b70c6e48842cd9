"""The rules a candle must keep to be stored: one definition, used by the lake before every
commit (:func:`screen`) and by the data-quality report (:mod:`cryptolake.quality`).

Errors, a candle that cannot be trusted at all (kept out of the lake, quarantined):

- ``duplicate_key``: an open time more than once in a batch (the last copy is kept);
- ``time_unit``: an open or close time not plausible in milliseconds (before 2009, or later than
  the clock allows: a microsecond or second value in a millisecond field);
- ``off_grid``: an open time off the interval's grid;
- ``close_time``: a close time that is not the next open time minus 1 ms;
- ``non_positive_price``: a price that is zero, negative, infinite or not a number;
- ``ohlc_order``: ``low <= min(open, close)`` or ``max(open, close) <= high`` broken;
- ``negative_volume``: a negative volume, quote volume, taker volume or trade count;
- ``not_closed``: a candle whose close time has not passed yet.

Pure: no I/O; the clock comes in as ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from cryptolake.schema import Interval
from cryptolake.timeutils import to_ms

ERROR_RULES = (
    "duplicate_key",
    "time_unit",
    "off_grid",
    "close_time",
    "non_positive_price",
    "ohlc_order",
    "negative_volume",
    "not_closed",
)
#: Open times before this are not plausible in milliseconds (a value in seconds lands in 1970).
EARLIEST_MS = to_ms("2009-01-01")
PRICES = ("open", "high", "low", "close")
AMOUNTS = ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume", "trades")
#: Columns a refused candle carries besides its own: why, and where it came from.
RULE, DETAIL = "rule", "detail"


#: How a finding's detail names the integer times (milliseconds).
_SHOWN = {"_open": "open_time_ms", "_close": "close_time_ms"}


@dataclass(frozen=True)
class Condition:
    """One error rule: ``broken`` holds on the rows that break it (over a frame with the
    integer times ``_open``/``_close``, see :func:`with_times`); ``shown`` are the values a
    finding quotes."""

    rule: str
    broken: pl.Expr
    shown: tuple[str, ...]

    def detail(self) -> pl.Expr:
        """``name=value`` for each shown value: what the row holds that broke the rule."""
        return pl.concat_str(
            [
                pl.lit(f"{_SHOWN.get(c, c)}=") + pl.col(c).cast(pl.String).fill_null("null")
                for c in self.shown
            ],
            separator=" ",
        )


def with_times(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its open and close times as integer milliseconds (``_open``, ``_close``)."""
    return frame.with_columns(
        pl.col("open_time").dt.epoch("ms").alias("_open"),
        pl.col("close_time").dt.epoch("ms").alias("_close"),
    )


def row_conditions(grid: Interval, now_ms: int) -> list[Condition]:
    """Every error rule that a row breaks on its own (all but ``duplicate_key``), in the order
    of :data:`ERROR_RULES`. A null time or price breaks its rule; a null amount (a venue that
    does not publish it) does not."""

    def not_positive(column: str) -> pl.Expr:
        value = pl.col(column)
        return (~(value > 0) | ~value.is_finite()).fill_null(True)  # NaN compares above all; no infinity

    conditions = [
        Condition(
            "time_unit",
            (pl.col("_open") < EARLIEST_MS)
            | (pl.col("_open") > now_ms + grid.nominal_ms)
            | (pl.col("_close") < EARLIEST_MS)
            | (pl.col("_close") > now_ms + 2 * grid.nominal_ms),
            ("_open", "_close"),
        ),
        Condition("off_grid", ~_on_grid(grid), ("_open",)),
        Condition("close_time", pl.col("_close") != _next_open(grid) - 1, ("_open", "_close")),
        Condition("non_positive_price", pl.any_horizontal(not_positive(c) for c in PRICES), PRICES),
        Condition(
            "ohlc_order",
            (pl.col("low") > pl.min_horizontal("open", "close"))
            | (pl.max_horizontal("open", "close") > pl.col("high")),
            PRICES,
        ),
        # A venue that does not publish an amount leaves it null: unknown, not broken.
        Condition(
            "negative_volume", pl.any_horizontal((pl.col(c) < 0).fill_null(False) for c in AMOUNTS), AMOUNTS
        ),
        Condition("not_closed", pl.col("_close") >= now_ms, ("_close",)),
    ]
    # A missing time or price breaks its rule.
    return [Condition(c.rule, c.broken.fill_null(True), c.shown) for c in conditions]


def _on_grid(grid: Interval) -> pl.Expr:
    if grid.is_monthly:
        return pl.col("open_time") == pl.col("open_time").dt.truncate("1mo")
    assert grid.fixed_ms is not None
    return (pl.col("_open") - grid.origin_ms) % grid.fixed_ms == 0


def _next_open(grid: Interval) -> pl.Expr:
    if grid.is_monthly:
        return pl.col("open_time").dt.offset_by("1mo").dt.epoch("ms")
    return pl.col("_open") + grid.nominal_ms


@dataclass(frozen=True)
class Screened:
    """A batch split by :func:`screen`: ``kept`` (the batch's own rows, sorted by open time,
    one per open time) and ``refused`` (the candles with the ``rule`` each broke first and the
    ``detail`` of its values)."""

    kept: pa.Table
    refused: pl.DataFrame


def screen(candles: pa.Table, interval: str, now_ms: int) -> Screened:
    """Split a batch of candles (the lake's Arrow schema) into the ones the lake may store and
    the ones it must refuse: each row is refused for the first error rule it breaks; of the
    rows left, an open time that comes more than once keeps its last copy and refuses the others
    (``duplicate_key``). A sound, sorted batch comes back as it is (no copy)."""
    grid = Interval(interval)
    source = pl.from_arrow(candles)
    assert isinstance(source, pl.DataFrame)
    conditions = row_conditions(grid, now_ms)
    # One pass for the common case: nothing broken, open times strictly increasing.
    broken, increasing = _verdicts(source, conditions)
    if not broken and increasing:
        return Screened(candles, _no_refusals(source))
    frame = with_times(source).with_row_index("_row")
    verdict: Any = pl.when(conditions[0].broken).then(pl.lit(conditions[0].rule))
    for condition in conditions[1:]:
        verdict = verdict.when(condition.broken).then(pl.lit(condition.rule))
    judged = frame.with_columns(verdict.otherwise(None).alias(RULE))
    kept = judged.filter(pl.col(RULE).is_null())
    copies = kept.filter(pl.col("_open").is_last_distinct().not_())
    kept = kept.filter(pl.col("_open").is_last_distinct()).sort("_open", maintain_order=True)
    refused = [
        judged.filter(pl.col(RULE) == condition.rule).with_columns(condition.detail().alias(DETAIL))
        for condition in conditions
    ]
    refused.append(
        copies.with_columns(
            pl.lit("duplicate_key").alias(RULE),
            (
                pl.lit("open_time_ms=") + pl.col("_open").cast(pl.String) + pl.lit(" (a later copy was kept)")
            ).alias(DETAIL),
        )
    )
    out = pl.concat(refused).sort("_row").select(*source.columns, RULE, DETAIL)
    return Screened(candles.take(pa.array(kept["_row"].to_numpy())), out)


def _verdicts(candles: pl.DataFrame, conditions: list[Condition]) -> tuple[bool, bool]:
    """Whether any candle breaks a rule, and whether the open times strictly increase (one
    lazy pass, nothing materialised)."""
    broken, increasing = (
        candles.lazy()
        .select(
            pl.col("open_time").dt.epoch("ms").alias("_open"),
            pl.col("close_time").dt.epoch("ms").alias("_close"),
            *PRICES,
            *AMOUNTS,
            "open_time",
        )
        .select(
            pl.any_horizontal(c.broken for c in conditions).any().alias("broken"),
            (pl.col("_open").diff() > 0).all().alias("increasing"),  # the first difference is null
        )
        .collect()
        .row(0)
    )
    return bool(broken), bool(increasing)


def _no_refusals(source: pl.DataFrame) -> pl.DataFrame:
    return source.clear().with_columns(
        pl.lit(None, pl.String).alias(RULE), pl.lit(None, pl.String).alias(DETAIL)
    )
