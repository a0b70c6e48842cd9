"""Benchmark: `cryptolake sql` end to end (a fresh process per command) beside plain DuckDB.

Run by hand:  .venv/bin/python bench/bench_sql.py [--lake bench/out/sql-lake] [--runs 3]

Builds (once) a lake of 100 symbols x 2 years of 1h candles (1,754,400 rows in 2,400 partition
files). Then, for each query, the best of ``--runs`` wall times of:

- ``cryptolake sql`` as a user runs it (table to a pipe, CSV, JSON), a new process each time;
- the DuckDB 1.x command-line reader (``duckdb-cli``, the test extra) on the same query over
  ``read_parquet(<lake>/klines/*/*/*/*/data.parquet)``: what the sandbox costs against DuckDB's
  own Parquet reader, which `cryptolake sql` cannot use (it may not touch files).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lake import candles  # noqa: E402

from cryptolake.lake import Lake  # noqa: E402
from cryptolake.timeutils import to_ms  # noqa: E402

QUERIES = {
    "35k rows": "SELECT * FROM klines ORDER BY symbol, open_time LIMIT 35000",
    "aggregate all": "SELECT symbol, avg(close) AS c, sum(volume) AS v FROM klines GROUP BY symbol ORDER BY symbol",
    "one symbol, one month": "SELECT * FROM klines WHERE symbol = 'S0042USDT' AND month = '2025-06' ORDER BY open_time",
}


def build(root: Path) -> None:
    if (root / "done").exists():
        return
    lake = Lake(root)
    for i in range(100):
        lake.write_klines("1h", f"S{i:04d}USDT", candles(to_ms("2024-01-01"), 3_600_000, 17_544, seed=i))
    (root / "done").touch()


def best(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return round(min(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", default="bench/out/sql-lake")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.lake).resolve()
    build(root)
    cl = [sys.executable, "-m", "cryptolake", "sql"]
    duck = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    glob = f"{root}/klines/*/*/*/*/data.parquet"
    for name, query in QUERIES.items():
        row: dict[str, object] = {"query": name}
        for fmt in ("table", "csv", "json"):
            row[f"cryptolake_{fmt}_s"] = best(
                [*cl, query, "--format", fmt, "--limit", "0", "--lake", str(root)], args.runs
            )
        if duck:
            view = (
                f"CREATE VIEW klines AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                "hive_types_autocast = false);"
            )
            row["duckdb_cli_csv_s"] = best([duck, "-csv", "-c", view + query], args.runs)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
