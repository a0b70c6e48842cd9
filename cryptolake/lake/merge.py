"""Merging candle frames: normalise, union with last-writer-wins, split by month. Pure polars."""

from __future__ import annotations

import polars as pl

from cryptolake.errors import SchemaMismatch
from cryptolake.schema import KLINE_COLUMNS, KLINE_SCHEMA

_KEY = "open_time"
_MONTH = "__month"
_TIME_COLUMNS = ("open_time", "close_time")
_POLARS_SCHEMA = pl.Schema(KLINE_SCHEMA)


def normalize_klines(df: pl.DataFrame) -> pl.DataFrame:
    """Select the candle columns in contract order and cast them to ``KLINE_SCHEMA``.

    Extra columns are dropped. Integer time columns are read as epoch milliseconds; naive
    datetimes are taken as UTC and aware ones are converted to UTC.

    Args:
        df: A frame that has at least the ``KLINE_COLUMNS``.

    Returns:
        A frame with exactly ``KLINE_COLUMNS`` in order, typed as ``KLINE_SCHEMA``.

    Raises:
        SchemaMismatch: A column is missing, cannot be cast, or ``open_time`` has nulls.
    """
    missing = tuple(c for c in KLINE_COLUMNS if c not in df.columns)
    if missing:
        raise SchemaMismatch(
            f"candle frame is missing column(s) {', '.join(missing)}; expected {', '.join(KLINE_COLUMNS)}",
            diff=tuple(f"missing column {c}" for c in missing),
        )
    exact = df.schema == _POLARS_SCHEMA and df.columns == list(KLINE_COLUMNS)
    out = df if exact else _cast(df)
    nulls = out.get_column(_KEY).null_count()
    if nulls:
        raise SchemaMismatch(
            f"candle frame has {nulls} row(s) without an open_time",
            diff=(f"open_time has {nulls} null(s)",),
        )
    return out


def _cast(df: pl.DataFrame) -> pl.DataFrame:
    exprs = [_cast_expr(c, df.schema[c]) for c in KLINE_COLUMNS]
    try:
        return df.select(exprs)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise SchemaMismatch(
            f"candle frame cannot be cast to the candle schema: {exc}",
            diff=tuple(
                f"{c}: {df.schema[c]} -> {KLINE_SCHEMA[c]}"
                for c in KLINE_COLUMNS
                if df.schema[c] != KLINE_SCHEMA[c]
            ),
        ) from exc


def _cast_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    target = KLINE_SCHEMA[name]
    col = pl.col(name)
    if name not in _TIME_COLUMNS:
        return col.cast(target, strict=True)
    if dtype.is_integer():
        return pl.from_epoch(col, time_unit="ms").dt.replace_time_zone("UTC").cast(target).alias(name)
    if isinstance(dtype, pl.Datetime):
        utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return utc.cast(target)
    return col.cast(target, strict=True)


def merge_klines(existing: pl.DataFrame, incoming: pl.DataFrame) -> pl.DataFrame:
    """Union two candle frames: one row per ``open_time``, the incoming row winning.

    Duplicates inside ``incoming`` resolve to their last occurrence.

    Args:
        existing: Candles already stored.
        incoming: New candles; they replace stored ones with the same ``open_time``.

    Returns:
        The normalised union, sorted by ``open_time``.
    """
    return dedupe_klines(pl.concat([normalize_klines(existing), normalize_klines(incoming)], how="vertical"))


def dedupe_klines(df: pl.DataFrame) -> pl.DataFrame:
    """Normalise candles and keep one row per ``open_time`` (the last), sorted by it.

    Args:
        df: Candle frame, possibly with repeated open times.

    Returns:
        The normalised frame with unique open times, sorted.
    """
    frame = normalize_klines(df)
    return frame.unique(subset=_KEY, keep="last", maintain_order=True).sort(_KEY)


def split_by_month(df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Split candles into UTC calendar months of ``open_time``.

    Args:
        df: Candle frame (normalised here).

    Returns:
        ``{"YYYY-MM": frame}`` in month order, each frame sorted by ``open_time``.
    """
    frame = normalize_klines(df)
    if frame.is_empty():
        return {}
    keyed = frame.sort(_KEY, maintain_order=True).with_columns(
        pl.col(_KEY).dt.strftime("%Y-%m").alias(_MONTH)
    )
    parts = keyed.partition_by(_MONTH, maintain_order=True, include_key=False, as_dict=True)
    return {key[0]: parts[key] for key in sorted(parts)}
