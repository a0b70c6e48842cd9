"""Several exchanges in one lake: each one's candles, metadata, gap reports, status, views and
PostgreSQL rows kept apart by the ``exchange`` key; and a lake written before there were other
exchanges opening and syncing unchanged (its metadata reads as Binance's)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from cryptolake.lake import Lake
from cryptolake.lake.layout import EXCHANGES, exchange_dir, validate_exchange
from cryptolake.lake.meta import LakeMeta
from cryptolake.testing import FakeExchange
from tests.conftest import FAKE_NOW_MS
from tests.helpers import collect, invoke, lake_bytes, oracle, stored

START = "2025-12-29"


def _strip_exchange_from_meta(root: Path) -> list[str]:
    """Rewrite every ``_meta/*.parquet`` as an older cryptolake wrote it: without ``exchange``."""
    stripped = []
    for path in sorted((root / "_meta").glob("*.parquet")):
        frame = pl.read_parquet(io.BytesIO(path.read_bytes()))
        if "exchange" in frame.columns:
            frame.drop("exchange").write_parquet(path)
            stripped.append(path.name)
    return stripped


def test_an_old_single_exchange_lake_opens_and_syncs_unchanged(tmp_path: Path, cli_env: Path) -> None:
    lake = tmp_path / "lake"
    with FakeExchange(now=FAKE_NOW_MS) as fx:
        assert collect(lake, fx, "--symbols", "BTC,ETH", "--since", START, "--source", "rest").exit_code == 0
        assert invoke("gaps", "--lake", lake, "--base-url", fx.base_url).exit_code == 0
        stripped = _strip_exchange_from_meta(lake)
        assert {"starts.parquet", "gaps.parquet", "coverage.parquet", "markets.parquet"} <= set(stripped)
        legacy_candles = lake_bytes(lake / "klines")

        # Read as Binance's, by the Python API and by the CLI, without writing anything.
        meta = LakeMeta(lake)
        assert set(meta.starts("1h")) == {"BTCUSDT", "ETHUSDT"}
        assert LakeMeta(lake, "bybit").starts("1h") == {}
        status = json.loads(invoke("status", "--lake", lake, "--json").output)
        assert status["exchange"] == "binance"
        assert set(status["symbols"]) == {"BTCUSDT", "ETHUSDT"}
        views = invoke(
            "sql",
            "--lake",
            lake,
            "--format",
            "json",
            "SELECT DISTINCT exchange FROM gaps UNION SELECT DISTINCT exchange FROM coverage",
        )
        assert views.exit_code == 0, views.output
        assert {row["exchange"] for row in json.loads(views.output)} == {"binance"}

        # A plain-DuckDB reader of the views file sees the legacy metadata as Binance's too.
        from cryptolake.query import write_database

        con = duckdb.connect(str(write_database(lake)), read_only=True)
        assert {r[0] for r in con.execute("SELECT DISTINCT exchange FROM coverage").fetchall()} == {"binance"}
        con.close()

        # The next collection syncs it: nothing refetched, nothing rewritten, records upgraded.
        fx.reset()
        again = collect(lake, fx, "--symbols", "BTC,ETH", "--since", START, "--source", "rest")
        assert again.exit_code == 0, again.output
        assert lake_bytes(lake / "klines") == legacy_candles
        markets = pq.read_table(lake / "_meta" / "markets.parquet")  # rewritten by every run
        assert markets.column_names[0] == "exchange"
        assert set(markets.column("exchange").to_pylist()) == {"binance"}
        assert set(LakeMeta(lake).starts("1h")) == {"BTCUSDT", "ETHUSDT"}  # legacy file, read as before
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert stored(lake, symbol).equals(
                oracle(fx, symbol, START).filter(
                    pl.col("open_time") < pl.datetime(2026, 1, 1, time_zone="UTC")
                )
            )


def test_exchange_names_are_checked_and_kept_in_the_path(tmp_path: Path) -> None:
    assert EXCHANGES == ("binance", "coinbase", "kraken", "bybit")
    assert validate_exchange("kraken") == "kraken"
    for bad in ("Binance", "ftx", "", "../x"):
        try:
            validate_exchange(bad)
        except ValueError as exc:
            assert "unknown exchange" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert exchange_dir(tmp_path, "coinbase") == tmp_path / "klines" / "exchange=coinbase"
    lake = Lake(tmp_path)
    assert lake.exchange == "binance" and lake.for_exchange("bybit").exchange == "bybit"
    assert repr(lake.for_exchange("kraken")).endswith("exchange='kraken')")
