"""Benchmark: `cryptolake collect --shard K/4` in 4 processes against 1 process, each process
limited to its own request-weight budget, as N hosts with N IPs are.

Run by hand:  .venv/bin/python bench/bench_shards.py [--symbols 100] [--months 6] [--shards 4]
              [--weight-limit 300] [--latency-ms 20] [--own-fakes]

All processes talk to one fake exchange (`cryptolake fake-exchange`, frozen at 2026-01-01T00:30Z),
which keys weight by client IP as Binance does; shard K sends from 127.0.0.(K+1)
(`CRYPTOLAKE_BINANCE_SOURCE_ADDRESS`), the single process from 127.0.0.2, so each process's
weight limit is its own, as on N hosts with N IPs (``--own-fakes``: a fake per process, the first
version of this benchmark); the limit is lowered (``--weight-limit`` per minute) so that weight, not the
network, bounds a run of this size, as it bounds a universe of thousands of symbols at Binance's
6,000. The single process collects all ``--symbols`` synthetic pairs; the shards run at the same
time, each `--shard K/N` of the same list, into one lake (on one machine they take turns at the
writer lock per partition). Reported: wall time of each setup (the slowest shard for the
sharded one), total weight the fakes charged, requests, candles, and whether the two lakes hold
the same candles.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import fake_exchange  # noqa: E402


def _since(months: int) -> str:
    year, month = 2026, 1 - months
    while month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}-01"


def _collect(
    url: str, lake: Path, symbols: str, since: str, shard: str | None, source: str | None = None
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "cryptolake", "collect", "--lake", str(lake), "--base-url", url,
            "--symbols", symbols, "--since", since, "--source", "rest", "--quiet"]  # fmt: skip
    if shard:
        argv += ["--shard", shard]
    env = {**os.environ, "CRYPTOLAKE_BINANCE_SOURCE_ADDRESS": source} if source else None
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _stats(url: str) -> tuple[int, int]:
    stats = httpx.get(f"{url}/fake/stats").json()
    weight = sum(w for _, w in stats.get("window_weights", []))
    return weight, int(stats.get("requests", 0))


def _lake(lake: Path) -> tuple[int, str]:
    with duckdb.connect() as con:
        rows, digest = con.execute(
            f"SELECT count(*), sum(hash(symbol, open_time, close, volume)) FROM "
            f"read_parquet('{lake}/klines/**/*.parquet', hive_partitioning = true)"
        ).fetchone()  # type: ignore[misc]
    return int(rows), str(digest)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--weight-limit", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--own-fakes",
        action="store_true",
        help="one fake exchange per process (the first version) instead of one fake that keys "
        "weight by client IP, each shard on its own 127.0.0.x (binance.source_address)",
    )
    args = parser.parse_args()
    symbols = ",".join(f"S{i:04d}USDT" for i in range(1, args.symbols + 1))
    since = _since(args.months)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setup, processes in (("1 process", 1), (f"{args.shards} shards", args.shards)):
            lake = Path(tmp) / setup.replace(" ", "-")
            with ExitStack() as stack:
                fakes = processes if args.own_fakes else 1
                urls = [
                    stack.enter_context(
                        fake_exchange(args.latency_ms, args.weight_limit, extra_symbols=args.symbols)
                    )
                    for _ in range(fakes)
                ]
                started = time.monotonic()
                children = [
                    _collect(
                        urls[k % fakes],
                        lake,
                        symbols,
                        since,
                        f"{k + 1}/{processes}" if processes > 1 else None,
                        None if args.own_fakes else f"127.0.0.{k + 2}",
                    )
                    for k in range(processes)
                ]
                walls = []
                for child in children:
                    _, err = child.communicate()
                    walls.append(time.monotonic() - started)
                    if child.returncode != 0:
                        raise SystemExit(f"{setup}: collect failed: {err.decode()[-2000:]}")
                weight = requests = 0
                for url in urls:
                    w, r = _stats(url)
                    weight, requests = weight + w, requests + r
            rows, digest = _lake(lake)
            results[setup] = (max(walls), weight, requests, rows, digest)
            print(f"{setup}: {max(walls):.1f} s wall, weight {weight}, {requests} requests, {rows} candles")
    (w1, weight1, _, rows1, d1), (wn, weightn, _, rowsn, dn) = results.values()
    print(f"speed-up {w1 / wn:.2f}x with {args.shards} shards (limit {args.weight_limit}/min per process); "
          f"same candles: {rows1 == rowsn and d1 == dn}; weight ratio {weightn / max(weight1, 1):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
