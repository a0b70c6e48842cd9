"""SQL over the lake for analysts: DuckDB views ``klines``, ``gaps``, ``coverage``, ``exchange_windows``,
``sources``, ``markets``.

- ``klines``: every stored candle, with the partition keys ``exchange``, ``interval``,
  ``symbol`` and ``month`` as text columns (``interval`` is ``1mo`` for monthly candles).
- ``gaps`` and ``coverage``: the latest gap report and per-month completeness, written to
  ``<lake>/_meta/gaps.parquet`` and ``coverage.parquet`` by every gap detection
  (``cryptolake gaps``, ``fill-gaps``, ``coverage``, and collection runs).
- ``exchange_windows``: recorded exchange outages, periods without trades (on exchanges that send
  no candle for them) and failed fetch windows.
- ``sources``: where each partition's candles came from (Binance archive files with their
  checksums, files that could not be used, candles fetched over REST).
- ``markets``: each exchange's markets as its last collection saw them, with common asset names
  (``XBT`` is ``BTC``), so one query compares a pair across exchanges.

Every view has an ``exchange`` column.

:func:`connect` gives the connection ``cryptolake sql`` runs in. It cannot change anything on
disk, and that is enforced by DuckDB itself, not by looking at the statement: the connection is
in memory, ``enable_external_access`` is off (no file, no ``COPY ... TO``, no ``ATTACH``, no
extension can be reached) and the configuration is locked so no statement can turn it back on.
The candles reach it as a pyarrow dataset over the partition files, which pyarrow opens for
reading only; filters on ``symbol``, ``interval`` and ``month`` prune whole partitions.

:func:`write_database` stores the same views in ``<lake>/cryptolake.duckdb`` (absolute paths
inside), in a storage format DuckDB 1.x readers open too, for the DuckDB CLI, Python and
notebooks from any working directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cryptolake.errors import Interrupted, LakeError, QueryError
from cryptolake.lake import ARROW_SCHEMA, Lake
from cryptolake.lake.layout import (
    DATA_FILE,
    META_DIR,
    is_stream_name,
    is_valid_month,
    is_valid_symbol,
    klines_dir,
    meta_dir,
)
from cryptolake.lake.meta import MARKETS_FILE, SOURCES_FILE, WINDOWS_FILE
from cryptolake.lake.object_lake import ObjectLake
from cryptolake.lake.storage import is_object_url
from cryptolake.lake.store import check_partition

log = logging.getLogger("cryptolake.query")

DATABASE_FILE = "cryptolake.duckdb"
GAPS_FILE = "gaps.parquet"
COVERAGE_FILE = "coverage.parquet"
#: ``cryptolake check``'s latest findings (:func:`cryptolake.quality.save_report`).
QUALITY_FILE = "quality.parquet"
#: The storage format of ``cryptolake.duckdb``: the oldest DuckDB 1.x reads it (1.0 and later).
DATABASE_STORAGE_VERSION = "v1.0.0"
PARTITION_KEYS = ("exchange", "interval", "symbol", "month")
#: The interval as the klines view has it (the folder name: ``1mo`` for monthly candles), so
#: that every view joins on ``interval``.
_INTERVAL_AS_IN_PATHS = "CASE WHEN interval = '1M' THEN '1mo' ELSE interval END"
#: Only month folders the layout allows (``month=2024-01``; not ``month=garbage``).
_MONTH_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]"
#: ``data.parquet`` and the stream files beside it (``stream-*.parquet``), in one glob: DuckDB
#: refuses a list of globs when one of them matches nothing.
_CANDLE_FILES_GLOB = "[ds][at]*.parquet"

_TIME = pa.timestamp("ms", tz="UTC")
_EXCHANGE = ("exchange", pa.string())
_META_VIEWS: dict[str, tuple[str, pa.Schema]] = {
    "gaps": (GAPS_FILE, pa.schema([
        _EXCHANGE, ("symbol", pa.string()), ("interval", pa.string()), ("kind", pa.string()), ("position", pa.string()),
        ("start_time", _TIME), ("end_time", _TIME), ("count", pa.int64()), ("judged_at", _TIME),
    ])),
    "coverage": (COVERAGE_FILE, pa.schema([
        _EXCHANGE, ("symbol", pa.string()), ("interval", pa.string()), ("month", pa.string()), ("expected", pa.int64()),
        ("present", pa.int64()), ("no_trades", pa.int64()), ("completeness_percent", pa.float64()), ("judged_at", _TIME),
    ])),
    "exchange_windows": (WINDOWS_FILE, pa.schema([
        _EXCHANGE, ("interval", pa.string()), ("symbol", pa.string()), ("kind", pa.string()), ("start_time", _TIME),
        ("end_time", _TIME), ("recorded_at", _TIME), ("checked_at", _TIME), ("attempts", pa.int64()),
        ("error", pa.string()),
    ])),
    "sources": (SOURCES_FILE, pa.schema([
        _EXCHANGE, ("interval", pa.string()), ("symbol", pa.string()), ("month", pa.string()), ("source", pa.string()),
        ("file", pa.string()), ("sha256", pa.string()), ("rows", pa.int64()), ("off_grid", pa.int64()),
        ("recorded_at", _TIME), ("note", pa.string()),
    ])),
    "quality": (QUALITY_FILE, pa.schema([
        _EXCHANGE, ("symbol", pa.string()), ("interval", pa.string()), ("open_time", _TIME), ("rule", pa.string()),
        ("severity", pa.string()), ("detail", pa.string()), ("checked_at", _TIME),
    ])),
    "markets": (MARKETS_FILE, pa.schema([
        _EXCHANGE, ("symbol", pa.string()), ("base", pa.string()), ("quote", pa.string()),
        ("status", pa.string()), ("listed", _TIME), ("delisted", _TIME), ("checked_at", _TIME),
    ])),
}  # fmt: skip
#: The ``klines`` view's columns: the partition keys, then the candle schema.
KLINES_SCHEMA = pa.schema([*(pa.field(k, pa.string()) for k in PARTITION_KEYS), *ARROW_SCHEMA])
_VIEW_SCHEMAS = {"klines": KLINES_SCHEMA, **{view: schema for view, (_, schema) in _META_VIEWS.items()}}


@dataclass
class SqlResult:
    """What one statement returned: ``table`` (at most ``limit`` rows when a limit was given),
    whether more rows were left out, and warnings (an unreadable metadata file)."""

    table: pa.Table
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    #: In ``json`` output: columns holding JSON text (``nested``) or exact number text (``number``).
    json_columns: dict[int, str] = field(default_factory=dict)


def partition_files(lake: Lake | str | Path) -> list[Path]:
    """Every partition file of the lake (any exchange and interval; symbols and months that the
    layout allows, as `status` and `gaps` see them), sorted."""
    base = klines_dir(lake.root if isinstance(lake, Lake) else lake)
    found = []
    for path in base.glob("exchange=*/interval=*/symbol=*/month=*/*.parquet"):
        if path.name != DATA_FILE and not is_stream_name(path.name):
            continue  # another tool's file: not part of the lake
        symbol, month = path.parent.parent.name.partition("=")[2], path.parent.name.partition("=")[2]
        if is_valid_symbol(symbol) and is_valid_month(month):
            found.append(path)
    return sorted(found)


def klines_dataset(lake: Lake | str | Path) -> ds.Dataset:
    """The lake's candles as a pyarrow dataset (partition keys as text columns, read-only).

    Raises:
        SchemaMismatch: a partition another tool wrote does not fit the candle schema (what
            `status` and `gaps` refuse too, rather than reading it cast or cut).
    """
    store = lake if isinstance(lake, Lake) else Lake(lake)
    if isinstance(store, ObjectLake):
        return _object_dataset(store)
    root = store.root
    paths = partition_files(root)
    for path in paths:
        check_partition(path)
    files = [str(p) for p in paths]
    if not files:
        return ds.dataset(KLINES_SCHEMA.empty_table())
    partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in PARTITION_KEYS]), flavor="hive")
    return ds.dataset(
        files,
        schema=KLINES_SCHEMA,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=str(klines_dir(root)),
    )


def _object_dataset(lake: ObjectLake) -> ds.Dataset:
    """:func:`klines_dataset` of a lake on object storage: pyarrow's own S3 filesystem reads the
    objects; each footer is checked against the contract first (range reads, kept per version)."""
    objects = lake.candle_objects()
    if not objects:
        return ds.dataset(KLINES_SCHEMA.empty_table())
    lake.check_objects(objects)
    storage = lake.storage
    partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in PARTITION_KEYS]), flavor="hive")
    return ds.dataset(
        [storage.arrow_path(o.path) for o in objects],
        schema=KLINES_SCHEMA,
        format="parquet",
        filesystem=storage.arrow_filesystem(),
        partitioning=partitioning,
        partition_base_dir=storage.arrow_path("klines"),
    )


def connect(
    lake: Lake | str | Path, warnings: list[str] | None = None, *, temp_dir: str | Path | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (time zone UTC) with the lake's views that can change
    nothing on disk (see the module docstring).

    A query too big for memory spills to ``temp_dir`` (default: the system's temp folder), never
    to the working directory or the lake. An unreadable metadata file leaves its view empty and
    adds a line to ``warnings``.
    """
    store = lake if isinstance(lake, Lake) else Lake(lake)
    con = duckdb.connect()
    try:
        # In this order: the time zone needs ICU, which cannot load once external access is off.
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # it would draw on stdout, between results
        con.execute(f"SET temp_directory = {_literal(str(temp_dir or tempfile.gettempdir()))}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        con.register("klines", klines_dataset(store))
        for view, (name, schema) in _META_VIEWS.items():
            con.register(view, _meta_table(store, name, schema, view, warnings))
    except BaseException:
        con.close()
        raise
    return con


def run_sql(
    lake: Lake | str | Path, sql: str, *, output: OutputKind = "arrow", limit: int | None = None
) -> SqlResult:
    """Run one query over the lake's views in a connection that cannot write (:func:`connect`).

    Args:
        lake: The lake or its root.
        sql: Exactly one statement; a query (``SELECT``, ``WITH``, ``EXPLAIN``).
        output: What the columns are shaped for. ``arrow``: as DuckDB returns them. ``text``:
            every column as text (UTC times as ``2024-01-01T00:00:00Z``, nested values as JSON),
            for tables; ``csv``: the same with UTC times always to the millisecond. ``json``: JSON-ready (:func:`to_json_rows`). ``parquet``: native,
            except the types Parquet cannot hold (INTERVAL, BIT, ...), as text.
        limit: Keep at most this many rows (``truncated`` tells whether there were more).

    Raises:
        QueryError: The statement failed, is not a query, or tried to reach a file.
    """
    warnings: list[str] = []
    spill = tempfile.mkdtemp(prefix="cryptolake-sql-")
    con = connect(lake, warnings, temp_dir=spill)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
        if len(statements) != 1:
            raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
        if statements[0].type not in _QUERIES:
            keyword = (sql.split() or ["?"])[0].upper()
            raise QueryError(f"only queries run here (SELECT, WITH, EXPLAIN, PIVOT...); {keyword} is not one")
        try:
            with _interrupt_on_ctrl_c(con):
                relation = con.sql(sql)
                names = list(relation.columns)
                shaped, nested = _shape(relation, output)
                if limit is not None:
                    shaped = shaped.limit(limit + 1)
                table = shaped.to_arrow_table()
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except RuntimeError as exc:  # how DuckDB's Python client reports a Ctrl-C during a query
            if "interrupted" in str(exc).lower():
                raise KeyboardInterrupt from None
            raise
        except (duckdb.IOException, pa.ArrowException) as exc:
            raise LakeError(
                f"cannot read the lake: {_one_line(exc)}; `cryptolake gaps` names an unreadable "
                "partition: move it aside, the next collection fetches its month again"
            ) from None
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    truncated = limit is not None and table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    table = table.rename_columns(names)
    result = SqlResult(table, truncated, warnings)
    result.json_columns = nested
    return result


#: Statement types that are queries (PIVOT is MULTI: DuckDB rewrites it into several statements).
_QUERIES = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.MULTI)
#: What :func:`run_sql` shapes the columns for.
OutputKind = Literal["arrow", "text", "csv", "json", "parquet"]
_NUMBERS = frozenset(
    {
        "boolean",
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "float",
        "double",
        "decimal",
        "hugeint",
        "uhugeint",
    }
)
_NESTED = frozenset({"list", "struct", "map", "array", "union"})
#: Numbers JSON must carry digit for digit (a float would round them; Arrow's 128-bit decimal
#: overflows above 2**127).
_EXACT_NUMBERS = frozenset({"decimal", "hugeint", "uhugeint", "bignum", "varint"})
#: Types Parquet (through pyarrow) cannot store exactly: written as their text.
_NOT_PARQUET = frozenset(
    {"interval", "bit", "bignum", "varint", "time with time zone", "union", "hugeint", "uhugeint"}
)
#: The same inside a nested type's name (``UHUGEINT[]``, ``STRUCT(x HUGEINT)``): then the whole
#: value goes as JSON text (a false match only costs the native nesting, never a digit).
_HOLDS_NOT_PARQUET = re.compile(
    r"\b(U?HUGEINT|INTERVAL|BIT|BIGNUM|VARINT|TIME WITH TIME ZONE|TIMETZ|UNION)\b"
)
_UTC_MS = "'%Y-%m-%dT%H:%M:%S.%gZ'"


