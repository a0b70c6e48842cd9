"""Benchmark: `cryptolake collect` beside ccxt's async Binance client, same fake exchange, same candles.

Run by hand:  .venv/bin/python bench/bench_peers.py [--cases a,b] [--latency-ms 50] [--ccxt-unthrottled]

Needs the `bench` extra (ccxt, numpy): pip install -e '.[bench]'.

One fake exchange (`cryptolake fake-exchange`, frozen at 2026-01-01T00:30Z, 50 synthetic pairs
S0001USDT ... listed 2017-09-01) serves every run. Per case, each tool runs in a fresh process
(Python start-up counted for both), the fake's statistics reset before each run:

* cryptolake: `cryptolake collect --symbols ... --since ... --interval ... --lake <tmp> --base-url
  <fake> --quiet` (plus `--until`, past the fake's now, when `collect --help` offers it). Its wall
  time ends when the process has exited, the lake written.
* ccxt: `ccxt.async_support.binance` (rate limiter on, as by default) with every `urls['api']`
  entry pointed at the fake and `options.fetchMarkets.types = ['spot']`, so `load_markets` reads
  exchangeInfo once and nothing else; one coroutine per symbol pages `fetch_ohlcv(symbol, tf,
  since, limit=1000)` forward (since = last open time + 1) until a short page or the end, all
  gathered. Any host other than 127.0.0.1 is refused at name resolution. Its wall time ends when
  the client is closed (import, load_markets and close included); handing the rows back to this
  process for the check comes after and is not counted.

Both ranges end at the fake's now: the last closed candle (the still-open one that ccxt returns
is dropped). Then both results are checked candle for candle (symbol, open time, open, high,
low, close, volume, exact float equality) against each other and against the fake's own candles
(`FakeExchange.klines`, computed here with the same universe as `--extra-symbols`).

The minimum is sum over symbols of ceil(candles / 1000) klines requests (weight 2 each) plus one
/api/v3/time (1) and one /api/v3/exchangeInfo (20) per run; cryptolake's requests and weight are
reported relative to it ("over_min_pct").

Cases: a = 50 symbols x 29 months of 1h (since 2023-08-01), b = 10 symbols x 3 months of 1m
(since 2025-10-01, plus the 30 closed minutes of 2026-01-01).

Prints one JSON line per (case, tool) and one summary line per case with ccxt_wall / cryptolake_wall.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import numpy as np
from common import NOW, fake_exchange

from cryptolake.schema import Interval
from cryptolake.testing import FakeExchange, FakeSymbol, default_symbols
from cryptolake.timeutils import to_ms

EXTRA_SYMBOLS = 50
BATCH = 1000  # Binance spot's klines maximum per request
# The per-run requests a collector cannot avoid besides klines: the server time and exchangeInfo.
MIN_OVERHEAD = {"/api/v3/time": 1, "/api/v3/exchangeInfo": 20}
KLINES_WEIGHT = 2
# Past the fake's now: whether cryptolake's --until is inclusive or exclusive, a date or a time,
# the candles it collects are the same as without it (all closed ones).
UNTIL = "2026-01-02"


@dataclass(frozen=True)
class Case:
    name: str
    symbols: int
    interval: str
    since: str

    @property
    def names(self) -> list[str]:
        return [f"S{i:04d}USDT" for i in range(1, self.symbols + 1)]

    @property
    def since_ms(self) -> int:
        return to_ms(self.since)

    @property
    def end_ms(self) -> int:
        """Exclusive end: the open time of the candle still open at the fake's now."""
        return Interval(self.interval).floor(to_ms(NOW))


CASES = {
    "a": Case("a", 50, "1h", "2023-08-01"),
    "b": Case("b", 10, "1m", "2025-10-01"),
}


# -- the fake exchange's own candles (the oracle) ---------------------------------------------


def oracle_exchange() -> FakeExchange:
    """The universe of `cryptolake fake-exchange --extra-symbols 50` at NOW (not started)."""
    listed = to_ms("2017-09-01")
    symbols = default_symbols() + [
        FakeSymbol(
            f"S{i:04d}USDT", f"S{i:04d}", "USDT", listed_ms=listed, base_price=10.0 + i, volume_scale=0.001
        )
        for i in range(1, EXTRA_SYMBOLS + 1)
    ]
    return FakeExchange(symbols=symbols, now=to_ms(NOW))


def oracle(exchange: FakeExchange, case: Case) -> dict[str, np.ndarray]:
    """symbol -> (n, 6) float64 array [open time ms, open, high, low, close, volume]."""
    out = {}
    for name in case.names:
        rows = exchange.klines(name, case.interval, case.since_ms, case.end_ms)
        out[name] = np.array([[r[0], *map(float, r[1:6])] for r in rows], dtype=np.float64).reshape(-1, 6)
    return out


