"""Benchmark: the PostgreSQL loader against a bare COPY and psycopg's executemany (issue 6).

Run by hand:  .venv/bin/python bench/bench_loader.py [--dsn DSN] [--symbols 100] [--years 2]

A synthetic lake of 100 symbols x 2 years of 1h candles (about 1.75M rows, 2,400 partitions) is
built in a temp folder. Each measurement starts from an empty table of the loader's shape in a
fresh schema, after a CHECKPOINT, in the same run:

- ``bare COPY``: every row in one binary ``COPY`` into the empty table, one transaction, over one
  connection. The rows are read from the lake and encoded before the clock starts, so this is
  the server's bulk-load speed alone: the best this machine allows.
- ``bare COPY incl. reading the lake``: the same, with reading and decoding the Parquet files
  timed too (what any loader must also do).
- ``first sync``: ``PostgresLoader.sync`` into the empty table: reading, fingerprinting, state
  records, never-synced partitions loaded in batches (one transaction and one COPY per batch).
- ``executemany``: psycopg's ``executemany`` of plain ``INSERT``s of a fixed sample of rows
  (``--sample``, default 100,000; the rate is extrapolated to all rows).
- Then, on the synced table: a re-sync of one changed partition, and a no-op re-sync.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lake import candles  # noqa: E402

from cryptolake.lake import Lake  # noqa: E402
from cryptolake.loader import PostgresLoader  # noqa: E402
from cryptolake.loader.pgcopy import HEADER, TRAILER, encode_rows  # noqa: E402
from cryptolake.loader.pgtables import TABLE_COLUMNS, create_candle_table  # noqa: E402
from cryptolake.schema import HOUR_MS  # noqa: E402
from cryptolake.timeutils import to_ms  # noqa: E402

SCHEMA = "cryptolake_bench"
DEFAULT_DSN = os.environ.get("CRYPTOLAKE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def build_lake(root: Path, symbols: int, years: int) -> int:
    lake = Lake(root)
    start = to_ms("2024-01-01")
    end = to_ms(f"{2024 + years}-01-01")
    count = (end - start) // HOUR_MS
    for i in range(symbols):
        lake.write_klines("1h", f"S{i:04d}USDT", candles(start, HOUR_MS, count, seed=i))
    return symbols * count


def read_lake(lake: Lake) -> list[tuple[str, pa.Table]]:
    return [(s.symbol, pq.read_table(s.path)) for s in lake.partition_stats("1h")]


def fresh_table(admin: psycopg.Connection) -> None:
    admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    admin.execute(f"CREATE SCHEMA {SCHEMA}")
    admin.execute(create_candle_table(psycopg.sql, SCHEMA, "klines"))
    admin.execute("CHECKPOINT")


def bare_copy(dsn: str, frames: list[tuple[str, pa.Table]]) -> None:
    columns = ", ".join(TABLE_COLUMNS)
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY {SCHEMA}.klines ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(HEADER)
        for symbol, frame in frames:
            copy.write(encode_rows(frame, ("binance", "1h", symbol)))
        copy.write(TRAILER)


def executemany(dsn: str, frames: list[tuple[str, pa.Table]], sample: int) -> int:
    rows: list[tuple] = []
    for symbol, frame in frames:
        rows += [("binance", "1h", symbol, *row) for row in pl.from_arrow(frame).iter_rows()]
        if len(rows) >= sample:
            break
    rows = rows[:sample]
    marks = ", ".join(["%s"] * len(TABLE_COLUMNS))
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {SCHEMA}.klines ({', '.join(TABLE_COLUMNS)}) VALUES ({marks})", rows)
    return len(rows)


def timed(label: str, results: dict, func, *args) -> object:
    began = time.perf_counter()
    out = func(*args)
    results[label] = round(time.perf_counter() - began, 3)
    print(f"{label}: {results[label]} s", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--sample", type=int, default=100_000, help="rows for executemany")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    admin = psycopg.connect(args.dsn, autocommit=True)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        rows = timed("build lake", {}, build_lake, lake.root, args.symbols, args.years)
        frames = read_lake(lake)
        out.update(rows=rows, partitions=len(frames))

        fresh_table(admin)
        timed("bare_copy_s", out, bare_copy, args.dsn, frames)
        fresh_table(admin)
        timed("bare_copy_incl_read_s", out, lambda: bare_copy(args.dsn, read_lake(lake)))
        fresh_table(admin)
        sampled = timed("executemany_sample_s", out, executemany, args.dsn, frames, args.sample)

        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute("CHECKPOINT")
        with PostgresLoader(lake, args.dsn, schema=SCHEMA, workers=args.workers) as loader:
            first = timed("first_sync_s", out, loader.sync, "1h")
            assert first.rows_sent == rows and first.ok, first
            symbol, frame = frames[len(frames) // 2]
            lake.write_klines("1h", symbol, pl.from_arrow(frame).with_columns(pl.col("close") * 1.001))
            one = timed("resync_one_changed_s", out, loader.sync, "1h")
            assert one.partitions_sent == 1, one
            noop = timed("noop_resync_s", out, loader.sync, "1h")
            assert noop.partitions_sent == 0 and noop.rows_sent == 0, noop
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")

    rate = lambda seconds: round(rows / seconds)  # noqa: E731
    executemany_rate = round(sampled / out["executemany_sample_s"])
    out.update(
        workers=args.workers,
        executemany_sample_rows=sampled,
        bare_copy_rows_per_s=rate(out["bare_copy_s"]),
        bare_copy_incl_read_rows_per_s=rate(out["bare_copy_incl_read_s"]),
        first_sync_rows_per_s=rate(out["first_sync_s"]),
        executemany_rows_per_s=executemany_rate,
        sync_vs_bare_copy=round(out["bare_copy_s"] / out["first_sync_s"], 2),
        sync_vs_bare_copy_incl_read=round(out["bare_copy_incl_read_s"] / out["first_sync_s"], 2),
        sync_vs_executemany=round(rate(out["first_sync_s"]) / executemany_rate, 1),
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
