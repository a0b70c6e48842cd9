"""Benchmark: the full gap report of a big 1m lake vs a plain DuckDB window query over all rows.

Run by hand:  .venv/bin/python bench/bench_gaps.py [--symbols 100] [--lake bench/out/gaps-lake]

Builds (once; reused while its marker file matches) a lake of ``--symbols`` symbols x 2024 of 1m
candles (100 symbols: 52.7M rows, 1200 partitions) with a few holes: 5 symbols miss a few hours,
one has an off-grid candle. Then, warm (files in the page cache), side by side:

- ``DataGapDetector.scan()``: the whole report (backward, internal and forward gaps, anomalies,
  per-month presence) for every symbol;
- a plain DuckDB query: ``lead(open_time) OVER (PARTITION BY symbol ORDER BY open_time)`` over
  every row, keeping the rows followed by a hole.

Both must find the same internal holes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
from bench_lake import candles

from cryptolake.gaps import DataGapDetector
from cryptolake.lake import Lake, klines_glob, partition_path
from cryptolake.schema import MINUTE_MS
from cryptolake.timeutils import iso, to_ms

START, END = "2024-01-01", "2025-01-01"
HOLES = {  # symbol index: (first missing minute, count)
    3: ("2024-02-10T04:00:00Z", 180),
    17: ("2024-05-31T23:30:00Z", 60),  # across a month boundary
    42: ("2024-08-01T00:00:00Z", 1),
    66: ("2024-11-11T11:11:00Z", 300),
    91: ("2024-12-31T23:00:00Z", 10),
}
OFF_GRID = (55, "2024-07-04T12:00:30Z")


def build(root: Path, symbols: int) -> Lake:
    marker = root / "_meta" / f"bench-{symbols}.done"
    lake = Lake(root)
    if marker.exists():
        return lake
    minutes = (to_ms(END) - to_ms(START)) // MINUTE_MS
    for i in range(symbols):
        frame = candles(to_ms(START), MINUTE_MS, minutes, seed=i)
        if i in HOLES:
            first, count = HOLES[i]
            lo = pl.lit(to_ms(first)).cast(pl.Datetime("ms", "UTC")).cast(frame.schema["open_time"])
            hi = (
                pl.lit(to_ms(first) + count * MINUTE_MS)
                .cast(pl.Datetime("ms", "UTC"))
                .cast(frame.schema["open_time"])
            )
            frame = frame.filter((pl.col("open_time") < lo) | (pl.col("open_time") >= hi))
        lake.write_klines("1m", f"S{i:04d}USDT", frame)
        if i == OFF_GRID[0]:
            # cryptolake's writer refuses an off-grid candle (data-quality rules): another tool
            # rewrites that month's file with one, which the gap report must then find.
            extra = frame.head(1).with_columns(
                pl.lit(to_ms(OFF_GRID[1])).cast(pl.Datetime("ms", "UTC")).alias("open_time")
            )
            month = OFF_GRID[1][:7]
            stored = lake.read_partition("1m", f"S{i:04d}USDT", month)
            rewritten = pl.concat([stored, extra.cast(stored.schema)]).sort("open_time")
            pq.write_table(rewritten.to_arrow(), partition_path(root, "1m", f"S{i:04d}USDT", month))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return lake


def plain_window_query(lake: Lake) -> list[tuple]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = f"""
        SELECT symbol, epoch_ms(open_time), epoch_ms(next_open) FROM (
            SELECT symbol, open_time,
                   lead(open_time) OVER (PARTITION BY symbol ORDER BY open_time) AS next_open
            FROM read_parquet('{klines_glob(lake.root)}', hive_partitioning = true)
            WHERE interval = '1m'
        ) WHERE next_open - open_time <> INTERVAL 1 MINUTE ORDER BY symbol, open_time
    """
    rows = con.execute(sql).fetchall()
    con.close()
    return rows


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm
    times, out = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--lake", default="bench/out/gaps-lake")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    began = time.perf_counter()
    lake = build(Path(args.lake), args.symbols)
    build_s = time.perf_counter() - began
    detector = DataGapDetector(lake, "1m", start_date=START, clock=lambda: to_ms(END) / 1000)
    report_s, scan = timed(detector.scan, args.repeat)
    plain_s, plain = timed(lambda: plain_window_query(lake), args.repeat)
    internal = [g for g in scan.gaps if g.position == "internal" and g.kind == "missing"]
    rows = sum(s.present for s in scan.spans.values())
    print(
        json.dumps(
            {
                "symbols": len(scan.spans),
                "rows": rows,
                "partitions": scan.scanned_partitions + scan.skipped_partitions,
                "scanned_partitions": scan.scanned_partitions,
                "build_s": round(build_s, 1),
                "gap_report_s": round(report_s, 3),
                "plain_window_query_s": round(plain_s, 3),
                "speedup": round(plain_s / report_s, 1),
                "internal_gaps": [(g.symbol, iso(g.start_ms), g.count) for g in internal],
                "anomalies": [
                    (g.symbol, g.kind, iso(g.start_ms))
                    for g in scan.gaps
                    if g.kind in ("off_grid", "duplicate")
                ],
                "plain_query_rows": len(plain),  # one per hole, plus the off-grid candle's two neighbours
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
