"""Benchmark: the lake on S3-compatible storage (SeaweedFS on 127.0.0.1) against a local folder.

Run by hand:  .venv/bin/python bench/bench_s3.py [--symbols 50] [--months 29] [--latency-ms 0]
              [--gap-symbols 20] [--gap-months 12] [--rounds 2]

1. `cryptolake collect` of ``--symbols`` synthetic pairs x ``--months`` months of 1h candles from
   one fake exchange (`cryptolake fake-exchange`, REST only), into a local lake and into
   ``s3://bench/collect`` on SeaweedFS (`weed mini`), each in a fresh process, alternating
   ``--rounds`` times; reported: wall, CPU and peak RSS of each, and the S3/local ratio.
2. `cryptolake gaps --offline --interval 1m` over a lake of ``--gap-symbols`` x ``--gap-months``
   months of 1m candles (20 x 12 = 10.5M rows), on S3 and on disk, each in a fresh process;
   the S3 reader goes through a counting proxy, so "bytes read" is what it downloaded, beside
   the lake's size (footers, not data, is the promise).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from common import counting_proxy, fake_exchange, seaweedfs  # noqa: E402

MIN_MS = 60_000


def _since(months: int) -> str:
    year, month = 2026, 1 - months
    while month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}-01"


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run a fresh process: (wall s, CPU s, peak RSS MiB, stdout)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{' '.join(argv[3:6])} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def _env(endpoint: str, tmp: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "XDG_STATE_HOME": os.path.join(tmp, "state"),
    }


def _minute_lake(symbols: int, months: int) -> list[tuple[str, pl.DataFrame]]:
    """Deterministic 1m candles of 2025 (``months`` months) for ``symbols`` pairs, one frame each."""
    start = 1735689600000  # 2025-01-01
    end = [1735689600000, 1738368000000, 1740787200000, 1743465600000, 1746057600000, 1748736000000,
           1751328000000, 1754006400000, 1756684800000, 1759276800000, 1761955200000, 1764547200000,
           1767225600000][months]  # fmt: skip
    n = (end - start) // MIN_MS
    out = []
    for k in range(symbols):
        i = pl.int_range(n, eager=True, dtype=pl.Int64)
        price = 100.0 + k + (i * 7 % 113) / 10.0
        frame = pl.DataFrame({
            "open_time": start + i * MIN_MS, "open": price, "high": price * 1.01, "low": price * 0.99,
            "close": price + 0.25, "volume": (i % 17) * 0.1 + 1.0, "close_time": start + (i + 1) * MIN_MS - 1,
            "quote_volume": price * 3.3, "trades": i % 50 + 1, "taker_buy_base_volume": (i % 5) / 7,
            "taker_buy_quote_volume": price / 9,
        }).with_columns(pl.from_epoch(c, time_unit="ms").dt.replace_time_zone("UTC") for c in ("open_time", "close_time"))  # fmt: skip
        out.append((f"G{k:03d}USDT", frame))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--months", type=int, default=29)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap-symbols", type=int, default=20)
    parser.add_argument("--gap-months", type=int, default=12)
    parser.add_argument("--parts", default="collect,gaps", help="collect, gaps or both")
    parser.add_argument("--write-gap-lake", nargs=2, help=argparse.SUPPRESS)  # root, "symbols,months"
    args = parser.parse_args()
    if args.write_gap_lake:  # in a child process, so that the benchmark's own memory stays small
        from cryptolake import Lake

        root, shape = args.write_gap_lake
        symbols, months = map(int, shape.split(","))
        lake = Lake(root)
        for symbol, frame in _minute_lake(symbols, months):
            lake.write_klines("1m", symbol, frame)
        return
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(os.path.join(tmp, "weed"), "bench") as endpoint:
        env = _env(endpoint, tmp)
        cli = [sys.executable, "-m", "cryptolake"]
        if "collect" in args.parts:
            _collect_part(args, cli, env, tmp)
        if "gaps" in args.parts:
            _gaps_part(args, cli, env, tmp, endpoint)


def _collect_part(args: argparse.Namespace, cli: list[str], env: dict[str, str], tmp: str) -> None:
    symbols = ",".join(f"S{i:04d}USDT" for i in range(1, args.symbols + 1))
    since = _since(args.months)
    walls: dict[str, list[tuple[float, float, float]]] = {"local": [], "s3": []}
    with fake_exchange(args.latency_ms, extra_symbols=args.symbols) as url:
        for round_ in range(args.rounds):
            for kind in ("local", "s3"):
                lake = (
                    f"s3://bench/collect-{round_}" if kind == "s3" else os.path.join(tmp, f"collect-{round_}")
                )
                argv = [*cli, "collect", "--lake", lake, "--base-url", url, "--symbols", symbols,
                        "--since", since, "--source", "rest", "--quiet"]  # fmt: skip
                wall, cpu, rss, _ = _run(argv, env)
                walls[kind].append((wall, cpu, rss))
                print(f"collect {args.symbols} x {args.months} months 1h into {kind}: "
                      f"{wall:.1f} s wall, {cpu:.1f} s CPU, {rss:.0f} MiB peak RSS", flush=True)  # fmt: skip
        check = [*cli, "sql", "--lake", "s3://bench/collect-0", "--format", "csv",
                 "SELECT count(*) FROM klines"]  # fmt: skip
        s3_rows = _run(check, env)[3].split()[-1]
        local_rows = _run([*check[:5], os.path.join(tmp, "collect-0"), *check[6:]], env)[3].split()[-1]
        print(f"rows: s3 {s3_rows}, local {local_rows}")
    best = {k: min(v) for k, v in walls.items()}
    print(f"collect S3/local wall ratio (best of {args.rounds}): {best['s3'][0] / best['local'][0]:.2f}")


def _gaps_part(
    args: argparse.Namespace, cli: list[str], env: dict[str, str], tmp: str, endpoint: str
) -> None:
    """The gap report over a 10M-row lake, on S3 (through a counting proxy) and on disk."""
    from cryptolake import Lake

    shape = f"{args.gap_symbols},{args.gap_months}"
    for root in ("s3://bench/gaps", os.path.join(tmp, "gaps")):
        subprocess.run([sys.executable, __file__, "--write-gap-lake", root, shape], env=env, check=True)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    storage = Lake("s3://bench/gaps").storage
    objects = storage.list("klines/")
    size = sum(o.size for o in objects)
    footers = sum(
        int.from_bytes(storage.read_range(o.path, o.size - 8, o.size - 4), "little") + 8 for o in objects
    )
    print(f"gap lake: {args.gap_symbols} symbols x {args.gap_months} months of 1m, {size / 2**20:.1f} MiB "
          f"in {len(objects)} objects, footers {footers / 2**20:.2f} MiB")  # fmt: skip
    port = urlsplit(endpoint).port
    assert port is not None
    gaps = [*cli, "gaps", "--offline", "--interval", "1m", "--json", "--lake"]
    for _ in range(2):
        with counting_proxy(port) as (proxy, received):
            wall, cpu, rss, out = _run(
                [*gaps, "s3://bench/gaps"], {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy}"}
            )
            print(f"gaps on S3: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB peak RSS, "
                  f"{received[0] / 2**20:.2f} MiB downloaded ({100 * received[0] / size:.2f}% of the lake)")  # fmt: skip
        wall, cpu, rss, local_out = _run([*gaps, os.path.join(tmp, "gaps")], env)
        print(
            f"gaps on disk: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB peak RSS; same report: {out == local_out}"
        )


if __name__ == "__main__":
    main()
