"""Benchmark: `cryptolake stream` of 200 symbols x 1m from the fake exchange with its clock at 60x.

Run by hand:  .venv/bin/python bench/bench_stream.py [--symbols 200] [--speed 60] [--minutes 60]
              [--flush-s 5] [--poll-s 0.25]

The fake exchange runs in this process (its threads serve REST and the WebSocket streams) with
200 synthetic pairs and its clock running ``--speed`` times faster than real time, so one hour of
1m candles streams in a minute. `cryptolake stream --duration <minutes * 60 / speed>` runs in a
fresh process into an empty lake, exactly as a user runs it. Meanwhile this process polls the
lake's `klines` view (plain DuckDB on `<lake>/cryptolake.duckdb`, read-only) every ``--poll-s``
and notes when each candle first becomes visible; its delay is that moment minus the moment the
candle closed on the fake's clock, in real seconds (the poll interval is the resolution).

Reported: candles stored per second, delay from close to visible (median, p99, max), bytes the
stream process wrote per stored candle (``wchar`` of /proc/self/io: every write call, the lake's
files, fsync'd temp files and status included), its CPU share (user + system over wall) and RSS
at exit, after an hour of stream time, and the files in the lake after its final compaction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from cryptolake.testing import FakeExchange, FakeSymbol, default_symbols
from cryptolake.timeutils import to_ms

MINUTE = 60_000
NOW_MS = to_ms("2026-01-01T00:00:00Z")

# Runs the command in this fresh process and prints, at exit, what it cost (the command's own
# counters, read by itself: nothing else on the machine is counted).
_RUNNER = """
import atexit, json, os, resource, sys, runpy
def report():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wchar": int(io["wchar"]), "write_bytes": int(io["write_bytes"]), "rss_kb": rss,
                      "max_rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}),
          file=sys.stderr, flush=True)
atexit.register(report)
sys.argv = ["cryptolake", *sys.argv[1:]]
runpy.run_module("cryptolake", run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--minutes", type=int, default=60, help="stream time to run, exchange minutes")
    parser.add_argument("--flush-s", type=float, default=5.0)
    parser.add_argument("--poll-s", type=float, default=0.25)
    parser.add_argument(
        "--compact-files", type=int, default=12,
        help="stream.compact_files; 12 flushes of 5 s at 60x hold an hour of 1m candles, as 60 do in real time",
    )  # fmt: skip
    args = parser.parse_args()
    listed = to_ms("2017-09-01")
    extra = [
        FakeSymbol(
            f"S{i:04d}USDT", f"S{i:04d}", "USDT", listed_ms=listed, base_price=10.0 + i, volume_scale=0.001
        )
        for i in range(1, args.symbols + 1)
    ]
    names = [s.symbol for s in extra]
    wall_s = args.minutes * 60 / args.speed
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeExchange(
            now=NOW_MS, follow_wall_clock=True, clock_speed=args.speed, symbols=default_symbols() + extra
        ) as fx,
    ):
        lake = Path(tmp) / "lake"
        argv = [
            sys.executable, "-c", _RUNNER, "stream", "--lake", str(lake), "--base-url", fx.base_url,
            "--stream-url", fx.base_url.replace("http://", "ws://"), "--symbols", ",".join(names),
            "--interval", "1m", "--duration", f"{wall_s:g}",
        ]  # fmt: skip
        env = {
            "PATH": "/usr/bin:/bin",
            "CRYPTOLAKE_STREAM_FLUSH_S": str(args.flush_s),
            "CRYPTOLAKE_STREAM_COMPACT_FILES": str(args.compact_files),
        }
        started = time.monotonic()
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: dict[tuple[str, int], float] = {}
        poll_errors = 0
        poll_s: list[float] = []
        views = lake / "cryptolake.duckdb"
        while child.poll() is None:
            time.sleep(args.poll_s)
            if not views.exists():
                continue
            asked = time.monotonic()
            try:
                with duckdb.connect(str(views), read_only=True) as con:
                    rows = con.execute("SELECT symbol, epoch_ms(close_time) FROM klines").fetchall()
            except duckdb.Error:
                poll_errors += 1  # a file replaced under the query (a compaction): asked again
                continue
            poll_s.append(time.monotonic() - asked)
            now_exchange = fx.now_ms()  # at the answer: a delay includes the query's own time
            for symbol, close_ms in rows:
                key = (symbol, close_ms)
                if key not in seen:
                    # Real seconds since it closed on the fake's clock.
                    seen[key] = (now_exchange - (close_ms + 1)) / args.speed / 1000
        wall = time.monotonic() - started
        out, err = child.communicate()
        cost = json.loads(err.strip().splitlines()[-1])
        with duckdb.connect() as con:
            stored, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT (symbol, open_time)) FROM read_parquet('{lake}/klines/**/*.parquet', "
                "hive_partitioning = true)"
            ).fetchone()  # type: ignore[misc]
        files = sorted(p for p in (lake / "klines").rglob("*") if p.is_file())
        parquet = [p for p in files if p.suffix == ".parquet"]
        partitions = {p.parent for p in parquet}
        # The first minute's candles came over REST (the connect repair): their delay is not the stream's.
        first_close = min(close for _, close in seen) if seen else 0
        delays = sorted(d for (_, close), d in seen.items() if close > first_close + MINUTE)
    print(out.strip())
    print(f"symbols {args.symbols}, clock {args.speed:g}x, {args.minutes} exchange minutes in {wall:.1f} s wall "
          f"(flush every {args.flush_s:g} s, compaction every {args.compact_files} files)")  # fmt: skip
    print(f"stored {stored} candles ({distinct} distinct), {stored / wall:.0f} candles/s")
    if delays:
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"close -> visible in the klines view: median {statistics.median(delays):.2f} s, p99 {p99:.2f} s, "
              f"max {delays[-1]:.2f} s over {len(delays)} candles (poll every {args.poll_s:g} s; {poll_errors} polls "
              "failed on a replaced file and were asked again)")  # fmt: skip
        print(f"(each delay includes the poll query's own time: median {statistics.median(poll_s):.2f} s, "
              f"max {max(poll_s):.2f} s)")  # fmt: skip
    print(f"bytes written: {cost['wchar'] / max(stored, 1):,.0f} per stored candle (wchar {cost['wchar']:,}; "
          f"block-device writes {cost['write_bytes']:,})")  # fmt: skip
    print(f"CPU {cost['cpu_s']:.1f} s = {100 * cost['cpu_s'] / wall:.0f}% of one core; RSS at exit "
          f"{cost['rss_kb'] / 1024:.0f} MiB (max {cost['max_rss_kb'] / 1024:.0f} MiB)")  # fmt: skip
    print(f"files in the lake after exit: {len(parquet)} Parquet files in {len(partitions)} partitions, "
          f"{len(files) - len(parquet)} others")  # fmt: skip


if __name__ == "__main__":
    main()
