"""merge_klines / split_by_month / normalize_klines: worked examples and properties."""

from __future__ import annotations

import math
import tempfile
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cryptolake.errors import SchemaMismatch
from cryptolake.lake import Lake, merge_klines, normalize_klines, split_by_month
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS, KLINE_SCHEMA
from cryptolake.timeutils import to_ms

# Properties only: deadline off (disk and first polars calls vary), failures reproducible.
PROPS = settings(deadline=None, print_blob=True)

#: 24 h before the February 2024 boundary, so drawn frames straddle two months.
BASE_MS = to_ms("2024-02-01") - 24 * HOUR_MS
SPAN_HOURS = 48
FLOAT_COLUMNS = [c for c, t in KLINE_SCHEMA.items() if t == pl.Float64()]


def frame_of(
    offsets: list[int], values: list[float] | None = None, trades: list[int] | None = None
) -> pl.DataFrame:
    """A candle frame with open times at ``BASE_MS + offset`` hours."""
    n = len(offsets)
    values = values if values is not None else [float(o) for o in offsets]
    opens = [BASE_MS + o * HOUR_MS for o in offsets]
    data: dict[str, Any] = {c: values for c in FLOAT_COLUMNS}
    data["open_time"] = opens
    data["close_time"] = [t + HOUR_MS - 1 for t in opens]
    data["trades"] = trades if trades is not None else [1] * n
    return normalize_klines(pl.DataFrame(data))


@st.composite
def klines(draw: st.DrawFn, max_rows: int = 30, sound: bool = False) -> pl.DataFrame:
    """Frames over a 48-hour window (duplicates allowed) with random float values; ``sound``:
    values the lake's rules let in (positive prices, low and high around open and close,
    volumes not negative)."""
    offsets = draw(st.lists(st.integers(0, SPAN_HOURS - 1), max_size=max_rows))
    n = len(offsets)
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    if sound:
        floats = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False, width=64)
    data: dict[str, Any] = {c: draw(st.lists(floats, min_size=n, max_size=n)) for c in FLOAT_COLUMNS}
    if sound:
        o, c = data["open"], data["close"]
        data["high"] = [max(a, b) + x for a, b, x in zip(o, c, data["high"], strict=True)]
        data["low"] = [min(a, b) * (1 - 1 / (2 + x)) for a, b, x in zip(o, c, data["low"], strict=True)]
    opens = [BASE_MS + o * HOUR_MS for o in offsets]
    data["open_time"] = opens
    data["close_time"] = [t + HOUR_MS - 1 for t in opens]
    data["trades"] = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
    return normalize_klines(
        pl.DataFrame(
            data,
            schema={c: pl.Float64 for c in FLOAT_COLUMNS}
            | {"open_time": pl.Int64, "close_time": pl.Int64, "trades": pl.Int64},
        )
    )


