"""Reliability figures (issue 10): what a bad day does to the lake, measured end to end.

Run by hand:  .venv/bin/python bench/reliability.py [--only chaos,kills,writers,hostile,postgres,secrets]

Every part runs the real ``cryptolake`` command in fresh processes against a fake exchange in its
own process (frozen at 2026-01-01T00:30Z), and checks the lake against the exchange's own candles
(the fake's raw 12-field arrays, compared field by field: no cryptolake parser involved).

- ``chaos``: a 6-symbol x 3-year 1h backfill with 20% of klines requests failing (5xx, -1007,
  -1008, dropped connections, malformed bodies) and a 2-second 429 storm every 5 seconds, with
  the default settings. The lake must be complete and exact, with zero 418.
- ``kills``: 20 SIGKILLs at random moments of a 6-symbol backfill since 2018, then one re-run: every file
  readable after every kill, the lake exactly the exchange's after the re-run.
- ``writers``: two ``collect`` processes at once on one lake (overlapping symbols), and a
  ``collect`` beside a ``fill-gaps``: nothing lost.
- ``hostile``: every hostile invocation of ``tests/test_hostile.py`` as a real process: refused,
  at most 3 lines, no traceback, no secret, the lake unchanged byte for byte.
- ``postgres``: the PostgreSQL server stopped (``-m immediate``) in the middle of a sync, and the
  loader SIGKILLed in the middle of another; after a restart, one sync makes the table equal the
  lake. Needs the local server (``pg_ctlcluster``) and root; it is restarted at the end.
- ``secrets``: an API key and a DSN password in the environment; every output, log line and lake
  file of a set of commands (failing ones included, ``--debug`` too) grepped for them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import NOW, fake_exchange, fake_stats  # noqa: E402

from cryptolake.testing import FakeExchange  # noqa: E402
from cryptolake.timeutils import to_ms  # noqa: E402

PG_DSN = os.environ.get("CRYPTOLAKE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ORACLE = FakeExchange(now=to_ms(NOW))  # never started: only its candle arithmetic is used
RESULTS: dict[str, Any] = {}


# -- helpers -------------------------------------------------------------------------------


def cryptolake(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOLAKE_", "BINANCE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cryptolake", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOLAKE_", "BINANCE_"))}
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "cryptolake", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def exchange_rows(symbol: str, since: str) -> list[tuple[Any, ...]]:
    """The exchange's closed candles as tuples, from its raw JSON-shaped arrays."""
    rows = ORACLE.klines(symbol, "1h", to_ms(since), to_ms(NOW) + 1)
    return [
        (
            int(r[0]),
            *(float(r[i]) for i in (1, 2, 3, 4, 5)),
            int(r[6]),
            float(r[7]),
            int(r[8]),
            float(r[9]),
            float(r[10]),
        )
        for r in rows
    ]