# -- the fake's statistics --------------------------------------------------------------------


def reset(url: str) -> None:
    httpx.post(f"{url}/fake/reset").raise_for_status()


def run_stats(url: str) -> dict:
    """Requests, weight charged, by path, 429s and 418s since the last reset."""
    stats = httpx.get(f"{url}/fake/stats", params={"log": "1"}).json()
    log = stats.get("log", [])
    if len(log) == stats["requests"]:
        weight = sum(record["weight"] for record in log)
        by_path_weight: dict[str, int] = {}
        for record in log:
            by_path_weight[record["path"]] = by_path_weight.get(record["path"], 0) + record["weight"]
    else:  # the log is bounded: fall back to the fixed weights
        from cryptolake.testing import request_weight

        by_path_weight = {path: n * request_weight(path, {}) for path, n in stats["by_path"].items()}
        weight = sum(by_path_weight.values())
    return {
        "requests": stats["requests"],
        "weight": weight,
        "by_path": stats["by_path"],
        "weight_by_path": by_path_weight,
        "by_status": stats["by_status"],
        "429": stats["rate_limited"],
        "418": stats["banned"],
        "max_window_weight": stats["max_window_weight"],
    }


# -- cryptolake -------------------------------------------------------------------------------


def collect_supports_until() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "cryptolake", "collect", "--help"], capture_output=True, text=True
    )
    return "--until" in done.stdout


def run_cryptolake(url: str, case: Case, lake: Path, until: bool, source: str | None = None) -> dict:
    command = [
        sys.executable,
        "-m",
        "cryptolake",
        "collect",
        "--symbols",
        ",".join(case.names),
        "--since",
        case.since,
        "--interval",
        case.interval,
        "--lake",
        str(lake),
        "--base-url",
        url,
        "--quiet",
    ]
    if until:
        command += ["--until", UNTIL]
    # In the lake's folder: no config.toml or .env of the working directory applies (defaults).
    env = None
    if source is not None:  # another checkout of cryptolake (say, a `git worktree` of an older commit)
        import os

        env = {**os.environ, "PYTHONPATH": source}
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=lake.parent, env=env)
    wall = time.perf_counter() - began
    if done.returncode == 2 and until:  # --until refused (usage): fall back to the fake's frozen clock
        print(
            f"note: collect refused --until {UNTIL}: {done.stderr.strip()[-300:]}; running without it",
            file=sys.stderr,
        )
        return run_cryptolake(url, case, lake, until=False, source=source)
    result = {
        "wall_s": wall,
        "until": UNTIL if until else None,
        "exit": done.returncode,
        "output": done.stdout.strip()[-300:],
    }
    if done.returncode != 0:
        result["stderr"] = done.stderr.strip()[-2000:]
    return result


def read_lake(lake: Path) -> dict[str, np.ndarray]:
    table = duckdb.sql(
        f"SELECT symbol, epoch_ms(open_time) AS t, open, high, low, close, volume "
        f"FROM read_parquet('{lake.as_posix()}/klines/*/*/*/*/data.parquet', hive_partitioning = true) "
        f"ORDER BY symbol, t"
    ).fetchnumpy()
    symbols = table["symbol"]
    values = (
        np.column_stack(
            [
                table["t"].astype(np.float64),
                table["open"],
                table["high"],
                table["low"],
                table["close"],
                table["volume"],
            ]
        )
        if len(symbols)
        else np.empty((0, 6))
    )
    out = {}
    if len(symbols):
        cuts = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(symbols)], strict=True):
            out[str(symbols[start])] = values[start:stop]
    return out


# -- ccxt (in its own process) ----------------------------------------------------------------

