"""Helpers shared by the test modules: the expected candles, built without the code under test,
and the CLI's runners and checks of a lake.

``expected_klines`` turns the fake exchange's raw 12-field kline arrays into the lake's frame field
by field, as Binance documents them, so that a mistake in the client's parser (two columns
swapped, a time unit wrong) makes the tests that compare against it fail.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from cryptolake.cli import cli
from cryptolake.config import SPECS
from cryptolake.lake import ARROW_SCHEMA, Lake, klines_glob
from cryptolake.lake.layout import month_bounds, partition_path
from cryptolake.schema import KLINE_COLUMNS, KLINE_SCHEMA
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import to_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expected_klines(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Binance's kline arrays (``[open time, open, high, low, close, volume, close time, quote
    volume, trades, taker buy base volume, taker buy quote volume, ignore]``, times in ms) as the
    lake's frame, sorted by open time."""

    def moment(ms: Any) -> datetime:
        return _EPOCH + timedelta(milliseconds=int(ms))

    data: dict[str, list[Any]] = {
        "open_time": [moment(r[0]) for r in rows],
        "open": [float(r[1]) for r in rows],
        "high": [float(r[2]) for r in rows],
        "low": [float(r[3]) for r in rows],
        "close": [float(r[4]) for r in rows],
        "volume": [float(r[5]) for r in rows],
        "close_time": [moment(r[6]) for r in rows],
        "quote_volume": [float(r[7]) for r in rows],
        "trades": [int(r[8]) for r in rows],
        "taker_buy_base_volume": [float(r[9]) for r in rows],
        "taker_buy_quote_volume": [float(r[10]) for r in rows],
    }
    return pl.DataFrame(data, schema=KLINE_SCHEMA).sort("open_time")


_ENV_NAMES = {name for spec in SPECS for name in (spec.env, spec.legacy_env) if name} | {"CRYPTOLAKE_CONFIG"}


# -- helpers -------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment without any cryptolake setting (for child processes)."""
    return {k: v for k, v in os.environ.items() if k not in _ENV_NAMES and not k.startswith("CRYPTOLAKE_")}


def invoke(*args: Any) -> Result:
    """Run the CLI in-process; an exception other than SystemExit is a bug, so re-raise it."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def collect(lake: Path, fx: FakeExchange, *args: Any) -> Result:
    """``cryptolake collect`` against the fake exchange (its REST API and its bulk archive)."""
    return invoke("collect", *args, "--lake", lake, "--base-url", fx.base_url, "--archive-url", fx.base_url)


def collect_argv(lake: Path, fx: FakeExchange, *args: str) -> list[str]:
    """``python -m cryptolake collect ...`` for a child process."""
    return [
        sys.executable,
        "-m",
        "cryptolake",
        "collect",
        *args,
        "--lake",
        str(lake),
        "--base-url",
        fx.base_url,
        "--archive-url",
        fx.base_url,
    ]


def oracle(fx: FakeExchange, symbol: str, start: Any, interval: str = "1h") -> pl.DataFrame:
    return expected_klines(fx.klines(symbol, interval, to_ms(start), fx.now_ms() + 1))


def stored(lake: Path, symbol: str, interval: str = "1h") -> pl.DataFrame:
    return Lake(lake).scan(interval, [symbol]).collect().drop("symbol").sort("open_time")


def duck(lake: Path) -> pl.DataFrame:
    """The whole lake as plain DuckDB reads it, sorted (times as stored: ms, UTC)."""
    con = duckdb.connect()
    try:
        frame = con.sql(
            f"SELECT * FROM read_parquet('{klines_glob(lake)}', hive_partitioning = true) "
            "ORDER BY interval, symbol, open_time"
        ).pl()
    finally:
        con.close()
    return frame.with_columns(
        pl.col("open_time", "close_time").dt.convert_time_zone("UTC").dt.cast_time_unit("ms")
    )


def data_files(lake: Path) -> list[Path]:
    return sorted(lake.rglob("data.parquet"))


def snapshot(lake: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in data_files(lake)}


def check_files(lake: Path) -> int:
    """Every partition is complete, readable Parquet with the documented schema, sorted by
    unique open_time inside its month; returns the total rows."""
    total = 0
    for path in data_files(lake):
        table = pq.read_table(path)
        assert table.schema.equals(ARROW_SCHEMA), path
        opens = table.column("open_time").to_pylist()
        assert opens == sorted(set(opens)), path
        lo, hi = month_bounds(path.parent.name.removeprefix("month="))
        assert all(lo <= to_ms(t) < hi for t in opens), path
        total += table.num_rows
    return total


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def lake_bytes(root: Path) -> dict[str, str]:
    """Every file under the lake, by relative path: its SHA-256 (to prove nothing changed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class VirtualClock:
    """Epoch seconds that pass only when someone sleeps: give ``now`` as the ``clock`` and ``sleep``
    as the ``sleep`` of a client (and ``now`` as the fake exchange's ``clock``), and waiting for a
    rate-limit window takes no wall time."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00Z
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._t += max(0.0, seconds)


def sigkill_when(
    argv: list[str], cwd: Path, ready: Callable[[], bool], timeout_s: float = 60
) -> tuple[bool, int]:
    """Run ``argv`` as a child process (stderr to ``cwd/child.err``) and SIGKILL it as soon as
    ``ready()`` holds; returns (whether it was still running then, its exit code)."""
    with open(cwd / "child.err", "w") as err:
        child = subprocess.Popen(argv, cwd=cwd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout_s
        while child.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        was_running = child.poll() is None
        if was_running:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return was_running, child.returncode


def store_as_another_tool(
    lake: Path, interval: str, symbol: str, frame: pl.DataFrame, exchange: str = "binance"
) -> None:
    """Write candles into their partitions the way another tool would: plain Parquet files
    (replacing what is there), past cryptolake's rules and without its commit record, so tests
    can put into a lake what cryptolake itself refuses to store."""
    for month, part in frame.group_by(pl.col("open_time").dt.strftime("%Y-%m")):
        path = partition_path(lake, interval, symbol, str(month[0]), exchange)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.select(KLINE_COLUMNS).cast(KLINE_SCHEMA).to_arrow(), path)
