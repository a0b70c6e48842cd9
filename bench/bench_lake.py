"""Benchmark: the lake layer alone: merge 1M new rows into existing partitions vs a bare write.

Run by hand:  .venv/bin/python bench/bench_lake.py

For 1h and 1m candles: the lake already holds the first third of every month partition; 1M new
rows (the rest of those months) are merged in with `Lake.write_klines` (read, dedupe, crash-safe
write with fsync and atomic rename). The baseline writes the same 1M rows with a bare
`pyarrow.parquet.write_table` (same compression) to the same number of files, in the same run.
Then the same batch is written again: a no-op, which must rewrite 0 files. Each interval runs
twice: incoming rows disjoint from the stored ones (appends), and incoming rows that also repeat
the last two stored days (the merge joins and dedupes).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from cryptolake.lake import Lake, split_by_month
from cryptolake.schema import HOUR_MS, MINUTE_MS, empty_klines
from cryptolake.timeutils import to_ms

ROWS = 1_000_000


def candles(start_ms: int, step_ms: int, count: int, seed: int) -> pl.DataFrame:
    """Sound candles (every data-quality rule holds): a random walk of log prices, high and low
    around open and close, taker volume within volume."""
    rng = np.random.default_rng(seed)
    open_ms = start_ms + np.arange(count, dtype=np.int64) * step_ms
    price = 100 * np.exp((rng.standard_normal(count) * 0.001).cumsum())
    close = price * (1 + rng.standard_normal(count) * 0.0005)
    volume = rng.random(count) * 10
    frame = pl.DataFrame(
        {
            "open_time": open_ms,
            "open": price,
            "high": np.maximum(price, close) * 1.001,
            "low": np.minimum(price, close) * 0.999,
            "close": close,
            "volume": volume,
            "close_time": open_ms + step_ms - 1,
            "quote_volume": volume * price,
            "trades": rng.integers(0, 1000, count),
            "taker_buy_base_volume": volume * rng.random(count),
            "taker_buy_quote_volume": volume * price * rng.random(count),
        }
    )
    return frame.with_columns(
        pl.from_epoch(c, time_unit="ms").dt.replace_time_zone("UTC") for c in ("open_time", "close_time")
    ).select(empty_klines().columns)


def dataset(step_ms: int, overlap_days: int = 0) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """Per symbol: (existing first third of each month, incoming rest), ROWS incoming in total.

    With ``overlap_days`` the incoming rows also repeat the last days already stored, so the
    merge has to join and dedupe instead of appending.
    """
    per_month = 31 * 24 * HOUR_MS // step_ms
    months_per_symbol = 12
    symbols = max(1, round(ROWS / (per_month * months_per_symbol * 2 / 3)))
    existing, incoming = {}, {}
    start = to_ms("2024-01-01")
    for i in range(symbols):
        full = candles(start, step_ms, 366 * 24 * HOUR_MS // step_ms, seed=i)
        day = full["open_time"].dt.day()
        existing[f"S{i:04d}USDT"] = full.filter(day <= 10)
        incoming[f"S{i:04d}USDT"] = full.filter(day > 10 - overlap_days)
    total = sum(f.height for f in incoming.values())
    scale = ROWS / total
    if scale < 1:  # trim to exactly ROWS incoming rows
        names = list(incoming)
        keep = ROWS
        for name in names:
            take = min(incoming[name].height, keep)
            incoming[name] = incoming[name].head(take)
            keep -= take
        incoming = {k: v for k, v in incoming.items() if v.height}
    return existing, incoming


def run(interval: str, step_ms: int, overlap_days: int = 0) -> dict:
    existing, incoming = dataset(step_ms, overlap_days)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        for symbol, frame in existing.items():
            lake.write_klines(interval, symbol, frame)
        files = sum(len(split_by_month(f)) for f in incoming.values())
        began = time.perf_counter()
        results = [lake.write_klines(interval, s, f) for s, f in incoming.items()]
        merge_s = time.perf_counter() - began
        bare_dir = Path(tmp) / "bare"
        bare_dir.mkdir()
        began = time.perf_counter()
        n = 0
        for symbol, frame in incoming.items():
            for month, part in split_by_month(frame).items():
                pq.write_table(part.to_arrow(), bare_dir / f"{symbol}-{month}.parquet", compression="zstd")
                n += 1
        bare_s = time.perf_counter() - began
        began = time.perf_counter()
        again = [lake.write_klines(interval, s, f) for s, f in incoming.items()]
        noop_s = time.perf_counter() - began
    return {
        "interval": interval,
        "overlap_days": overlap_days,
        "incoming_rows": sum(f.height for f in incoming.values()),
        "existing_rows": sum(f.height for f in existing.values()),
        "files": files,
        "merge_s": round(merge_s, 2),
        "bare_write_s": round(bare_s, 2),
        "ratio": round(merge_s / bare_s, 2),
        "rows_added": sum(r.rows_added for r in results),
        "noop_s": round(noop_s, 2),
        "noop_files_rewritten": sum(r.files_written for r in again),
    }


def main() -> None:
    for interval, step in (("1h", HOUR_MS), ("1m", MINUTE_MS)):
        for overlap_days in (0, 2):
            print(json.dumps(run(interval, step, overlap_days)), flush=True)


if __name__ == "__main__":
    main()
