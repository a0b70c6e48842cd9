"""PostgreSQL's binary COPY format for candle frames, built with numpy in one pass per partition.

Binary COPY measured faster than text (CSV) for this data (see ``bench/README.md``), and it carries
doubles bit for bit, with no decimal round trip. Every candle field is 8 bytes wide, so a row
without nulls has a fixed size and a whole partition is one numpy structured array; null fields
are cut out with a byte mask. The format: https://www.postgresql.org/docs/current/sql-copy.html
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

#: The 11-byte signature, a flags word and an empty header extension.
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: The trailer: a field count of -1.
TRAILER = b"\xff\xff"

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
_PG_EPOCH_MS = 946_684_800_000
_NULL_LENGTH = -1


def encode_rows(frame: pl.DataFrame, constants: Sequence[str] = ()) -> bytes:
    """The rows of ``frame`` as binary COPY tuples (no header, no trailer).

    Args:
        frame: Columns of Datetime("ms"), Int64 or Float64 type; nulls allowed.
        constants: Non-empty text values put in front of every row, e.g.
            ``("binance", "1h", "BTCUSDT")``.

    Returns:
        Bytes for ``COPY ... FROM STDIN (FORMAT BINARY)``: the constants, then the frame's columns.
    """
    texts = [value.encode() for value in constants]
    if not all(texts):
        raise ValueError("constant text values must not be empty")
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, text in enumerate(texts):
        fields += [(f"l{i}", ">i4"), (f"v{i}", f"S{len(text)}")]
    first = len(texts)
    for j, dtype in enumerate(frame.dtypes, start=first):
        fields += [(f"l{j}", ">i4"), (f"v{j}", _wire_dtype(dtype))]
    packed = np.empty(frame.height, dtype=np.dtype(fields))
    packed["count"] = first + frame.width
    for i, text in enumerate(texts):
        packed[f"l{i}"] = len(text)
        packed[f"v{i}"] = text
    nulls: list[tuple[int, np.ndarray]] = []
    for j, series in enumerate(frame.iter_columns(), start=first):
        packed[f"l{j}"] = 8
        if series.null_count():
            mask = series.is_null().to_numpy()
            packed[f"l{j}"][mask] = _NULL_LENGTH
            nulls.append((j, mask))
        packed[f"v{j}"] = _values(series)
    return _drop_null_values(packed, nulls) if nulls else packed.tobytes()


def _wire_dtype(dtype: pl.DataType) -> str:
    if dtype == pl.Float64:
        return ">f8"
    if dtype == pl.Int64 or (isinstance(dtype, pl.Datetime) and dtype.time_unit == "ms"):
        return ">i8"
    raise TypeError(f"no binary COPY encoding for {dtype}")


def _values(series: pl.Series) -> np.ndarray:
    """int64/float64 values, timestamps as PostgreSQL microseconds. What stands at a null does not
    matter (it is cut out), but it must convert without a cast: nulls become NaN or NaT here."""
    if series.dtype == pl.Int64 and series.null_count():
        series = series.fill_null(0)  # to_numpy would turn the column into floats
    values = series.to_numpy()
    if values.dtype.kind == "M":
        return (values.view(np.int64) - _PG_EPOCH_MS) * 1000
    return values


def _drop_null_values(packed: np.ndarray, nulls: list[tuple[int, np.ndarray]]) -> bytes:
    """Remove the 8 value bytes of every null field (its length word already says -1)."""
    raw = packed.view(np.uint8).reshape(len(packed), packed.dtype.itemsize)
    keep = np.ones(raw.shape, dtype=bool)
    for j, mask in nulls:
        offset = packed.dtype.fields[f"v{j}"][1]
        keep[mask, offset : offset + 8] = False
    return raw[keep].tobytes()
