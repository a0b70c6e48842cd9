"""The PostgreSQL loader against the real server named by ``CRYPTOLAKE_TEST_PG_DSN``.

Each test works in its own schema (random name) and drops it. Lakes are small and synthetic,
written with ``Lake.write_klines``. Without a server the tests skip, except under ``CI=true``,
where a missing server fails them. Faults are real: a loader process killed with SIGKILL, a
backend terminated with ``pg_terminate_backend``, a closed port, a database that does not exist.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import psycopg
import pytest
from click.testing import CliRunner, Result
from polars.testing import assert_frame_equal
from psycopg.conninfo import make_conninfo

from cryptolake.cli import cli
from cryptolake.config import redact_dsn
from cryptolake.errors import LoaderError, LoaderRejected, LoaderUnavailable, MissingDependency
from cryptolake.lake import Lake, klines_glob, month_bounds, partition_path
from cryptolake.lake.store import write_parquet_atomic
from cryptolake.loader import PostgresLoader, SyncReport
from cryptolake.loader.pgtables import COLUMN_TYPES, STATE_TABLE
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS
from cryptolake.timeutils import to_ms
from tests.conftest import PG_DSN, connect_test_pg
from tests.helpers import store_as_another_tool

pytestmark = pytest.mark.postgres

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
MONTHS = ("2024-01", "2024-02")
VALUES = ", ".join(KLINE_COLUMNS[1:])

# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for the tests' own queries; skip (or fail under CI) without one."""
    with connect_test_pg() as conn:
        yield conn


@pytest.fixture
def schema(server: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"cryptolake_test_{secrets.token_hex(4)}"
    yield name
    server.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def candles(symbol: str, month: str, scale: float = 1.0, rows: int | None = None) -> pl.DataFrame:
    """Deterministic hourly candles filling ``month`` (or its first ``rows`` hours)."""
    start, end = month_bounds(month)
    count = (end - start) // HOUR_MS if rows is None else rows
    seed = sum(symbol.encode()) % 97
    i = pl.int_range(count, eager=True, dtype=pl.Int64)
    price = (100.0 + seed + (i * 7 % 113) / 10.0) * scale
    return pl.DataFrame(
        {
            "open_time": start + i * HOUR_MS,
            "open": price,
            "high": price * 1.01,
            "low": price * 0.99,
            "close": price + 0.25,
            "volume": (i % 17) * 0.1 + 1 / 3,
            "close_time": start + (i + 1) * HOUR_MS - 1,
            "quote_volume": price * 3.3,
            "trades": i * 3 + seed,
            "taker_buy_base_volume": (i % 5) / 7,
            "taker_buy_quote_volume": price / 9,
        }
    ).with_columns(
        pl.from_epoch(c, time_unit="ms").dt.replace_time_zone("UTC") for c in ("open_time", "close_time")
    )


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    store = Lake(tmp_path / "lake")
    for symbol in SYMBOLS:
        store.write_klines("1h", symbol, pl.concat([candles(symbol, m) for m in MONTHS]))
    return store


def loader(lake: Lake, schema: str, **options: Any) -> PostgresLoader:
    return PostgresLoader(lake, PG_DSN, schema=schema, **options)


def lake_rows(lake: Lake) -> pl.DataFrame:
    """The lake as plain DuckDB reads it (no cryptolake code), times as epoch milliseconds."""
    values = VALUES.replace("close_time", "epoch_ms(close_time) AS close_time")
    query = (
        f'SELECT exchange, "interval", symbol, epoch_ms(open_time) AS open_time, {values} '
        f"FROM read_parquet('{klines_glob(lake.root)}', hive_partitioning = true) "
        """WHERE "interval" = '1h' ORDER BY symbol, open_time"""
    )
    return duckdb.sql(query).pl()


def table_rows(server: psycopg.Connection[Any], schema: str, table: str = "klines") -> pl.DataFrame:
    epoch = "(extract(epoch FROM {0}) * 1000)::bigint AS {0}"
    query = (
        f'SELECT exchange, "interval", symbol, {epoch.format("open_time")}, '
        f"{VALUES.replace('close_time', epoch.format('close_time'))} FROM {schema}.{table} "
        "ORDER BY symbol, open_time"
    )
    with server.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description or ()]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)


