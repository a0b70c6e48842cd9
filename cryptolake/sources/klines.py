"""Binance's kline arrays, parsed into the lake's schema: one parser for every source.

A klines response body (``[[open time, "open", "high", "low", "close", "volume", close time,
"quote volume", trades, "taker buy base", "taker buy quote", "ignore"], ...]``) and the bulk
archive's CSV files carry the same twelve fields; both become an Arrow table with
:data:`ARROW_SCHEMA` (times in ms, UTC, whether the source sent ms or µs), sorted by open time
(a repeated open time is kept, for the lake's rules to record).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import IO, Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cryptolake.errors import BadPayload
from cryptolake.schema import KLINE_COLUMNS, KLINE_SCHEMA

TIMESTAMP = pa.timestamp("ms", tz="UTC")
ARROW_SCHEMA = pa.schema(
    [
        (
            name,
            TIMESTAMP
            if name in ("open_time", "close_time")
            else pa.int64()
            if kind == pl.Int64
            else pa.float64(),
        )
        for name, kind in KLINE_SCHEMA.items()
    ]
)
EMPTY_TABLE = ARROW_SCHEMA.empty_table()


_RAW_COLUMNS = [*KLINE_COLUMNS, "ignore"]
_CSV_READ = pacsv.ReadOptions(column_names=_RAW_COLUMNS, use_threads=False)
_CSV_READ_HEADED = pacsv.ReadOptions(column_names=_RAW_COLUMNS, use_threads=False, skip_rows=1)
_CSV_PARSE = pacsv.ParseOptions(quote_char=False)
_CSV_CONVERT = pacsv.ConvertOptions(
    column_types={
        name: pa.int64() if name in ("open_time", "close_time") or kind == pl.Int64 else pa.float64()
        for name, kind in KLINE_SCHEMA.items()
    },
    include_columns=list(KLINE_COLUMNS),
    null_values=[],
    strings_can_be_null=False,
)


def parse_klines_body(body: bytes) -> pa.Table:
    """A klines response body as an Arrow table in the lake's schema.

    Binance's body is an array of arrays of numbers and number strings without spaces. That
    shape is turned into CSV by two byte replacements and parsed by Arrow's CSV reader, which
    does not hold the GIL: with many requests in flight, parsing pages in Python (``json`` then
    lists) keeps every other thread (the writers too) waiting. Any other shape, or a row count
    that does not add up, is parsed as JSON and checked as before.

    Raises:
        BadPayload: not the klines JSON Binance documents.
    """
    text = body.strip()
    if text == b"[]":
        return EMPTY_TABLE
    if text.startswith(b"[[") and text.endswith(b"]]"):
        rows = text.count(b"],[") + 1
        csv = text[2:-2].replace(b"],[", b"\n").replace(b'"', b"")
        try:
            table = pacsv.read_csv(
                io.BytesIO(csv),
                read_options=_CSV_READ,
                parse_options=_CSV_PARSE,
                convert_options=_CSV_CONVERT,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = None
        if table is not None and table.num_rows == rows:
            fast = _from_columns([table.column(name).combine_chunks() for name in KLINE_COLUMNS])
            if fast is not None:
                return fast
    try:
        page = json.loads(body)
    except ValueError as exc:
        raise BadPayload(f"malformed JSON from /api/v3/klines: {body[:100]!r}") from exc
    if not isinstance(page, list) or (page and (set(map(type, page)) != {list} or min(map(len, page)) < 11)):
        raise BadPayload(f"unexpected klines payload: {str(page)[:200]}")
    return rows_to_table(page)


def in_microseconds(opens: pa.Array) -> bool:
    """Whether a page's or file's open times are in microseconds (the spot archive's unit since
    2025), as most of them say: one odd value does not change the unit of the others, so the
    data-quality rules find that one (``time_unit``) instead of every other being misread."""
    if not len(opens):
        return False
    return pc.sum(pc.greater(opens, 10**14)).as_py() * 2 > len(opens)


def _from_columns(columns: list[pa.Array]) -> pa.Table | None:
    """The lake's table from parsed kline columns (times as int64 ms or µs); None when the
    open times do not strictly increase (the caller sorts and de-duplicates)."""
    opens, closes = columns[0], columns[6]
    if in_microseconds(opens):
        opens, closes = pc.divide(opens, 1000), pc.divide(closes, 1000)
    if len(opens) > 1 and not pc.all(pc.greater(opens.slice(1), opens.slice(0, len(opens) - 1))).as_py():
        return None
    arrays = [*columns]
    arrays[0], arrays[6] = opens.cast(TIMESTAMP), closes.cast(TIMESTAMP)
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def rows_to_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Binance's kline arrays as an Arrow table in the lake's schema, sorted by open time (an open
    time sent twice stays twice, in the order sent: the lake keeps the last and records the
    others, see :func:`cryptolake.rules.screen`).

    The common case (rows already in strictly increasing open time, as Binance sends them) is
    built with pyarrow alone, which is cheaper than polars per page and leaves the polars
    thread pool to the writers; anything else goes through :func:`rows_to_frame`.
    """
    if not rows:
        return EMPTY_TABLE
    try:
        return _rows_to_table_fast(rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return rows_to_frame(rows).to_arrow().cast(ARROW_SCHEMA)  # odd values: polars' lenient parse


def _rows_to_table_fast(rows: Sequence[Sequence[Any]]) -> pa.Table:
    columns = list(zip(*rows, strict=False))  # rows may carry more than the 11 fields read
    arrays = [
        pa.array(columns[i], type=pa.int64())
        if name in ("open_time", "close_time") or kind == pl.Int64
        else pa.array(columns[i], type=pa.string()).cast(pa.float64())
        for i, (name, kind) in enumerate(KLINE_SCHEMA.items())
    ]
    table = _from_columns(arrays)
    return table if table is not None else rows_to_frame(rows).to_arrow().cast(ARROW_SCHEMA)


def table_to_frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def rows_to_frame(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Binance's 12-field kline arrays as a typed, open-time-sorted, de-duplicated frame."""
    if not rows:
        return pl.DataFrame(schema=KLINE_SCHEMA)
    columns = list(zip(*rows, strict=False))  # rows may carry more than the 11 fields read
    frame = pl.DataFrame(
        {
            name: pl.Series(
                name, columns[i], dtype=pl.String if i not in (0, 6, 8) else pl.Int64, strict=False
            )
            for i, name in enumerate(KLINE_COLUMNS)
        }
    )
    if frame["open_time"].null_count() or frame["close_time"].null_count():
        raise BadPayload(f"unexpected klines payload: a time that is not a number in {str(rows)[:200]}")
    time_unit: Literal["us", "ms"] = "us" if in_microseconds(frame["open_time"].to_arrow()) else "ms"
    return (
        frame.with_columns(
            [
                pl.col(c).cast(pl.Datetime(time_unit, "UTC")).dt.cast_time_unit("ms")
                for c in ("open_time", "close_time")
            ]
            + [pl.col(c).cast(pl.Float64) for c, t in KLINE_SCHEMA.items() if t == pl.Float64]
        ).sort("open_time", maintain_order=True)  # a repeated open time stays: the lake's rules record it
    )


def parse_klines_csv(data: bytes | pa.Buffer | IO[bytes]) -> tuple[pa.Table, bool, bool]:
    """A bulk-archive CSV (the twelve fields of a klines row, one row per line, with or without a
    header row) as ``(table, header, micro)``: the table in the lake's schema (times in ms,
    sorted by open time), whether the file had a header row, and whether its times were in
    microseconds (decided for the whole file by most of its rows, as the archive switched units
    per file).

    ``data`` may be a stream (a zip member): Arrow reads it in blocks, without a copy of the
    whole text.

    Raises:
        BadPayload: not such a CSV.
    """
    source: Any
    if isinstance(data, bytes | pa.Buffer):  # from memory: Arrow parses it without a Python call
        first = bytes(memoryview(data)[:64]) if isinstance(data, pa.Buffer) else data[:64]
        source, empty = pa.BufferReader(data), not first.strip() and len(data) <= 64
    else:
        source = data if hasattr(data, "peek") else io.BufferedReader(data)
        first = source.peek(64)[:64]
        empty = not first.strip() and not source.peek(1)
    if empty:
        return EMPTY_TABLE, False, False
    text = first.lstrip()
    header = bool(text) and not text[:1].isdigit()
    try:
        table = pacsv.read_csv(
            source,
            read_options=_CSV_READ_HEADED if header else _CSV_READ,
            parse_options=_CSV_PARSE,
            convert_options=_CSV_CONVERT,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if "Empty CSV file" in str(exc):
            return EMPTY_TABLE, header, False
        raise BadPayload(f"not a klines CSV: {str(exc).splitlines()[0][:200]}") from exc
    if table.num_rows == 0:
        return EMPTY_TABLE, header, False
    columns = [table.column(name).combine_chunks() for name in KLINE_COLUMNS]
    del table
    opens = columns[0]
    micro = in_microseconds(opens)
    parsed = _from_columns(columns)
    if parsed is not None:
        return parsed, header, micro
    frame = pl.from_arrow(pa.Table.from_arrays(columns, names=list(KLINE_COLUMNS)))
    assert isinstance(frame, pl.DataFrame)
    unit: Literal["us", "ms"] = "us" if micro else "ms"
    frame = (
        frame.with_columns(
            pl.col(c).cast(pl.Datetime(unit, "UTC")).dt.cast_time_unit("ms")
            for c in ("open_time", "close_time")
        ).sort("open_time", maintain_order=True)  # a repeated open time stays: the lake's rules record it
    )
    return frame.to_arrow().cast(ARROW_SCHEMA), header, micro


def rows_between(page: pa.Table, lo: int, hi: int) -> pa.Table:
    """The rows of a page sorted by open time with ``lo <= open_time < hi`` (a slice)."""
    times = page.column("open_time")
    first, stop = _count_before(times, lo), _count_before(times, hi)
    return page.slice(first, max(0, stop - first))


def _count_before(times: pa.ChunkedArray, t_ms: int) -> int:
    """How many of the sorted open times are before ``t_ms`` (a binary search: a few scalar
    reads instead of a compute kernel over the column)."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid].value < t_ms:
            lo = mid + 1
        else:
            hi = mid
    return lo
