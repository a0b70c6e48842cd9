"""CryptoCollector end to end: the fake exchange into real temporary lakes, checked against the
fake's oracle (``FakeExchange.klines``) with DuckDB, ``Lake.scan`` and pyarrow."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from cryptolake import CryptoCollector
from cryptolake.collector import ProgressEvent
from cryptolake.errors import InvalidSymbolName, IPBanned
from cryptolake.lake import ARROW_SCHEMA, Lake, klines_glob, store
from cryptolake.lake.layout import month_bounds
from cryptolake.lake.meta import LakeMeta
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS, Interval
from cryptolake.sources.binance import BinanceClient
from cryptolake.sources.ratelimit import forget_shared_state
from cryptolake.testing import FakeExchange, Fault
from cryptolake.timeutils import to_ms

from .conftest import FAKE_NOW_MS
from .helpers import expected_klines

OUTAGE = (to_ms("2024-03-12T04:00:00Z"), to_ms("2024-03-12T09:00:00Z"))
TS_MS_UTC = pa.timestamp("ms", tz="UTC")


# -- helpers -------------------------------------------------------------------------------


def oracle(
    fx: FakeExchange,
    symbol: str,
    start: Any,
    end: Any | None = None,
    interval: str = "1h",
    closed_only: bool = True,
) -> pl.DataFrame:
    """The closed candles the fake exchange has for ``[start, end)`` (end: its now)."""
    end_ms = fx.now_ms() + 1 if end is None else to_ms(end)
    return expected_klines(fx.klines(symbol, interval, to_ms(start), end_ms, closed_only=closed_only))


def lake_frame(root: Path, symbol: str, interval: str = "1h") -> pl.DataFrame:
    """One symbol's stored candles via ``Lake.scan``, without the symbol column."""
    return Lake(root).scan(interval, [symbol]).collect().drop("symbol").sort("open_time")


def duck(root: Path, where: str = "true") -> pl.DataFrame:
    """The lake as plain DuckDB reads it (times back to ms UTC, as stored)."""
    con = duckdb.connect()
    try:
        frame = con.sql(
            f"SELECT * FROM read_parquet('{klines_glob(root)}', hive_partitioning = true) "
            f"WHERE {where} ORDER BY symbol, open_time"
        ).pl()
    finally:
        con.close()
    return frame.with_columns(
        pl.col("open_time", "close_time").dt.convert_time_zone("UTC").dt.cast_time_unit("ms")
    )


def data_files(root: Path) -> list[Path]:
    return sorted(root.rglob("data.parquet"))


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """``{file: (mtime_ns, inode)}`` of every partition file."""
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in data_files(root)}


def assert_files_well_formed(root: Path) -> int:
    """Every partition: readable, documented columns/types/order, sorted unique open_time inside
    its month, zstd with statistics. Returns the total row count."""
    total = 0
    for path in data_files(root):
        table = pq.read_table(path)  # raises on a torn or partial file
        assert table.schema.names == list(KLINE_COLUMNS), path
        assert table.schema.equals(ARROW_SCHEMA), (path, table.schema)
        assert table.schema.field("open_time").type == TS_MS_UTC
        assert table.schema.field("close_time").type == TS_MS_UTC
        assert table.schema.field("trades").type == pa.int64()
        for name in (
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "taker_buy_base_volume",
            "taker_buy_quote_volume",
        ):
            assert table.schema.field(name).type == pa.float64()
        opens = table.column("open_time").cast(pa.int64()).to_pylist()
        assert opens == sorted(set(opens)), f"{path} is not sorted by unique open_time"
        month = path.parent.name.removeprefix("month=")
        lo, hi = month_bounds(month)
        assert all(lo <= t < hi for t in opens), f"{path} holds candles of another month"
        meta = pq.read_metadata(path)
        for group in range(meta.num_row_groups):
            column = meta.row_group(group).column(0)
            assert column.compression == "ZSTD"
            assert column.statistics is not None and column.statistics.has_min_max
        total += table.num_rows
    return total


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


# -- exact content ---------------------------------------------------------------------------


