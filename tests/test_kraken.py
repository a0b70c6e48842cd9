"""KrakenClient against FakeKraken over real loopback HTTP, and the pure parts of both.

The expected candles are aggregated here, slot by slot, from the fake's trade tape
(:meth:`FakeKraken.trades_between`), without the client's or the fake's aggregation; Kraken's own
OHLC answers are read with plain httpx.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptolake.errors import InvalidSymbol
from cryptolake.schema import DAY_MS, HOUR_MS, MINUTE_MS, Interval
from cryptolake.sources import kraken as kraken_source
from cryptolake.sources.base import KlineSource
from cryptolake.sources.kraken import (
    DEFAULT_BASE_URL,
    OHLC_WINDOW,
    KrakenClient,
    candles_from_trades,
    kraken_asset,
    market_assets,
)
from cryptolake.testing.kraken import FakeKraken, default_kraken_symbols
from cryptolake.testing.market import DEFAULT_NOW_MS, DEFAULT_OUTAGES
from cryptolake.testing.venue import VenueFault
from cryptolake.timeutils import to_ms

FAST = {"rate_per_s": 50.0, "burst": 10, "pair_rate_per_s": 50.0, "pair_burst": 10}


@pytest.fixture
def fx() -> Iterator[FakeKraken]:
    with FakeKraken(**FAST) as fake:  # type: ignore[arg-type]
        yield fake


@pytest.fixture
def client(fx: FakeKraken) -> Iterator[KrakenClient]:
    with KrakenClient(base_url=fx.base_url, requests_per_s=40, retry_delay=0.01, timeout_s=5) as kraken:
        yield kraken


def oracle(fx: FakeKraken, symbol: str, interval: str, start: int, end: int) -> list[dict[str, Any]]:
    """The closed candles of ``[start, end)`` from the fake's trades, one slot at a time."""
    step = Interval(interval).fixed_ms
    assert step is not None
    end = min(end, fx.now_ms() - fx.now_ms() % step)  # the open candle is never served
    slots: dict[int, list[Any]] = {}
    for trade in fx.trades_between(symbol, start, end):
        slots.setdefault(trade.time_ms - trade.time_ms % step, []).append(trade)
    return [
        {
            "open_time": t,
            "open": trades[0].price,
            "high": max(x.price for x in trades),
            "low": min(x.price for x in trades),
            "close": trades[-1].price,
            "volume": sum(x.volume for x in trades),
            "quote_volume": sum(x.price * x.volume for x in trades),
            "trades": len(trades),
        }
        for t, trades in sorted(slots.items())
        if t >= start
    ]


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The client's candles with ms times."""
    out = table.to_pylist()
    for row, t, c in zip(
        out,
        table.column("open_time").cast(pa.int64()).to_pylist(),
        table.column("close_time").cast(pa.int64()).to_pylist(),
        strict=True,
    ):
        row["open_time"], row["close_time"] = t, c
    return out


