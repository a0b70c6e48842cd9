"""The lake's append path for streamed candles: small stream files beside data.parquet, seen by
every reader once, absorbed by compaction and by any other write, crash-safe at every step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptolake.lake import ARROW_SCHEMA, Lake, klines_glob
from cryptolake.lake.append import Appender
from cryptolake.lake.store import remove_placeholders, stream_files
from cryptolake.query import run_sql
from cryptolake.schema import KLINE_SCHEMA

MIN = 60_000
NOV = 1_793_491_200_000  # 2026-11-01T00:00Z
assert NOV % MIN == 0


def candles(opens: list[int], price: float = 100.0) -> pa.Table:
    """1m candles at ``opens`` (ms), values derived from the open time and ``price``."""
    rows = sorted(set(opens))
    frame = pl.DataFrame(
        {
            "open_time": rows,
            "open": [price + (t // MIN) % 97 for t in rows],
            "high": [price + max((t // MIN) % 97, (t // MIN) % 89) + 1 for t in rows],
            "low": [(price + min((t // MIN) % 97, (t // MIN) % 89)) * 0.99 for t in rows],
            "close": [price + (t // MIN) % 89 for t in rows],
            "volume": [float((t // MIN) % 13) for t in rows],
            "close_time": [t + MIN - 1 for t in rows],
            "quote_volume": [1.5] * len(rows),
            "trades": [int((t // MIN) % 7) for t in rows],
            "taker_buy_base_volume": [0.5] * len(rows),
            "taker_buy_quote_volume": [0.25] * len(rows),
        },
        schema_overrides={"open_time": pl.Int64, "close_time": pl.Int64},
    ).with_columns(pl.from_epoch("open_time", "ms").dt.replace_time_zone("UTC"),
                   pl.from_epoch("close_time", "ms").dt.replace_time_zone("UTC"))  # fmt: skip
    return frame.cast(KLINE_SCHEMA).to_arrow().cast(ARROW_SCHEMA)  # type: ignore[arg-type]


def plain_duckdb(root: Path) -> tuple[int, int]:
    """The README's plain-DuckDB recipe: (rows, distinct candles)."""
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT count(*), count(DISTINCT (exchange, interval, symbol, open_time)) "
            f"FROM read_parquet('{klines_glob(root)}', hive_partitioning = true)"
        ).fetchone()  # type: ignore[return-value]


def stored_opens(root: Path) -> list[int]:
    if not list(root.rglob("*.parquet")):
        return []
    frame = pl.scan_parquet(klines_glob(root), hive_partitioning=True).select("open_time").collect()
    return sorted(frame.get_column("open_time").dt.epoch("ms").to_list())


