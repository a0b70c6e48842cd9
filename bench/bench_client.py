"""Benchmark: BinanceClient against a sequential loop, and weight-bound throughput.

Run by hand (not a test):  .venv/bin/python bench/bench_client.py [--symbols 10] [--years 2]

Part 1: N symbols x Y years of 1h candles from the fake exchange (in its own process, 50 ms of
latency per response): cryptolake's client vs a plain sequential loop (one request at a time,
720-hour batches, as the original design did). Same run, same server.
Part 2: the fake's weight limit lowered so that weight is what binds: share of the exchange's
limit used per window, and the number of 429s (must be 0).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from common import fake_exchange, fake_stats

from cryptolake import BinanceClient
from cryptolake.schema import HOUR_MS
from cryptolake.timeutils import iso, to_ms

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "SOLUSDT",
           "USDCUSDT", "FDUSDUSDT", "ETHBTC"]  # fmt: skip


def run_cryptolake(url: str, symbols: list[str], start_ms: int, end_ms: int, concurrency: int) -> int:
    with (
        BinanceClient(base_url=url, concurrency=concurrency) as client,
        ThreadPoolExecutor(max_workers=len(symbols)) as pool,
    ):
        frames = list(pool.map(lambda s: client.get_klines(s, "1h", start_ms, end_ms), symbols))
    return sum(frame.height for frame in frames)


def run_sequential(url: str, symbols: list[str], start_ms: int, end_ms: int) -> int:
    rows = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        for symbol in symbols:
            cursor = start_ms
            while cursor < end_ms:
                batch_end = min(cursor + 720 * HOUR_MS, end_ms)
                params = {
                    "symbol": symbol,
                    "interval": "1h",
                    "startTime": cursor,
                    "endTime": batch_end - 1,
                    "limit": 1000,
                }
                response = http.get("/api/v3/klines", params=params)
                response.raise_for_status()
                rows += len(response.json())
                cursor = batch_end
    return rows


def part1(symbol_count: int, years: int, latency_ms: float, concurrency: int) -> dict:
    symbols = SYMBOLS[:symbol_count]
    end_ms = to_ms("2026-01-01")
    start_ms = end_ms - years * 365 * 24 * HOUR_MS
    result: dict = {
        "symbols": symbol_count,
        "years": years,
        "latency_ms": latency_ms,
        "range": f"{iso(start_ms)} .. {iso(end_ms)}",
    }
    with fake_exchange(latency_ms) as url:
        for name, runner in (
            ("sequential_720h", lambda: run_sequential(url, symbols, start_ms, end_ms)),
            ("cryptolake", lambda: run_cryptolake(url, symbols, start_ms, end_ms, concurrency)),
        ):
            httpx.post(f"{url}/fake/reset")
            began = time.perf_counter()
            rows = runner()
            wall = time.perf_counter() - began
            stats = fake_stats(url)
            result[name] = {
                "wall_s": round(wall, 2),
                "rows": rows,
                "requests": stats["requests"],
                "rows_per_s": round(rows / wall),
                "429": stats["rate_limited"],
            }
    result["speedup"] = round(result["sequential_720h"]["wall_s"] / result["cryptolake"]["wall_s"], 1)
    return result


def part2(weight_limit: int, window_s: int, duration_windows: int, concurrency: int) -> dict:
    """Fetch far more than the budget allows and measure weight used per full window."""
    end_ms = to_ms("2026-01-01")
    with fake_exchange(latency_ms=5, weight_limit=weight_limit, window_s=window_s) as url:
        pages = weight_limit * duration_windows // 2
        symbols = SYMBOLS[:7]
        span = pages // len(symbols) * 1000 * HOUR_MS
        began = time.perf_counter()
        rows = run_cryptolake(url, symbols, end_ms - span, end_ms, concurrency)
        wall = time.perf_counter() - began
        stats = fake_stats(url)
    windows = [w for _, w in stats["window_weights"]][1:-1]  # full windows only
    return {
        "weight_limit": weight_limit,
        "window_s": window_s,
        "wall_s": round(wall, 1),
        "rows": rows,
        "requests": stats["requests"],
        "full_windows": len(windows),
        "mean_weight_per_window": round(sum(windows) / max(1, len(windows)), 1),
        "used_share_of_limit": round(sum(windows) / max(1, len(windows)) / weight_limit, 3),
        "max_window_weight": stats["max_window_weight"],
        "429": stats["rate_limited"],
        "418": stats["banned"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--weight-limit", type=int, default=600)
    parser.add_argument("--window-s", type=int, default=60)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--skip-weight", action="store_true")
    args = parser.parse_args()
    print(json.dumps({"part1": part1(args.symbols, args.years, args.latency_ms, args.concurrency)}, indent=2))
    if not args.skip_weight:
        print(
            json.dumps(
                {"part2": part2(args.weight_limit, args.window_s, args.windows, args.concurrency)}, indent=2
            )
        )


if __name__ == "__main__":
    main()