_CCXT_RUN = r"""
import time
T_START = time.time()
import asyncio, json, socket, sys

cfg = json.loads(sys.argv[1])
_getaddrinfo = socket.getaddrinfo


def _local_only(host, *args, **kwargs):  # no internet here: never let ccxt try a real host
    if (host.decode() if isinstance(host, bytes) else host) not in ("127.0.0.1", "localhost"):
        raise OSError(f"bench: ccxt tried to reach {host!r}; only the fake exchange is allowed")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _local_only
import ccxt.async_support as ccxt_async

T_IMPORTED = time.time()


async def main():
    exchange = ccxt_async.binance({
        "enableRateLimit": cfg["rate_limit"],
        "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}},
    })
    # Every REST root (spot, sapi, fapi, dapi, eapi, papi...) to the fake, same path.
    exchange.urls["api"] = {name: cfg["url"] + "/" + root.split("://", 1)[1].split("/", 1)[1]
                            for name, root in exchange.urls["api"].items()}
    rows = {}
    try:
        await exchange.load_markets()
        t_markets = time.time()

        async def one(name):
            symbol = exchange.markets_by_id[name][0]["symbol"]
            since, out = cfg["since"], []
            while since < cfg["end"]:
                page = await exchange.fetch_ohlcv(symbol, cfg["timeframe"], since=since, limit=1000)
                out.extend(page)
                if len(page) < 1000:
                    break
                since = page[-1][0] + 1
            rows[name] = out

        await asyncio.gather(*(one(name) for name in cfg["symbols"]))
    finally:
        await exchange.close()
    return rows, t_markets


rows, t_markets = asyncio.run(main())
T_DONE = time.time()
print("CCXT_TIMES", json.dumps({"start": T_START, "imported": T_IMPORTED, "markets": t_markets, "done": T_DONE,
                                "version": ccxt_async.__version__}), file=sys.stderr, flush=True)
import numpy as np

np.savez(cfg["out"], **{name: np.array(r, dtype=np.float64).reshape(-1, 6) for name, r in rows.items()})
"""


def run_ccxt(url: str, case: Case, out: Path, rate_limit: bool) -> tuple[dict, dict[str, np.ndarray]]:
    cfg = {
        "url": url,
        "symbols": case.names,
        "timeframe": case.interval,
        "since": case.since_ms,
        "end": case.end_ms,
        "rate_limit": rate_limit,
        "out": str(out),
    }
    began = time.time()
    done = subprocess.run([sys.executable, "-c", _CCXT_RUN, json.dumps(cfg)], capture_output=True, text=True)
    process_s = time.time() - began
    if done.returncode != 0 or "CCXT_TIMES" not in done.stderr:
        return {
            "wall_s": process_s,
            "process_s": process_s,
            "rate_limit": rate_limit,
            "exit": done.returncode,
            "error": done.stderr.strip()[-2000:],
        }, {}
    times = json.loads(done.stderr.rsplit("CCXT_TIMES", 1)[1].strip().splitlines()[0])
    with np.load(out) as data:
        fetched = {name: data[name] for name in data.files}
    rows, dropped = {}, 0
    for name, values in fetched.items():
        keep = (values[:, 0] >= case.since_ms) & (values[:, 0] < case.end_ms)
        dropped += int((~keep).sum())  # the still-open candle
        rows[name] = values[keep]
    info = {
        "wall_s": times["done"] - began,
        "process_s": process_s,
        "startup_import_s": times["imported"] - began,
        "load_markets_s": times["markets"] - times["imported"],
        "ccxt_version": times["version"],
        "rate_limit": rate_limit,
        "dropped_open_candles": dropped,
    }
    return info, rows


# -- checks -----------------------------------------------------------------------------------


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], label: str) -> list[str]:
    """Differences between two symbol -> (n, 6) arrays (empty: equal, candle for candle)."""
    problems = []
    for name in sorted(set(got) | set(want)):
        a, b = got.get(name), want.get(name)
        if a is None or b is None:
            problems.append(f"{label}: {name} missing on the {'left' if a is None else 'right'}")
            continue
        if len(a) != len(b):
            problems.append(f"{label}: {name} has {len(a)} candles against {len(b)}")
            continue
        differs = np.flatnonzero((a != b).any(axis=1))
        if len(differs):
            i = differs[0]
            problems.append(
                f"{label}: {name} {len(differs)} candles differ, first {a[i].tolist()} != {b[i].tolist()}"
            )
    return problems


def rows_of(data: dict[str, np.ndarray]) -> int:
    return sum(len(v) for v in data.values())


def over(value: float, minimum: float) -> float:
    return round(100.0 * (value - minimum) / minimum, 1)


# -- main -------------------------------------------------------------------------------------


def warm(url: str, case: Case) -> None:
    """Ask the fake for every candle of the case once, so that it serves them from its cache
    (`--cache-rows`) to both tools: what is measured is the clients, not the fake's arithmetic."""
    step = Interval(case.interval).fixed_ms
    assert step is not None
    pages = [
        (name, start) for name in case.names for start in range(case.since_ms, case.end_ms, BATCH * step)
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        from concurrent.futures import ThreadPoolExecutor

        def one(page: tuple[str, int]) -> None:
            client.get(
                "/api/v3/klines",
                params={"symbol": page[0], "interval": case.interval, "startTime": page[1], "limit": BATCH},
            ).raise_for_status()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, pages))