def assert_candles(table: pa.Table, expected: list[dict[str, Any]], interval: str, tick: float) -> None:
    """Same slots, exact prices and counts, volumes to rounding; quote volume within half a
    tick per unit (OHLC's vwap is rounded to the pair's price decimals)."""
    step = Interval(interval).fixed_ms
    assert step is not None
    got = rows(table)
    assert [g["open_time"] for g in got] == [e["open_time"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g["open"], g["high"], g["low"], g["close"], g["trades"]) == (
            e["open"],
            e["high"],
            e["low"],
            e["close"],
            e["trades"],
        )
        assert g["volume"] == pytest.approx(e["volume"], rel=1e-9)
        assert abs(g["quote_volume"] - e["quote_volume"]) <= e["volume"] * tick / 2 + 1e-9 * e["quote_volume"]
        assert g["close_time"] == g["open_time"] + step - 1
        assert g["taker_buy_base_volume"] is None and g["taker_buy_quote_volume"] is None


def tick(fx: FakeKraken, symbol: str) -> float:
    pair = fx.pair(symbol)
    assert pair is not None
    return float(10.0**-pair.decimals)


def requests_to(fx: FakeKraken, path: str) -> int:
    return fx.stats().by_path.get(path, 0)


def kraken_ohlc(fx: FakeKraken, symbol: str, minutes: int) -> list[list[Any]]:
    """Kraken's own OHLC answer (rows as sent), read without the client."""
    body = httpx.get(f"{fx.base_url}/0/public/OHLC", params={"pair": symbol, "interval": minutes}).json()
    assert body["error"] == []
    (name,) = [key for key in body["result"] if key != "last"]
    return list(body["result"][name])


# -- candles: OHLC, trades, both -----------------------------------------------------------------


def test_recent_range_is_one_ohlc_request(fx: FakeKraken, client: KrakenClient) -> None:
    now = fx.now_ms()
    start, end = now - 6 * HOUR_MS, now + HOUR_MS
    table = client.get_klines_range("XBTUSD", "1m", start, end, as_arrow=True)
    assert_candles(table, oracle(fx, "XBTUSD", "1m", start, end), "1m", tick(fx, "XBTUSD"))
    assert requests_to(fx, "/0/public/OHLC") == 1
    assert requests_to(fx, "/0/public/Trades") == 0
    assert isinstance(client, KlineSource)


def test_open_candle_is_dropped_even_with_trades() -> None:
    now = DEFAULT_NOW_MS + 42_000  # mid-minute, and busy enough for the minute to have trades
    with FakeKraken(now=now, trades_per_hour=3000, **FAST) as fake:  # type: ignore[arg-type]
        answer = kraken_ohlc(fake, "XBTUSD", 1)
        assert answer[-1][0] * 1000 == now - now % MINUTE_MS and answer[-1][7] > 0  # open, traded
        with KrakenClient(base_url=fake.base_url, requests_per_s=40) as kraken:
            table = kraken.get_klines_range("XBTUSD", "1m", now - HOUR_MS, now + HOUR_MS, as_arrow=True)
            got = rows(table)
            assert got[-1]["open_time"] == now - now % MINUTE_MS - MINUTE_MS
            assert_candles(
                table, oracle(fake, "XBTUSD", "1m", now - HOUR_MS, now), "1m", tick(fake, "XBTUSD")
            )
            assert kraken.last_open_time("XBTUSD", "1m") == got[-1]["open_time"]


def test_old_range_is_rebuilt_from_trades_across_the_outage(fx: FakeKraken, client: KrakenClient) -> None:
    start, end = to_ms("2024-03-10"), to_ms("2024-03-14")
    table = client.get_klines_range("ETHUSD", "15m", start, end, as_arrow=True)
    expected = oracle(fx, "ETHUSD", "15m", start, end)
    assert_candles(table, expected, "15m", tick(fx, "ETHUSD"))
    (outage_start, outage_end), *_ = DEFAULT_OUTAGES
    times = [r["open_time"] for r in rows(table)]
    assert not [t for t in times if outage_start <= t < outage_end]
    assert any(t < outage_start for t in times) and any(t >= outage_end for t in times)
    assert requests_to(fx, "/0/public/OHLC") == 0
    # 4 days of about 20 trades an hour: two Trades answers of 1000, nothing asked twice.
    assert requests_to(fx, "/0/public/Trades") == 2


@pytest.mark.parametrize(("interval", "minutes"), [("1m", 1), ("1h", 60)])
def test_rebuilt_candles_equal_krakens_own(fx: FakeKraken, interval: str, minutes: int) -> None:
    """Every slot of Kraken's OHLC answer, rebuilt from trades once it has left the window."""
    answer = kraken_ohlc(fx, "SOLUSD", minutes)[:-1]  # not the open one
    step = minutes * MINUTE_MS
    fx.advance(OHLC_WINDOW * step)  # the whole answer is now older than OHLC serves
    fx.reset()
    with KrakenClient(base_url=fx.base_url, requests_per_s=40) as kraken:
        first = answer[0][0] * 1000
        table = kraken.get_klines_range("SOLUSD", interval, first, answer[-1][0] * 1000 + step, as_arrow=True)
    assert requests_to(fx, "/0/public/OHLC") == 0
    rebuilt = {r["open_time"]: r for r in rows(table)}
    assert sorted(rebuilt) == [row[0] * 1000 for row in answer]
    for t, o, h, lo, c, vwap, volume, count in answer:
        mine = rebuilt[t * 1000]
        assert (mine["open"], mine["high"], mine["low"], mine["close"]) == tuple(map(float, (o, h, lo, c)))
        assert mine["trades"] == count
        assert mine["volume"] == pytest.approx(float(volume), rel=1e-9)
        assert mine["quote_volume"] / mine["volume"] == pytest.approx(float(vwap), abs=tick(fx, "SOLUSD") / 2)


def test_a_clock_behind_kraken_costs_requests_not_candles(fx: FakeKraken, client: KrakenClient) -> None:
    client.sync_clock()
    fx.advance(HOUR_MS)  # the client now thinks OHLC still covers an hour more than it does
    now = fx.now_ms()
    start, end = now - 730 * MINUTE_MS, now - 700 * MINUTE_MS
    table = client.get_klines_range("XBTUSD", "1m", start, end, as_arrow=True)
    assert_candles(table, oracle(fx, "XBTUSD", "1m", start, end), "1m", tick(fx, "XBTUSD"))
    assert requests_to(fx, "/0/public/OHLC") == 1
    assert requests_to(fx, "/0/public/Trades") == 1  # the 11 slots before the answer's window


def test_a_long_rebuild_aggregates_as_it_goes(
    fx: FakeKraken, client: KrakenClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of many trades is aggregated in parts (the slots each Trades answer completes)."""
    monkeypatch.setattr(kraken_source, "_FLUSH_TRADES", 1500)
    start, end = to_ms("2022-02-01"), to_ms("2022-03-02")
    frame = client.get_klines_range("XRPUSD", "1h", start, end)
    expected = oracle(fx, "XRPUSD", "1h", start, end)
    assert frame["open_time"].dt.epoch("ms").to_list() == [e["open_time"] for e in expected]
    assert frame["trades"].to_list() == [e["trades"] for e in expected]
    assert frame["close"].to_list() == [e["close"] for e in expected]
    # A chain of full answers from the range's start, the last one reaching past its end.
    assert requests_to(fx, "/0/public/Trades") == sum(e["trades"] for e in expected) // 1000 + 1


@pytest.mark.parametrize("slots", [OHLC_WINDOW, OHLC_WINDOW + 1])
def test_one_page_and_one_slot_more(fx: FakeKraken, client: KrakenClient, slots: int) -> None:
    start = to_ms("2025-02-03T05:00Z")
    end = start + slots * MINUTE_MS
    table = client.get_klines_range("XBTUSD", "1m", start, end, as_arrow=True)
    assert_candles(table, oracle(fx, "XBTUSD", "1m", start, end), "1m", tick(fx, "XBTUSD"))
    # A second page starts inside the first page's Trades answer: no request more.
    assert requests_to(fx, "/0/public/Trades") == 1


def test_a_page_holds_at_most_720_slots(fx: FakeKraken, client: KrakenClient) -> None:
    start = to_ms("2025-02-03T05:00Z")
    frame = client.get_klines_page("XBTUSD", "1m", start, limit=1000)
    expected = oracle(fx, "XBTUSD", "1m", start, start + OHLC_WINDOW * MINUTE_MS)
    assert frame["open_time"].dt.epoch("ms").to_list() == [e["open_time"] for e in expected]
    assert frame["open_time"].is_sorted() and frame["open_time"].is_unique().all()


def test_ranges_before_and_across_the_listing(fx: FakeKraken, client: KrakenClient) -> None:
    listed = to_ms("2025-06-15T10:37:00Z")
    before = client.get_klines_range("NEWUSD", "1h", to_ms("2025-01-01"), to_ms("2025-06-01"), as_arrow=True)
    assert before.num_rows == 0
    assert requests_to(fx, "/0/public/Trades") == 1
    across = client.get_klines_range("NEWUSD", "1m", listed - HOUR_MS, listed + HOUR_MS, as_arrow=True)
    assert rows(across)[0]["open_time"] == listed
    assert_candles(
        across, oracle(fx, "NEWUSD", "1m", listed - HOUR_MS, listed + HOUR_MS), "1m", tick(fx, "NEWUSD")
    )


def test_slots_without_trades_have_no_candle(fx: FakeKraken, client: KrakenClient) -> None:
    now = fx.now_ms()
    for start, end in [(now - 20 * DAY_MS, now), (to_ms("2023-01-01"), to_ms("2023-01-21"))]:
        table = client.get_klines_range("MLNUSD", "1h", start, end, as_arrow=True)
        expected = oracle(fx, "MLNUSD", "1h", start, end)
        assert_candles(table, expected, "1h", tick(fx, "MLNUSD"))
        assert 0 < len(expected) < (end - start) // HOUR_MS - 24  # an illiquid pair: many empty hours


def test_flat_zero_count_candles_are_dropped() -> None:
    """ccxt's sample OHLC answer has flat candles with count 0 for slots without trades: they
    are not candles (a trades rebuild has none there either)."""
    with FakeKraken(flat_empty_candles=True, **FAST) as fake:  # type: ignore[arg-type]
        answer = kraken_ohlc(fake, "MLNUSD", 60)
        assert len(answer) == OHLC_WINDOW and any(row[7] == 0 for row in answer[:-1])
        with KrakenClient(base_url=fake.base_url, requests_per_s=40) as kraken:
            now = fake.now_ms()
            table = kraken.get_klines_range("MLNUSD", "1h", now - 10 * DAY_MS, now, as_arrow=True)
        assert_candles(
            table, oracle(fake, "MLNUSD", "1h", now - 10 * DAY_MS, now), "1h", tick(fake, "MLNUSD")
        )


def test_unserved_intervals_are_refused(client: KrakenClient) -> None:
    for interval in ("1s", "3m", "2h", "1w", "1M"):
        with pytest.raises(ValueError, match=f"Kraken has no '{interval}' candles") as info:
            client.get_klines_range("XBTUSD", interval, 0, HOUR_MS)
        assert "\n" not in str(info.value)
        with pytest.raises(ValueError):
            client.first_open_time("XBTUSD", interval)


def test_first_open_time_is_the_first_trade_once_per_pair(fx: FakeKraken, client: KrakenClient) -> None:
    for sym in default_kraken_symbols():
        if sym.symbol not in ("XBTUSD", "NEWUSD", "LUNAUSD"):
            continue
        for interval in ("1m", "1h", "1d"):
            assert client.first_open_time(sym.symbol, interval) == Interval(interval).floor(sym.listed_ms)
    assert requests_to(fx, "/0/public/Trades") == 3
    listed = to_ms("2013-10-06T21:34:15Z")
    client.get_klines_range("XBTUSD", "1m", listed - HOUR_MS, listed + HOUR_MS)
    assert requests_to(fx, "/0/public/Trades") == 3  # the since=0 answer serves the first pages


def test_last_open_time(fx: FakeKraken, client: KrakenClient) -> None:
    now = fx.now_ms()
    assert (
        client.last_open_time("ETHUSD", "5m")
        == oracle(fx, "ETHUSD", "5m", now - DAY_MS, now)[-1]["open_time"]
    )
    assert client.last_open_time("LUNAUSD", "1h") is None  # delisted in 2022


# -- markets, clock, volumes -------------------------------------------------------------------


def test_markets_are_normalised(client: KrakenClient) -> None:
    markets = {m.symbol: m for m in client.markets()}
    assert (markets["XBTUSD"].base, markets["XBTUSD"].quote) == ("BTC", "USD")
    assert (markets["XDGUSD"].base, markets["ETHXBT"].quote, markets["MLNUSD"].base) == ("DOGE", "BTC", "MLN")
    assert (markets["SOLUSD"].base, markets["USDTUSD"].base) == ("SOL", "USDT")
    assert markets["LUNAUSD"].status == "CANCEL_ONLY"
    assert all(m.status == "TRADING" for name, m in markets.items() if name != "LUNAUSD")
    assert all(m.exchange == "kraken" for m in markets.values())
    assert client.resolve_symbol("BTC") == "XBTUSD" and client.resolve_symbol("doge") == "XDGUSD"
    assert client.resolve_symbol("ethxbt") == "ETHXBT"


def test_kraken_asset_names() -> None:
    assert [kraken_asset(c) for c in ("XXBT", "ZUSD", "XXDG", "XETH", "XMLN", "SOL", "ZEUR")] == [
        "BTC",
        "USD",
        "DOGE",
        "ETH",
        "MLN",
        "SOL",
        "EUR",
    ]
    assert [kraken_asset(c) for c in ("ZETA", "XCN", "ZRX", "XTZ")] == ["ZETA", "XCN", "ZRX", "XTZ"]
    assert market_assets({"wsname": "XBT/USD", "base": "XXBT", "quote": "ZUSD"}) == ("BTC", "USD")
    assert market_assets({"wsname": "ZETA/USD", "base": "ZETA", "quote": "ZUSD"}) == ("ZETA", "USD")
    assert market_assets({"base": "XXDG", "quote": "ZEUR"}) == ("DOGE", "EUR")


def test_server_time_and_top_by_volume(fx: FakeKraken, client: KrakenClient) -> None:
    assert client.get_server_time_ms() == fx.now_ms()
    top = client.get_top_by_market_cap(4)
    volumes = {
        sym.symbol: float(fx.ticker(sym.symbol)["v"][1]) * float(fx.ticker(sym.symbol)["p"][1])
        for sym in default_kraken_symbols()
        if sym.quote_asset == "ZUSD" and sym.delisted_ms is None
    }
    assert [t.symbol for t in top] == sorted(volumes, key=lambda s: -volumes[s])[:4]
    assert top[0].symbol == "XBTUSD" and (top[0].base_asset, top[0].quote_asset) == ("BTC", "USD")
    assert top[0].quote_volume_24h == pytest.approx(volumes["XBTUSD"])


# -- rate limits, faults, errors ---------------------------------------------------------------


def test_the_fake_limits_ohlc_and_trades_per_pair() -> None:
    with FakeKraken(pair_rate_per_s=1.0, pair_burst=2) as fake:
        url = f"{fake.base_url}/0/public/OHLC"
        answers = [httpx.get(url, params={"pair": "XBTUSD"}).json()["error"] for _ in range(3)]
        assert answers == [[], [], ["EGeneral:Too many requests"]]
        assert httpx.get(url, params={"pair": "ETHUSD"}).json()["error"] == []  # another pair's bucket
        assert fake.stats().rate_limited == 1


def test_concurrent_fetches_at_krakens_documented_pace() -> None:
    """1 request a second per pair (and for the rest): never over, whatever runs at once."""
    with (
        FakeKraken() as fake,
        KrakenClient(base_url=fake.base_url, concurrency=8, retry_delay=0.01) as kraken,
    ):
        start = to_ms("2024-06-01")
        jobs = [
            lambda s=symbol: kraken.get_klines_range(s, "5m", start, start + 4 * DAY_MS)
            for symbol in ("XBTUSD", "ETHUSD", "SOLUSD")
        ] + [kraken.markets, lambda: kraken.first_open_time("XRPUSD", "1h")]
        threads = [threading.Thread(target=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = fake.stats()
        assert stats.rate_limited == 0
        assert stats.max_in_window <= 2  # one a second, one more at most by network jitter
        assert stats.by_path["/0/public/Trades"] >= 7


def test_many_concurrent_pages_stay_within_the_limit(fx: FakeKraken) -> None:
    fx.set_pair_rate_limit(10.0, 3)
    with KrakenClient(base_url=fx.base_url, requests_per_s=10, concurrency=16, retry_delay=0.01) as kraken:
        start = to_ms("2023-09-01")
        pages = [
            (symbol, start + i * 12 * DAY_MS) for symbol in ("XBTUSD", "ETHUSD", "XDGUSD") for i in range(4)
        ]
        results: dict[tuple[str, int], pa.Table] = {}

        def fetch(symbol: str, lo: int) -> None:
            results[(symbol, lo)] = kraken.get_klines_range(symbol, "1h", lo, lo + 12 * DAY_MS, as_arrow=True)

        threads = [threading.Thread(target=fetch, args=page) for page in pages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stats = fx.stats()
    assert stats.rate_limited == 0
    assert stats.max_in_window <= 11
    for (symbol, lo), table in results.items():
        assert_candles(table, oracle(fx, symbol, "1h", lo, lo + 12 * DAY_MS), "1h", tick(fx, symbol))


@pytest.mark.parametrize(
    ("kind", "path", "status"),
    [
        ("rate_limit", "/0/public/Trades", 200),
        ("api_rate_limit", "/0/public/OHLC", 200),
        ("server_error", "/0/public/Trades", 502),
        ("unavailable", "/0/public/OHLC", 200),
        ("busy", "/0/public/Trades", 200),
        ("bad_json", "/0/public/Trades", 200),
        ("drop", "/0/public/OHLC", 200),
    ],
)
def test_faults_are_retried_and_the_result_is_exact(
    fx: FakeKraken, client: KrakenClient, kind: str, path: str, status: int
) -> None:
    fx.inject(VenueFault(kind, path=path, status=status))
    now = fx.now_ms()
    start, end = now - 800 * MINUTE_MS, now  # both OHLC and Trades
    table = client.get_klines_range("ETHUSD", "1m", start, end, as_arrow=True)
    assert_candles(table, oracle(fx, "ETHUSD", "1m", start, end), "1m", tick(fx, "ETHUSD"))
    assert requests_to(fx, path) == 2


def test_unknown_pair_fails_alone_without_retries(fx: FakeKraken, client: KrakenClient) -> None:
    now = fx.now_ms()
    with pytest.raises(InvalidSymbol, match="Kraken does not know symbol 'NOPEUSD'") as info:
        client.get_klines_range("NOPEUSD", "1m", now - HOUR_MS, now)
    assert info.value.symbol == "NOPEUSD" and "EQuery:Unknown asset pair" in info.value.msg
    assert requests_to(fx, "/0/public/OHLC") == 1
    with pytest.raises(InvalidSymbol):
        client.first_open_time("NOPEUSD", "1h")
    assert requests_to(fx, "/0/public/Trades") == 1
    assert client.get_klines_range("XBTUSD", "1m", now - HOUR_MS, now, as_arrow=True).num_rows > 0


def test_defaults() -> None:
    kraken = KrakenClient()
    try:
        assert (kraken.base_url, kraken.quote_asset, kraken.exchange) == (DEFAULT_BASE_URL, "USD", "kraken")
        assert (kraken.page_candles, kraken.empty_candles) == (720, False)
        assert kraken.intervals == ("1m", "5m", "15m", "30m", "1h", "4h", "1d")
    finally:
        kraken.close()


# -- pure parts ----------------------------------------------------------------------------------


@st.composite
def trade_tapes(draw: st.DrawFn) -> tuple[list[int], list[float], list[float]]:
    gaps = draw(st.lists(st.integers(0, 5 * MINUTE_MS), min_size=0, max_size=60))
    start = draw(st.integers(0, 10**12))
    times = list(np.cumsum([start, *gaps]).tolist())
    prices = [draw(st.floats(0.0001, 1e5, allow_nan=False)) for _ in times]
    volumes = [draw(st.floats(1e-8, 1e3, allow_nan=False)) for _ in times]
    return times, prices, volumes


@given(trade_tapes(), st.sampled_from(["1m", "5m", "15m", "1h", "4h", "1d"]))
def test_candles_from_trades(tape: tuple[list[int], list[float], list[float]], interval: str) -> None:
    times, prices, volumes = tape
    grid = Interval(interval)
    table = candles_from_trades(np.array(times), np.array(prices), np.array(volumes), grid)
    slots: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        slots.setdefault(grid.floor(t), []).append(i)
    got = rows(table)
    assert [g["open_time"] for g in got] == sorted(slots)
    for g in got:
        members = slots[g["open_time"]]
        assert g["open"] == prices[members[0]] and g["close"] == prices[members[-1]]
        assert g["high"] == max(prices[i] for i in members) and g["low"] == min(prices[i] for i in members)
        assert g["trades"] == len(members)
        assert g["volume"] == pytest.approx(math.fsum(volumes[i] for i in members), rel=1e-12)
        assert g["quote_volume"] == pytest.approx(
            math.fsum(prices[i] * volumes[i] for i in members), rel=1e-12
        )
        assert g["close_time"] == grid.next_open(g["open_time"]) - 1


@pytest.mark.parametrize("since", ["2024-03-11T03:59:59.5Z", "2024-03-12T06:00Z", "2013-10-06T21:34:15Z"])
def test_the_fakes_trade_cursor_pages_through_its_tape(fx: FakeKraken, since: str) -> None:
    """Paging Trades with ``last`` from any ``since`` yields the tape once, in order, with
    trade ids that grow."""
    since_ms = to_ms(since)
    cursor, seen = str(since_ms * 1_000_000 - 1), []
    while len(seen) < 2500:
        body = httpx.get(f"{fx.base_url}/0/public/Trades", params={"pair": "XBTUSD", "since": cursor}).json()
        seen.extend((row[2], row[6]) for row in body["result"]["XXBTZUSD"])
        cursor = body["result"]["last"]
    tape = fx.trades_between("XBTUSD", since_ms, since_ms + 30 * DAY_MS)[: len(seen)]
    assert seen == [(t.time_us / 1e6, t.trade_id) for t in tape]
    assert all(a[1] < b[1] for a, b in zip(seen, seen[1:], strict=False))


def test_the_fakes_prices_follow_the_shared_model(fx: FakeKraken) -> None:
    pair = fx.pair("XBTUSD")
    assert pair is not None
    for trade in fx.trades_between("XBTUSD", to_ms("2024-01-01"), to_ms("2024-01-02"))[:200]:
        model = pair.series.price(trade.time_ms)
        assert abs(trade.price - model) <= model * 0.002  # the model without its sub-minute noise
