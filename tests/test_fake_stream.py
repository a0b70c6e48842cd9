"""The fake exchange's WebSocket kline streams (Binance's shapes, its clock, its faults), read with
the ``websockets`` client over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cryptolake.testing import FakeExchange
from cryptolake.testing.binance_stream import StreamFault
from tests.conftest import FAKE_NOW_MS

MINUTE = 60_000


@pytest.fixture
def fast() -> Iterator[FakeExchange]:
    """The exchange's clock at 60x: a 1m candle closes every real second."""
    with FakeExchange(now=FAKE_NOW_MS - FAKE_NOW_MS % MINUTE, follow_wall_clock=True, clock_speed=60) as fx:
        yield fx


def ws_url(fx: FakeExchange, path: str) -> str:
    return fx.base_url.replace("http://", "ws://") + path


def read_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(json.loads(ws.recv(timeout=max(0.01, end - time.monotonic()))))
        except TimeoutError:
            break
    return out


def rest_kline(fx: FakeExchange, symbol: str, open_ms: int) -> list[Any]:
    params: dict[str, Any] = {"symbol": symbol, "interval": "1m", "startTime": open_ms, "limit": 1}
    return httpx.get(fx.base_url + "/api/v3/klines", params=params).json()[0]


def test_combined_streams_send_open_updates_and_each_closed_candle_once(fast: FakeExchange) -> None:
    with connect(ws_url(fast, "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m")) as ws:
        messages = read_for(ws, 2.6)
    assert {m["stream"] for m in messages} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
    finals = [(m["stream"], m["data"]["k"]["t"]) for m in messages if m["data"]["k"]["x"]]
    start = FAKE_NOW_MS - FAKE_NOW_MS % MINUTE
    for stream in ("btcusdt@kline_1m", "ethusdt@kline_1m"):
        opens = [t for s, t in finals if s == stream]
        assert opens[:2] == [start, start + MINUTE]  # the candle open at connect time closes first
        assert len(opens) == len(set(opens))
    # A final update is the candle REST serves, field for field.
    final = next(m["data"] for m in messages if m["data"]["k"]["x"] and m["data"]["s"] == "BTCUSDT")
    rest = rest_kline(fast, "BTCUSDT", final["k"]["t"])
    k = final["k"]
    assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"]] == rest[
        :11
    ]
    assert final["e"] == "kline" and k["i"] == "1m" and final["E"] >= k["T"]
    # Open updates: not closed, and inside their candle.
    live = [m["data"]["k"] for m in messages if not m["data"]["k"]["x"]]
    assert live and all(
        k["t"] <= m["data"]["E"] <= k["T"]
        for m, k in zip([m for m in messages if not m["data"]["k"]["x"]], live, strict=True)
    )


def test_raw_stream_subscribe_and_list(fast: FakeExchange) -> None:
    with connect(ws_url(fast, "/ws/solusdt@kline_1m")) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["e"] == "kline" and first["s"] == "SOLUSDT"  # raw: the event itself
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["xrpusdt@kline_1s"], "id": 7}))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        replies = [m for m in read_for(ws, 1.0) if "id" in m]
        assert replies == [
            {"result": None, "id": 7},
            {"result": ["solusdt@kline_1m", "xrpusdt@kline_1s"], "id": 8},
        ]
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nope"], "id": 9}))
        error = next(m for m in read_for(ws, 0.5) if m.get("id") == 9)
        assert error["error"]["code"] == 2


def test_faults_drop_shutdown_stall_skip_and_stray(fast: FakeExchange) -> None:
    path = "/stream?streams=btcusdt@kline_1m"
    fast.streams.inject(StreamFault("drop", after_s=0.3))
    with connect(ws_url(fast, path)) as ws, pytest.raises(ConnectionClosed):
        read_for(ws, 3)
    fast.streams.inject(StreamFault("server_shutdown", after_s=0.2, grace_s=0.3))
    with connect(ws_url(fast, path)) as ws:
        seen = []
        with pytest.raises(ConnectionClosed):
            while True:
                seen.append(json.loads(ws.recv(timeout=3)))
        assert any(m.get("e") == "serverShutdown" for m in seen)
    fast.streams.inject(StreamFault("stall", after_s=0.2))
    with connect(ws_url(fast, path)) as ws:
        read_for(ws, 0.4)
        assert read_for(ws, 1.2) == []  # open, but silent
    fast.streams.inject(StreamFault("skip_final"))
    with connect(ws_url(fast, path)) as ws:
        messages = read_for(ws, 2.3)
    finals = [m["data"]["k"]["t"] for m in messages if m["data"]["k"]["x"]]
    start = FAKE_NOW_MS - FAKE_NOW_MS % MINUTE
    assert start not in finals and finals  # the first closing candle's final never came
    fast.streams.inject(StreamFault("unsubscribed"))
    with connect(ws_url(fast, path)) as ws:
        streams = {m["stream"] for m in read_for(ws, 0.5)}
    assert "btcusdt@kline_1m" in streams and len(streams) == 2


def test_connections_end_after_their_lifetime(fast: FakeExchange) -> None:
    fast.streams.lifetime_s = 0.5  # Binance: 24 hours
    began = time.monotonic()
    with connect(ws_url(fast, "/ws/btcusdt@kline_1m")) as ws, pytest.raises(ConnectionClosed):
        read_for(ws, 5)
    assert time.monotonic() - began < 3