def lake_rows(lake: Path, symbol: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(
            "SELECT epoch_ms(open_time), open, high, low, close, volume, epoch_ms(close_time), quote_volume, "
            "trades, taker_buy_base_volume, taker_buy_quote_volume FROM read_parquet(?, hive_partitioning = true) "
            "WHERE symbol = ? ORDER BY open_time",
            [f"{lake}/klines/*/*/*/*/data.parquet", symbol],
        ).fetchall()
    finally:
        con.close()


def exact(lake: Path, symbols: list[str], since: str) -> bool:
    return all(lake_rows(lake, s) == exchange_rows(s, since) for s in symbols)


def readable(lake: Path) -> tuple[int, int]:
    """(files, rows): every partition file read in full (raises on a torn one)."""
    files = rows = 0
    for path in lake.rglob("data.parquet"):
        rows += pq.read_table(path).num_rows
        files += 1
    return files, rows


def lake_bytes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def section(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


# -- parts ---------------------------------------------------------------------------------


def part_chaos(work: Path) -> None:
    section("backfill under 20% faults and 429 storms")
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]
    lake = work / "chaos-lake"
    with fake_exchange(latency_ms=20, chaos=0.2, chaos_seed=5, ban_grace=16) as url:
        stop = threading.Event()

        def storms() -> None:
            while not stop.wait(5):
                httpx.post(f"{url}/fake/storm", params={"seconds": 2, "retry_after": 1})

        thread = threading.Thread(target=storms, daemon=True)
        thread.start()
        started = time.monotonic()
        result = cryptolake(
            "collect",
            "--symbols",
            ",".join(symbols),
            "--since",
            "2023-01-01",
            "--quiet",
            "--lake",
            str(lake),
            "--base-url",
            url,
        )
        wall = time.monotonic() - started
        stop.set()
        stats = fake_stats(url)
    ok = exact(lake, symbols, "2023-01-01")
    by_status = stats.get("by_status", {})
    figures = {
        "exit": result.returncode,
        "wall_s": round(wall, 1),
        "requests": stats["requests"],
        "chaos_faults": stats.get("chaos_faults"),
        "storm_429": stats.get("storm_rate_limited"),
        "429": by_status.get("429", 0),
        "418": by_status.get("418", 0),
        "lake_exact": ok,
        "rows": sum(len(exchange_rows(s, "2023-01-01")) for s in symbols),
    }
    print(json.dumps(figures), flush=True)
    if result.returncode:
        print(result.stderr[-2000:])
    RESULTS["chaos"] = figures


def part_kills(work: Path, kills: int = 20) -> None:
    section(f"{kills} SIGKILLs at random moments, then one re-run")
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]
    lake = work / "kill-lake"
    rng = random.Random(42)
    torn = 0
    temp_after_kills = 0
    with fake_exchange(latency_ms=40) as url:
        args = (
            "collect",
            "--symbols",
            ",".join(symbols),
            "--since",
            "2018-01-01",
            "--quiet",
            "--lake",
            str(lake),
            "--base-url",
            url,
        )
        moments = []
        for _ in range(kills):
            process = spawn(*args)
            moment = rng.uniform(0.4, 3.0)
            moments.append(round(moment, 2))
            time.sleep(moment)
            process.kill()
            process.wait()
            try:
                readable(lake)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                torn += 1
                print("unreadable after a kill:", exc)
        temp_after_kills = sum(1 for p in lake.rglob("*.tmp"))
        files_before, rows_before = readable(lake)
        started = time.monotonic()
        rerun = cryptolake(*args)
        wall = time.monotonic() - started
        gaps = cryptolake("gaps", "--json", "--lake", str(lake), "--base-url", url)
    files, rows = readable(lake)
    missing = [g for g in json.loads(gaps.stdout or "[]") if g["kind"] != "exchange_gap"]
    figures = {
        "kills": kills,
        "kill_moments_s": moments,
        "unreadable_after_a_kill": torn,
        "temp_files_left_by_kills": temp_after_kills,
        "rows_before_rerun": rows_before,
        "files_before_rerun": files_before,
        "rerun_exit": rerun.returncode,
        "rerun_wall_s": round(wall, 1),
        "rows": rows,
        "files": files,
        "temp_files_after_rerun": sum(1 for _ in lake.rglob("*.tmp")),
        "gaps_other_than_outages": len(missing),
        "lake_exact": exact(lake, symbols, "2018-01-01"),
    }
    if missing:
        print("gaps other than outages:", missing)
    print(json.dumps(figures), flush=True)
    RESULTS["kills"] = figures


def part_writers(work: Path) -> None:
    section("two writers at once")
    lake = work / "writers-lake"
    with fake_exchange(latency_ms=10) as url:
        a = spawn(
            "collect",
            "--symbols",
            "BTC,ETH",
            "--since",
            "2022-01-01",
            "--quiet",
            "--lake",
            str(lake),
            "--base-url",
            url,
        )
        b = spawn(
            "collect",
            "--symbols",
            "ETH,SOL",
            "--since",
            "2022-01-01",
            "--quiet",
            "--lake",
            str(lake),
            "--base-url",
            url,
        )
        out_a, err_a = a.communicate(timeout=600)
        out_b, err_b = b.communicate(timeout=600)
        first = exact(lake, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "2022-01-01")
        # collect and fill-gaps at once (fill-gaps reaches back to 2021 for every stored symbol)
        c = spawn(
            "collect",
            "--symbols",
            "BNB",
            "--since",
            "2022-01-01",
            "--quiet",
            "--lake",
            str(lake),
            "--base-url",
            url,
        )
        d = spawn("fill-gaps", "--since", "2021-01-01", "--quiet", "--lake", str(lake), "--base-url", url)
        c.communicate(timeout=600)
        d.communicate(timeout=600)
    second = exact(lake, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "2021-01-01") and exact(
        lake, ["BNBUSDT"], "2022-01-01"
    )
    waited = sum("waiting: another cryptolake process" in e for e in (err_a, err_b))
    figures = {
        "collect_exits": [a.returncode, b.returncode],
        "one_waited_for_the_other": waited == 1,
        "lake_exact_after_two_collects": first,
        "collect_and_fill_gaps_exits": [c.returncode, d.returncode],
        "lake_exact_after_collect_and_fill_gaps": second,
    }
    print(json.dumps(figures), flush=True)
    RESULTS["writers"] = figures


