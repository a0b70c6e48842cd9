"""Benchmark: `cryptolake check` over the 52.7M-row 1m lake of bench_gaps.py, end to end.

Run by hand:  .venv/bin/python bench/bench_check.py [--lake bench/out/gaps-lake] [--repeat 2]

Builds the lake as bench_gaps.py does (reused when present): 100 symbols x 2024 of 1m candles,
with one off-grid candle another tool wrote. Then, each in a fresh process (wall, CPU and peak
RSS from wait4), check, the plain query (once: it takes minutes), check again:

- ``cryptolake check --interval 1m --json`` (every rule, the report kept for the quality view);
- the same rules as one plain DuckDB query over every row (window functions: duplicates, the
  spike rule's rolling median over 240 candles, zero-volume runs), DuckDB's memory_limit at 1 GB:
  what a user without cryptolake would write.

Both must find the lake's one error (the off-grid candle).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_gaps import build

from cryptolake import Lake

PLAIN_QUERY = """
import duckdb, sys, json
con = duckdb.connect(config={"memory_limit": "1GB", "threads": 2})
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
glob = sys.argv[1]
rows = con.execute(f'''
WITH c AS (
    SELECT symbol, epoch_ms(open_time) AS o, epoch_ms(close_time) AS cl, open, high, low, close,
           volume, quote_volume, trades, taker_buy_base_volume AS taker, taker_buy_quote_volume AS taker_q
    FROM read_parquet('{glob}', hive_partitioning = true) WHERE interval = '1m'
), w AS (
    SELECT *, count(*) OVER (PARTITION BY symbol, o) AS copies,
           ln(close) - lag(ln(close)) OVER s AS back,
           ln(close) - lead(ln(close)) OVER s AS ahead
    FROM c WINDOW s AS (PARTITION BY symbol ORDER BY o)
), m AS (
    SELECT *, median(abs(back)) OVER (PARTITION BY symbol ORDER BY o ROWS BETWEEN 120 PRECEDING AND 119 FOLLOWING) AS mad
    FROM w
), runs AS (
    SELECT symbol, min(o) AS o, count(*) AS n FROM (
        SELECT symbol, o, volume = 0 AS zero,
               row_number() OVER (PARTITION BY symbol ORDER BY o)
             - row_number() OVER (PARTITION BY symbol, volume = 0 ORDER BY o) AS run
        FROM c) WHERE zero GROUP BY symbol, run HAVING count(*) >= 1440
)
SELECT symbol, o, CASE
    WHEN copies > 1 THEN 'duplicate_key'
    WHEN o < 1230768000000 OR o > 1735689600000 THEN 'time_unit'
    WHEN o % 60000 <> 0 THEN 'off_grid'
    WHEN cl <> o + 59999 THEN 'close_time'
    WHEN NOT (open > 0 AND high > 0 AND low > 0 AND close > 0) THEN 'non_positive_price'
    WHEN low > least(open, close) OR greatest(open, close) > high THEN 'ohlc_order'
    WHEN volume < 0 OR quote_volume < 0 OR trades < 0 OR taker < 0 OR taker_q < 0 THEN 'negative_volume'
    WHEN taker > volume THEN 'taker_exceeds_volume'
    WHEN volume = 0 AND (trades > 0 OR least(open, high, low, close) <> greatest(open, high, low, close))
        THEN 'zero_volume_mismatch'
    ELSE 'price_spike' END AS rule
FROM m
WHERE copies > 1 OR o % 60000 <> 0 OR cl <> o + 59999 OR o < 1230768000000 OR o > 1735689600000
   OR NOT (open > 0 AND high > 0 AND low > 0 AND close > 0)
   OR low > least(open, close) OR greatest(open, close) > high
   OR volume < 0 OR quote_volume < 0 OR trades < 0 OR taker < 0 OR taker_q < 0 OR taker > volume
   OR (volume = 0 AND (trades > 0 OR least(open, high, low, close) <> greatest(open, high, low, close)))
   OR (abs(back) > 15 * 1.4826 * greatest(mad, 0.001) AND abs(ahead) > 15 * 1.4826 * greatest(mad, 0.001)
       AND sign(back) = sign(ahead))
UNION ALL SELECT symbol, o, 'zero_volume_run' FROM runs
''').fetchall()
print(json.dumps([[s, o, r] for s, o, r in rows]))
"""


def run(argv: list[str]) -> tuple[float, float, float, str]:
    """Run a fresh process: (wall s, CPU s, peak RSS MiB, stdout), from wait4."""
    started = time.monotonic()
    out_path = Path(f"/tmp/bench-check-{os.getpid()}.out")
    with open(os.devnull, "wb") as devnull, out_path.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=devnull)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    out_path.unlink()
    if code not in (0, 1):
        raise SystemExit(f"{argv[:4]} exited {code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", default="bench/out/gaps-lake")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.lake)
    build(root, 100)
    rows = sum(s.rows for s in Lake(root).partition_stats("1m"))
    cli = Path(sys.executable).with_name("cryptolake")
    check = [str(cli), "check", "--lake", str(root), "--interval", "1m", "--json"]
    glob = f"{root.resolve()}/klines/*/*/*/*/*.parquet"
    plain = [sys.executable, "-c", PLAIN_QUERY, glob]
    results: dict[str, list[tuple[float, float, float]]] = {"cryptolake check": [], "plain DuckDB query": []}
    found: dict[str, list] = {}
    # The plain query takes minutes: it runs once, between the checks.
    plan = [("cryptolake check", check)] * args.repeat
    plan.insert(1, ("plain DuckDB query", plain))
    for name, argv in plan:
        wall, cpu, rss, out = run(argv)
        results[name].append((round(wall, 2), round(cpu, 2), round(rss)))
        print(name, results[name][-1], file=sys.stderr, flush=True)
        findings = json.loads(out)
        if name == "cryptolake check":
            found[name] = sorted((f["symbol"], f["rule"]) for f in findings)
        else:
            found[name] = sorted((s, r) for s, _, r in findings)
    print(
        json.dumps({"rows": rows, "runs (wall s, cpu s, peak RSS MiB)": results, "findings": found}, indent=1)
    )


if __name__ == "__main__":
    main()
