"""PostgreSQL's binary COPY format for candle tables, built with numpy in one pass per partition.

Binary COPY measured faster than text (CSV) for this data (see ``bench/README.md``), and it carries
doubles bit for bit, with no decimal round trip. Every candle field is 8 bytes wide, so a row
without nulls has a fixed size and a whole partition is one numpy structured array; null fields
are cut out with a byte mask. The format: https://www.postgresql.org/docs/current/sql-copy.html
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa

#: The 11-byte signature, a flags word and an empty header extension.
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: The trailer: a field count of -1.
TRAILER = b"\xff\xff"

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
_PG_EPOCH_MS = 946_684_800_000
_NULL_LENGTH = -1


def encode_rows(table: pa.Table, constants: Sequence[str] = ()) -> bytes:
    """The rows of ``table`` as binary COPY tuples (no header, no trailer).

    Args:
        table: Columns of timestamp[ms], int64 or float64 type; nulls allowed.
        constants: Non-empty text values put in front of every row, e.g.
            ``("binance", "1h", "BTCUSDT")``.

    Returns:
        Bytes for ``COPY ... FROM STDIN (FORMAT BINARY)``: the constants, then the table's columns.
    """
    texts = tuple(value.encode() for value in constants)
    if not all(texts):
        raise ValueError("constant text values must not be empty")
    first = len(texts)
    packed = np.empty(
        table.num_rows, dtype=_row_layout(tuple(len(t) for t in texts), tuple(table.schema.types))
    )
    packed["count"] = first + table.num_columns
    for i, text in enumerate(texts):
        packed[f"l{i}"] = len(text)
        packed[f"v{i}"] = text
    nulls: list[tuple[int, np.ndarray]] = []
    for j, column in enumerate(table.columns, start=first):
        packed[f"l{j}"] = 8
        if column.null_count:
            mask = column.is_null().to_numpy()
            packed[f"l{j}"][mask] = _NULL_LENGTH
            nulls.append((j, mask))
            column = column.fill_null(pa.scalar(0, column.type))  # these values are cut out below
        packed[f"v{j}"] = _values(column)
    return _drop_null_values(packed, nulls) if nulls else packed.tobytes()


@lru_cache(maxsize=64)
def _row_layout(text_lengths: tuple[int, ...], types: tuple[pa.DataType, ...]) -> np.dtype:
    """The numpy record of one row: field count, then (length, value) per field, big-endian."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, length in enumerate(text_lengths):
        fields += [(f"l{i}", ">i4"), (f"v{i}", f"S{length}")]
    for j, kind in enumerate(types, start=len(text_lengths)):
        fields += [(f"l{j}", ">i4"), (f"v{j}", _wire_dtype(kind))]
    return np.dtype(fields)


def _wire_dtype(kind: pa.DataType) -> str:
    if pa.types.is_float64(kind):
        return ">f8"
    if pa.types.is_int64(kind) or (pa.types.is_timestamp(kind) and kind.unit == "ms"):
        return ">i8"
    raise TypeError(f"no binary COPY encoding for {kind}")


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """int64/float64 values (timestamps as PostgreSQL microseconds) of a column without nulls."""
    values = column.to_numpy()
    if pa.types.is_timestamp(column.type):
        return (values.view(np.int64) - _PG_EPOCH_MS) * 1000
    return values


def _drop_null_values(packed: np.ndarray, nulls: list[tuple[int, np.ndarray]]) -> bytes:
    """Remove the 8 value bytes of every null field (its length word already says -1)."""
    raw = packed.view(np.uint8).reshape(len(packed), packed.dtype.itemsize)
    keep = np.ones(raw.shape, dtype=bool)
    for j, mask in nulls:
        fields = packed.dtype.fields
        assert fields is not None  # a structured dtype
        offset = fields[f"v{j}"][1]
        keep[mask, offset : offset + 8] = False
    return raw[keep].tobytes()
