"""Benchmark: `cryptolake collect` of many symbols from the fake exchange, wall time and peak RSS.

Run by hand:  .venv/bin/python bench/bench_collect.py [--symbols 100] [--years 1 2] [--interval 1h]

The fake exchange runs in its own process with 50 ms of latency per response; the collector runs
as `cryptolake collect` in a child process that reports its own peak RSS (ru_maxrss), once per
history length, so that "flat as history grows" is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from common import fake_exchange, fake_stats

_RUN = """
import resource, sys
from cryptolake.cli import cli
try:
    cli(sys.argv[1:], prog_name="cryptolake", standalone_mode=True)
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def collect(url: str, lake: Path, symbols: int, since: str, interval: str) -> dict:
    names = ",".join(f"S{i:04d}USDT" for i in range(1, symbols + 1))
    began = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN,
            "collect",
            "--symbols",
            names,
            "--since",
            since,
            "--lake",
            str(lake),
            "--base-url",
            url,
            "--quiet",
            "--backward-only",
            "--interval",
            interval,
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"collect failed: {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    rows = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{lake}/klines/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0][0]
    return {
        "wall_s": round(wall, 1),
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "peak_rss_mb": round(peak_kb / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--years", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--interval", default="1h")
    args = parser.parse_args()
    results = []
    with fake_exchange(args.latency_ms, extra_symbols=args.symbols, cache_rows=0) as url:
        for years in args.years:
            since = f"{2026 - years}-01-01"
            with tempfile.TemporaryDirectory() as tmp:
                result = collect(url, Path(tmp) / "lake", args.symbols, since, args.interval)
                stats = fake_stats(url)
                httpx_reset(url)
            results.append(
                {
                    "symbols": args.symbols,
                    "years": years,
                    "since": since,
                    "interval": args.interval,
                    **result,
                    "requests": stats["requests"],
                    "by_path": stats["by_path"],
                    "max_window_weight": stats["max_window_weight"],
                    "429": stats["rate_limited"],
                    "418": stats["banned"],
                }
            )
            print(json.dumps(results[-1]), flush=True)


def httpx_reset(url: str) -> None:
    import httpx

    httpx.post(f"{url}/fake/reset")


if __name__ == "__main__":
    main()