def run_case(
    url: str,
    case: Case,
    until: bool,
    exchange: FakeExchange,
    ccxt_unthrottled: bool,
    before: str | None = None,
) -> None:
    warm(url, case)
    base = {
        "case": case.name,
        "symbols": case.symbols,
        "interval": case.interval,
        "since": case.since,
        "end_exclusive": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(case.end_ms / 1000)),
    }
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        reset(url)
        lake = Path(tmp) / "lake"
        cl = run_cryptolake(url, case, lake, until)
        cl_stats = run_stats(url)
        old = None
        if before is not None:
            reset(url)
            old_lake = Path(tmp) / "lake-before"
            old_run = run_cryptolake(url, case, old_lake, until, source=before)
            old = (old_run, run_stats(url), read_lake(old_lake))
        runs = [("ccxt", True)] + ([("ccxt-unthrottled", False)] if ccxt_unthrottled else [])
        ccxt_results = []
        for tool, rate_limit in runs:
            reset(url)
            info, rows = run_ccxt(url, case, Path(tmp) / f"{tool}.npz", rate_limit)
            ccxt_results.append((tool, info, run_stats(url), rows))
        reset(url)
        lake_rows = read_lake(lake)
    want = oracle(exchange, case)
    expected = rows_of(want)
    klines_min = sum(math.ceil(len(v) / BATCH) for v in want.values())
    min_requests = klines_min + len(MIN_OVERHEAD)
    min_weight = klines_min * KLINES_WEIGHT + sum(MIN_OVERHEAD.values())

    def line(
        tool: str, wall: float, stats: dict, rows: dict[str, np.ndarray], extra: dict, problems: list[str]
    ) -> dict:
        n = rows_of(rows)
        return {
            **base,
            "tool": tool,
            "wall_s": round(wall, 2),
            "rows": n,
            "expected_rows": expected,
            "rows_per_s": round(n / wall),
            "requests": stats["requests"],
            "weight": stats["weight"],
            "klines_requests": stats["by_path"].get("/api/v3/klines", 0),
            "429": stats["429"],
            "418": stats["418"],
            "min_requests": min_requests,
            "min_weight": min_weight,
            "requests_over_min_pct": over(stats["requests"], min_requests),
            "weight_over_min_pct": over(stats["weight"], min_weight),
            "by_path": stats["by_path"],
            "weight_by_path": stats["weight_by_path"],
            "max_window_weight": stats["max_window_weight"],
            **extra,
            "exact": not problems,
            "problems": problems[:10],
        }

    cl_problems = compare(lake_rows, want, "lake vs fake")
    results = [
        line(
            "cryptolake",
            cl["wall_s"],
            cl_stats,
            lake_rows,
            {k: v for k, v in cl.items() if k != "wall_s"},
            cl_problems,
        )
    ]
    if old is not None:
        old_run, old_stats, old_rows = old
        results.append(
            line(
                "cryptolake-before",
                old_run["wall_s"],
                old_stats,
                old_rows,
                {k: v for k, v in old_run.items() if k != "wall_s"},
                compare(old_rows, want, "before vs fake"),
            )
        )
    for tool, info, stats, rows in ccxt_results:
        problems = compare(rows, want, f"{tool} vs fake") + compare(rows, lake_rows, f"{tool} vs lake")
        results.append(
            line(
                tool,
                info["wall_s"],
                stats,
                rows,
                {k: (round(v, 2) if isinstance(v, float) else v) for k, v in info.items() if k != "wall_s"},
                problems,
            )
        )
    for result in results:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    summary = {**base, "summary": True, "cryptolake_wall_s": results[0]["wall_s"]}
    for result in results[1:]:
        summary[f"{result['tool']}_wall_s"] = result["wall_s"]
        summary[f"{result['tool']}_wall_over_cryptolake_wall"] = round(
            result["wall_s"] / results[0]["wall_s"], 2
        )
    summary["cryptolake_requests_over_min_pct"] = results[0]["requests_over_min_pct"]
    summary["cryptolake_weight_over_min_pct"] = results[0]["weight_over_min_pct"]
    summary["all_exact"] = all(r["exact"] for r in results)
    print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="a,b", help="Comma-separated cases to run (a, b); default: a,b.")
    parser.add_argument(
        "--latency-ms", type=float, default=50, help="Latency of every fake-exchange response."
    )
    parser.add_argument(
        "--ccxt-unthrottled",
        action="store_true",
        help="Also run ccxt with enableRateLimit=False (not its default).",
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="PATH",
        help="Also run the cryptolake package found at PATH (PYTHONPATH), e.g. a worktree of an older commit.",
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown or not names:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    until = collect_supports_until()
    exchange = oracle_exchange()
    with fake_exchange(args.latency_ms, extra_symbols=EXTRA_SYMBOLS, cache_rows=3_000_000) as url:
        for name in names:
            run_case(url, CASES[name], until, exchange, args.ccxt_unthrottled, args.before)


if __name__ == "__main__":
    main()
