"""Benchmark: years of 1m candles from Binance's bulk archive against the REST path, same fake.

Run by hand:  .venv/bin/python bench/bench_archive.py [--symbols 10] [--months 12] [--latency-ms 50]

One fake exchange (its own process, 50 ms per response, Binance's 6,000 weight a minute) serves
both the REST API and the archive, its monthly files built before anything is timed (a static
file host). Then, each in a fresh process, `cryptolake collect` of the same symbols and months of
1m candles into empty lakes: `--source rest`, `--source auto` and `--source archive`. Reported
per run: wall time, archive bytes downloaded, klines requests and weight, rows and rows/s, peak
RSS, and (for the archive runs) where the time goes, in thread-seconds summed over the pool:
download, unzip and parse, merge and write. The lakes must be equal candle for candle.
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
import httpx
from common import fake_exchange, fake_stats

NOW = "2026-01-10T00:30:00Z"  # every month of 2025 is published as a monthly file

#: A child process: `cryptolake collect` with stage timers around the archive path, and its
#: own peak RSS at the end.
_RUN = """
import json, resource, sys, threading, time
from collections import defaultdict
import cryptolake.sources.archive as archive
import cryptolake.pipeline as pipeline
from cryptolake.lake import Lake
from cryptolake.lake.meta import LakeMeta

spent = defaultdict(float)
lock = threading.Lock()

def timed(owner, name, stage):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            with lock:
                spent[stage] += time.perf_counter() - began
    setattr(owner, name, wrapper)

timed(archive.BinanceArchive, "_download", "download")
timed(archive.BinanceArchive, "_checksum", "checksum")
timed(archive, "_read_zip", "unzip_parse")
timed(archive, "_on_grid", "unzip_parse")
timed(archive.BinanceArchive, "list_keys", "listing")
timed(Lake, "write_partition", "merge_write")
timed(LakeMeta, "settle_windows", "metadata")
timed(LakeMeta, "record_sources", "metadata")
from cryptolake.cli import cli
try:
    cli(sys.argv[1:], prog_name="cryptolake", standalone_mode=True)
finally:
    print("STAGES", json.dumps(spent), file=sys.stderr)
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def collect(url: str, lake: Path, names: list[str], since: str, until: str, source: str) -> dict:
    before = fake_stats(url)
    began = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, "-c", _RUN, "collect", "--symbols", ",".join(names), "--since", since,
            "--until", until, "--interval", "1m", "--lake", str(lake), "--base-url", url,
            "--archive-url", url, "--source", source, "--quiet",
        ],
        capture_output=True, text=True, cwd=lake.parent,
    )  # fmt: skip
    wall = time.perf_counter() - began
    after = fake_stats(url)
    if done.returncode != 0:
        raise SystemExit(f"collect --source {source} failed: {done.stderr[-2000:]}")
    stages = json.loads(done.stderr.rsplit("STAGES", 1)[1].split("\n", 1)[0])
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    rows = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{lake}/klines/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0][0]
    klines = after["by_path"].get("/api/v3/klines", 0) - before["by_path"].get("/api/v3/klines", 0)
    weight = sum(w for _, w in after["window_weights"]) - sum(w for _, w in before["window_weights"])
    return {
        "source": source,
        "wall_s": round(wall, 2),
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "klines_requests": klines,
        "weight": weight,
        "archive_mb": round((after["archive_bytes"] - before["archive_bytes"]) / 1e6, 1),
        "archive_requests": after["archive_requests"] - before["archive_requests"],
        "peak_rss_mb": round(peak_kb / 1024),
        "stages_thread_s": {k: round(v, 2) for k, v in sorted(stages.items())},
    }


def same_lakes(a: Path, b: Path) -> bool:
    query = "SELECT symbol, open_time, open, high, low, close, volume, close_time, quote_volume, trades, taker_buy_base_volume, taker_buy_quote_volume FROM read_parquet('{}/klines/**/*.parquet', hive_partitioning = true)"
    con = duckdb.connect()
    left, right = query.format(a), query.format(b)
    diff = con.sql(
        f"SELECT count(*) FROM (({left}) EXCEPT ALL ({right})) UNION ALL SELECT count(*) FROM (({right}) EXCEPT ALL ({left}))"
    ).fetchall()
    return all(n == 0 for (n,) in diff)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--sources", nargs="+", default=["archive", "auto", "rest"])
    args = parser.parse_args()
    names = [f"S{i:04d}USDT" for i in range(1, args.symbols + 1)]  # the fake's extra symbols
    first = 2026 * 12 - args.months  # months back from January 2026
    since = f"{first // 12}-{first % 12 + 1:02d}-01"
    until = "2025-12-31"
    with fake_exchange(args.latency_ms, now=NOW, extra_symbols=args.symbols) as url:
        began = time.perf_counter()
        built = httpx.post(
            f"{url}/fake/archive/prebuild",
            params={"symbols": ",".join(names), "interval": "1m", "start_ms": _ms(since),
                    "end_ms": _ms("2026-01-01"), "kinds": "monthly"},
            timeout=600,
        ).json()  # fmt: skip
        print(
            f"fake: {built.get('files')} monthly files built in {time.perf_counter() - began:.1f} s",
            file=sys.stderr,
        )
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            lakes = {}
            for source in args.sources:
                lake = Path(tmp) / source / "lake"
                lake.parent.mkdir()
                result = collect(url, lake, names, since, until, source)
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
                lakes[source] = lake
            first = lakes[args.sources[0]]
            equal = {s: same_lakes(first, lake) for s, lake in lakes.items() if lake != first}
    rest = next((r for r in results if r["source"] == "rest"), None)
    report = {
        "case": f"{args.symbols} symbols x {args.months} months of 1m ({since} .. {until}), {args.latency_ms:g} ms latency",
        "results": results,
        "lakes_equal_to_" + args.sources[0]: equal,
    }
    if rest is not None:
        report["speedup_vs_rest"] = {
            r["source"]: round(rest["wall_s"] / r["wall_s"], 1) for r in results if r is not rest
        }
    print(json.dumps(report, indent=2))


def _ms(day: str) -> int:
    from cryptolake.timeutils import to_ms

    return to_ms(day)


if __name__ == "__main__":
    main()