def oracle_merge(existing: pl.DataFrame, incoming: pl.DataFrame) -> pl.DataFrame:
    """Row-by-row reference: later rows overwrite earlier ones with the same open_time."""
    rows: dict[Any, dict[str, Any]] = {}
    for row in [*existing.iter_rows(named=True), *incoming.iter_rows(named=True)]:
        rows[row["open_time"]] = row
    ordered = [rows[k] for k in sorted(rows)]
    return (
        pl.DataFrame(ordered, schema=KLINE_SCHEMA, orient="row")
        if ordered
        else pl.DataFrame(schema=KLINE_SCHEMA)
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def oracle_counts(stored: pl.DataFrame, incoming: pl.DataFrame) -> tuple[int, int]:
    old = {r["open_time"]: r for r in stored.iter_rows(named=True)}
    new = {r["open_time"]: r for r in incoming.iter_rows(named=True)}
    added = sum(k not in old for k in new)
    changed = sum(k in old and not all(_same(new[k][c], old[k][c]) for c in KLINE_COLUMNS) for k in new)
    return added, changed


# -- worked examples -------------------------------------------------------------------------


def test_incoming_wins_and_output_is_sorted() -> None:
    existing = frame_of([3, 1, 2], values=[30.0, 10.0, 20.0])
    incoming = frame_of([2, 4], values=[99.0, 40.0])
    merged = merge_klines(existing, incoming)
    assert merged["open_time"].dt.epoch("ms").to_list() == [BASE_MS + h * HOUR_MS for h in (1, 2, 3, 4)]
    assert merged["open"].to_list() == [10.0, 99.0, 30.0, 40.0]


def test_last_duplicate_inside_incoming_wins() -> None:
    incoming = frame_of([5, 5, 5], values=[1.0, 2.0, 3.0])
    merged = merge_klines(frame_of([]), incoming)
    assert merged.height == 1
    assert merged["close"].to_list() == [3.0]


def test_merge_of_empties_is_an_empty_frame_with_the_schema() -> None:
    merged = merge_klines(pl.DataFrame(schema=KLINE_SCHEMA), pl.DataFrame(schema=KLINE_SCHEMA))
    assert merged.is_empty()
    assert merged.schema == pl.Schema(KLINE_SCHEMA)


def test_split_by_month_at_the_boundary() -> None:
    parts = split_by_month(frame_of([25, 23, 24, 0]))
    assert list(parts) == ["2024-01", "2024-02"]
    assert parts["2024-01"]["open_time"].is_sorted()
    assert parts["2024-01"].height == 2
    assert parts["2024-02"].height == 2
    assert parts["2024-02"].columns == list(KLINE_COLUMNS)


def test_split_by_month_of_empty_frame() -> None:
    assert split_by_month(pl.DataFrame(schema=KLINE_SCHEMA)) == {}


def test_normalize_orders_columns_drops_extras_and_casts() -> None:
    raw = frame_of([0, 1]).with_columns(pl.lit("BTCUSDT").alias("symbol"))
    raw = raw.with_columns(
        pl.col("open_time").dt.epoch("ms"),  # int ms
        pl.col("close_time").dt.replace_time_zone(None).cast(pl.Datetime("us")),  # naive us
        pl.col("open").cast(pl.String),
        pl.col("trades").cast(pl.Int32),
    ).select(reversed(raw.columns))
    out = normalize_klines(raw)
    assert out.columns == list(KLINE_COLUMNS)
    assert out.schema == pl.Schema(KLINE_SCHEMA)
    assert_frame_equal(out, frame_of([0, 1]))


def test_normalize_converts_other_time_zones_to_utc() -> None:
    frame = frame_of([0]).with_columns(
        pl.col("open_time").dt.convert_time_zone("Asia/Tokyo"),
    )
    assert_frame_equal(normalize_klines(frame), frame_of([0]))


def test_normalize_names_missing_columns() -> None:
    with pytest.raises(SchemaMismatch, match=r"missing column.*trades") as info:
        normalize_klines(frame_of([0]).drop("trades", "open"))
    assert "missing column trades" in info.value.diff
    assert "missing column open" in info.value.diff


def test_normalize_refuses_uncastable_values() -> None:
    with pytest.raises(SchemaMismatch, match="cannot be cast"):
        normalize_klines(frame_of([0]).with_columns(pl.lit("abc").alias("open")))


def test_normalize_refuses_null_open_time() -> None:
    frame = frame_of([0, 1]).with_columns(pl.lit(None, dtype=KLINE_SCHEMA["open_time"]).alias("open_time"))
    with pytest.raises(SchemaMismatch, match="without an open_time"):
        normalize_klines(frame)


# -- properties ------------------------------------------------------------------------------


@PROPS
@given(existing=klines(), incoming=klines())
def test_merge_properties(existing: pl.DataFrame, incoming: pl.DataFrame) -> None:
    merged = merge_klines(existing, incoming)
    keys = merged["open_time"]
    assert keys.is_unique().all()
    assert keys.is_sorted()
    assert set(keys.to_list()) == set(existing["open_time"].to_list()) | set(incoming["open_time"].to_list())
    assert_frame_equal(merged, oracle_merge(existing, incoming))
    # incoming wins: every incoming key holds incoming's last row for it.
    last_incoming = incoming.unique("open_time", keep="last").sort("open_time")
    assert_frame_equal(merged.join(last_incoming.select("open_time"), on="open_time"), last_incoming)


@PROPS
@given(existing=klines(), incoming=klines())
def test_merge_is_idempotent(existing: pl.DataFrame, incoming: pl.DataFrame) -> None:
    once = merge_klines(existing, incoming)
    assert_frame_equal(merge_klines(once, incoming), once)


@PROPS
@given(frame=klines())
def test_split_by_month_is_lossless(frame: pl.DataFrame) -> None:
    merged = merge_klines(frame.clear(), frame)
    parts = split_by_month(merged)
    assert list(parts) == sorted(parts)
    for month, part in parts.items():
        assert part["open_time"].is_sorted()
        assert set(part["open_time"].dt.strftime("%Y-%m").to_list()) == {month}
    rebuilt = pl.concat(list(parts.values())) if parts else merged.clear()
    assert_frame_equal(rebuilt, merged)


@PROPS
@given(existing=klines(sound=True), incoming=klines(sound=True))
def test_write_then_read_round_trips_the_merge(existing: pl.DataFrame, incoming: pl.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as root:
        lake = Lake(root)
        lake.write_klines("1h", "BTCUSDT", existing)
        stored = merge_klines(existing.clear(), existing)
        result = lake.write_klines("1h", "BTCUSDT", incoming)
        assert (result.rows_added, result.rows_changed) == oracle_counts(
            stored, merge_klines(incoming.clear(), incoming)
        )
        months = lake.months("1h", "BTCUSDT")
        parts = [lake.read_partition("1h", "BTCUSDT", m) for m in months]
        read_back = pl.concat(parts) if parts else existing.clear()
        assert_frame_equal(read_back, merge_klines(existing, incoming))
        again = lake.write_klines("1h", "BTCUSDT", incoming)
        assert again.files_written == 0
        assert again.rows_added == again.rows_changed == 0