def part_hostile(work: Path) -> None:
    section("hostile inputs, each in a real process")
    import pytest  # noqa: F401 - tests/test_hostile imports it

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import test_hostile as hostile

    base = work / "hostile"
    base.mkdir()
    lake = base / "lake"
    with FakeExchange(now=to_ms(NOW)) as fx:
        env = {"CRYPTOLAKE_POSTGRES_DSN": hostile.DSN, "BINANCE_API_KEY": hostile.SECRET_KEY}
        assert (
            cryptolake(
                "collect",
                "--symbols",
                "BTC,ETH",
                "--since",
                "2025-12-28",
                "--quiet",
                "--lake",
                str(lake),
                "--base-url",
                fx.base_url,
                env=env,
                cwd=base,
            ).returncode
            == 0
        )
        assert (
            cryptolake("gaps", "--lake", str(lake), "--base-url", fx.base_url, env=env, cwd=base).returncode
            == 0
        )
        (base / "a-file").write_text("not a lake")
        (base / "not-a-lake").mkdir()
        (base / "outside-link.csv").symlink_to(lake / "_meta" / "collection_state.json")
        os.mkfifo(base / "a-fifo")
        world = {
            "base": base,
            "lake": lake,
            "fx": fx,
            "env": env,
            "file": base / "a-file",
            "busy_port": fx.port,
            "fifo": base / "a-fifo",
            "bad_toml": hostile._write(base / "bad.toml", "[lake\nroot = 1"),
            "unknown_key": hostile._write(base / "unknown.toml", "[binance]\ntimeouts = 5\n"),
        }
        before = lake_bytes(lake)
        counts = {
            "cases": 0,
            "refused": 0,
            "max_lines": 0,
            "one_error_line": 0,
            "tracebacks": 0,
            "secrets_shown": 0,
            "lake_changed": 0,
        }
        for argv, extra in hostile.cases(world):
            result = cryptolake(*argv, env={**env, **extra}, cwd=base, timeout=120)
            text = result.stdout + result.stderr
            counts["cases"] += 1
            counts["refused"] += result.returncode != 0
            lines = [x for x in text.splitlines() if x.strip()]
            counts["max_lines"] = max(counts["max_lines"], len(lines))
            counts["one_error_line"] += len(lines) == 1 and lines[0].startswith("error: ")
            counts["tracebacks"] += "Traceback" in text
            counts["secrets_shown"] += any(s in text for s in hostile.SECRETS)
            after = lake_bytes(lake)
            if after != before:
                counts["lake_changed"] += 1
                print("changed the lake:", argv)
                before = after
    print(json.dumps(counts), flush=True)
    RESULTS["hostile"] = counts


