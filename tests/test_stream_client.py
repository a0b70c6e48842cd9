"""KlineStream against the fake exchange's streams (its clock at 60x): closed candles only, each
once, in order, equal to REST; and across a dropped connection, a ``serverShutdown``, a stall, a
skipped final update and the connection lifetime, every candle is either handed on or named as
missed (for the REST repair), and none twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cryptolake.sources.stream import KlineStream
from cryptolake.testing import FakeExchange
from cryptolake.testing.binance_stream import StreamFault
from tests.conftest import FAKE_NOW_MS

MINUTE = 60_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.fixture
def fast() -> Iterator[FakeExchange]:
    with FakeExchange(now=FAKE_NOW_MS - FAKE_NOW_MS % MINUTE, follow_wall_clock=True, clock_speed=60) as fx:
        yield fx


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.candles: dict[str, list[dict[str, Any]]] = {s: [] for s in SYMBOLS}
        self.missed: list[tuple[str, int, int]] = []
        self.connected = 0

    def candle(self, symbol: str, kline: dict[str, Any]) -> None:
        with self.lock:
            self.candles[symbol].append(kline)

    def miss(self, symbol: str, lo: int, hi: int) -> None:
        with self.lock:
            self.missed.append((symbol, lo, hi))

    def connect(self, symbols: list[str]) -> None:
        with self.lock:
            self.connected += 1


def run_stream(fx: FakeExchange, seconds: float, **options: Any) -> tuple[Recorder, KlineStream]:
    rec = Recorder()
    stream = KlineStream(
        SYMBOLS, "1m", on_candle=rec.candle, on_missed=rec.miss, on_connected=rec.connect,
        stream_url=fx.base_url.replace("http://", "ws://"), retry_delay_s=0.05, **options,
    )  # fmt: skip
    with stream:
        time.sleep(seconds)
    return rec, stream


def covered(rec: Recorder, symbol: str) -> list[int]:
    """Open times handed on or named as missed, sorted, for the symbol."""
    opens = [int(k["t"]) for k in rec.candles[symbol]]
    for s, lo, hi in rec.missed:
        if s == symbol:
            opens.extend(range(lo, hi + 1, MINUTE))
    return sorted(opens)


def assert_nothing_lost(rec: Recorder) -> None:
    for symbol in SYMBOLS:
        opens = covered(rec, symbol)
        assert opens, symbol
        assert opens == list(range(opens[0], opens[-1] + MINUTE, MINUTE)), symbol  # no hole, no repeat


def test_closed_candles_only_each_once_and_equal_to_rest(fast: FakeExchange) -> None:
    rec, stream = run_stream(fast, 3.5)
    assert stream.stats.connections == 1 and rec.missed == []
    for symbol in SYMBOLS:
        klines = rec.candles[symbol]
        assert len(klines) >= 2 and all(k["x"] for k in klines)
        opens = [int(k["t"]) for k in klines]
        assert opens == list(range(opens[0], opens[-1] + MINUTE, MINUTE))
        params: dict[str, Any] = {
            "symbol": symbol,
            "interval": "1m",
            "startTime": opens[0],
            "limit": len(opens),
        }
        rest = httpx.get(fast.base_url + "/api/v3/klines", params=params).json()
        assert [[k["t"], k["o"], k["h"], k["l"], k["c"], k["v"]] for k in klines] == [r[:6] for r in rest]


@pytest.mark.parametrize(
    "fault",
    [
        StreamFault("drop", after_s=1.2),
        StreamFault("server_shutdown", after_s=1.2, grace_s=0.5),
        StreamFault("stall", after_s=1.2),
        StreamFault("skip_final", after_s=1.2),
    ],
    ids=lambda f: f.kind,
)
def test_nothing_is_lost_or_doubled_across_a_fault(fast: FakeExchange, fault: StreamFault) -> None:
    fast.streams.inject(fault)
    rec, stream = run_stream(fast, 5.0, silence_s=0.8)
    assert_nothing_lost(rec)
    if fault.kind == "skip_final":
        assert rec.missed and stream.stats.connections == 1
    else:
        assert stream.stats.reconnects >= 1 and rec.connected >= 2


def test_the_connection_is_replaced_before_its_lifetime_ends(fast: FakeExchange) -> None:
    fast.streams.lifetime_s = 1.5  # the server's cut (Binance: 24 hours)
    rec, stream = run_stream(fast, 5.0, lifetime_s=1.0)  # replaced before it
    assert stream.stats.reconnects >= 2
    assert_nothing_lost(rec)
    assert rec.missed == []  # a handover loses nothing


def test_many_symbols_share_few_connections(fast: FakeExchange) -> None:
    rec = Recorder()
    stream = KlineStream(
        SYMBOLS, "1m", on_candle=rec.candle, stream_url=fast.base_url.replace("http://", "ws://"),
        streams_per_connection=2,
    )  # fmt: skip
    with stream:
        time.sleep(2.2)
    assert stream.stats.connections == 2 and fast.streams.connections == 2
    assert all(rec.candles[s] for s in SYMBOLS)