def assert_table_matches_lake(server: psycopg.Connection[Any], schema: str, lake: Lake) -> None:
    expected, actual = lake_rows(lake), table_rows(server, schema)
    assert actual.height == expected.height
    assert_frame_equal(actual, expected, check_dtypes=False, check_exact=True)


def xmins(server: psycopg.Connection[Any], schema: str, symbol: str) -> dict[int, str]:
    """Row versions: a row that was rewritten gets a new xmin."""
    rows = server.execute(
        f"SELECT (extract(epoch FROM open_time) * 1000)::bigint, xmin::text "
        f"FROM {schema}.klines WHERE symbol = %s",
        (symbol,),
    ).fetchall()
    return dict(rows)


def blocked_backend(server: psycopg.Connection[Any], schema: str, timeout_s: float = 20) -> int:
    """The pid of the loader backend waiting on a row lock in ``schema`` (the test holds it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = server.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{schema}%",),
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the loader never blocked on the locked partition")


def wait_gone(server: psycopg.Connection[Any], pid: int) -> None:
    deadline = time.monotonic() + 20
    while server.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} did not end"
        time.sleep(0.02)


def lock_partition(schema: str, symbol: str, month: str) -> psycopg.Connection[Any]:
    """A connection holding row locks on one synced partition (its transaction left open)."""
    holder = psycopg.connect(PG_DSN)
    low, high = month_bounds(month)
    holder.execute(
        f"SELECT 1 FROM {schema}.klines WHERE symbol = %s AND open_time >= to_timestamp(%s) "
        "AND open_time < to_timestamp(%s) FOR UPDATE",
        (symbol, low / 1000, high / 1000),
    )
    return holder


def invoke(*args: Any) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def change_all(lake: Lake) -> None:
    for symbol in SYMBOLS:
        lake.write_klines("1h", symbol, pl.concat([candles(symbol, m, scale=2.0) for m in MONTHS]))


# -- create, sync, re-sync -------------------------------------------------------------------


def test_first_sync_creates_the_table_and_matches_the_lake_exactly(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    with loader(lake, schema) as pg:
        report = pg.sync("1h")
    rows = len(SYMBOLS) * sum((month_bounds(m)[1] - month_bounds(m)[0]) // HOUR_MS for m in MONTHS)
    assert report == SyncReport(
        table=f"{schema}.klines",
        interval="1h",
        partitions_examined=6,
        partitions_sent=6,
        partitions_skipped=0,
        partitions_removed=0,
        rows_sent=rows,
        rows_deleted=0,
        seconds=report.seconds,
        failures=(),
    )
    types = dict(
        server.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'klines'",
            (schema,),
        ).fetchall()
    )
    assert types["open_time"] == types["close_time"] == "timestamp with time zone"
    assert types["open"] == types["taker_buy_quote_volume"] == "double precision"
    assert types["trades"] == "bigint" and types["symbol"] == types["interval"] == types["exchange"] == "text"
    key = server.execute(
        "SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (f"{schema}.klines",),
    ).fetchone()
    assert key == (["exchange", "symbol", "interval", "open_time"],)
    assert_table_matches_lake(server, schema, lake)
    records = server.execute(f"SELECT count(*), sum(rows) FROM {schema}.{STATE_TABLE}").fetchone()
    assert records == (6, rows)


def test_resync_sends_nothing_and_a_copied_lake_too(
    server: psycopg.Connection[Any], schema: str, lake: Lake, tmp_path: Path
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
        again = pg.sync("1h")
    assert (again.partitions_sent, again.rows_sent, again.partitions_skipped) == (0, 0, 6)
    # A copy has new modification times and inodes; its content is the same, so nothing moves.
    copy = Lake(tmp_path / "restored")
    shutil.copytree(lake.root, copy.root)
    with loader(copy, schema) as pg:
        restored = pg.sync("1h")
    assert (restored.partitions_sent, restored.rows_sent) == (0, 0)


def test_a_changed_partition_moves_alone_and_only_its_changed_rows_are_rewritten(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
        others, before = xmins(server, schema, "AAAUSDT"), xmins(server, schema, "BBBUSDT")
        changed = candles("BBBUSDT", "2024-02").head(5).with_columns(pl.col("close") + 1)
        lake.write_klines("1h", "BBBUSDT", changed)
        report = pg.sync("1h")
    assert (report.partitions_sent, report.partitions_skipped) == (1, 5)
    assert report.rows_sent == lake.read_partition("1h", "BBBUSDT", "2024-02").height
    assert xmins(server, schema, "AAAUSDT") == others
    after = xmins(server, schema, "BBBUSDT")
    rewritten = {t for t in after if after[t] != before[t]}
    assert rewritten == {int(t.timestamp() * 1000) for t in changed["open_time"]}
    assert_table_matches_lake(server, schema, lake)


def test_rows_and_partitions_gone_from_the_lake_are_deleted(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
        shorter = lake.read_partition("1h", "AAAUSDT", "2024-01").head(100)
        write_parquet_atomic(partition_path(lake.root, "1h", "AAAUSDT", "2024-01"), shorter)
        shutil.rmtree(partition_path(lake.root, "1h", "CCCUSDT", "2024-02").parent)
        report = pg.sync("1h")
    assert (report.partitions_sent, report.partitions_removed) == (1, 1)
    assert report.rows_deleted == (744 - 100) + 696
    assert_table_matches_lake(server, schema, lake)
    assert server.execute(f"SELECT count(*) FROM {schema}.{STATE_TABLE}").fetchone() == (5,)


def test_nulls_nan_and_symbol_subsets(server: psycopg.Connection[Any], schema: str, tmp_path: Path) -> None:
    odd = Lake(tmp_path / "odd")
    frame = candles("NULLUSDT", "2024-03", rows=50).with_columns(
        pl.when(pl.col("trades") % 3 == 0).then(None).otherwise(pl.col("trades")).alias("trades"),
        pl.when(pl.col("trades") % 4 == 0).then(None).otherwise(pl.col("quote_volume")).alias("quote_volume"),
        pl.when(pl.col("trades") % 5 == 0).then(float("nan")).otherwise(pl.col("open")).alias("open"),
        pl.when(pl.col("trades") % 7 == 0).then(None).otherwise(pl.col("close_time")).alias("close_time"),
    )
    store_as_another_tool(odd.root, "1h", "NULLUSDT", frame)  # cryptolake's rules would refuse some
    odd.write_klines("1h", "币安人生USDT", candles("币安人生USDT", "2024-03", rows=24))
    with loader(odd, schema) as pg:
        first = pg.sync("1h", ["NULLUSDT"])
        assert (first.partitions_examined, first.rows_sent) == (1, 50)
        rest = pg.sync("1h")
    assert (rest.partitions_sent, rest.partitions_skipped) == (1, 1)
    assert_table_matches_lake(server, schema, odd)


def test_timescale_hypertable_when_the_server_offers_it(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    if server.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is None:
        with loader(lake, schema, timescale=True) as pg, pytest.raises(LoaderRejected, match="timescaledb"):
            pg.sync("1h")
        assert server.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None
        pytest.skip("TimescaleDB is not available on this server: checked the clear error only")
    with loader(lake, schema, timescale=True) as pg:
        pg.sync("1h")
    assert server.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_schema = %s "
        "AND hypertable_name = 'klines'",
        (schema,),
    ).fetchone() == (1,)
    assert_table_matches_lake(server, schema, lake)


# -- faults ----------------------------------------------------------------------------------


def test_a_sync_killed_mid_partition_rolls_it_back_and_the_next_sync_completes(
    server: psycopg.Connection[Any], schema: str, lake: Lake, tmp_path: Path
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
    old = table_rows(server, schema).filter(pl.col("symbol") == "BBBUSDT")
    change_all(lake)
    holder = lock_partition(schema, "BBBUSDT", "2024-01")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOLAKE_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "load",
            "postgres",
            "--dsn",
            PG_DSN,
            "--schema",
            schema,
            "--lake",
            str(lake.root),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid = blocked_backend(server, schema)  # AAAUSDT is done; BBBUSDT 2024-01 waits mid-upsert
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        holder.rollback()
        holder.close()
        process.kill()
    wait_gone(server, pid)
    after_kill = table_rows(server, schema)
    assert_frame_equal(after_kill.filter(pl.col("symbol") == "BBBUSDT"), old)  # rolled back
    aaa = lake_rows(lake).filter(pl.col("symbol") == "AAAUSDT")
    assert_frame_equal(after_kill.filter(pl.col("symbol") == "AAAUSDT"), aaa, check_dtypes=False)
    with loader(lake, schema) as pg:
        report = pg.sync("1h")
    assert (report.partitions_sent, report.partitions_skipped) == (4, 2)
    assert_table_matches_lake(server, schema, lake)


def test_a_lost_connection_is_one_clear_error_and_the_next_sync_completes(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    in_flight = (pl.col("symbol") == "CCCUSDT") & (pl.col("open_time") >= to_ms("2024-02-01"))
    with loader(lake, schema, workers=1) as pg:
        pg.sync("1h")
        old = table_rows(server, schema).filter(in_flight)
        change_all(lake)
        holder = lock_partition(schema, "CCCUSDT", "2024-02")
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                pg.sync("1h")
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            server.execute("SELECT pg_terminate_backend(%s)", (blocked_backend(server, schema),))
            thread.join(timeout=20)
        finally:
            holder.rollback()
            holder.close()
        assert len(outcome) == 1 and isinstance(outcome[0], LoaderUnavailable), outcome
        message = str(outcome[0])
        assert "lost the connection" in message and "CCCUSDT 2024-02" in message
        assert "rolled back, 5 of 6 were synced" in message and "\n" not in message
        assert_frame_equal(table_rows(server, schema).filter(in_flight), old)
        report = pg.sync("1h")  # reconnects
    assert (report.partitions_sent, report.partitions_skipped) == (1, 5)
    assert_table_matches_lake(server, schema, lake)


@pytest.mark.parametrize("fault", ["kill", "terminate"])
def test_a_first_sync_cut_off_mid_batch_rolls_back_the_whole_batch_and_the_next_sync_completes(
    server: psycopg.Connection[Any], schema: str, lake: Lake, tmp_path: Path, fault: str
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h", ["AAAUSDT"])
    before = table_rows(server, schema)
    # An uncommitted row with the key of CCCUSDT 2024-02's first candle: the batch of the four
    # never-synced partitions (BBB, then CCC) waits on it in the middle of its COPY.
    holder = psycopg.connect(PG_DSN)
    holder.execute(
        f"INSERT INTO {schema}.klines (exchange, interval, symbol, open_time) "
        "VALUES ('binance', '1h', 'CCCUSDT', '2024-02-01 00:00+00')"
    )
    outcome: list[BaseException] = []
    try:
        if fault == "kill":
            env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOLAKE_")}
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cryptolake",
                    "load",
                    "postgres",
                    "--dsn",
                    PG_DSN,
                    "--schema",
                    schema,
                    "--lake",
                    str(lake.root),
                    "--workers",
                    "1",
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                pid = blocked_backend(server, schema)
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            finally:
                process.kill()
        else:
            with loader(lake, schema, workers=1) as pg:

                def run() -> None:
                    try:
                        pg.sync("1h")
                    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                        outcome.append(exc)

                thread = threading.Thread(target=run)
                thread.start()
                pid = blocked_backend(server, schema)
                server.execute("SELECT pg_terminate_backend(%s)", (pid,))
                thread.join(timeout=20)
    finally:
        holder.rollback()
        holder.close()
    wait_gone(server, pid)
    if fault == "terminate":
        assert len(outcome) == 1 and isinstance(outcome[0], LoaderUnavailable), outcome
        message = str(outcome[0])
        assert "4 new partitions in one transaction, BBBUSDT 2024-01 to CCCUSDT 2024-02" in message
        assert "they were rolled back, 0 of 4 were synced" in message and "\n" not in message
    # BBBUSDT's rows and CCCUSDT 2024-01's were copied before the wait: all rolled back, records too.
    assert_frame_equal(table_rows(server, schema), before)
    assert server.execute(f"SELECT DISTINCT symbol FROM {schema}.{STATE_TABLE}").fetchall() == [("AAAUSDT",)]
    with loader(lake, schema) as pg:
        report = pg.sync("1h")
    assert (report.partitions_sent, report.partitions_skipped, report.ok) == (4, 2, True)
    assert_table_matches_lake(server, schema, lake)


def test_new_partitions_load_in_batches_each_record_with_its_rows(
    server: psycopg.Connection[Any], schema: str, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptolake.loader import postgres

    # GAPUSDT has 2024-01 and 2024-03 but not 2024-02: the batch must not clear February.
    lake.write_klines("1h", "GAPUSDT", pl.concat([candles("GAPUSDT", m) for m in ("2024-01", "2024-03")]))
    with loader(lake, schema) as pg:
        pg.sync("1h", ["AAAUSDT"])
    stray = f"INSERT INTO {schema}.klines (exchange, interval, symbol, open_time, close) VALUES ('binance', '1h', %s, %s, -1)"
    for symbol, when in (
        ("BBBUSDT", "2024-01-01 00:00+00"),
        ("BBBUSDT", "2024-02-29 23:00+00"),
        ("CCCUSDT", "2024-01-15 10:30+00"),
        ("GAPUSDT", "2024-02-10 00:00+00"),
    ):
        server.execute(stray, (symbol, when))  # rows without a record (the first two collide with the lake's)
    monkeypatch.setattr(postgres, "BATCH_PARTITIONS", 4)
    with loader(lake, schema, workers=1) as pg:
        report = pg.sync("1h")
    assert (report.partitions_sent, report.partitions_skipped, report.ok) == (6, 2, True)
    assert report.rows_sent == lake_rows(lake).filter(pl.col("symbol") != "AAAUSDT").height
    assert report.rows_deleted == 3  # the February row of GAPUSDT stays: the lake has no such partition
    kept = table_rows(server, schema).filter(pl.col("close") == -1)
    assert kept.select("symbol", "open_time").rows() == [("GAPUSDT", to_ms("2024-02-10"))]
    assert_frame_equal(
        table_rows(server, schema).filter(pl.col("close") != -1),
        lake_rows(lake),
        check_dtypes=False,
        check_exact=True,
    )
    # Each record was written by the transaction that wrote its partition's rows; 6 new
    # partitions in batches of 4 make 2 transactions. (The sync's final synchronous commit
    # rewrites the last record, GAPUSDT 2024-03, so its version is newer.)
    pairs = server.execute(
        f"SELECT s.symbol, s.month, s.xmin::text, array_agg(DISTINCT k.xmin::text) FROM {schema}.{STATE_TABLE} s "
        f"JOIN {schema}.klines k ON k.symbol = s.symbol AND to_char(k.open_time AT TIME ZONE 'UTC', 'YYYY-MM') = s.month "
        "AND k.close <> -1 WHERE s.symbol <> 'AAAUSDT' GROUP BY 1, 2, 3 ORDER BY 1, 2"
    ).fetchall()
    assert len(pairs) == 6 and all(len(rows) == 1 for *_, rows in pairs), pairs
    assert all(rows == [record] for _, _, record, rows in pairs[:-1]), pairs
    first, second = pairs[0][3][0], pairs[-1][3][0]
    assert first != second and [rows[0] for *_, rows in pairs] == [first] * 4 + [second] * 2, pairs


def test_a_refused_new_partition_fails_alone_and_its_batch_syncs(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h", ["AAAUSDT"])
        server.execute(f"ALTER TABLE {schema}.klines ADD CONSTRAINT sane CHECK (close < 1000)")
        lake.write_klines("1h", "BBBUSDT", candles("BBBUSDT", "2024-01", scale=100.0))  # refused
        report = pg.sync("1h")
        assert (report.partitions_sent, [(f.symbol, f.month) for f in report.failures]) == (
            3,
            [("BBBUSDT", "2024-01")],
        )
        assert (
            report.rows_sent
            == lake_rows(lake)
            .filter(
                (pl.col("symbol") != "AAAUSDT")
                & ~((pl.col("symbol") == "BBBUSDT") & (pl.col("open_time") < to_ms("2024-02-01")))
            )
            .height
        )
        assert "PostgreSQL refused partition BBBUSDT 2024-01" in report.failures[0].error
        assert "sane" in report.failures[0].error
        assert server.execute(
            f"SELECT count(*) FROM {schema}.klines WHERE symbol = 'BBBUSDT' "
            "AND open_time < '2024-02-01 00:00+00'"
        ).fetchone() == (0,)
        assert server.execute(f"SELECT count(*) FROM {schema}.{STATE_TABLE}").fetchone() == (5,)
        server.execute(f"ALTER TABLE {schema}.klines DROP CONSTRAINT sane")
        again = pg.sync("1h")
    assert (again.partitions_sent, again.partitions_skipped, again.ok) == (1, 5, True)
    assert_table_matches_lake(server, schema, lake)


def test_server_down_and_wrong_database_are_one_line_without_the_password(lake: Lake) -> None:
    down = "postgresql://postgres:hunter2@127.0.0.1:1/test"
    wrong_db = make_conninfo(PG_DSN, dbname="cryptolake_no_such_db", password="hunter2")
    bad_port = "postgresql://postgres:hunter2@127.0.0.1:port/test"
    for dsn, expected, code in (
        (down, "cannot connect", 1),
        (wrong_db, "cryptolake_no_such_db", 1),
        (bad_port, "port", 2),
    ):  # a malformed DSN is bad input: exit 2
        result = invoke("load", "postgres", "--dsn", dsn, "--lake", lake.root)
        assert result.exit_code == code, result.output
        assert result.output.startswith("error: ") and expected in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "hunter2" not in result.output and "***" in result.output
    with pytest.raises(LoaderUnavailable):
        PostgresLoader(lake, down)


def test_an_incompatible_table_is_refused_and_left_unchanged(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    server.execute(f"CREATE SCHEMA {schema}")
    server.execute(
        f"CREATE TABLE {schema}.klines (exchange text, interval text, symbol text, "
        f"open_time timestamptz, open text, note text NOT NULL, PRIMARY KEY (symbol, open_time))"
    )
    server.execute(f"INSERT INTO {schema}.klines VALUES ('x', '1h', 'S', now(), 'abc', 'keep me')")

    def shape() -> list[tuple[Any, ...]]:
        return server.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY 1, 2",
            (schema,),
        ).fetchall()

    before = shape()
    with loader(lake, schema) as pg, pytest.raises(LoaderRejected) as refused:
        pg.sync("1h")
    message = str(refused.value)
    assert "column open is text, expected double precision" in message
    assert "missing column trades (bigint)" in message and "note is NOT NULL" in message
    assert "(exchange, symbol, interval, open_time)" in message and "Nothing was changed" in message
    assert shape() == before  # not even the state table was created
    assert server.execute(f"SELECT note FROM {schema}.klines").fetchall() == [("keep me",)]
    result = invoke("load", "postgres", "--dsn", PG_DSN, "--schema", schema, "--lake", lake.root)
    assert (
        result.exit_code == 1 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    )


def test_an_existing_compatible_table_is_used_as_it_is(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    server.execute(f"CREATE SCHEMA {schema}")
    columns = ", ".join(f'"{c}" {t}' for c, t in COLUMN_TYPES.items())
    server.execute(
        f"CREATE TABLE {schema}.klines ({columns}, note text, UNIQUE (open_time, symbol, exchange, interval))"
    )
    with loader(lake, schema) as pg:
        report = pg.sync("1h")
    assert report.ok and report.partitions_sent == 6
    assert_table_matches_lake(server, schema, lake)


def test_concurrent_syncs_and_an_empty_lake_are_refused(
    server: psycopg.Connection[Any], schema: str, lake: Lake, tmp_path: Path
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
        with psycopg.connect(PG_DSN, autocommit=True) as other:
            other.execute(
                "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"cryptolake.loader:{schema}.klines",)
            )
            with pytest.raises(LoaderError, match="another cryptolake sync"):
                pg.sync("1h")
    (tmp_path / "empty").mkdir()
    with (
        loader(Lake(tmp_path / "empty"), schema) as pg,
        pytest.raises(LoaderError, match="refusing to delete"),
    ):
        pg.sync("1h")
    with loader(Lake(tmp_path / "missing"), schema) as pg, pytest.raises(LoaderError, match="does not exist"):
        pg.sync("1h")
    assert_table_matches_lake(server, schema, lake)


def test_missing_psycopg_names_the_extra(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependency, match=r"pip install 'cryptolake\[postgres\]'"):
        PostgresLoader(lake, PG_DSN)
    result = invoke("load", "postgres", "--dsn", PG_DSN, "--lake", lake.root)
    assert result.exit_code == 1
    assert (
        result.output
        == "error: loading into PostgreSQL needs an optional dependency: pip install 'cryptolake[postgres]'\n"
    )


# -- the command -----------------------------------------------------------------------------


def test_load_postgres_command_end_to_end(
    server: psycopg.Connection[Any], schema: str, lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYPTOLAKE_POSTGRES_DSN", PG_DSN)
    first = invoke(
        "load",
        "postgres",
        "--schema",
        schema,
        "--table",
        "candles",
        "--lake",
        lake.root,
        "--symbols",
        "AAA,BBBUSDT",
        "--json",
    )
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["table"], report["partitions_sent"], report["ok"]) == (f"{schema}.candles", 4, True)
    assert server.execute(f"SELECT count(DISTINCT symbol) FROM {schema}.candles").fetchone() == (2,)
    second = invoke("load", "postgres", "--schema", schema, "--table", "candles", "--lake", lake.root)
    assert second.exit_code == 0, second.output
    assert f"into {schema}.candles: 2 partitions sent" in second.output and "4 unchanged" in second.output
    full = invoke(
        "load", "postgres", "--schema", schema, "--table", "candles", "--lake", lake.root, "--full", "--json"
    )
    assert (json.loads(full.output)["partitions_sent"], full.exit_code) == (6, 0)
    bad = invoke("load", "postgres", "--schema", "1bad", "--lake", lake.root)
    assert bad.exit_code == 2 and "postgres.schema" in bad.output


def test_partition_schema_mismatch_is_a_partition_failure(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    path = partition_path(lake.root, "1h", "CCCUSDT", "2024-01")
    path.write_bytes(b"not parquet")
    with loader(lake, schema) as pg:
        report = pg.sync("1h")
    assert not report.ok and report.partitions_sent == 5
    assert [(f.symbol, f.month) for f in report.failures] == [("CCCUSDT", "2024-01")]
    assert "cannot read Parquet partition" in report.failures[0].error


def test_a_partition_the_database_refuses_is_rolled_back_and_the_others_sync(
    server: psycopg.Connection[Any], schema: str, lake: Lake
) -> None:
    with loader(lake, schema) as pg:
        pg.sync("1h")
        server.execute(f"ALTER TABLE {schema}.klines ADD CONSTRAINT sane CHECK (close < 1000)")
        lake.write_klines("1h", "AAAUSDT", candles("AAAUSDT", "2024-01", scale=100.0))  # refused
        lake.write_klines("1h", "BBBUSDT", candles("BBBUSDT", "2024-01", scale=2.0))  # accepted
        report = pg.sync("1h")
        assert (report.partitions_sent, [(f.symbol, f.month) for f in report.failures]) == (
            1,
            [("AAAUSDT", "2024-01")],
        )
        assert "PostgreSQL refused partition AAAUSDT 2024-01" in report.failures[0].error
        assert "sane" in report.failures[0].error
        server.execute(f"ALTER TABLE {schema}.klines DROP CONSTRAINT sane")
        again = pg.sync("1h")  # the same connection, still usable
    assert (again.partitions_sent, again.ok) == (1, True)
    assert_table_matches_lake(server, schema, lake)


def test_the_scheduler_syncs_postgres_after_each_run_when_a_dsn_is_configured(
    server: psycopg.Connection[Any], schema: str, tmp_path: Path, fake_exchange: Any, client: Any
) -> None:
    from cryptolake import CollectorScheduler, CryptoCollector
    from cryptolake.cli.scheduler import postgres_sync_hook
    from cryptolake.config import load_settings

    root = tmp_path / "lake"
    environ = {
        "CRYPTOLAKE_LAKE_ROOT": str(root),
        "CRYPTOLAKE_POSTGRES_DSN": PG_DSN,
        "CRYPTOLAKE_POSTGRES_SCHEMA": schema,
    }
    settings = load_settings(None, environ, dotenv_file=None)
    assert (
        postgres_sync_hook(load_settings(None, {"CRYPTOLAKE_LAKE_ROOT": str(root)}, dotenv_file=None)) is None
    )
    collector = CryptoCollector(client, lake=root)
    scheduler = CollectorScheduler(
        client,
        collector,
        start_date="2025-12-30",
        crypto_symbols=["BTC"],
        after_run=postgres_sync_hook(settings),
    )
    run = scheduler.trigger_manual_collection("backward")
    assert run.ok, run.error
    assert any(note.startswith("postgres: 1 partition(s), 48 rows sent") for note in run.notes), run.notes
    assert_frame_equal(table_rows(server, schema), lake_rows(Lake(root)), check_dtypes=False)

    fake_exchange.advance(2 * HOUR_MS)
    run = scheduler.trigger_manual_collection("forward")
    assert run.ok and any(note.startswith("postgres: 1 partition(s), 2 rows sent") for note in run.notes), (
        run.notes
    )
    assert table_rows(server, schema).height == 50

    server.execute(f"DROP SCHEMA {schema} CASCADE")
    server.execute(f"CREATE SCHEMA {schema}")
    server.execute(f"CREATE TABLE {schema}.klines (open_time bigint)")  # incompatible: the sync fails
    fake_exchange.advance(HOUR_MS)
    run = scheduler.trigger_manual_collection("forward")
    assert run.result == "failed" and run.error.startswith("after run:"), run.error


def test_a_connection_lost_mid_sync_is_one_line_naming_the_server(
    server: psycopg.Connection[Any], schema: str, lake: Lake, tmp_path: Path
) -> None:
    # Found by bench/reliability.py: psycopg's own cleanup warning made it two lines, and the
    # whole DSN (host and all) was hidden although it has no password.
    with loader(lake, schema) as pg:
        pg.sync("1h", ["AAAUSDT"])
    holder = psycopg.connect(PG_DSN)
    holder.execute(
        f"INSERT INTO {schema}.klines (exchange, interval, symbol, open_time) "
        "VALUES ('binance', '1h', 'CCCUSDT', '2024-02-01 00:00+00')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOLAKE_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cryptolake",
            "load",
            "postgres",
            "--dsn",
            PG_DSN,
            "--schema",
            schema,
            "--lake",
            str(lake.root),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = blocked_backend(server, schema)
        server.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        holder.rollback()
        holder.close()
    lines = err.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: lost the connection to PostgreSQL at {redact_dsn(PG_DSN)}"), lines


def test_symbols_the_lake_does_not_hold_are_refused_not_synced_as_nothing(lake: Lake) -> None:
    result = invoke("load", "postgres", "--dsn", PG_DSN, "--symbols", "NOPE", "--lake", lake.root)
    assert result.exit_code == 2 and "holds no binance 1h candles of NOPEUSDT" in result.output
