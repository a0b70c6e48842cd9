"""StreamCollector and `cryptolake stream` against the fake exchange's streams (its clock at 60x):
the lake holds exactly the closed candles, across every fault, a SIGKILL at any step, and beside
the scheduler's cron runs."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cryptolake.lake import Lake
from cryptolake.sources.binance import BinanceClient
from cryptolake.streaming import StreamCollector, stream_status
from cryptolake.testing import FakeExchange
from cryptolake.testing.binance_stream import StreamFault
from cryptolake.timeutils import iso
from tests.conftest import FAKE_NOW_MS
from tests.helpers import clean_env, duck, expected_klines, invoke, one_line_error, sigkill_when

MINUTE = 60_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "BNBUSDT"]


@pytest.fixture
def fast() -> Iterator[FakeExchange]:
    with FakeExchange(now=FAKE_NOW_MS - FAKE_NOW_MS % MINUTE, follow_wall_clock=True, clock_speed=60) as fx:
        yield fx


def ws(fx: FakeExchange) -> str:
    return fx.base_url.replace("http://", "ws://")


_CLIENTS: list[BinanceClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def streamer(fx: FakeExchange, lake: Path, symbols: list[str] = SYMBOLS, **options: Any) -> StreamCollector:
    client = BinanceClient(base_url=fx.base_url, ban_file=lake.parent / "bans.json", retry_delay=0.01)
    _CLIENTS.append(client)  # the stream does not own its REST client: closed after the test
    settings: dict[str, Any] = {"flush_s": 0.3, "retry_delay_s": 0.05, **options}
    return StreamCollector(client, lake, symbols, "1m", stream_url=ws(fx), **settings)


def assert_lake_is_the_exchange(
    fx: FakeExchange, lake: Path, symbols: list[str], since_ms: int | None = None
) -> None:
    """Each symbol's stored 1m candles are one per minute, equal to the exchange's, all closed,
    and none twice as plain DuckDB reads the lake."""
    frame = duck(lake).filter(pl.col("interval") == "1m")
    assert frame.height == frame.select("symbol", "open_time").n_unique()  # none twice
    now = fx.now_ms()
    for symbol in symbols:
        mine = frame.filter(pl.col("symbol") == symbol).drop("exchange", "interval", "symbol", "month")
        assert mine.height >= 2, symbol
        opens = mine.get_column("open_time").dt.epoch("ms").to_list()
        first = opens[0] if since_ms is None else since_ms
        assert opens == list(range(first, opens[-1] + MINUTE, MINUTE)), symbol  # no hole
        assert mine.get_column("close_time").dt.epoch("ms").max() < now  # never the open candle
        truth = expected_klines(fx.klines(symbol, "1m", first, opens[-1] + MINUTE))
        assert mine.equals(truth), symbol


def test_many_symbols_store_exactly_the_closed_candles_and_the_connect_repair_fills_the_gap(
    fast: FakeExchange, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    # Collected an hour ago (exchange time): the stream's first connect repairs the hour over REST.
    now = fast.now_ms()
    since = now - now % MINUTE - 90 * MINUTE
    result = invoke("collect", "--lake", lake, "--base-url", fast.base_url, "--symbols", "BTC,ETH",
                    "--interval", "1m", "--since", iso(since), "--until", iso(since + 30 * MINUTE), "--source", "rest")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = streamer(fast, lake).run(duration_s=4)
    assert report.errors == []
    assert report.repairs >= len(SYMBOLS) and report.candles_repaired >= 2 * 55
    assert report.candles_streamed >= len(SYMBOLS) * 3
    assert_lake_is_the_exchange(fast, lake, ["BTCUSDT", "ETHUSDT"], since_ms=since)
    assert_lake_is_the_exchange(fast, lake, SYMBOLS)
    # Compacted at exit: one file per partition, nothing hidden left behind.
    files = sorted(p.name for p in lake.rglob("*") if p.is_file() and "klines" in p.parts)
    partitions = {p.parent for p in (lake / "klines").rglob("*.parquet")}
    assert [f for f in files if f.endswith(".parquet")] == ["data.parquet"] * len(partitions)
    assert len(partitions) == len(SYMBOLS) + 2  # BTC and ETH since December
    assert not [f for f in files if f.endswith((".absorbing", ".tmp"))]


@pytest.mark.parametrize(
    "fault",
    [
        StreamFault("drop", after_s=1.0),
        StreamFault("server_shutdown", after_s=1.0, grace_s=0.5),
        StreamFault("stall", after_s=1.0),
        StreamFault("skip_final", after_s=1.0),
    ],
    ids=lambda f: f.kind,
)
def test_a_fault_loses_nothing(fast: FakeExchange, tmp_path: Path, fault: StreamFault) -> None:
    lake = tmp_path / "lake"
    fast.streams.inject(fault)
    collector = streamer(fast, lake, SYMBOLS[:3], silence_s=0.8)
    report = collector.run(duration_s=5)
    assert report.errors == []
    assert_lake_is_the_exchange(fast, lake, SYMBOLS[:3])
    if fault.kind == "skip_final":
        assert report.candles_repaired >= 1  # the skipped candle, fetched over REST at once
        assert report.reconnects == 0
    else:
        assert report.reconnects >= 1
        assert report.repairs >= 2 * 3  # every (re)connect asks REST for what it missed


def test_the_24_hour_handover_loses_and_duplicates_nothing(fast: FakeExchange, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    fast.streams.lifetime_s = 1.5  # the server's cut (Binance: 24 hours), shortened
    report = streamer(fast, lake, SYMBOLS[:3], lifetime_s=1.0).run(duration_s=5)
    assert report.reconnects >= 2
    assert_lake_is_the_exchange(fast, lake, SYMBOLS[:3])


def test_candles_are_visible_to_plain_duckdb_within_seconds_of_closing(
    fast: FakeExchange, tmp_path: Path
) -> None:
    """While the stream runs, the newest candle plain DuckDB sees closed at most a flush and a
    final update ago (at 60x: 10 s of wall time is 600 s of exchange time)."""
    lake = tmp_path / "lake"
    collector = streamer(fast, lake, SYMBOLS[:2], flush_s=1.0)
    lags = []
    with collector:
        time.sleep(2.5)
        for _ in range(10):
            newest = duck(lake).get_column("close_time").dt.epoch("ms").max()
            lags.append((fast.now_ms() - newest) / 60)  # exchange ms at 60x -> wall ms
            time.sleep(0.3)
    assert max(lags) < 10_000, lags
    status = stream_status(lake)
    assert status is not None and status["running"] is False
    assert all(e["delay_s"] is not None and e["delay_s"] < 10 for e in status["symbols"].values())


def stream_argv(fx: FakeExchange, lake: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cryptolake", "stream", "--lake", str(lake), "--base-url", fx.base_url,
        "--stream-url", ws(fx), "--symbols", "BTC,ETH,SOL,XRP,DOGE,BNB", *extra,
    ]  # fmt: skip


def test_cli_stream_and_status(fast: FakeExchange, tmp_path: Path, cli_env: Path) -> None:
    lake = tmp_path / "lake"
    result = invoke("stream", "--lake", lake, "--base-url", fast.base_url, "--stream-url", ws(fast),
                    "--symbols", "BTC,ETH", "--duration", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stored" in result.output and "candles of 2 symbols" in result.output
    status = invoke("status", "--lake", lake, "--interval", "1m", "--json")
    assert status.exit_code == 0, status.output
    document = json.loads(status.output)["stream"]
    assert (
        document["running"] is False and document["connections"] == 0 and document["connections_wanted"] == 1
    )
    assert set(document["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    assert all(e["last_open_time"] for e in document["symbols"].values())
    text = invoke("status", "--lake", lake, "--interval", "1m")
    assert "stream: stopped" in text.output and "0 of 1 connections open, 2 symbols" in text.output
    assert_lake_is_the_exchange(fast, lake, ["BTCUSDT", "ETHUSDT"])


def test_cli_stream_refuses_bad_input_in_one_line(
    fast: FakeExchange, tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    for args, words in [
        (["--symbols", "BTC", "--top", "3"], "not both"),
        (["--exchange", "coinbase"], "No such option"),
        (["--duration", "0"], "--duration"),
    ]:
        result = invoke("stream", "--lake", lake, "--base-url", fast.base_url, *args)
        assert result.exit_code == 2 and words in one_line_error(result), result.output
    for variable, value, words in [
        ("CRYPTOLAKE_BINANCE_STREAM_URL", "https://example.com", "ws(s) URL"),
        ("CRYPTOLAKE_COLLECTION_EXCHANGE", "coinbase", "streams are Binance's"),
        ("CRYPTOLAKE_STREAM_FLUSH_S", "0", "stream.flush_s"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            result = invoke("stream", "--lake", lake, "--symbols", "BTC")
        assert result.exit_code == 2 and words in one_line_error(result), result.output
    assert not lake.exists()


def _killed_at(lake: Path, fx: FakeExchange, tmp_path: Path, marker: str) -> bool:
    """Run `cryptolake stream` and SIGKILL it once a file ending in ``marker`` is in the lake
    (a compaction between its steps, or a write between temp file and rename); whether it was
    caught there."""
    env_settings = {"CRYPTOLAKE_STREAM_FLUSH_S": "0.2", "CRYPTOLAKE_STREAM_COMPACT_FILES": "2"}
    os.environ.update(env_settings)
    try:

        def ready() -> bool:
            return any(p.name.endswith(marker) for p in (lake / "klines").rglob(".*"))

        sigkill_when(stream_argv(fx, lake), tmp_path, ready, timeout_s=20)
    finally:
        for key in env_settings:
            del os.environ[key]
    return ready()


def test_sigkill_during_a_flush_and_a_compaction_then_a_restart_completes(
    fast: FakeExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.helpers.clean_env", lambda: {**clean_env(), **{
        k: v for k, v in os.environ.items() if k.startswith("CRYPTOLAKE_STREAM_")}})  # fmt: skip
    lake = tmp_path / "lake"
    caught = {".absorbing": 0, ".tmp": 0}
    for marker in [".absorbing", ".tmp", ".absorbing", ".tmp"]:
        caught[marker] += _killed_at(lake, fast, tmp_path, marker)
        frame = duck(lake)  # readable, and no candle twice, before anything repairs it
        assert frame.height == frame.select("symbol", "open_time").n_unique()
    assert caught[".absorbing"] >= 1 and caught[".tmp"] >= 1, caught
    result = invoke("stream", "--lake", lake, "--base-url", fast.base_url, "--stream-url", ws(fast),
                    "--symbols", "BTC,ETH,SOL,XRP,DOGE,BNB", "--duration", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    # (a views file a kill cut short, beside the klines, goes 10 minutes later with the next build)
    assert not [p for p in (lake / "klines").rglob("*") if p.name.endswith((".absorbing", ".tmp"))]
    assert_lake_is_the_exchange(fast, lake, SYMBOLS)


def test_run_with_the_stream_enabled_also_runs_its_cron_jobs(fast: FakeExchange, tmp_path: Path) -> None:
    """`cryptolake run` with stream.enabled: the stream stores 1m candles while the scheduler's
    run (forced at start with --run-now) collects 1h candles of the same symbols."""
    lake = tmp_path / "lake"
    env = {**clean_env(), "CRYPTOLAKE_STREAM_ENABLED": "true", "CRYPTOLAKE_STREAM_FLUSH_S": "0.3",
           "CRYPTOLAKE_BINANCE_STREAM_URL": ws(fast)}  # fmt: skip
    argv = [sys.executable, "-m", "cryptolake", "run", "--lake", str(lake), "--base-url", fast.base_url,
            "--symbols", "BTC,ETH", "--interval", "1h", "--since", "2025-12-30", "--run-now"]  # fmt: skip
    import subprocess

    with open(tmp_path / "run.err", "w") as err:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = stream_status(lake) or {}
            stored_1h = Lake(lake).symbols("1h")
            if status.get("running") and status.get("candles_streamed", 0) >= 6 and stored_1h == [
                "BTCUSDT", "ETHUSDT"]:  # fmt: skip
                break
            time.sleep(0.2)
        child.send_signal(__import__("signal").SIGTERM)
        assert child.wait(timeout=60) == 143, (tmp_path / "run.err").read_text()
    finally:
        if child.poll() is None:
            child.kill()
    assert Lake(lake).symbols("1h") == ["BTCUSDT", "ETHUSDT"], (tmp_path / "run.err").read_text()
    assert Lake(lake).symbols("1m") == ["BTCUSDT", "ETHUSDT"]
    assert_lake_is_the_exchange(fast, lake, ["BTCUSDT", "ETHUSDT"])
    assert stream_status(lake)["running"] is False  # type: ignore[index]


def test_a_failed_rest_repair_is_tried_again_and_fills_the_hole(fast: FakeExchange, tmp_path: Path) -> None:
    """Klines requests all fail while the stream skips a final update: the repair fails, is
    tried again once REST answers, and the lake ends up equal to the exchange."""
    lake = tmp_path / "lake"
    collector = streamer(fast, lake, SYMBOLS[:2], repair_retry_s=0.3)
    collector.client.max_retries = 0
    fast.streams.inject(StreamFault("skip_final", after_s=1.0))
    fast.set_chaos(1.0, kinds=["5xx"])
    with collector:
        time.sleep(3.0)
        assert collector.report.repairs_failed >= 1
        fast.set_chaos(0.0)
        time.sleep(2.5)
    assert collector.report.candles_repaired >= 1
    assert any("REST repair" in e for e in collector.report.errors)
    assert_lake_is_the_exchange(fast, lake, SYMBOLS[:2])


def test_the_stream_refuses_unknown_symbols_a_second_stream_and_a_url_with_a_path(
    fast: FakeExchange, tmp_path: Path, cli_env: Path
) -> None:
    lake = tmp_path / "lake"
    base = [
        "stream",
        "--lake",
        lake,
        "--base-url",
        fast.base_url,
        "--stream-url",
        ws(fast),
        "--duration",
        "2",
    ]
    result = invoke(*base, "--symbols", "NOPE")
    assert (
        result.exit_code == 1
        and "NOPEUSDT" in one_line_error(result)
        and "not listed" in one_line_error(result)
    )
    result = invoke(*base[:-4], "--stream-url", ws(fast) + "/ws", "--symbols", "BTC")
    assert result.exit_code == 2 and "drop '/ws'" in one_line_error(result)
    with streamer(fast, lake, ["BTCUSDT"]):
        result = invoke(*base, "--symbols", "ETH")
        assert result.exit_code == 1 and "another cryptolake stream is running" in one_line_error(result)
    assert "streaming" not in result.output  # refused before it said it started


def test_a_stream_that_never_connects_says_so_and_fails(
    fast: FakeExchange, tmp_path: Path, cli_env: Path
) -> None:
    lake = tmp_path / "lake"
    result = invoke("stream", "--lake", lake, "--base-url", fast.base_url, "--stream-url", "ws://127.0.0.1:9",
                    "--symbols", "BTC", "--duration", "1.5")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: never connected to ws://127.0.0.1:9: ")
    status = stream_status(lake)
    assert status is not None and status["connections"] == 0 and status["last_connection_error"]


def test_newer_candles_wait_for_the_repair_before_them(fast: FakeExchange, tmp_path: Path) -> None:
    """While a symbol's connect repair is not stored, its streamed candles are not written: a
    crash in between would leave a hole behind the last stored candle, which no restart sees."""
    lake = tmp_path / "lake"
    collector = streamer(fast, lake, ["BTCUSDT"], repair_retry_s=0.3)
    collector.client.max_retries = 0
    fast.set_chaos(1.0, kinds=["5xx"])  # the connect repair fails until REST answers again
    with collector:
        time.sleep(2.5)
        assert collector.report.repairs_failed >= 1
        assert not (lake / "klines").exists()  # streamed candles held back, none written
        fast.set_chaos(0.0)
        time.sleep(2.0)
    assert_lake_is_the_exchange(fast, lake, ["BTCUSDT"])
