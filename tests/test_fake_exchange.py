"""Tests of the fake Binance exchange, over real HTTP (httpx) against a started server."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cryptolake.schema import HOUR_MS, Interval
from cryptolake.testing import (
    DEFAULT_CHAOS_KINDS,
    DEFAULT_NOW_MS,
    RATE_LIMIT_STORM,
    FakeExchange,
    FakeStats,
    FakeSymbol,
    Fault,
    default_symbols,
)
from cryptolake.timeutils import to_ms

KLINES = "/api/v3/klines"
DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")
RESTRICTED_MSG = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
FULL_TICKER_KEYS = [
    "symbol",
    "priceChange",
    "priceChangePercent",
    "weightedAvgPrice",
    "prevClosePrice",
    "lastPrice",
    "lastQty",
    "bidPrice",
    "bidQty",
    "askPrice",
    "askQty",
    "openPrice",
    "highPrice",
    "lowPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
]
MINI_TICKER_KEYS = [
    "symbol",
    "openPrice",
    "highPrice",
    "lowPrice",
    "lastPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
]


class FakeClock:
    """A controllable real-time source for weight windows and bans."""

    def __init__(self, t: float = 60 * 28_333_334 + 10.5) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fx() -> Iterator[FakeExchange]:
    """The default exchange; a frozen real-time clock keeps weight windows from rolling over."""
    with FakeExchange(clock=FakeClock()) as exchange:
        yield exchange


@pytest.fixture
def client(fx: FakeExchange) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fx.base_url, timeout=5) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[tuple[FakeExchange, httpx.Client]]:
    """An exchange with a tiny weight limit (5 per minute) on a fake real-time clock."""
    with (
        FakeExchange(weight_limit=5, clock=clock, ban_s=120) as exchange,
        httpx.Client(base_url=exchange.base_url, timeout=5) as c,
    ):
        yield exchange, c


def klines(
    client: httpx.Client, symbol: str = "BTCUSDT", interval: str = "1h", **params: object
) -> list[list]:
    response = client.get(KLINES, params={"symbol": symbol, "interval": interval, **params})
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: int, msg: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "msg"}
    assert body["code"] == code
    if msg is not None:
        assert body["msg"] == msg


def assert_valid_row(row: list) -> None:
    assert len(row) == 12
    open_t, o, h, lo, c, v, close_t, qv, n, tb, tq, ignore = row
    assert type(open_t) is int and type(close_t) is int and type(n) is int
    for text in (o, h, lo, c, v, qv, tb, tq):
        assert isinstance(text, str) and DECIMAL_8.match(text), text
    assert ignore == "0"
    o, h, lo, c, v, qv, tb, tq = map(float, (o, h, lo, c, v, qv, tb, tq))
    assert 0 < lo <= min(o, c) and max(o, c) <= h
    assert v >= 0 and n >= 0 and 0 <= tb <= v and 0 <= tq <= qv
    if v > 0:
        assert lo * (1 - 1e-9) <= qv / v <= h * (1 + 1e-9)
    else:
        assert qv == 0 and n == 0


# -------------------------------------------------------------------------------------------
# Simple endpoints
# -------------------------------------------------------------------------------------------


def test_ping_and_time(fx: FakeExchange, client: httpx.Client) -> None:
    ping = client.get("/api/v3/ping")
    assert ping.status_code == 200 and ping.json() == {}
    assert ping.headers["content-type"] == "application/json;charset=UTF-8"
    assert ping.headers["x-mbx-used-weight-1m"] == "1"
    server_time = client.get("/api/v3/time")
    assert server_time.json() == {"serverTime": DEFAULT_NOW_MS}
    assert server_time.headers["x-mbx-used-weight-1m"] == "2"
    assert fx.now_ms() == to_ms("2026-01-01T00:30:00Z")


def test_exchange_info_shape(client: httpx.Client) -> None:
    info = client.get("/api/v3/exchangeInfo")
    assert info.headers["x-mbx-used-weight-1m"] == "20"
    data = info.json()
    assert data["timezone"] == "UTC"
    assert data["serverTime"] == DEFAULT_NOW_MS
    assert data["exchangeFilters"] == []
    assert data["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
    ]
    symbols = {s["symbol"]: s for s in data["symbols"]}
    assert len(symbols) == len(default_symbols())
    btc = symbols["BTCUSDT"]
    for key in (
        "symbol",
        "status",
        "baseAsset",
        "baseAssetPrecision",
        "quoteAsset",
        "quotePrecision",
        "quoteAssetPrecision",
        "orderTypes",
        "icebergAllowed",
        "ocoAllowed",
        "isSpotTradingAllowed",
        "isMarginTradingAllowed",
        "filters",
        "permissions",
        "permissionSets",
    ):
        assert key in btc
    assert btc["status"] == "TRADING" and btc["baseAsset"] == "BTC" and btc["quoteAsset"] == "USDT"
    assert btc["baseAssetPrecision"] == btc["quotePrecision"] == btc["quoteAssetPrecision"] == 8
    assert btc["permissions"] == [] and btc["permissionSets"] == [["SPOT"]]
    assert [f["filterType"] for f in btc["filters"]] == ["PRICE_FILTER", "LOT_SIZE"]
    assert symbols["LUNAUSDT"]["status"] == "BREAK"
    assert symbols["BTCUPUSDT"]["status"] == "BREAK"
    assert symbols["USDCUSDT"]["status"] == "TRADING"
    assert symbols["ETHBTC"]["quoteAsset"] == "BTC"
    assert symbols["币安人生USDT"]["baseAsset"] == "币安人生"


def test_exchange_info_filters(client: httpx.Client) -> None:
    one = client.get("/api/v3/exchangeInfo", params={"symbol": "币安人生USDT"}).json()
    assert [s["symbol"] for s in one["symbols"]] == ["币安人生USDT"]
    several = client.get("/api/v3/exchangeInfo", params={"symbols": '["ETHBTC","BTCUSDT"]'}).json()
    assert [s["symbol"] for s in several["symbols"]] == ["ETHBTC", "BTCUSDT"]
    broken = client.get("/api/v3/exchangeInfo", params={"symbolStatus": "BREAK"}).json()
    assert sorted(s["symbol"] for s in broken["symbols"]) == ["BTCUPUSDT", "LUNAUSDT"]
    assert_error(
        client.get("/api/v3/exchangeInfo", params={"symbol": "NOPEUSDT"}), 400, -1121, "Invalid symbol."
    )
    assert_error(client.get("/api/v3/exchangeInfo", params={"symbols": '["NOPE"]'}), 400, -1121)
    assert_error(client.get("/api/v3/exchangeInfo", params={"symbols": "BTCUSDT"}), 400, -1100)


@pytest.mark.parametrize(
    ("window_s", "header", "interval", "num"),
    [
        (10, "x-mbx-used-weight-10s", "SECOND", 10),
        (60, "x-mbx-used-weight-1m", "MINUTE", 1),
        (120, "x-mbx-used-weight-2m", "MINUTE", 2),
    ],
)
def test_weight_header_follows_window(window_s: int, header: str, interval: str, num: int) -> None:
    with (
        FakeExchange(weight_window_s=window_s, weight_limit=1234, clock=FakeClock()) as fx,
        httpx.Client(base_url=fx.base_url) as c,
    ):
        response = c.get("/api/v3/exchangeInfo")
        assert response.headers[header] == "20"
        limit = response.json()["rateLimits"][0]
        assert limit == {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": interval,
            "intervalNum": num,
            "limit": 1234,
        }
        bad = c.get(KLINES, params={"symbol": "NOPE", "interval": "1h"})
        assert bad.headers[header] == "22"  # errors carry the header and still cost weight


# -------------------------------------------------------------------------------------------
# ticker/24hr
# -------------------------------------------------------------------------------------------


def test_ticker_shapes_and_weights(client: httpx.Client) -> None:
    every = client.get("/api/v3/ticker/24hr")
    assert every.headers["x-mbx-used-weight-1m"] == "80"
    tickers = every.json()
    assert isinstance(tickers, list) and len(tickers) == len(default_symbols())
    for ticker in tickers:
        assert list(ticker) == FULL_TICKER_KEYS
        assert ticker["openTime"] == DEFAULT_NOW_MS - 24 * HOUR_MS
        assert ticker["closeTime"] == DEFAULT_NOW_MS
        for key in FULL_TICKER_KEYS[1:16]:
            assert isinstance(ticker[key], str)
        assert float(ticker["lowPrice"]) <= float(ticker["lastPrice"]) <= float(ticker["highPrice"])
    single = client.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})
    assert single.headers["x-mbx-used-weight-1m"] == "82"
    assert isinstance(single.json(), dict) and single.json()["symbol"] == "BTCUSDT"
    assert single.json() == next(t for t in tickers if t["symbol"] == "BTCUSDT")
    some = client.get("/api/v3/ticker/24hr", params={"symbols": '["ETHUSDT","BTCUSDT"]'})
    assert some.headers["x-mbx-used-weight-1m"] == "84"
    assert [t["symbol"] for t in some.json()] == ["ETHUSDT", "BTCUSDT"]
    mini = client.get("/api/v3/ticker/24hr", params={"symbol": "ETHUSDT", "type": "MINI"}).json()
    assert list(mini) == MINI_TICKER_KEYS
    assert_error(client.get("/api/v3/ticker/24hr", params={"symbol": "NOPE"}), 400, -1121)


def test_ticker_ranking_and_delisted(client: httpx.Client) -> None:
    tickers = {t["symbol"]: t for t in client.get("/api/v3/ticker/24hr").json()}
    ranked = sorted(tickers.values(), key=lambda t: float(t["quoteVolume"]), reverse=True)
    assert [t["symbol"] for t in ranked[:4]] == ["BTCUSDT", "USDCUSDT", "FDUSDUSDT", "ETHUSDT"]
    volumes = [float(t["quoteVolume"]) for t in ranked if float(t["quoteVolume"]) > 0]
    assert len(set(volumes)) == len(volumes) == len(tickers) - 2
    for name in ("LUNAUSDT", "BTCUPUSDT"):
        dead = tickers[name]
        assert float(dead["volume"]) == 0 and dead["count"] == 0
        assert dead["firstId"] == dead["lastId"] == -1
    assert 0.99 < float(tickers["USDCUSDT"]["lastPrice"]) < 1.01


def test_ticker_is_deterministic_and_rolls(fx: FakeExchange, client: httpx.Client) -> None:
    first = client.get("/api/v3/ticker/24hr", params={"symbol": "SOLUSDT"}).json()
    assert client.get("/api/v3/ticker/24hr", params={"symbol": "SOLUSDT"}).json() == first
    fx.advance(timedelta(hours=1))
    later = client.get("/api/v3/ticker/24hr", params={"symbol": "SOLUSDT"}).json()
    assert later["closeTime"] == first["closeTime"] + HOUR_MS and later != first


# -------------------------------------------------------------------------------------------
# Klines: values
# -------------------------------------------------------------------------------------------


def test_kline_fields_and_ohlc_validity(client: httpx.Client) -> None:
    for symbol, interval in [
        ("BTCUSDT", "1m"),
        ("DOGEUSDT", "1h"),
        ("USDCUSDT", "1d"),
        ("ETHBTC", "1w"),
        ("币安人生USDT", "15m"),
        ("SOLUSDT", "1s"),
    ]:
        rows = klines(client, symbol, interval, limit=1000)
        assert rows
        iv = Interval(interval)
        for row in rows:
            assert_valid_row(row)
            assert row[6] == iv.close_time(row[0])
        for prev, nxt in zip(rows, rows[1:], strict=False):
            assert nxt[0] == Interval(interval).next_open(prev[0])
            assert prev[4] == nxt[1]  # close == next open


def test_monthly_candles_chain(client: httpx.Client) -> None:
    rows = klines(client, "BTCUSDT", "1M", startTime=0, limit=1000)
    assert rows[0][0] == to_ms("2017-08-01")
    assert rows[-1][0] == to_ms("2026-01-01")
    assert len(rows) == 102
    for prev, nxt in zip(rows, rows[1:], strict=False):
        assert prev[4] == nxt[1] and prev[6] + 1 == nxt[0]


def test_candles_are_deterministic_across_servers(client: httpx.Client) -> None:
    params = {"symbol": "ETHUSDT", "interval": "5m", "startTime": to_ms("2021-05-19"), "limit": 1000}
    body = client.get(KLINES, params=params).content
    alone = [
        FakeSymbol("ETHUSDT", "ETH", "USDT", to_ms("2017-08-17T04:00Z"), base_price=2000.0, volume_scale=23.0)
    ]
    with FakeExchange(symbols=alone) as other, httpx.Client(base_url=other.base_url) as c2:
        assert c2.get(KLINES, params=params).content == body
    assert client.get(KLINES, params=params).content == body


def test_btc_price_level(client: httpx.Client) -> None:
    closes = [float(r[4]) for r in klines(client, "BTCUSDT", "1w", startTime=0, limit=1000)]
    assert min(closes) > 10_000 and max(closes) < 80_000
    assert sum(closes) / len(closes) == pytest.approx(30_000, rel=0.25)


def test_listing_candle(client: httpx.Client) -> None:
    assert klines(client, "BTCUSDT", "1h", startTime=0, limit=1)[0][0] == to_ms("2017-08-17T04:00Z")
    assert klines(client, "BTCUSDT", "1d", startTime=0, limit=1)[0][0] == to_ms("2017-08-17")
    assert klines(client, "NEWUSDT", "1h", startTime=0, limit=1)[0][0] == to_ms("2025-06-15T10:00Z")
    assert klines(client, "NEWUSDT", "1w", startTime=0, limit=1)[0][0] == to_ms("2025-06-09")
    assert klines(client, "NEWUSDT", "1M", startTime=0, limit=1)[0][0] == to_ms("2025-06-01")
    before = klines(client, "NEWUSDT", "1h", endTime=to_ms("2025-06-15T09:59:59Z"))
    assert before == []


def test_delisted_symbol_ends_at_delisting(fx: FakeExchange, client: httpx.Client) -> None:
    delisted = to_ms("2022-05-13")
    last_1h = klines(client, "LUNAUSDT", "1h", limit=3)
    assert last_1h[-1][0] == delisted - HOUR_MS
    assert klines(client, "LUNAUSDT", "1d", limit=1)[0][0] == delisted - 24 * HOUR_MS
    assert klines(client, "LUNAUSDT", "1h", startTime=delisted) == []
    assert fx.klines("LUNAUSDT", "1h", delisted - 5 * HOUR_MS, DEFAULT_NOW_MS)[-1][0] == delisted - HOUR_MS
    # the monthly candle containing the delisting is final (closed) and stops early
    may = klines(client, "LUNAUSDT", "1M", limit=1)[0]
    assert may[0] == to_ms("2022-05-01") and may[6] < DEFAULT_NOW_MS
    # before the delisting date the symbol trades normally
    fx.set_now(to_ms("2022-05-01"))
    info = client.get("/api/v3/exchangeInfo", params={"symbol": "LUNAUSDT"}).json()
    assert info["symbols"][0]["status"] == "TRADING"


def test_outage_removes_short_candles_only(fx: FakeExchange, client: httpx.Client) -> None:
    day = to_ms("2024-03-12")
    hours = [r[0] for r in klines(client, "BTCUSDT", "1h", startTime=day, limit=8)]
    assert [(t - day) // HOUR_MS for t in hours] == [0, 1, 2, 3, 9, 10, 11, 12]
    two_hours = [(r[0] - day) // HOUR_MS for r in klines(client, "BTCUSDT", "2h", startTime=day, limit=4)]
    assert two_hours == [0, 2, 8, 10]
    backwards = klines(client, "ETHUSDT", "1h", endTime=day + 9 * HOUR_MS, limit=3)
    assert [(r[0] - day) // HOUR_MS for r in backwards] == [2, 3, 9]
    assert klines(client, "BTCUSDT", "1d", startTime=day, limit=1)[0][0] == day
    assert klines(client, "BTCUSDT", "4h", startTime=day + 4 * HOUR_MS, limit=1)[0][0] == day + 8 * HOUR_MS
    oracle = fx.klines("BTCUSDT", "1h", day, day + 13 * HOUR_MS)
    assert oracle == klines(client, "BTCUSDT", "1h", startTime=day, endTime=day + 13 * HOUR_MS - 1)
    assert len(oracle) == 8


def test_custom_outages_and_no_outages() -> None:
    with FakeExchange(outages=[]) as fx:
        day = to_ms("2024-03-12")
        assert len(fx.klines("BTCUSDT", "1h", day, day + 24 * HOUR_MS)) == 24
    with FakeExchange(outages=[(to_ms("2020-01-01"), to_ms("2020-01-03"))]) as fx:
        days = fx.klines("BTCUSDT", "1d", to_ms("2019-12-31"), to_ms("2020-01-05"))
        assert [r[0] for r in days] == [to_ms("2019-12-31"), to_ms("2020-01-03"), to_ms("2020-01-04")]


def test_open_candle_is_last_row(fx: FakeExchange, client: httpx.Client) -> None:
    rows = klines(client, "BTCUSDT", "1h", limit=5)
    server_time = client.get("/api/v3/time").json()["serverTime"]
    last = rows[-1]
    assert last[0] == to_ms("2026-01-01T00:00Z") and last[6] > server_time
    assert all(r[6] < server_time for r in rows[:-1])
    assert_valid_row(last)
    closed = fx.klines("BTCUSDT", "1h", rows[0][0], server_time + 1)
    assert closed == rows[:-1]
    assert fx.klines("BTCUSDT", "1h", rows[0][0], server_time + 1, closed_only=False) == rows
    # half-way through the hour the open candle has half of its final quote volume
    fx.advance(timedelta(minutes=30))
    final = klines(client, "BTCUSDT", "1h", startTime=last[0], limit=1)[0]
    assert final[1] == last[1] and final[6] == last[6]
    assert float(last[7]) == pytest.approx(float(final[7]) / 2, rel=1e-6)
    assert last[8] <= final[8]
    assert fx.klines("BTCUSDT", "1h", last[0], last[0] + 1) == [final]


def test_set_now_and_advance(fx: FakeExchange, client: httpx.Client) -> None:
    fx.set_now(datetime(2024, 1, 1, 12, 15, tzinfo=UTC))
    assert client.get("/api/v3/time").json()["serverTime"] == to_ms("2024-01-01T12:15Z")
    assert klines(client, "ETHUSDT", "1h", limit=1)[0][0] == to_ms("2024-01-01T12:00Z")
    fx.advance(45 * 60_000)
    assert fx.now_ms() == to_ms("2024-01-01T13:00Z")
    assert klines(client, "ETHUSDT", "1h", limit=1)[0][0] == to_ms("2024-01-01T13:00Z")
    fx.advance(timedelta(days=1))
    assert fx.now_ms() == to_ms("2024-01-02T13:00Z")
    # before a listing the symbol does not exist yet
    fx.set_now(to_ms("2025-06-01"))
    assert_error(client.get(KLINES, params={"symbol": "NEWUSDT", "interval": "1h"}), 400, -1121)
    names = [t["symbol"] for t in client.get("/api/v3/ticker/24hr").json()]
    assert "NEWUSDT" not in names and "币安人生USDT" not in names


def test_follow_wall_clock() -> None:
    with FakeExchange(now=to_ms("2024-01-01"), follow_wall_clock=True) as fx:
        time.sleep(0.05)
        assert to_ms("2024-01-01") + 40 <= fx.now_ms() < to_ms("2024-01-01") + 5_000


# -------------------------------------------------------------------------------------------
# Klines: selection and errors
# -------------------------------------------------------------------------------------------


def test_selection_rules(fx: FakeExchange, client: httpx.Client) -> None:
    start = to_ms("2023-01-01")
    first = klines(client, "BTCUSDT", "1h", startTime=start + 1, limit=3)
    assert [r[0] for r in first] == [start + HOUR_MS * k for k in (1, 2, 3)]
    last = klines(client, "BTCUSDT", "1h", endTime=start, limit=3)
    assert [r[0] for r in last] == [start - HOUR_MS * k for k in (2, 1, 0)]
    both = klines(client, "BTCUSDT", "1h", startTime=start, endTime=start + 10 * HOUR_MS, limit=4)
    assert [r[0] for r in both] == [start + HOUR_MS * k for k in range(4)]
    capped = klines(client, "BTCUSDT", "1h", startTime=start, endTime=start + 2 * HOUR_MS)
    assert len(capped) == 3  # endTime is inclusive (by open time)
    newest = klines(client, "BTCUSDT", "1h", limit=2)
    assert [r[0] for r in newest] == [to_ms("2025-12-31T23:00Z"), to_ms("2026-01-01T00:00Z")]
    assert len(klines(client, "BTCUSDT", "1m")) == 500
    thousand = klines(client, "BTCUSDT", "1m", startTime=start, limit=1000)
    assert len(thousand) == 1000 and thousand[-1][0] == start + 999 * 60_000
    assert thousand == fx.klines("BTCUSDT", "1m", start, start + 1000 * 60_000)
    assert klines(client, "BTCUSDT", "1h", startTime=to_ms("2030-01-01")) == []
    ui = client.get(
        "/api/v3/uiKlines", params={"symbol": "BTCUSDT", "interval": "1h", "startTime": start, "limit": 3}
    )
    assert ui.json() == first[:0] + klines(client, "BTCUSDT", "1h", startTime=start, limit=3)
    assert klines(client, "BTCUSDT", "1h", startTime=start, limit=1, timeZone="0") == klines(
        client, "BTCUSDT", "1h", startTime=start, limit=1
    )


def test_paging_covers_everything_once(fx: FakeExchange, client: httpx.Client) -> None:
    start, end = to_ms("2024-03-01"), to_ms("2024-04-01")
    got: list[list] = []
    cursor = start
    while True:
        page = klines(client, "XRPUSDT", "15m", startTime=cursor, endTime=end - 1, limit=1000)
        got += page
        if len(page) < 1000:
            break
        cursor = Interval("15m").next_open(page[-1][0])
    assert got == fx.klines("XRPUSDT", "15m", start, end)
    assert len(got) == 31 * 96 - 5 * 4  # minus the 5-hour outage


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        (
            {"interval": "1h"},
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        ({"symbol": "", "interval": "1h"}, -1102, None),
        (
            {"symbol": "BTCUSDT"},
            -1102,
            "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
        ),
        ({"symbol": "BTCUSDT", "interval": "1H"}, -1120, "Invalid interval."),
        ({"symbol": "BTCUSDT", "interval": "2d"}, -1120, "Invalid interval."),
        ({"symbol": "NOPEUSDT", "interval": "1h"}, -1121, "Invalid symbol."),
        ({"symbol": "btcusdt", "interval": "1h"}, -1121, "Invalid symbol."),
        (
            {"symbol": "BTCUSDT", "interval": "1h", "startTime": 10, "endTime": 5},
            -1023,
            "Start time is greater than end time.",
        ),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "abc"}, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "endTime": "1.5"}, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "ten"}, -1100, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": 1001}, -1130, "Invalid data sent for a parameter."),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": 0}, -1130, None),
        ({"symbol": "BTCUSDT", "interval": "1h", "timeZone": "8"}, -1130, None),
    ],
)
def test_kline_errors(client: httpx.Client, params: dict, code: int, msg: str | None) -> None:
    response = client.get(KLINES, params=params)
    assert_error(response, 400, code, msg)
    assert response.headers["x-mbx-used-weight-1m"] == "2"
    if code == -1100:
        assert response.json()["msg"].startswith("Illegal characters found in parameter '")


def test_monthly_interval_is_case_sensitive(client: httpx.Client) -> None:
    month = klines(client, "BTCUSDT", "1M", limit=1)[0]
    minute = klines(client, "BTCUSDT", "1m", limit=1)[0]
    assert month[0] == to_ms("2026-01-01") and minute[0] == to_ms("2026-01-01T00:30Z")


def test_microsecond_time_unit(fx: FakeExchange, client: httpx.Client) -> None:
    micro = {"X-MBX-TIME-UNIT": "MICROSECOND"}
    assert client.get("/api/v3/time", headers=micro).json() == {"serverTime": DEFAULT_NOW_MS * 1000}
    start = to_ms("2025-01-01")
    rows_us = client.get(
        KLINES,
        headers=micro,
        params={"symbol": "BTCUSDT", "interval": "1h", "startTime": start * 1000 + 1, "limit": 2},
    ).json()
    rows_ms = klines(client, "BTCUSDT", "1h", startTime=start + 1, limit=2)
    assert [r[0] for r in rows_us] == [(start + HOUR_MS) * 1000, (start + 2 * HOUR_MS) * 1000]
    assert rows_us[0][6] == (start + 2 * HOUR_MS) * 1000 - 1 and str(rows_us[0][6]).endswith("999999")
    assert [r[1:6] for r in rows_us] == [r[1:6] for r in rows_ms]
    info = client.get("/api/v3/exchangeInfo", headers=micro, params={"symbol": "BTCUSDT"}).json()
    assert info["serverTime"] == DEFAULT_NOW_MS * 1000
    ticker = client.get("/api/v3/ticker/24hr", headers=micro, params={"symbol": "BTCUSDT"}).json()
    assert ticker["closeTime"] == DEFAULT_NOW_MS * 1000


# -------------------------------------------------------------------------------------------
# Weight, 429, 418
# -------------------------------------------------------------------------------------------


def test_rate_limit_then_ban(limited: tuple[FakeExchange, httpx.Client], clock: FakeClock) -> None:
    fx, c = limited
    for used in range(1, 6):
        assert c.get("/api/v3/ping").headers["x-mbx-used-weight-1m"] == str(used)
    over = c.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h"})
    assert_error(
        over,
        429,
        -1003,
        "Too much request weight used; current limit is 5 request "
        "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
        "polling the API.",
    )
    assert over.headers["retry-after"] == "50"  # the window ends 49.5 s later
    assert over.headers["x-mbx-used-weight-1m"] == "5"  # weight not added
    clock.t += 1
    banned = c.get("/api/v3/ping")  # within Retry-After: banned
    assert_error(banned, 418, -1003)
    assert banned.headers["retry-after"] == "120"
    until = int((clock.t + 120) * 1000)
    assert banned.json()["msg"] == (
        f"Way too much request weight used; IP banned until {until}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )
    clock.t += 20
    still = c.get("/api/v3/time")
    assert still.status_code == 418 and still.headers["retry-after"] == "100"
    clock.t += 100
    ok = c.get("/api/v3/ping")
    assert ok.status_code == 200 and ok.headers["x-mbx-used-weight-1m"] == "1"
    # a second offence doubles the ban
    for _ in range(4):
        c.get("/api/v3/ping")
    assert c.get("/api/v3/ping").status_code == 429
    second = c.get("/api/v3/ping")
    assert second.status_code == 418 and second.headers["retry-after"] == "240"
    stats = fx.stats()
    assert stats.rate_limited == 2 and stats.banned == 3
    assert stats.by_status == {200: 10, 429: 2, 418: 3}
    assert stats.max_window_weight == 5
    assert [w for _, w in stats.window_weights] == [5, 5]
    assert all(start % 60 == 0 for start, _ in stats.window_weights)


def test_ban_is_capped_at_three_days(clock: FakeClock) -> None:
    with (
        FakeExchange(weight_limit=1, clock=clock, ban_s=100_000) as fx,
        httpx.Client(base_url=fx.base_url) as c,
    ):
        lengths = []
        for _ in range(3):
            c.get("/api/v3/ping")
            assert c.get("/api/v3/ping").status_code == 429
            ban = c.get("/api/v3/ping")
            lengths.append(int(ban.headers["retry-after"]))
            clock.t += lengths[-1] + 1
        assert lengths == [100_000, 200_000, 259_200]


def test_weight_resets_each_window_in_real_time() -> None:
    with (
        FakeExchange(weight_limit=2, weight_window_s=1, ban_s=1) as fx,
        httpx.Client(base_url=fx.base_url) as c,
    ):
        for _ in range(20):  # a window boundary may pass between requests: keep going
            response = c.get("/api/v3/ping")
            if response.status_code == 429:
                break
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert "x-mbx-used-weight-1s" in response.headers
        banned = c.get("/api/v3/ping")
        assert banned.status_code == 418 and banned.headers["retry-after"] == "1"
        time.sleep(1.05)
        assert c.get("/api/v3/ping").status_code == 200


def test_concurrent_weight_accounting(fx: FakeExchange) -> None:
    def worker() -> None:
        with httpx.Client(base_url=fx.base_url) as c:
            for _ in range(25):
                assert (
                    c.get(KLINES, params={"symbol": "ETHUSDT", "interval": "1m", "limit": 10}).status_code
                    == 200
                )

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = fx.stats()
    assert stats.requests == 100 and stats.by_path == {KLINES: 100}
    assert sum(w for _, w in stats.window_weights) == 200


# -------------------------------------------------------------------------------------------
# Faults, restriction, control
# -------------------------------------------------------------------------------------------


def test_fault_status(fx: FakeExchange, client: httpx.Client) -> None:
    fx.inject(Fault.http(400, code=-1121, msg="Invalid symbol.", path=KLINES))
    assert client.get("/api/v3/ping").status_code == 200  # the fault is for klines only
    assert_error(
        client.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h"}), 400, -1121, "Invalid symbol."
    )
    fx.inject(Fault.http(503, times=2))
    down = client.get("/api/v3/ping")
    assert_error(down, 503, -1000, "An unknown error occurred while processing the request.")
    assert down.headers["x-mbx-used-weight-1m"] == "4"  # status faults cost weight
    assert client.get("/api/v3/time").status_code == 503
    assert client.get("/api/v3/time").status_code == 200


def test_fault_order(fx: FakeExchange, client: httpx.Client) -> None:
    fx.inject(Fault.http(500), Fault.http(502))
    assert [client.get("/api/v3/ping").status_code for _ in range(3)] == [500, 502, 200]


def test_fault_drop(fx: FakeExchange, client: httpx.Client) -> None:
    fx.inject(Fault.drop(path="/api/v3/time"))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get("/api/v3/time")
    assert client.get("/api/v3/time").status_code == 200
    stats = fx.stats()
    assert stats.by_status == {0: 1, 200: 1} and stats.log[0].weight == 0


def test_fault_malformed(fx: FakeExchange, client: httpx.Client) -> None:
    fx.inject(Fault.malformed(path=KLINES))
    params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 10}
    broken = client.get(KLINES, params=params)
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)
    whole = client.get(KLINES, params=params).content
    assert whole.startswith(broken.content) and len(broken.content) == len(whole) // 2


def test_fault_slow(fx: FakeExchange, client: httpx.Client) -> None:
    fx.inject(Fault.slow(0.3))
    began = time.perf_counter()
    assert client.get("/api/v3/ping").json() == {}
    assert time.perf_counter() - began >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        fx.inject(Fault.slow(0.3))
        client.get("/api/v3/ping", timeout=0.1)


def test_fault_rate_limit_arms_ban(limited: tuple[FakeExchange, httpx.Client], clock: FakeClock) -> None:
    fx, c = limited
    fx.inject(Fault.rate_limit(retry_after_s=7))
    limited_reply = c.get("/api/v3/ping")
    assert_error(limited_reply, 429, -1003)
    assert limited_reply.headers["retry-after"] == "7"
    clock.t += 7  # waiting Retry-After is enough
    assert c.get("/api/v3/ping").status_code == 200
    fx.inject(Fault.rate_limit(retry_after_s=3))
    assert c.get("/api/v3/ping").status_code == 429
    clock.t += 1
    assert c.get("/api/v3/ping").status_code == 418  # did not wait: banned


def test_fault_ban(limited: tuple[FakeExchange, httpx.Client], clock: FakeClock) -> None:
    fx, c = limited
    fx.inject(Fault.ban(retry_after_s=3, path=KLINES))
    assert c.get("/api/v3/ping").status_code == 200
    ban = c.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h"})
    assert_error(ban, 418, -1003)
    assert ban.headers["retry-after"] == "3"
    clock.t += 1
    assert c.get("/api/v3/ping").headers["retry-after"] == "2"
    clock.t += 2
    assert c.get("/api/v3/ping").status_code == 200
    assert fx.stats().banned == 2


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault.http(500, times=0)


def test_restricted(fx: FakeExchange, client: httpx.Client) -> None:
    fx.set_restricted(True)
    for path in ("/api/v3/ping", KLINES):
        response = client.get(path, params={"symbol": "BTCUSDT", "interval": "1h"})
        assert_error(response, 451, 0, RESTRICTED_MSG)
        assert response.headers["x-mbx-used-weight-1m"] == "0"
    fx.set_restricted(False)
    assert client.get("/api/v3/ping").status_code == 200
    fx.set_restricted(True)
    fx.reset()
    assert client.get("/api/v3/ping").status_code == 200


def test_unknown_api_path(client: httpx.Client) -> None:
    response = client.get("/api/v3/depth")
    assert response.status_code == 404 and response.json()["code"] == -1000


def test_latency(fx: FakeExchange, client: httpx.Client) -> None:
    fx.set_latency(0.15)
    began = time.perf_counter()
    client.get("/api/v3/ping")
    assert time.perf_counter() - began >= 0.15
    fx.set_latency(0)


def test_stats_and_reset(fx: FakeExchange, client: httpx.Client) -> None:
    client.get("/api/v3/ping")
    client.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h", "limit": 1})
    client.get(KLINES, params={"symbol": "NOPE", "interval": "1h"})
    stats = fx.stats()
    assert stats.requests == 3
    assert stats.by_path == {"/api/v3/ping": 1, KLINES: 2}
    assert stats.by_status == {200: 2, 400: 1}
    assert [(r.status, r.weight, r.used_weight) for r in stats.log] == [(200, 1, 1), (200, 2, 3), (400, 2, 5)]
    assert stats.log[1].params == {"symbol": "BTCUSDT", "interval": "1h", "limit": "1"}
    assert stats.max_window_weight == 5 and stats.window_weights == [(60 * 28_333_334, 5)]
    assert FakeStats.from_json(stats.to_json(include_log=True)) == stats
    fx.inject(Fault.http(500))
    fx.reset()
    assert fx.stats() == FakeStats()
    assert client.get("/api/v3/ping").headers["x-mbx-used-weight-1m"] == "1"


def test_control_endpoints(fx: FakeExchange, client: httpx.Client) -> None:
    assert client.post("/fake/now", params={"ms": to_ms("2024-01-01")}).json()["now"] == to_ms("2024-01-01")
    client.post("/fake/advance", params={"ms": 60_000})
    assert client.get("/api/v3/time").json()["serverTime"] == to_ms("2024-01-01T00:01Z")
    faults = [
        {"kind": "status", "status": 502},
        {"kind": "rate_limit", "retry_after_s": 1, "path": "/api/v3/time"},
    ]
    assert client.post("/fake/faults", json=faults).status_code == 200
    assert client.get("/api/v3/ping").status_code == 502
    assert client.post("/fake/faults", json=[{"kind": "bogus"}]).status_code == 400
    client.post("/fake/restricted", params={"on": 1})
    assert client.get("/api/v3/ping").status_code == 451
    client.post("/fake/restricted", params={"on": 0})
    client.post("/fake/latency", params={"s": 0.1})
    began = time.perf_counter()
    client.get("/api/v3/ping")
    assert time.perf_counter() - began >= 0.1
    client.post("/fake/latency", params={"s": 0})
    summary = client.get("/fake/stats").json()
    assert "log" not in summary
    assert summary["requests"] == 4 and summary["by_status"] == {"200": 2, "502": 1, "451": 1}
    logged = client.get("/fake/stats", params={"log": 1}).json()
    assert [r["path"] for r in logged["log"]] == ["/api/v3/time"] + ["/api/v3/ping"] * 3
    assert client.post("/fake/reset").status_code == 200
    assert client.get("/fake/stats").json()["requests"] == 0
    assert client.get("/api/v3/time").status_code == 200  # reset dropped the queued 429
    assert client.post("/fake/nothing").status_code == 404


# -------------------------------------------------------------------------------------------
# Chaos (random faults) and rate-limit storms
# -------------------------------------------------------------------------------------------

CHAOS_5XX = {
    500: (-1001, "Internal error; unable to process your request. Please try again."),
    502: (-1000, "An unknown error occurred while processing the request."),
    503: (-1000, "Service Unavailable."),
    504: (-1000, "An unknown error occurred while processing the request."),
}
TIMEOUT_MSG = (
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
)
BUSY_MSG = "Server is currently overloaded with other requests. Please try again in a few minutes."


def chaos_params(count: int) -> list[dict[str, object]]:
    """``count`` different small klines requests."""
    names = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    start = to_ms("2025-01-01")
    return [
        {"symbol": names[i % 3], "interval": "1h", "startTime": start + 7 * i * HOUR_MS, "limit": 3}
        for i in range(count)
    ]


def chaos_get(c: httpx.Client, params: dict[str, object]) -> tuple[str, httpx.Response | None]:
    """Send one klines request and classify the answer by its shape: ``ok``, a chaos kind of
    ``DEFAULT_CHAOS_KINDS`` (asserting its exact status and body), or a failed assertion."""
    try:
        response = c.get(KLINES, params=params)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return "drop", None
    if response.status_code == 200:
        try:
            json.loads(response.content)
        except ValueError:
            return "malformed", response
        return "ok", response
    body = response.json()
    assert set(body) == {"code", "msg"} and "retry-after" not in response.headers
    pair = (response.status_code, body["code"])
    if pair == (504, -1007):
        assert body["msg"] == TIMEOUT_MSG
        return "timeout", response
    if pair == (503, -1008):
        assert body["msg"] == BUSY_MSG
        return "busy", response
    assert CHAOS_5XX[response.status_code] == (body["code"], body["msg"]), response.text
    return "5xx", response


def chaos_outcomes(c: httpx.Client, count: int) -> list[tuple[str, int]]:
    """(kind, HTTP status or 0) of ``count`` klines requests."""
    outcomes = []
    for params in chaos_params(count):
        kind, response = chaos_get(c, params)
        outcomes.append((kind, 0 if response is None else response.status_code))
    return outcomes


def test_chaos_share_kinds_shapes_and_weight(clock: FakeClock) -> None:
    with (
        FakeExchange(clock=FakeClock()) as plain,
        FakeExchange(clock=clock) as fx,
        httpx.Client(base_url=plain.base_url, timeout=5) as reference,
        httpx.Client(base_url=fx.base_url, timeout=5) as c,
    ):
        fx.set_chaos(0.2, seed=7)
        kinds: Counter[str] = Counter()
        statuses_5xx = set()
        used = 0
        for params in chaos_params(300):
            expected = reference.get(KLINES, params=params)
            assert expected.status_code == 200
            kind, response = chaos_get(c, params)
            kinds[kind] += 1
            if kind == "ok":
                used += 2
                assert response is not None and response.content == expected.content
            elif kind == "malformed":
                assert response is not None
                assert response.content == expected.content[: len(expected.content) // 2]
            elif kind == "5xx":
                assert response is not None
                statuses_5xx.add(response.status_code)
            if response is not None:  # failures cost no weight
                assert response.headers["x-mbx-used-weight-1m"] == str(used)
        stats = fx.stats()
    failures = 300 - kinds.pop("ok")
    assert 0.12 <= failures / 300 <= 0.28
    assert set(kinds) == set(DEFAULT_CHAOS_KINDS) and stats.chaos_faults == dict(kinds)
    assert len(statuses_5xx) > 1
    assert stats.max_window_weight == used == 2 * (300 - failures)
    assert all((r.weight == 0) == (r.chaos is not None) for r in stats.log)
    assert stats.banned == stats.rate_limited == stats.storm_rate_limited == 0
    assert 418 not in stats.by_status and 429 not in stats.by_status
    assert FakeStats.from_json(stats.to_json(include_log=True)) == stats


def test_chaos_same_seed_same_outcomes(fx: FakeExchange, client: httpx.Client) -> None:
    fx.set_chaos(0.3, kinds=["5xx", "drop"], seed=1)
    first = chaos_outcomes(client, 80)
    assert {kind for kind, _ in first} == {"ok", "5xx", "drop"}
    fx.reset()  # also ends chaos
    assert chaos_outcomes(client, 20) == [("ok", 200)] * 20
    response = client.post("/fake/chaos", params={"rate": 0.3, "kinds": "5xx,drop", "seed": 1})
    assert response.status_code == 200
    assert chaos_outcomes(client, 80) == first
    fx.set_chaos(0.3, kinds=["5xx", "drop"], seed=2)
    assert chaos_outcomes(client, 80) != first
    summary = client.get("/fake/stats").json()
    assert set(summary["chaos_faults"]) == {"5xx", "drop"} and summary["storm_rate_limited"] == 0
    assert summary["requests"] == 180  # since the reset


def test_chaos_paths_rate_and_validation(fx: FakeExchange, client: httpx.Client) -> None:
    params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 2}
    fx.set_chaos(1.0, kinds=["busy"])
    assert_error(client.get(KLINES, params=params), 503, -1008, BUSY_MSG)
    assert client.get("/api/v3/uiKlines", params=params).status_code == 200  # klines only
    assert client.get("/api/v3/ping").status_code == 200
    fx.set_chaos(1.0, kinds=["timeout"], paths=None)
    assert_error(client.get("/api/v3/ping"), 504, -1007, TIMEOUT_MSG)
    client.post("/fake/chaos", params={"rate": 1, "kinds": "busy", "paths": "/api/v3/time"})
    assert client.get("/api/v3/ping").status_code == 200
    assert client.get("/api/v3/time").status_code == 503
    fx.set_chaos(0)
    assert client.get("/api/v3/time").status_code == 200
    assert fx.stats().chaos_faults == {"busy": 2, "timeout": 1}
    for bad in (
        {"rate": 1.5},
        {"rate": -0.1},
        {"rate": 0.1, "kinds": ["nope"]},
        {"rate": 0.1, "kinds": []},
        {"rate": 0.1, "slow_s": -1},
    ):
        with pytest.raises(ValueError):
            fx.set_chaos(**bad)  # type: ignore[arg-type]
    assert client.post("/fake/chaos", params={"rate": 0.1, "kinds": "5xx,nope"}).status_code == 400
    assert client.post("/fake/chaos").status_code == 400


def test_chaos_slow_kind_answers_late_and_is_charged(fx: FakeExchange, client: httpx.Client) -> None:
    fx.set_chaos(1.0, kinds=["slow"], slow_s=0.2)
    params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 2}
    began = time.perf_counter()
    response = client.get(KLINES, params=params)
    assert time.perf_counter() - began >= 0.2
    assert response.status_code == 200 and len(response.json()) == 2
    assert response.headers["x-mbx-used-weight-1m"] == "2"
    assert fx.stats().chaos_faults == {"slow": 1}


def test_rate_limit_storm(clock: FakeClock) -> None:
    with FakeExchange(clock=clock) as fx, httpx.Client(base_url=fx.base_url, timeout=5) as c:
        assert c.get("/api/v3/ping").status_code == 200
        fx.rate_limit_storm(5, retry_after_s=2)
        for _ in range(3):  # a client that waits Retry-After gets 429s until the storm ends
            response = c.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h"})
            assert_error(response, 429, -1003)
            assert response.headers["retry-after"] == "2"
            assert response.headers["x-mbx-used-weight-1m"] == "1"
            clock.t += 2
        assert c.get("/api/v3/ping").status_code == 200  # 6 s later: over
        stats = fx.stats()
        assert stats.storm_rate_limited == stats.rate_limited == 3 and stats.banned == 0
        assert [r.chaos for r in stats.log] == [None] + [RATE_LIMIT_STORM] * 3 + [None]
        assert FakeStats.from_json(stats.to_json(include_log=True)) == stats

        fx.rate_limit_storm(5)
        fx.reset()  # ends the storm
        assert c.get("/api/v3/ping").status_code == 200

        assert c.post("/fake/storm", params={"seconds": 5, "retry_after": 3}).status_code == 200
        assert c.get("/api/v3/ping").headers["retry-after"] == "3"
        clock.t += 1
        assert_error(c.get("/api/v3/ping"), 418, -1003)  # ignored Retry-After: a real 429
        clock.t += 10
        assert c.get("/api/v3/ping").status_code == 418  # the ban outlives the storm
        assert fx.stats().banned == 2 and fx.stats().storm_rate_limited == 1


def test_default_universe() -> None:
    symbols = {s.symbol: s for s in default_symbols()}
    assert set(symbols) == {
        "BTCUSDT",
        "ETHUSDT",
        "BNBUSDT",
        "XRPUSDT",
        "ADAUSDT",
        "DOGEUSDT",
        "SOLUSDT",
        "NEWUSDT",
        "USDCUSDT",
        "FDUSDUSDT",
        "BTCUPUSDT",
        "LUNAUSDT",
        "ETHBTC",
        "币安人生USDT",
    }
    assert symbols["BTCUSDT"].listed_ms == to_ms("2017-08-17T04:00Z")
    assert symbols["LUNAUSDT"].delisted_ms == to_ms("2022-05-13")
    scales = [s.volume_scale for s in symbols.values()]
    assert len(set(scales)) == len(scales)
    assert max(symbols.values(), key=lambda s: s.volume_scale).symbol == "BTCUSDT"


def test_serve_runs_until_sigterm() -> None:
    root = Path(__file__).resolve().parents[1]
    code = "from cryptolake.testing import serve; serve(port=0, latency_s=0)"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        with httpx.Client(base_url=url.group(0)) as c:
            assert c.get("/api/v3/ping").json() == {}
            first = c.get("/api/v3/time").json()["serverTime"]
            assert abs(first - DEFAULT_NOW_MS) < 60_000  # follows the wall clock from the default
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert math.isfinite(first)


@contextmanager
def serving(code: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``code`` (which calls ``serve``) in a subprocess; yield its base URL and process."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        yield url.group(0), process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_serve_with_chaos() -> None:
    code = (
        "from cryptolake.testing import serve; "
        "serve(port=0, chaos_rate=1.0, chaos_seed=3, chaos_kinds='5xx,busy')"
    )
    with serving(code) as (url, process), httpx.Client(base_url=url) as c:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Chaos: 100% of /api/v3/klines requests fail")
        assert c.get("/api/v3/ping").status_code == 200
        assert c.get(KLINES, params={"symbol": "BTCUSDT", "interval": "1h"}).status_code >= 500
        assert sum(c.get("/fake/stats").json()["chaos_faults"].values()) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_ban_grace_forgives_requests_in_flight_then_bans() -> None:
    with (
        FakeExchange(now=to_ms("2026-01-01T00:30:00Z"), ban_grace_requests=2) as fx,
        httpx.Client(base_url=fx.base_url) as c,
    ):
        fx.inject(Fault.rate_limit(retry_after_s=30))
        statuses = [c.get("/api/v3/ping").status_code for _ in range(4)]
    assert statuses == [429, 429, 429, 418]