def _shape(
    relation: duckdb.DuckDBPyRelation, output: OutputKind
) -> tuple[duckdb.DuckDBPyRelation, dict[int, str]]:
    """The relation with each column cast for ``output``; and, for ``json``, the columns that
    hold JSON text (``nested``) or a number as exact text (``number``)."""
    if output == "arrow":
        return relation, {}
    exprs, marks = [], {}
    for i, duck_type in enumerate(relation.types):
        kind, col = duck_type.id, f"#{i + 1}"
        if output == "parquet":
            if kind in _NESTED and _HOLDS_NOT_PARQUET.search(str(duck_type)):
                exprs.append(f"CAST(to_json({col}) AS VARCHAR)")  # e.g. a list of UHUGEINT: as JSON text
            else:
                exprs.append(f"CAST({col} AS VARCHAR)" if kind in _NOT_PARQUET else col)
        elif kind == "timestamp with time zone":
            exprs.append(_utc_text(col) if output == "text" else f"strftime({col}, {_UTC_MS})")
        elif kind in _NESTED:
            exprs.append(f"CAST(to_json({col}) AS VARCHAR)")
            marks[i] = "nested"
        elif output == "json" and kind in _EXACT_NUMBERS:
            exprs.append(f"CAST({col} AS VARCHAR)")  # exact digits: no float, no 128-bit overflow
            marks[i] = "number"
        elif output == "json" and kind in _NUMBERS | {"varchar"}:
            exprs.append(col)
        else:
            exprs.append(f"CAST({col} AS VARCHAR)")
    return relation.project(", ".join(exprs)), (marks if output == "json" else {})


