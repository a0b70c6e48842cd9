"""Benchmark: `cryptolake collect` from Coinbase, Kraken and Bybit against each one's fake, at the
venue's documented rate limit, beside the floor that limit alone forces.

Run by hand:  .venv/bin/python bench/bench_venues.py [--symbols 10] [--months 6] [--latency-ms 50]
              [--exchanges coinbase,kraken,bybit] [--interval 1h]

Each venue's fake runs in this process (its threads serve HTTP; its statistics are read after the
run) with 50 ms per response and the venue's documented public limit (Coinbase 10 requests/s with
bursts of 15, Kraken 1 request/s per pair, Bybit 600 per 5 s). `cryptolake collect --exchange X
--top N --since <months ago>` runs in a fresh process into an empty lake. Reported per venue: wall
time, requests (candle pages, other), candles stored and candles/s, 429/403 answers (must be 0),
and the floor: the time the venue's limit alone needs for the requests the run made (requests
beyond the first burst, at the documented pace; for Kraken, the busiest pair's requests at one per
second). Kraken also reports the trades it served and trades/s (history older than the newest 720
candles is rebuilt from its public trades).
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

from cryptolake.testing.venue import FakeVenue

NOW_MS = 1_767_227_400_000  # 2026-01-01T00:30:00Z, as the fakes' default


def _since(months: int) -> str:
    year, month = 2026, 1 - months
    while month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}-01"


def _fake(exchange: str, latency_s: float) -> FakeVenue:
    from cryptolake.testing.venues import fake_venue

    # Synthetic pairs beside each venue's default ones, so that the top N has N to choose.
    return fake_venue(exchange, 10, now=NOW_MS, latency_s=latency_s).start()


def _floor_s(exchange: str, log: list[tuple[float, str, dict[str, str], int]]) -> float:
    """What the venue's documented limit alone forces for these requests (seconds)."""
    if exchange == "coinbase":  # 10/s, a burst of 15 first
        return max(0.0, (len(log) - 15) / 10)
    if exchange == "bybit":  # 600 in any 5 s
        return max(0.0, (len(log) - 600) / 120)
    per_pair: dict[str, int] = {}
    for _, path, params, _ in log:  # Kraken: OHLC and Trades limited per pair, 1/s
        if path.endswith(("/OHLC", "/Trades")):
            per_pair[params.get("pair", "")] = per_pair.get(params.get("pair", ""), 0) + 1
    return max(per_pair.values(), default=1) - 1.0


def run_one(exchange: str, symbols: int, months: int, latency_ms: float, interval: str) -> dict:
    fake = _fake(exchange, latency_ms / 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lake = Path(tmp) / "lake"
            argv = [
                sys.executable, "-m", "cryptolake", "collect", "--exchange", exchange,
                "--top", str(symbols), "--since", _since(months), "--interval", interval,
                "--lake", str(lake), "--base-url", fake.base_url, "--quiet", "--json",
            ]  # fmt: skip
            began = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - began
            if done.returncode != 0:
                raise SystemExit(f"{exchange}: collect failed ({done.returncode}): {done.stderr[-2000:]}")
            stats = fake.stats()
            query = f"SELECT count(*) FROM read_parquet('{lake}/klines/**/*.parquet')"
            rows = int(duckdb.sql(query).fetchall()[0][0])
            pairs = [p.name.split("=", 1)[1] for p in lake.glob("klines/*/*/symbol=*")]
    finally:
        fake.stop()
    candle_paths = ("/candles", "/kline", "/OHLC", "/Trades")
    pages = sum(n for path, n in stats.by_path.items() if path.endswith(candle_paths))
    floor = _floor_s(exchange, stats.log)
    out = {
        "exchange": exchange,
        "symbols": symbols,
        "months": months,
        "interval": interval,
        "wall_s": round(wall, 2),
        "requests": stats.requests,
        "candle_requests": pages,
        "other_requests": stats.requests - pages,
        "candles": rows,
        "candles_per_s": round(rows / wall),
        "rate_limited": stats.rate_limited,
        "statuses": {str(k): v for k, v in sorted(stats.by_status.items())},
        "floor_s": round(floor, 2),
        "vs_floor": round(wall / floor, 2) if floor > 0 else None,
    }
    if exchange == "kraken":  # the trades behind the candles older than OHLC's 720
        out["trades_requests"] = sum(n for path, n in stats.by_path.items() if path.endswith("/Trades"))
        since_ms = int(duckdb.sql(f"SELECT epoch_ms(TIMESTAMP '{_since(months)}')").fetchall()[0][0])
        ohlc_from = NOW_MS - NOW_MS % 3_600_000 - 720 * 3_600_000
        trades = sum(len(fake.trades_between(pair, since_ms, ohlc_from)) for pair in pairs)  # type: ignore[attr-defined]
        out["trades_rebuilt"] = trades
        out["trades_per_s"] = round(trades / wall)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--interval", default="1h")
    parser.add_argument("--exchanges", default="coinbase,kraken,bybit")
    args = parser.parse_args()
    for exchange in args.exchanges.split(","):
        print(
            json.dumps(run_one(exchange, args.symbols, args.months, args.latency_ms, args.interval)),
            flush=True,
        )


if __name__ == "__main__":
    main()