def test_backward_matches_the_oracle_across_month_year_and_outage(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    fake_exchange.set_now(to_ms("2024-03-13T00:30:00Z"))
    since = datetime(2023, 12, 28)
    report = CryptoCollector(client, lake=lake).collect_backward(since, ["BTC", "ETHUSDT"])

    assert report.ok and report.direction == "backward" and report.interval == "1h"
    assert set(report.results) == {"BTCUSDT", "ETHUSDT"}
    expected_rows = (31 + 29 + 12 + 4) * 24 - 5  # 2023-12-28 .. 2024-03-12 23:00, minus the outage
    ducked = duck(lake)
    assert ducked.height == 2 * expected_rows
    for symbol in ("BTCUSDT", "ETHUSDT"):
        want = oracle(fake_exchange, symbol, since)
        assert want.height == expected_rows
        result = report.results[symbol]
        assert (result.rows_added, result.rows_changed, result.error) == (expected_rows, 0, None)
        assert result.first_open_time == datetime.fromisoformat("2023-12-28T00:00:00+00:00")
        assert result.last_open_time == datetime.fromisoformat("2024-03-12T23:00:00+00:00")

        assert_frame_equal(lake_frame(lake, symbol), want)
        mine = ducked.filter(pl.col("symbol") == symbol)
        assert_frame_equal(mine.select(KLINE_COLUMNS), want)
        assert mine["open_time"].n_unique() == mine.height
        assert set(mine["exchange"]) == {"binance"} and set(mine["interval"]) == {"1h"}
        assert mine["month"].to_list() == mine["open_time"].dt.strftime("%Y-%m").to_list()
        assert sorted(set(mine["month"])) == ["2023-12", "2024-01", "2024-02", "2024-03"]

        opens = set(mine["open_time"].dt.epoch("ms").to_list())
        assert not any(OUTAGE[0] <= t < OUTAGE[1] for t in opens)
        assert {OUTAGE[0] - HOUR_MS, OUTAGE[1]} <= opens  # the hours around it are there
    # Hive columns are plain strings to DuckDB; the file columns keep their documented types.
    assert ducked.schema["month"] == pl.String and ducked.schema["symbol"] == pl.String
    assert ducked.columns[: len(KLINE_COLUMNS)] == list(KLINE_COLUMNS)
    assert assert_files_well_formed(lake) == 2 * expected_rows
    assert not list(lake.rglob("*.tmp"))


def test_a_second_identical_run_rewrites_nothing(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    fake_exchange.set_now(to_ms("2024-02-02T00:30:00Z"))
    collector = CryptoCollector(client, lake=lake, batch_size_hours=240)
    collector.collect_backward("2023-12-20", ["BTC", "ETH"])
    before = snapshot(lake)
    content = duck(lake)
    assert len(before) == 6  # 2023-12, 2024-01, 2024-02 for each symbol

    again = [collector.collect_backward("2023-12-20", ["BTC", "ETH"]), collector.collect_forward()]

    for report in again:
        assert report.ok and report.total_rows_added == 0
        assert set(report.results) == {"BTCUSDT", "ETHUSDT"}
        for result in report.results.values():
            assert (result.rows_added, result.rows_changed, result.files_written) == (0, 0, 0)
    assert snapshot(lake) == before
    assert_frame_equal(duck(lake), content)


def test_forward_adds_exactly_the_newly_closed_candles(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    collector = CryptoCollector(client, lake=lake)
    collector.collect_backward("2025-12-30", ["BTC", "SOL"])
    december = snapshot(lake)
    assert lake_frame(lake, "BTCUSDT")["open_time"].max() == datetime.fromisoformat(
        "2025-12-31T23:00:00+00:00"
    )

    fake_exchange.advance(3 * HOUR_MS)  # now 2026-01-01T03:30Z: 00:00, 01:00, 02:00 closed, 03:00 open
    report = collector.collect_forward()

    assert report.ok and report.direction == "forward"
    assert set(report.results) == {"BTCUSDT", "SOLUSDT"}
    still_open = to_ms("2026-01-01T03:00:00Z")
    for symbol, result in report.results.items():
        assert result.rows_added == 3
        assert result.first_open_time == datetime.fromisoformat("2026-01-01T00:00:00+00:00")
        assert result.last_open_time == datetime.fromisoformat("2026-01-01T02:00:00+00:00")
        stored = lake_frame(lake, symbol)
        assert_frame_equal(stored, oracle(fake_exchange, symbol, "2025-12-30"))
        assert stored.height == 48 + 3
        # The fake does serve a still-open 03:00 candle; the lake never has it.
        assert (
            oracle(fake_exchange, symbol, "2026-01-01", closed_only=False)["open_time"].dt.epoch("ms").max()
            == still_open
        )
        assert still_open not in stored["open_time"].dt.epoch("ms").to_list()
        assert (stored["close_time"].dt.epoch("ms") < fake_exchange.now_ms()).all()
    # Only the new month's files were written; December's are untouched.
    after = snapshot(lake)
    assert {p: after[p] for p in december} == december
    assert sorted(p.parent.name for p in set(after) - set(december)) == ["month=2026-01"] * 2

    again = collector.collect_forward()
    assert again.total_rows_added == 0 and snapshot(lake) == after


@pytest.mark.parametrize(
    ("name", "since", "now", "batch_hours", "first_open"),
    [
        ("NEW", "2025-06-01", "2025-06-20T00:30:00Z", 720, "2025-06-15T10:00:00Z"),  # one batch
        ("NEWUSDT", "2025-06-01", "2025-06-20T00:30:00Z", 24, "2025-06-15T10:00:00Z"),  # many
        ("SOLUSDT", "2020-01-01", "2020-08-20T00:30:00Z", 720, "2020-08-11T06:00:00Z"),
    ],
)
def test_a_symbol_listed_after_since_starts_at_its_listing_candle(
    fake_exchange: FakeExchange,
    client: BinanceClient,
    lake: Path,
    name: str,
    since: str,
    now: str,
    batch_hours: int,
    first_open: str,
) -> None:
    fake_exchange.set_now(to_ms(now))
    symbol = name if name.endswith("USDT") else name + "USDT"
    collector = CryptoCollector(client, lake=lake, batch_size_hours=batch_hours)

    report = collector.collect_backward(since, [name])

    result = report.results[symbol]
    assert result.ok
    listing = datetime.fromisoformat(first_open.replace("Z", "+00:00"))
    assert result.first_open_time == listing
    stored = lake_frame(lake, symbol)
    want = oracle(fake_exchange, symbol, since)
    assert want["open_time"][0] == listing
    assert_frame_equal(stored, want)
    assert result.rows_added == stored.height
    assert stored["open_time"][0] == listing
    assert Lake(lake).months("1h", symbol)[0] == listing.strftime("%Y-%m")

    before = snapshot(lake)
    assert collector.collect_backward(since, [name]).total_rows_added == 0
    assert snapshot(lake) == before


# -- failures --------------------------------------------------------------------------------


def test_an_invalid_symbol_fails_alone(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    collector = CryptoCollector(client, lake=lake)
    report = collector.collect_backward("2025-12-30", ["BTC", "NOPE", "ETH"])

    assert not report.ok
    assert list(report.failed) == ["NOPEUSDT"]
    assert "NOPEUSDT" in report.failed["NOPEUSDT"]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert report.results[symbol].rows_added == 48
        assert_frame_equal(lake_frame(lake, symbol), oracle(fake_exchange, symbol, "2025-12-30"))
    status = collector.get_collection_status()
    # A symbol the exchange does not know leaves nothing behind: no state, no window, no start.
    assert "NOPEUSDT" not in status["symbols"]
    assert status["symbols"]["BTCUSDT"]["last_error"] is None
    assert "NOPEUSDT" not in collector.known_symbols()
    assert LakeMeta(lake).symbols("1h") == {"BTCUSDT", "ETHUSDT"}
    assert not (lake / "klines" / "exchange=binance" / "interval=1h" / "symbol=NOPEUSDT").exists()


@pytest.mark.parametrize("name", ["../etc", "a/b", "BTC USDT", "x=y", "", "ＢＴＣ"])
def test_hostile_symbol_names_are_refused_before_anything_happens(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path, name: str
) -> None:
    collector = CryptoCollector(client, lake=lake)
    with pytest.raises(InvalidSymbolName):
        collector.collect_backward("2025-12-31", ["BTC", name])
    assert not lake.exists()
    assert fake_exchange.stats().requests == 0


def test_a_partition_write_failing_mid_batch_leaves_no_hole_the_next_run_cannot_fill(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped between two partition writes of one batch (disk full, SIGKILL) must leave
    the stored range contiguous, or bounds-based resumption never fills the hole."""
    real_write = store.write_parquet_atomic
    writes: list[str] = []

    def disk_full_at_fifth_write(path: Path, frame: pl.DataFrame, **kwargs: object) -> None:
        writes.append(path.parent.name)
        if len(writes) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, frame, **kwargs)

    monkeypatch.setattr(store, "write_parquet_atomic", disk_full_at_fifth_write)
    # 240 h batches walked backward from 2026-01-01: [12-25, 01-01), [12-15, 12-25),
    # [12-05, 12-15), then [11-25, 12-05) which spans two months; its second write fails.
    failing = CryptoCollector(client, lake=lake, batch_size_hours=240)
    report = failing.collect_backward("2025-11-15", ["BTC"])
    assert "No space left" in report.failed["BTCUSDT"]
    assert len(writes) == 5
    stored = lake_frame(lake, "BTCUSDT")
    assert_frame_equal(stored, oracle(fake_exchange, "BTCUSDT", stored["open_time"][0]))  # contiguous

    monkeypatch.setattr(store, "write_parquet_atomic", real_write)
    collector = CryptoCollector(client, lake=lake, batch_size_hours=240)
    assert collector.collect_backward("2025-11-15", ["BTC"]).ok
    assert collector.collect_forward().ok
    assert_frame_equal(lake_frame(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-11-15"))


def test_an_ip_ban_stops_every_symbol_and_leaves_valid_files(fake_exchange: FakeExchange, lake: Path) -> None:
    ban_file = lake / "_meta" / "binance-bans.json"
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    since = "2025-09-01"  # 2,928 candles a symbol: 3 pages each
    with BinanceClient(
        base_url=fake_exchange.base_url, retry_delay=0.01, timeout_s=5, concurrency=4, ban_file=ban_file
    ) as binance:
        collector = CryptoCollector(binance, lake=lake, batch_size_hours=24)
        # Two klines requests pass, then a 418.
        fake_exchange.inject(
            Fault.slow(0.0, path="/api/v3/klines", times=2),
            Fault.ban(retry_after_s=30, path="/api/v3/klines"),
        )
        report = collector.collect_backward(since, symbols)

        assert set(report.failed) == set(symbols)  # every symbol reports the stop
        assert any("banned" in error for error in report.failed.values())
        assert report.total_rows_added <= 2 * 1000
        stats = fake_exchange.stats()
        assert stats.banned <= binance.concurrency  # at most the requests already in flight
        assert stats.by_path["/api/v3/klines"] <= 2 + binance.concurrency
        assert ban_file.is_file()

        # Whatever was stored is whole, valid and exactly the exchange's newest candles.
        assert_files_well_formed(lake)
        for symbol in Lake(lake).symbols("1h"):
            stored = lake_frame(lake, symbol)
            assert_frame_equal(stored, oracle(fake_exchange, symbol, stored["open_time"][0]))
        status = collector.get_collection_status()
        assert all(status["symbols"][s]["last_error"] for s in symbols)

        # While banned, a new run sends nothing at all.
        sent = fake_exchange.stats().requests
        with pytest.raises(IPBanned):
            collector.collect_backward(since, symbols)
        assert fake_exchange.stats().requests == sent

        # Once the ban is over, the next run completes the history.
        fake_exchange.reset()
        forget_shared_state()
        ban_file.unlink()
        assert collector.collect_backward(since, symbols).ok
        assert collector.collect_forward().ok
    for symbol in symbols:
        assert_frame_equal(lake_frame(lake, symbol), oracle(fake_exchange, symbol, since))


# -- universe, status, batching --------------------------------------------------------------


def test_without_symbols_the_top_n_are_collected(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    collector = CryptoCollector(client, top_n_cryptos=2, lake=lake, batch_size_hours=48)
    report = collector.collect_backward(datetime(2025, 12, 29))

    assert report.ok
    assert set(report.results) == {"BTCUSDT", "ETHUSDT"}  # not USDC / FDUSD (stablecoins)
    for result in report.results.values():
        assert (result.rows_added, result.batches, result.expected_rows) == (
            72,
            1,
            72,
        )  # one month, one write
    status = collector.get_collection_status()
    assert status["total_records_collected"] == duck(lake).height == 144
    assert status["interval"] == "1h" and status["lake"] == str(lake)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        entry = status["symbols"][symbol]
        assert entry["rows"] == 72
        assert entry["first_open_time"] == "2025-12-29T00:00:00Z"
        assert entry["last_open_time"] == "2025-12-31T23:00:00Z"
        assert entry["last_error"] is None and entry["last_run_at"]

    forward = collector.collect_forward()  # no symbols: what the lake holds
    assert set(forward.results) == {"BTCUSDT", "ETHUSDT"} and forward.total_rows_added == 0
    assert forward.to_dict()["total_rows_added"] == 0


def test_batch_size_bounds_each_write_while_requests_are_full_pages(
    fake_exchange: FakeExchange, client: BinanceClient, lake: Path
) -> None:
    events: list[ProgressEvent] = []
    collector = CryptoCollector(client, lake=lake, batch_size_hours=24, on_progress=events.append)
    report = collector.collect_backward("2025-12-22", ["BTC"])

    result = report.results["BTCUSDT"]
    # 240 candles of one month, more than 1.5 x 24: written in ten parts of 24, newest first.
    assert (result.batches, result.rows_added, result.expected_rows) == (10, 240, 240)
    assert result.files_written == 10
    batches = [e for e in events if e.kind == "batch"]
    assert [e.rows for e in batches] == [24] * 10
    assert [e.kind for e in events][0] == "planned" and events[-1].kind == "done"
    # ... but fetched in one request: the one that also finds the symbol's first candle.
    klines = [r.params for r in fake_exchange.stats().log if r.path == "/api/v3/klines"]
    assert klines == [
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": str(to_ms("2025-12-22")), "limit": "1000"}
    ]
    assert_frame_equal(lake_frame(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-22"))


@pytest.mark.parametrize(
    ("interval", "since", "folder", "rows"),
    [("1d", "2024-02-20", "interval=1d", None), ("1M", "2024-01-01", "interval=1mo", 24)],
)
def test_daily_and_monthly_candles_match_the_oracle(
    fake_exchange: FakeExchange,
    client: BinanceClient,
    lake: Path,
    interval: str,
    since: str,
    folder: str,
    rows: int | None,
) -> None:
    collector = CryptoCollector(client, lake=lake, interval=interval, batch_size_hours=24 * 400)
    report = collector.collect_backward(since, ["ETH"])

    assert report.ok
    want = oracle(fake_exchange, "ETHUSDT", since, interval=interval)
    if rows is not None:
        assert want.height == rows
    stored = lake_frame(lake, "ETHUSDT", interval)
    assert_frame_equal(stored, want)
    assert report.results["ETHUSDT"].rows_added == want.height
    grid = Interval(interval)
    assert all(grid.floor(t) == t for t in stored["open_time"].dt.epoch("ms").to_list())
    assert {p.parents[2].name for p in data_files(lake)} == {folder}
    ducked = duck(lake)
    assert set(ducked["interval"]) == {folder.removeprefix("interval=")}
    assert_frame_equal(ducked.select(KLINE_COLUMNS), want)
    assert collector.get_collection_status()["total_records_collected"] == want.height
    assert_files_well_formed(lake)
    assert to_ms(stored["close_time"].max()) < fake_exchange.now_ms() == FAKE_NOW_MS