def test_appended_candles_are_seen_once_by_every_reader(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write_partition("1m", "BTCUSDT", candles([NOV + i * MIN for i in range(100)]))
    appender = Appender(lake, "1m")
    assert appender.append("BTCUSDT", candles([NOV + i * MIN for i in range(95, 103)])) == 3
    assert appender.append("BTCUSDT", candles([NOV + 103 * MIN])) == 1
    assert appender.append("BTCUSDT", candles([NOV + 101 * MIN])) == 0  # held already
    folder = tmp_path / "klines/exchange=binance/interval=1m/symbol=BTCUSDT/month=2026-11"
    assert len(stream_files(folder)) == 2
    assert plain_duckdb(tmp_path) == (104, 104)
    assert stored_opens(tmp_path) == [NOV + i * MIN for i in range(104)]
    assert lake.read_partition("1m", "BTCUSDT", "2026-11").height == 104
    assert lake.bounds("1m", "BTCUSDT") == (NOV, NOV + 103 * MIN, 104)
    assert lake.scan("1m").collect().height == 104
    assert run_sql(tmp_path, "SELECT count(*) AS n FROM klines").table.column("n").to_pylist() == [104]


def test_compaction_leaves_one_data_file_and_placeholders_that_go_later(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    appender = Appender(lake, "1m")
    for i in range(10):
        appender.append("ETHUSDT", candles([NOV + i * MIN]))
    assert appender.pending() == {("ETHUSDT", "2026-11"): 10}
    assert appender.compact("ETHUSDT", "2026-11")
    folder = tmp_path / "klines/exchange=binance/interval=1m/symbol=ETHUSDT/month=2026-11"
    files = sorted(p.name for p in folder.iterdir() if p.suffix == ".parquet")
    assert files[0] == "data.parquet" and len(files) == 11  # the ten absorbed are empty now
    assert plain_duckdb(tmp_path) == (10, 10)
    assert not appender.compact("ETHUSDT", "2026-11")  # placeholders hold nothing to absorb
    assert remove_placeholders(folder) == 0  # too young: a reader may have listed them
    assert remove_placeholders(folder, grace_s=0) == 10
    assert [p.name for p in folder.iterdir() if p.suffix == ".parquet"] == ["data.parquet"]
    assert lake.partition_stats("1m", "ETHUSDT")[0].is_contiguous(
        __import__("cryptolake").schema.Interval("1m")
    )


def test_a_collection_write_absorbs_stream_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    Appender(lake, "1m").append("BTCUSDT", candles([NOV + i * MIN for i in range(5)], price=1.0))
    # REST brings the same candles (other values: the exchange's final word wins) and more.
    lake.write_partition("1m", "BTCUSDT", candles([NOV + i * MIN for i in range(8)], price=2.0))
    assert plain_duckdb(tmp_path) == (8, 8)
    frame = lake.read_partition("1m", "BTCUSDT", "2026-11")
    assert frame.get_column("open").to_list()[0] == 2.0


def test_appends_across_months_go_to_each_month(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    last_oct = NOV - 2 * MIN
    assert Appender(lake, "1m").append("BTCUSDT", candles([last_oct, last_oct + MIN, NOV, NOV + MIN])) == 4
    assert lake.months("1m", "BTCUSDT") == ["2026-10", "2026-11"]
    assert [s.rows for s in lake.partition_stats("1m", "BTCUSDT")] == [2, 2]


def test_another_writer_is_noticed(tmp_path: Path) -> None:
    """An appender's memory of a partition is dropped when someone else rewrote it."""
    lake = Lake(tmp_path)
    appender = Appender(lake, "1m")
    appender.append("BTCUSDT", candles([NOV]))
    lake.write_partition("1m", "BTCUSDT", candles([NOV + MIN]))  # absorbs the stream file
    assert appender.append("BTCUSDT", candles([NOV, NOV + MIN, NOV + 2 * MIN])) == 1
    assert plain_duckdb(tmp_path) == (3, 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["append", "compact", "write"]), st.lists(st.integers(0, 40), max_size=6)),
        max_size=12,
    )
)
def test_any_sequence_of_appends_compactions_and_writes_holds_each_candle_once(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, list[int]]]
) -> None:
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(root)
    appender = Appender(lake, "1m")
    oracle: set[int] = set()
    for action, slots in steps:
        opens = [NOV + s * MIN for s in slots]
        if action == "append":
            appender.append("BTCUSDT", candles(opens))
            oracle.update(opens)
        elif action == "write" and opens:
            lake.write_partition("1m", "BTCUSDT", candles(opens))
            oracle.update(opens)
        elif action == "compact":
            appender.compact("BTCUSDT", "2026-11")
        assert stored_opens(root) == sorted(oracle)


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    sys.path.insert(0, {tests!r})
    from test_lake_append import candles, NOV, MIN
    from cryptolake.lake import Lake
    from cryptolake.lake.append import Appender
    lake = Lake({root!r})
    appender = Appender(lake, "1m")
    i = {start}
    print("ready", flush=True)
    while True:
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            appender.append(symbol, candles([NOV + i * MIN]))
        i += 1
        if i % 4 == 0:
            for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
                appender.compact(symbol, "2026-11")
    """
)


def test_sigkill_during_appends_and_compactions_never_duplicates_and_a_restart_completes(
    tmp_path: Path,
) -> None:
    """Kill a process that appends and compacts in a loop at arbitrary instants; after each kill
    the lake reads without a duplicate or a torn file, and the next writer finishes what was cut
    short, so every candle appended before the kill is there."""
    root = tmp_path / "lake"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), tests])}
    start = 0
    for round_ in range(8):
        code = _KILLABLE.format(tests=tests, root=str(root), start=start)
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env) as child:
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
            time.sleep(0.3 + 0.07 * round_)
            child.send_signal(signal.SIGKILL)
            child.wait()
        rows, distinct = plain_duckdb(root)
        assert rows == distinct  # readable, and no candle twice, before any repair
        Lake(root).remove_stale_temp_files()  # what the next writer does first
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            frame = Lake(root).read_partition("1m", symbol, "2026-11")
            opens = frame.get_column("open_time").dt.epoch("ms").to_list()
            # Every candle up to the last one stored is there: an interrupted compaction lost none.
            assert opens == [NOV + i * MIN for i in range(len(opens))]
        start = len(opens)
        assert start > 0
        assert plain_duckdb(root)[0] == plain_duckdb(root)[1]
    absorbing = [p for p in root.rglob(".*absorbing")]
    assert absorbing == []


def test_readers_never_count_a_candle_twice_while_compaction_runs(tmp_path: Path) -> None:
    """The README's plain-DuckDB recipe and polars scan, in a loop on a thread, while another
    appends and compacts 20 partitions over and over (far more often than a stream does).

    A query can fail when a file it planned against is replaced under it (DuckDB and polars
    open a file more than once; the README says to run it again); one that answers never counts
    a candle twice."""
    lake = Lake(tmp_path)
    appender = Appender(lake, "1m")
    symbols = [f"S{i:02d}USDT" for i in range(20)]
    for symbol in symbols:
        lake.write_partition("1m", symbol, candles([NOV + i * MIN for i in range(2000)]))
    stop = threading.Event()
    seen: dict[str, list[tuple[int, int]]] = {"duckdb": [], "polars": []}
    failed: dict[str, list[str]] = {"duckdb": [], "polars": []}

    def read() -> None:
        while not stop.is_set():
            try:
                seen["duckdb"].append(plain_duckdb(tmp_path))
            except duckdb.Error as exc:
                failed["duckdb"].append(str(exc))
            try:
                frame = pl.scan_parquet(klines_glob(tmp_path), hive_partitioning=True).select(
                    "symbol", "open_time").collect()  # fmt: skip
                seen["polars"].append((frame.height, frame.n_unique()))
            except BaseException as exc:  # noqa: BLE001 - polars panics (PanicException) too
                failed["polars"].append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for step in range(2000, 2060):
            for symbol in symbols:
                appender.append(symbol, candles([NOV + step * MIN]))
            if step % 5 == 0:
                for symbol in symbols:
                    appender.compact(symbol, "2026-11")
    finally:
        stop.set()
        reader.join()
    for engine, answers in seen.items():
        assert all(rows == distinct for rows, distinct in answers), (
            engine,
            [a for a in answers if a[0] != a[1]][:5],
        )
    # DuckDB answers nearly always; a failure is the replaced-file kind, never anything else.
    assert len(seen["duckdb"]) > 20 and len(failed["duckdb"]) <= len(seen["duckdb"]) // 20
    assert all(
        "Invalid data" in f or "Cannot open file" in f or "magic" in f.lower() for f in failed["duckdb"]
    )
    assert len(seen["polars"]) > 5
