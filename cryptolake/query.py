"""SQL over the lake for analysts: DuckDB views ``klines``, ``gaps`` and ``coverage``.

- ``klines``: every stored candle, with the partition keys ``exchange``, ``interval``,
  ``symbol`` and ``month`` as text columns (``interval`` is ``1mo`` for monthly candles).
- ``gaps`` and ``coverage``: the latest gap report and per-month completeness, written to
  ``<lake>/_meta/gaps.parquet`` and ``coverage.parquet`` by every gap detection
  (``cryptolake gaps``, ``fill-gaps``, ``coverage``, and collection runs).
- ``exchange_windows``: recorded exchange outages and failed fetch windows.

:func:`connect` gives an in-memory DuckDB connection with those views; :func:`write_database`
stores them in ``<lake>/cryptolake.duckdb`` (absolute paths inside), which the DuckDB CLI, Python
or a notebook open from any working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import polars as pl

from cryptolake.errors import CryptolakeError
from cryptolake.lake import Lake
from cryptolake.lake.layout import klines_dir, meta_dir
from cryptolake.lake.meta import WINDOWS_FILE

log = logging.getLogger("cryptolake.query")

DATABASE_FILE = "cryptolake.duckdb"
GAPS_FILE = "gaps.parquet"
COVERAGE_FILE = "coverage.parquet"

_EMPTY_KLINES = """SELECT NULL::VARCHAR AS exchange, NULL::VARCHAR AS interval, NULL::VARCHAR AS symbol,
    NULL::VARCHAR AS month, NULL::TIMESTAMPTZ AS open_time, NULL::DOUBLE AS open, NULL::DOUBLE AS high,
    NULL::DOUBLE AS low, NULL::DOUBLE AS close, NULL::DOUBLE AS volume, NULL::TIMESTAMPTZ AS close_time,
    NULL::DOUBLE AS quote_volume, NULL::BIGINT AS trades, NULL::DOUBLE AS taker_buy_base_volume,
    NULL::DOUBLE AS taker_buy_quote_volume WHERE false"""
_EMPTY_GAPS = """SELECT NULL::VARCHAR AS symbol, NULL::VARCHAR AS interval, NULL::VARCHAR AS kind,
    NULL::VARCHAR AS position, NULL::TIMESTAMPTZ AS start_time, NULL::TIMESTAMPTZ AS end_time,
    NULL::BIGINT AS count, NULL::TIMESTAMPTZ AS judged_at WHERE false"""
_EMPTY_COVERAGE = """SELECT NULL::VARCHAR AS symbol, NULL::VARCHAR AS interval, NULL::VARCHAR AS month,
    NULL::BIGINT AS expected, NULL::BIGINT AS present, NULL::DOUBLE AS completeness_percent,
    NULL::TIMESTAMPTZ AS judged_at WHERE false"""
_EMPTY_WINDOWS = """SELECT NULL::VARCHAR AS interval, NULL::VARCHAR AS symbol, NULL::VARCHAR AS kind,
    NULL::TIMESTAMPTZ AS start_time, NULL::TIMESTAMPTZ AS end_time, NULL::TIMESTAMPTZ AS recorded_at,
    NULL::TIMESTAMPTZ AS checked_at, NULL::BIGINT AS attempts, NULL::VARCHAR AS error WHERE false"""


class QueryError(CryptolakeError):
    """A SQL statement over the lake failed (syntax, unknown column, ...)."""


def view_definitions(lake: Lake | str | Path) -> dict[str, str]:
    """``{view: SELECT ...}`` over the lake's files, with absolute paths."""
    root = (lake.root if isinstance(lake, Lake) else Path(lake)).resolve()
    klines = klines_dir(root)
    meta = meta_dir(root)
    has_klines = klines.is_dir() and any(klines.rglob("*.parquet"))
    return {
        "klines": (
            f"SELECT * FROM read_parquet({_literal(klines.as_posix() + '/**/*.parquet')}, "
            "hive_partitioning = true, hive_types_autocast = false)"
            if has_klines else _EMPTY_KLINES
        ),
        "gaps": _file_or(meta / GAPS_FILE, _EMPTY_GAPS),
        "coverage": _file_or(meta / COVERAGE_FILE, _EMPTY_COVERAGE),
        "exchange_windows": _file_or(meta / WINDOWS_FILE, _EMPTY_WINDOWS),
    }  # fmt: skip


def connect(lake: Lake | str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (time zone UTC) with the lake's views."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, select in view_definitions(lake).items():
            con.execute(f"CREATE VIEW {name} AS {select}")
    except BaseException:
        con.close()
        raise
    return con


def write_database(lake: Lake | str | Path) -> Path | None:
    """(Re)create ``<lake>/cryptolake.duckdb`` with the views; None if another process holds it
    open (it keeps its views; the next refresh updates them)."""
    root = lake.root if isinstance(lake, Lake) else Path(lake)
    path = root / DATABASE_FILE
    root.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:  # locked by an analyst's session
        log.info("not refreshing %s: %s", path, exc)
        return None
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, select in view_definitions(root).items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
    finally:
        con.close()
    return path


def run_sql(lake: Lake | str | Path, sql: str) -> pl.DataFrame:
    """Run one read-only statement over the lake's views.

    Raises:
        QueryError: The statement failed, or it would change something (only queries run).
    """
    con = connect(lake)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
        if len(statements) != 1:
            raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
        if statements[0].type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise QueryError(f"only queries run here (SELECT, WITH, EXPLAIN); got {statements[0].type.name}")
        try:
            table = con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
    finally:
        con.close()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _file_or(path: Path, empty: str) -> str:
    return f"SELECT * FROM read_parquet({_literal(path.as_posix())})" if path.is_file() else empty


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__