def _utc_text(col: str) -> str:
    """A UTC time as ``...T00:00:00Z``, with milliseconds only when there are some."""
    return (
        f"CASE WHEN epoch_ms({col}) % 1000 = 0 THEN strftime({col}, '%Y-%m-%dT%H:%M:%SZ') "
        f"ELSE strftime({col}, {_UTC_MS}) END"
    )


class ExactNumber(str):
    """A number's exact digits, written into JSON as a number (see :func:`dumps_json`)."""


def to_json_rows(result: SqlResult) -> list[dict[str, Any]]:
    """The rows of a ``json``-shaped result as JSON-ready dicts: NaN and infinities become None
    (JSON has neither), decimals and 128-bit integers keep every digit (:class:`ExactNumber`),
    nested values are parsed from DuckDB's JSON. A repeated column name gets a ``_2``, ``_3``
    suffix so no value is lost."""
    names = unique_names(result.table.column_names)
    columns = []
    for i, column in enumerate(result.table.columns):
        values = column.to_pylist()
        mark = result.json_columns.get(i)
        if mark == "nested":
            values = [
                None if v is None else json.loads(v, parse_constant=lambda _: None, parse_float=_exact_float)
                for v in values
            ]
        elif mark == "number":
            values = [None if v is None else ExactNumber(v) for v in values]
        else:
            values = [_json_scalar(v) for v in values]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def dumps_json(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (no NaN) with every :class:`ExactNumber` written as the number it spells."""
    nonce = secrets.token_hex(8)
    numbers: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, ExactNumber):
            numbers.append(str(item))
            return f"\x00{nonce}:{len(numbers) - 1}\x00"
        if isinstance(item, dict):
            return {k: mark(v) for k, v in item.items()}
        if isinstance(item, list):
            return [mark(v) for v in item]
        return item

    text = json.dumps(mark(value), indent=indent, ensure_ascii=False, allow_nan=False)
    if not numbers:
        return text
    return re.sub(rf'"\\u0000{nonce}:(\d+)\\u0000"', lambda m: numbers[int(m.group(1))], text)


def _exact_float(text: str) -> Any:
    value = float(text)
    return ExactNumber(text) if math.isfinite(value) and repr(value) != text else value


def unique_names(names: list[str]) -> list[str]:
    """Column names with a repeated one suffixed ``_2``, ``_3`` (JSON keys and Parquet columns
    must be unique; ``SELECT 1 AS x, 2 AS x`` is valid SQL). A suffix never takes a name the
    query itself chose, so every name keeps its own column."""
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
            continue
        n = 2
        while f"{name}_{n}" in taken or f"{name}_{n}" in out:
            n += 1
        out.append(f"{name}_{n}")
    return out


def _json_scalar(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def write_database(lake: Lake | str | Path) -> Path:
    """(Re)create ``<lake>/cryptolake.duckdb`` with the views over absolute paths.

    The file is built beside the old one and renamed over it, so an analyst's open session keeps
    the old views and the next one sees the new; it is written in DuckDB's 1.0 storage format,
    which every DuckDB 1.x and 2.x reader opens.

    Raises:
        OSError: The lake folder is not writable (a read-only lake keeps its old file).
    """
    root = (lake.root if isinstance(lake, Lake) else Path(lake)).resolve()  # a local lake only
    path = root / DATABASE_FILE
    _remove_stale_builds(root)
    tmp = root / f".{DATABASE_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        con = duckdb.connect()
        try:
            con.execute(f"ATTACH {_literal(str(tmp))} AS lake (STORAGE_VERSION '{DATABASE_STORAGE_VERSION}')")
            for name, select in view_definitions(root).items():
                try:
                    con.execute(f"CREATE VIEW lake.{name} AS {select}")
                except duckdb.Error as exc:  # an unreadable file: the view is empty until it is fixed
                    log.warning("the %s view in %s is empty: %s", name, path, _one_line(exc))
                    con.execute(f"CREATE VIEW lake.{name} AS {_empty_select(_VIEW_SCHEMAS[name])}")
            con.execute("DETACH lake")
        except duckdb.IOException as exc:
            raise OSError(f"cannot write {path}: {_one_line(exc)}") from None
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return path


def _remove_stale_builds(root: Path, older_than_s: float = 600) -> None:
    """Remove views files a killed process left half-built (``.cryptolake.duckdb.<pid>.<hex>.tmp``)."""
    for leftover in root.glob(f".{DATABASE_FILE}.*.tmp*"):
        try:
            if time.time() - leftover.stat().st_mtime > older_than_s:
                leftover.unlink()
        except OSError:
            continue


def refresh_database(lake: Lake | str | Path) -> Path | None:
    """:func:`write_database`, or None when the lake is read-only (its old file stays) or on
    object storage (where readers use their own S3 access: see the README)."""
    if isinstance(lake, ObjectLake) or (not isinstance(lake, Lake) and is_object_url(lake)):
        return None
    try:
        return write_database(lake)
    except OSError as exc:
        log.debug("not refreshing the views file: %s", exc)
        return None


def view_definitions(lake: Lake | str | Path) -> dict[str, str]:
    """``{view: SELECT ...}`` over the lake's files with absolute paths, for plain DuckDB."""
    root = (lake.root if isinstance(lake, Lake) else Path(lake)).resolve()
    files = partition_files(root)
    if any(ch in root.as_posix() for ch in "*?[]{}"):  # a glob would misread the lake's own path
        source = "[" + ", ".join(_literal(p.as_posix()) for p in files) + "]"
    else:
        source = _literal(
            klines_dir(root).as_posix() + "/*/*/symbol=*/month=" + _MONTH_GLOB + "/" + _CANDLE_FILES_GLOB
        )
    views = {
        "klines": f"SELECT * FROM read_parquet({source}, hive_partitioning = true, "
        "hive_types_autocast = false, union_by_name = false)"
        if files
        else _empty_select(KLINES_SCHEMA),
    }
    for view, (name, schema) in _META_VIEWS.items():
        path = meta_dir(root) / name
        if not path.is_file():
            views[view] = _empty_select(schema)
            continue
        columns = _file_columns(path)
        # Metadata written before the lake held other exchanges has no exchange: Binance's.
        legacy = "'binance' AS exchange, " if "exchange" not in columns else ""
        replace = f" REPLACE ({_INTERVAL_AS_IN_PATHS} AS interval)" if "interval" in columns else ""
        views[view] = f"SELECT {legacy}*{replace} FROM read_parquet({_literal(path.as_posix())})"
    return views


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def _interrupt_on_ctrl_c(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) stops the query at once: DuckDB is told to interrupt it, and the
    query then raises :class:`KeyboardInterrupt` (in the main thread only; elsewhere signals
    are the caller's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        con.interrupt()

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except (duckdb.InterruptException, RuntimeError) as exc:
        if received and (isinstance(exc, duckdb.InterruptException) or "interrupted" in str(exc).lower()):
            name = signal.Signals(received[0]).name
            raise Interrupted(f"the query was stopped ({name})", signum=received[0]) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _meta_table(lake: Lake, name: str, schema: pa.Schema, view: str, warnings: list[str] | None) -> pa.Table:
    where = f"{lake.storage.url}/{META_DIR}/{name}"
    try:
        read = lake.storage.read(f"{META_DIR}/{name}")
        if read is None:
            return schema.empty_table()
        table = pq.read_table(pa.BufferReader(read[0]))
    except (pa.ArrowException, OSError, LakeError) as exc:
        if warnings is not None:
            warnings.append(
                f"the {view} view is empty: {where} cannot be read ({_one_line(exc)}); "
                "move it aside, the next gap report or collection run writes it again"
            )
        return schema.empty_table()
    if "exchange" not in table.column_names:  # written before the lake held other exchanges
        table = table.add_column(0, "exchange", pa.array(["binance"] * table.num_rows, pa.string()))
    if "interval" in table.column_names:  # the folder name, as in the klines view (1M -> 1mo)
        column = table.column("interval")
        monthly = pc.equal(column, "1M")
        table = table.set_column(
            table.column_names.index("interval"), "interval", pc.if_else(monthly, pa.scalar("1mo"), column)
        )
    return table


def _file_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError):
        return []


def _empty_select(schema: pa.Schema) -> str:
    types = {pa.string(): "VARCHAR", _TIME: "TIMESTAMPTZ", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}
    columns = ", ".join(f"NULL::{types[f.type]} AS {f.name}" for f in schema)
    return f"SELECT {columns} WHERE false"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__