def part_postgres(work: Path) -> None:
    section("PostgreSQL stopped and the loader killed mid-sync")
    import psycopg

    version = sorted(os.listdir("/etc/postgresql"))[0]
    lake = work / "pg-lake"
    with fake_exchange(latency_ms=0, extra_symbols=40) as url:
        symbols = ",".join(f"S{i:04d}" for i in range(1, 41))
        assert (
            cryptolake(
                "collect",
                "--symbols",
                symbols,
                "--since",
                "2024-01-01",
                "--quiet",
                "--lake",
                str(lake),
                "--base-url",
                url,
            ).returncode
            == 0
        )
    schema = f"cryptolake_reliability_{os.getpid()}"
    args = ("load", "postgres", "--dsn", PG_DSN, "--schema", schema, "--lake", str(lake))
    figures: dict[str, Any] = {}
    try:
        # 1. The server stops (immediate shutdown: no clean goodbye) in the middle of a sync.
        loader = spawn(*args)
        time.sleep(0.8)
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "immediate"],
            check=True,
        )
        out, err = loader.communicate(timeout=120)
        figures["server_stop"] = {
            "loader_exit": loader.returncode,
            "stderr_lines": len(err.strip().splitlines()),
            "stderr": err.strip(),
        }
    finally:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
    for _ in range(100):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            break
        time.sleep(0.1)
    try:
        # 2. The loader is SIGKILLed in the middle of the next sync.
        loader = spawn(*args)
        time.sleep(0.8)
        loader.kill()
        loader.wait()
        figures["loader_killed"] = True
        # 3. One sync makes the table equal the lake.
        final = cryptolake(*args, "--json")
        report = json.loads(final.stdout)
        columns = (
            "open, high, low, close, volume, quote_volume, trades, taker_buy_base_volume, "
            "taker_buy_quote_volume"
        )
        with psycopg.connect(PG_DSN) as conn:
            table = conn.execute(
                f"SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, "
                f"(extract(epoch FROM close_time) * 1000)::bigint, {columns} "
                f"FROM {schema}.klines ORDER BY symbol, open_time"
            ).fetchall()
        con = duckdb.connect()
        expected = con.execute(
            f"SELECT symbol, epoch_ms(open_time), epoch_ms(close_time), {columns} FROM "
            "read_parquet(?, hive_partitioning = true) ORDER BY symbol, open_time",
            [f"{lake}/klines/*/*/*/*/data.parquet"],
        ).fetchall()
        con.close()
        same = [tuple(r) for r in table] == [tuple(r) for r in expected]  # every value, bit for bit
        figures.update(
            final_exit=final.returncode,
            partitions_sent=report["partitions_sent"],
            rows_in_table=len(table),
            rows_in_lake=len(expected),
            table_equals_lake=same,
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(json.dumps(figures), flush=True)
    RESULTS["postgres"] = figures


def part_secrets(work: Path) -> None:
    section("secrets in every output, log and lake file")
    password, key = "Pw-S3cret-4711", "Key-S3cret-0815"
    env = {
        "CRYPTOLAKE_POSTGRES_DSN": f"postgresql://bob:{password}@127.0.0.1:1/market",
        "BINANCE_API_KEY": key,
        "BINANCE_API_SECRET": "Sec-S3cret-1234",
    }
    needles = (password, key, "Sec-S3cret-1234")
    lake = work / "secret-lake"
    texts: list[str] = []
    with FakeExchange(now=to_ms(NOW)) as fx:
        url = fx.base_url
        runs = [
            ("collect", "--symbols", "BTC", "--since", "2025-12-01", "--lake", str(lake), "--base-url", url),
            ("status", "--json", "--lake", str(lake)),
            ("config",),
            ("config", "--json"),
            ("load", "postgres", "--lake", str(lake)),
            ("--debug", "load", "postgres", "--lake", str(lake)),
            ("load", "postgres", "--dsn", f"postgresql://bob:{password}@[bad", "--lake", str(lake)),
            (
                "--debug",
                "load",
                "postgres",
                "--dsn",
                f"host=x port=notaport password={password}",
                "--lake",
                str(lake),
            ),
            ("gaps", "--lake", str(lake), "--base-url", url),
            ("--debug", "gaps", "--symbols", "NOPE", "--lake", str(lake)),
        ]
        for args in runs:
            result = cryptolake(*args, env=env)
            texts += [result.stdout, result.stderr]
        run = spawn(
            "--debug",
            "run",
            "--symbols",
            "BTC",
            "--since",
            "2025-12-30",
            "--run-now",
            "--schedule",
            "0 0 1 1 *",
            "--lake",
            str(lake),
            "--base-url",
            url,
            env=env,
        )
        time.sleep(6)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
        texts += [out, err]
    files = [p for p in lake.rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    hits = sum(any(n in t for n in needles) for t in texts)
    figures = {
        "commands": len(runs) + 1,
        "texts_grepped": len(texts),
        "lake_files": len(files),
        "run_log_mentions_failed_sync": "cannot connect to PostgreSQL" in err,
        "secret_hits": hits,
    }
    print(json.dumps(figures), flush=True)
    RESULTS["secrets"] = figures


PARTS = {
    "chaos": part_chaos,
    "kills": part_kills,
    "writers": part_writers,
    "hostile": part_hostile,
    "postgres": part_postgres,
    "secrets": part_secrets,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ",".join(PARTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryptolake-reliability-") as tmp:
        for name in args.only.split(","):
            PARTS[name.strip()](Path(tmp))
    print("\n" + json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
