"""CoinbaseClient against FakeCoinbase over real loopback HTTP (no mocks), and the fake itself.

The expected candles come from the fake's market model (:meth:`FakeCoinbase.candles`), rounded
to the 8 decimals the fake sends, and are laid out field by field here: a column swapped by the
client's parser (Coinbase sends low before high) or a wrong time unit fails the comparison.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptolake.errors import BadPayload, InvalidSymbol, RequestRejected
from cryptolake.schema import DAY_MS, HOUR_MS, MINUTE_MS, Interval
from cryptolake.sources.base import KlineSource
from cryptolake.sources.coinbase import (
    DEFAULT_BASE_URL,
    GRANULARITY_S,
    CoinbaseClient,
    candle_params,
    candles_from_rows,
    product_market,
)
from cryptolake.sources.klines import ARROW_SCHEMA
from cryptolake.testing.coinbase import DEFAULT_HALTS, FakeCoinbase, default_coinbase_symbols
from cryptolake.testing.market import DEFAULT_NOW_MS, DEFAULT_OUTAGES
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.venue import VenueFault
from cryptolake.timeutils import parse_datetime, to_ms

CANDLES = "/products/{id}/candles"
NULL_COLUMNS = ("quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume")


@pytest.fixture
def fx() -> Iterator[FakeCoinbase]:
    with FakeCoinbase() as venue:
        yield venue


@pytest.fixture
def client(fx: FakeCoinbase) -> Iterator[CoinbaseClient]:
    with CoinbaseClient(base_url=fx.base_url, retry_delay=0.01, timeout_s=5) as coinbase:
        yield coinbase


def expected(fx: FakeCoinbase, symbol: str, interval: str, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """The fake's candles opening in ``[lo, hi)`` as lake rows (times in ms), as sent: 8 decimals."""
    step = Interval(interval).fixed_ms or 0
    return [
        (
            t,
            round(o, 8),
            round(h, 8),
            round(low, 8),
            round(c, 8),
            round(v, 8),
            t + step - 1,
            None,
            None,
            None,
            None,
        )
        for t, o, h, low, c, v, *_ in fx.candles(symbol, interval, lo, hi)
    ]


def lake_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """A lake table as rows in column order, times as ms."""
    columns = [
        table.column(name).cast(pa.int64()).to_pylist()
        if name in ("open_time", "close_time")
        else table.column(name).to_pylist()
        for name in ARROW_SCHEMA.names
    ]
    return list(zip(*columns, strict=True))


def candle_requests(fx: FakeCoinbase) -> list[dict[str, str]]:
    return [params for _, path, params, _ in fx.stats().log if path.endswith("/candles")]


def fetch(client: CoinbaseClient, symbol: str, interval: str, lo: int, hi: int) -> pa.Table:
    table: pa.Table = client.get_klines_range(symbol, interval, lo, hi, as_arrow=True)
    return table


# -- candles, end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("interval", list(GRANULARITY_S))
def test_candles_are_the_venues_exactly(client: CoinbaseClient, fx: FakeCoinbase, interval: str) -> None:
    step = Interval(interval).fixed_ms or 0
    lo = to_ms("2025-02-03")
    hi = lo + 250 * step
    table = fetch(client, "ETH-USD", interval, lo, hi)
    assert table.schema == ARROW_SCHEMA
    assert lake_rows(table) == expected(fx, "ETH-USD", interval, lo, hi)
    assert table.num_rows == 250
    for name in NULL_COLUMNS:  # Coinbase gives only the base volume: nothing invented
        assert table.column(name).null_count == table.num_rows


def test_wire_rows_are_newest_first_in_seconds_with_low_before_high(
    client: CoinbaseClient, fx: FakeCoinbase
) -> None:
    lo = to_ms("2025-03-01")
    params = {"granularity": 3600, "start": "2025-03-01T00:00:00Z", "end": "2025-03-01T23:59:59Z"}
    raw = httpx.get(f"{fx.base_url}/products/BTC-USD/candles", params=params).json()
    times = [row[0] for row in raw]
    assert times == sorted(times, reverse=True) and len(times) == 24
    assert times[-1] == lo // 1000  # seconds, not ms
    assert all(row[1] <= min(row[3], row[4]) <= max(row[3], row[4]) <= row[2] for row in raw)
    table = fetch(client, "BTC-USD", "1h", lo, lo + DAY_MS)
    rows = lake_rows(table)
    assert [r[0] for r in rows] == [t * 1000 for t in reversed(times)]
    newest = rows[-1]
    # the lake's (open, high, low, close, volume) from the wire's (low, high, open, close, volume)
    assert newest[1:6] == (raw[0][3], raw[0][2], raw[0][1], raw[0][4], raw[0][5])


@pytest.mark.parametrize(("slots", "requests"), [(1, 1), (299, 1), (300, 1), (301, 2), (600, 2), (601, 3)])
def test_pagination_edges(client: CoinbaseClient, fx: FakeCoinbase, slots: int, requests: int) -> None:
    lo = to_ms("2025-04-01T05:00Z")
    hi = lo + slots * MINUTE_MS
    table = fetch(client, "SOL-USD", "1m", lo, hi)
    assert lake_rows(table) == expected(fx, "SOL-USD", "1m", lo, hi)
    assert table.num_rows == slots
    sent = candle_requests(fx)
    assert len(sent) == requests
    assert fx.stats().by_status == {200: requests}
    covered = []
    for params in sent:
        start, end = to_ms(parse_datetime(params["start"])), to_ms(parse_datetime(params["end"]))
        assert params["granularity"] == "60"
        assert (end - start) // MINUTE_MS + 1 <= 300  # buckets opening in [start, end]
        assert end % MINUTE_MS == MINUTE_MS - 1000  # one second before a bucket: either reading of end
        covered.append((start, end + 1000))
    covered.sort()
    assert covered[0][0] == lo and covered[-1][1] == hi
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))  # no gap, no overlap


def test_a_range_before_the_listing_is_empty(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    listed = to_ms("2025-06-15T10:33Z")  # NEW-USD
    assert fetch(client, "NEW-USD", "1h", listed - 10 * DAY_MS, listed - 5 * DAY_MS).num_rows == 0
    table = fetch(client, "NEW-USD", "1m", listed - 100 * MINUTE_MS, listed + 100 * MINUTE_MS)
    assert lake_rows(table) == expected(
        fx, "NEW-USD", "1m", listed - 100 * MINUTE_MS, listed + 100 * MINUTE_MS
    )
    assert lake_rows(table)[0][0] == listed and table.num_rows == 100


@pytest.mark.parametrize("interval", ["1m", "1h"])
def test_a_range_over_the_outage_has_no_candles_in_it(
    client: CoinbaseClient, fx: FakeCoinbase, interval: str
) -> None:
    (down, up), *_ = DEFAULT_OUTAGES
    lo, hi = down - 3 * HOUR_MS, up + 3 * HOUR_MS
    table = fetch(client, "BTC-USD", interval, lo, hi)
    rows = lake_rows(table)
    assert rows == expected(fx, "BTC-USD", interval, lo, hi)
    step = Interval(interval).fixed_ms or 0
    missing = set(range(lo, hi, step)) - {r[0] for r in rows}
    assert missing == set(range(down, up, step))


def test_no_trade_minutes_have_no_candle_and_are_not_an_error(
    client: CoinbaseClient, fx: FakeCoinbase
) -> None:
    assert client.empty_candles is False
    lo = to_ms("2025-08-01T00:00Z")
    hi = lo + 600 * MINUTE_MS
    table = fetch(client, "QUIET-USD", "1m", lo, hi)
    opens = {r[0] for r in lake_rows(table)}
    sym = next(s for s in fx.symbols if s.symbol == "QUIET-USD")
    quiet = {t for t in range(lo, hi, MINUTE_MS) if fx.quiet(sym, Interval("1m"), t, 3)}
    assert 100 < len(quiet) < 300  # one in three, hashed
    assert opens == set(range(lo, hi, MINUTE_MS)) - quiet
    assert lake_rows(table) == expected(fx, "QUIET-USD", "1m", lo, hi)
    assert fx.stats().by_status == {200: 2}
    # longer buckets of it always had a trade
    assert fetch(client, "QUIET-USD", "1h", lo, hi).num_rows == 10


def test_a_halted_product_has_no_candles_while_halted(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    ((halted, _),) = DEFAULT_HALTS["XRP-USD"]
    lo, hi = Interval("1d").floor(halted) - 5 * DAY_MS, Interval("1d").floor(halted) + 200 * DAY_MS
    rows = lake_rows(fetch(client, "XRP-USD", "1d", lo, hi))
    assert rows == expected(fx, "XRP-USD", "1d", lo, hi)
    assert [r[0] for r in rows] == list(range(lo, Interval("1d").floor(halted) + DAY_MS, DAY_MS))


def test_only_the_newest_candle_can_be_open(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    now = DEFAULT_NOW_MS + 90_500  # 00:31:30.5: the 00:31 minute and the 00:00 hour are open
    fx.set_now(now)
    lo, hi = now - 30 * MINUTE_MS, now + 5 * MINUTE_MS
    table = fetch(client, "BTC-USD", "1m", lo, hi)
    rows = lake_rows(table)
    assert rows == expected(fx, "BTC-USD", "1m", lo, hi)  # the open one as the venue has it now
    assert rows[-1][0] == Interval("1m").floor(now) and rows[-1][6] >= now
    assert all(r[6] < now for r in rows[:-1])
    floor = Interval("1m").floor(now)
    assert [r for r in rows if r[0] < floor] == rows[:-1]  # the pipeline's floor rule drops it alone
    fx.advance(20_000)  # the open candle changes; the closed ones do not
    later = lake_rows(fetch(client, "BTC-USD", "1m", lo, hi))
    assert later[:-1] == rows[:-1] and later[-1][0] == rows[-1][0] and later[-1][5] > rows[-1][5]
    hours = lake_rows(fetch(client, "BTC-USD", "1h", now - 5 * HOUR_MS, now + HOUR_MS))
    assert hours[-1][0] == Interval("1h").floor(now) and all(r[6] < now for r in hours[:-1])


def test_last_open_time_is_the_open_candle(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    # at 00:30:00.000 the 00:30 minute has no trade yet, hence no candle
    assert client.last_open_time("ETH-USD", "1m") == DEFAULT_NOW_MS - MINUTE_MS
    fx.advance(1_000)
    assert client.last_open_time("ETH-USD", "1m") == DEFAULT_NOW_MS
    assert client.last_open_time("ETH-USD", "1d") == Interval("1d").floor(DEFAULT_NOW_MS)


@pytest.mark.parametrize("interval", ["3m", "30m", "4h", "1w", "1M", "1s"])
def test_an_interval_coinbase_does_not_serve_is_a_clear_error(
    client: CoinbaseClient, fx: FakeCoinbase, interval: str
) -> None:
    with pytest.raises(ValueError, match="Coinbase has no") as info:
        client.get_klines_range("BTC-USD", interval, to_ms("2025-01-01"), to_ms("2025-01-02"))
    assert "\n" not in str(info.value) and "1m, 5m, 15m, 1h, 6h, 1d" in str(info.value)
    with pytest.raises(ValueError, match="Coinbase has no"):
        client.get_klines_page("BTC-USD", interval, to_ms("2025-01-01"))
    with pytest.raises(ValueError, match="Coinbase has no"):
        client.first_open_time("BTC-USD", interval)
    assert fx.stats().requests == 0


def test_one_request_never_spans_more_than_300_buckets(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    lo = to_ms("2025-01-01")
    with pytest.raises(ValueError, match="at most 300"):
        client._klines("BTC-USD", "1h", lo, lo + 301 * HOUR_MS)
    assert fx.stats().requests == 0


# -- the listing -------------------------------------------------------------------------------


def first_candle(fx: FakeCoinbase, symbol: str, interval: str) -> int:
    """The oracle: the first candle at or after the listing, from the fake's model."""
    listed = next(s.listed_ms for s in fx.symbols if s.symbol == symbol)
    lo = Interval(interval).floor(listed)
    return int(fx.candles(symbol, interval, lo, lo + 300 * (Interval(interval).fixed_ms or 0))[0][0])


@pytest.mark.parametrize("symbol", ["BTC-USD", "XRP-USD", "QUIET-USD", "GONE-USD", "NEW-USD"])
def test_first_open_time_is_the_listing(client: CoinbaseClient, fx: FakeCoinbase, symbol: str) -> None:
    client.sync_clock()
    for interval in ("1m", "5m", "15m", "1h", "6h", "1d"):
        assert client.first_open_time(symbol, interval) == first_candle(fx, symbol, interval), interval
    sent = fx.stats().by_path[CANDLES]
    listed = next(s.listed_ms for s in fx.symbols if s.symbol == symbol)
    daily_pages = (Interval("1d").floor(listed) - client.history_start_ms) // (300 * DAY_MS) + 1
    assert sent == daily_pages + 1 + 3  # + the first day's hours + the first hour's 1m, 5m, 15m
    before = fx.stats().requests
    assert client.first_open_time(symbol, "1m") == first_candle(fx, symbol, "1m")  # cached
    assert fx.stats().requests == before


def test_first_open_time_looks_past_a_long_halt(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    ((_, resumed),) = DEFAULT_HALTS["XRP-USD"]
    assert client.first_open_time("XRP-USD", "1d") == to_ms("2019-02-25")  # not the relisting
    assert fetch(client, "XRP-USD", "1d", resumed - 2 * DAY_MS, resumed + DAY_MS).num_rows == 2
    assert fetch(client, "XRP-USD", "1d", resumed - 400 * DAY_MS, resumed - 2 * DAY_MS).num_rows == 0


def test_first_open_time_of_a_product_without_candles_is_none() -> None:
    dead = FakeSymbol("DEAD-USD", "DEAD", "USD", to_ms("2024-01-01"))
    with (
        FakeCoinbase(
            symbols=[dead], halts={"DEAD-USD": [(0, 2 * DEFAULT_NOW_MS)]}, rate_per_s=100, burst=100
        ) as fx,
        CoinbaseClient(base_url=fx.base_url, requests_per_s=100) as client,
    ):
        assert client.first_open_time("DEAD-USD", "1h") is None
        assert client.first_open_time("DEAD-USD", "1m") is None
        pages = (Interval("1d").floor(DEFAULT_NOW_MS) - client.history_start_ms) // (300 * DAY_MS) + 1
        assert fx.stats().by_path[CANDLES] == pages


# -- rate limit, retries, errors ---------------------------------------------------------------


class JitterTolerantCoinbase(FakeCoinbase):
    """FakeCoinbase counting ``max_in_window`` over half a second. The client's threads and the
    fake's share one process, so a request reaches the fake some ms (under load, a few hundred)
    after the client's pacer let it go; the 10 requests sent in any second then arrive inside
    a 0.5 s window only if that jitter stays under 0.5 s. The rate over longer spans is shown by
    the absence of 429s and by the length of the run."""

    window_s = 0.5


def test_concurrent_fetches_at_the_documented_limit_get_no_429() -> None:
    lo = to_ms("2025-05-01")
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD"]
    with (
        JitterTolerantCoinbase() as fx,  # Coinbase's documented 10/s with bursts of 15
        CoinbaseClient(base_url=fx.base_url, concurrency=8, retry_delay=0.01) as client,
    ):
        started = time.monotonic()
        with ThreadPoolExecutor(len(symbols)) as pool:
            tables = list(pool.map(lambda s: fetch(client, s, "1m", lo, lo + 3000 * MINUTE_MS), symbols))
        elapsed = time.monotonic() - started
        stats = fx.stats()
        for symbol, table in zip(symbols, tables, strict=True):
            assert lake_rows(table) == expected(fx, symbol, "1m", lo, lo + 3000 * MINUTE_MS)
    assert stats.requests == 40
    assert stats.rate_limited == 0
    assert stats.max_in_window <= client.RATE_LIMIT
    assert elapsed >= (40 - client.RATE_LIMIT) / client.RATE_LIMIT - 0.05


def test_a_client_faster_than_the_limit_gets_429s_and_retries_them_to_the_exact_result() -> None:
    lo = to_ms("2025-05-01")
    with (
        JitterTolerantCoinbase() as fx,
        CoinbaseClient(
            base_url=fx.base_url, concurrency=8, requests_per_s=1000, max_retries=20, retry_delay=0.01
        ) as client,
    ):
        table = fetch(client, "BTC-USD", "1m", lo, lo + 9000 * MINUTE_MS)
        assert lake_rows(table) == expected(fx, "BTC-USD", "1m", lo, lo + 9000 * MINUTE_MS)
    stats = fx.stats()
    assert stats.rate_limited > 0 and stats.max_in_window > client.RATE_LIMIT  # the checks above have teeth


def test_injected_429_and_5xx_are_retried_and_the_result_is_exact(fx: FakeCoinbase) -> None:
    lo = to_ms("2025-07-01")
    fx.inject(
        VenueFault("rate_limit", path="/candles"),
        VenueFault("server_error", path="/candles", status=503),
        VenueFault("ban", path="/candles"),
        VenueFault("bad_json", path="/candles"),
        VenueFault("drop", path="/candles"),
    )
    with CoinbaseClient(base_url=fx.base_url, retry_delay=0.01, max_retries=5) as patient:
        started = time.monotonic()
        table = fetch(patient, "ETH-USD", "1h", lo, lo + 100 * HOUR_MS)
    assert time.monotonic() - started >= 0.95  # a 429 without Retry-After: one second of silence
    assert lake_rows(table) == expected(fx, "ETH-USD", "1h", lo, lo + 100 * HOUR_MS)
    assert fx.stats().by_status == {429: 1, 503: 1, 403: 1, 200: 2, 0: 1}


def test_a_429s_retry_after_is_honoured() -> None:
    with (
        FakeCoinbase(retry_after_s=0.2) as fx,
        CoinbaseClient(base_url=fx.base_url, retry_delay=0.01) as client,
    ):
        fx.inject(VenueFault("rate_limit", path="/candles"))
        fetch(client, "BTC-USD", "1h", to_ms("2025-01-01"), to_ms("2025-01-02"))
        first, retry = (t for t, path, *_ in fx.stats().log if path.endswith("/candles"))
    assert 0.19 <= retry - first < 0.8  # the header's 0.2 s, not the 1 s used without one


def test_an_unknown_symbol_fails_alone_without_retries(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    lo = to_ms("2025-01-01")
    with ThreadPoolExecutor(3) as pool:
        futures = {
            s: pool.submit(fetch, client, s, "1h", lo, lo + DAY_MS)
            for s in ("BTC-USD", "NOPE-USD", "ETH-USD")
        }
    with pytest.raises(InvalidSymbol) as info:
        futures["NOPE-USD"].result()
    assert info.value.symbol == "NOPE-USD" and info.value.status == 404 and "Coinbase" in str(info.value)
    assert futures["BTC-USD"].result().num_rows == 24 and futures["ETH-USD"].result().num_rows == 24
    assert fx.stats().by_status == {200: 2, 404: 1}


def test_a_product_listed_after_the_venues_now_is_unknown(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    fx.set_now(to_ms("2025-01-01"))
    with pytest.raises(InvalidSymbol):
        fetch(client, "NEW-USD", "1h", to_ms("2024-12-01"), to_ms("2024-12-02"))
    assert "NEW-USD" not in client.symbol_statuses()


def test_a_rejected_request_is_not_retried(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    params = {
        "granularity": 60,
        "start": "2025-01-01T00:00:00Z",
        "end": "2025-01-01T05:00:00Z",
    }  # 301 buckets
    with pytest.raises(RequestRejected, match="exceeds 300") as info:
        client.get_json("/products/BTC-USD/candles", params, symbol="BTC-USD")
    assert info.value.status == 400 and not isinstance(info.value, InvalidSymbol)
    assert fx.stats().requests == 1


# -- markets, volumes, clock -------------------------------------------------------------------


def test_markets_are_normalised(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    markets = {m.symbol: m for m in client.markets()}
    assert set(markets) == {s.symbol for s in default_coinbase_symbols()}
    assert markets["BTC-USD"].base == "BTC" and markets["BTC-USD"].quote == "USD"
    assert markets["ETH-BTC"].base == "ETH" and markets["ETH-BTC"].quote == "BTC"
    assert markets["GONE-USD"].status == "DELISTED"
    assert {m.status for s, m in markets.items() if s != "GONE-USD"} == {"TRADING"}
    assert all(m.exchange == "coinbase" for m in markets.values())
    assert client.resolve_symbol("BTC") == "BTC-USD" and client.resolve_symbol("eth-usd") == "ETH-USD"


def test_markets_of_renamed_and_auction_products() -> None:
    auction = {
        "id": "BTCAUCTION-USD",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "status": "online",
        "cancel_only": True,
    }
    assert product_market(auction).base == "BTCAUCTION" and product_market(auction).status == "CANCEL_ONLY"
    assert product_market({"id": "XBT-EUR", "status": "online"}).base == "BTC"
    assert (
        product_market({"id": "A-B", "status": "online", "trading_disabled": True}).status
        == "TRADING_DISABLED"
    )
    assert product_market({"id": "A-B", "status": "offline"}).status == "OFFLINE"
    odd = product_market({"id": "ODD", "base_currency": "xdg", "quote_currency": "usd", "status": "online"})
    assert (odd.base, odd.quote, odd.status) == ("DOGE", "USD", "TRADING")
    with (
        FakeCoinbase(symbols=[FakeSymbol("XBT-EUR", "XBT", "EUR", to_ms("2020-01-01"))]) as fx,
        CoinbaseClient(base_url=fx.base_url, quote_asset="EUR") as client,
    ):
        (market,) = client.markets()
        assert (market.symbol, market.base, market.quote) == ("XBT-EUR", "BTC", "EUR")
        assert client.resolve_symbol("BTC") == "XBT-EUR"


def test_top_by_24h_quote_volume(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    top = client.get_top_by_market_cap(4)
    assert [t.symbol for t in top] == ["BTC-USD", "USDT-USD", "ETH-USD", "SOL-USD"]
    stats = httpx.get(f"{fx.base_url}/products/ETH-USD/stats").json()
    assert top[2].quote_volume_24h == float(stats["volume"]) * float(stats["last"])
    live_usd = [s for s in default_coinbase_symbols() if s.quote_asset == "USD" and s.delisted_ms is None]
    assert fx.stats().by_path["/products/{id}/stats"] == len(live_usd) + 1  # + the one asked above


def test_server_time(client: CoinbaseClient, fx: FakeCoinbase) -> None:
    fx.set_now(DEFAULT_NOW_MS + 123)
    assert client.get_server_time_ms() == DEFAULT_NOW_MS + 123
    body = httpx.get(f"{fx.base_url}/time").json()
    assert body == {"iso": "2026-01-01T00:30:00.123Z", "epoch": (DEFAULT_NOW_MS + 123) / 1000}


def test_the_client_is_a_kline_source() -> None:
    with CoinbaseClient() as client:
        assert isinstance(client, KlineSource)
        assert client.base_url == DEFAULT_BASE_URL and client.quote_asset == "USD"
        assert (client.exchange, client.page_candles, client.RATE_LIMIT, client.RATE_PERIOD_S) == (
            "coinbase",
            300,
            10,
            1.0,
        )
        assert client.intervals == ("1m", "5m", "15m", "1h", "6h", "1d")


# -- the fake's wire rules ---------------------------------------------------------------------


def test_the_fake_reads_end_as_inclusive_and_floors_start(fx: FakeCoinbase) -> None:
    url = f"{fx.base_url}/products/BTC-USD/candles"
    inclusive = httpx.get(
        url, params={"granularity": 3600, "start": "2025-01-01T00:30:00Z", "end": "2025-01-01T03:00:00Z"}
    ).json()
    assert [row[0] * 1000 for row in inclusive] == [to_ms(f"2025-01-01T0{h}:00Z") for h in (3, 2, 1, 0)]
    too_many = httpx.get(
        url, params={"granularity": 60, "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T05:00:00Z"}
    )
    assert too_many.status_code == 400 and "exceeds 300" in too_many.json()["message"]
    just_300 = httpx.get(
        url, params={"granularity": 60, "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T04:59:00Z"}
    )
    assert len(just_300.json()) == 300
    bad = httpx.get(url, params={"granularity": 120})
    assert bad.status_code == 400 and bad.json() == {"message": "Unsupported granularity"}
    newest = httpx.get(
        url, params={"granularity": 60, "start": "2025-01-01T00:00:00Z"}
    ).json()  # no end: both ignored
    # the 300 buckets up to now's, whose candle does not exist yet (no trade at 00:30:00.000)
    assert len(newest) == 299 and newest[0][0] * 1000 == DEFAULT_NOW_MS - MINUTE_MS
    unknown = httpx.get(f"{fx.base_url}/products/NOPE-USD/candles", params={"granularity": 60})
    assert unknown.status_code == 404 and unknown.json() == {"message": "NotFound"}


def test_the_fakes_rate_limit_answers_coinbases_429() -> None:
    with FakeCoinbase(rate_per_s=1, burst=2) as fx, httpx.Client(base_url=fx.base_url) as http:
        answers = [http.get("/time") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert (
        answers[2].json() == {"message": "Public rate limit exceeded"}
        and "Retry-After" not in answers[2].headers
    )


# -- pure logic --------------------------------------------------------------------------------


@given(
    interval=st.sampled_from(list(GRANULARITY_S)),
    index=st.integers(min_value=16_000, max_value=30_000),
    slots=st.integers(min_value=1, max_value=300),
    short_ms=st.integers(min_value=0, max_value=86_399_000),
)
def test_candle_params_cover_exactly_the_wanted_buckets(
    interval: str, index: int, slots: int, short_ms: int
) -> None:
    grid = Interval(interval)
    step = grid.fixed_ms or 0
    lo = index * DAY_MS
    hi = max(lo + 1, lo + slots * step - short_ms % step)  # on the grid or inside the last bucket
    wanted = list(grid.open_times(lo, hi))
    params = candle_params(grid, lo, hi)
    start, end = to_ms(parse_datetime(params["start"])), to_ms(parse_datetime(params["end"]))
    assert params["granularity"] == step // 1000 and start == lo
    assert list(range(grid.floor(start), end + 1, step)) == wanted  # end inclusive (the fake)
    assert list(range(start, end, step)) == wanted  # end exclusive
    assert len(wanted) <= 300 and end % 1000 == 0


@given(
    interval=st.sampled_from(list(GRANULARITY_S)),
    offsets=st.lists(st.integers(min_value=-20, max_value=320), unique=True, max_size=60),
    prices=st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), min_size=5, max_size=5),
)
def test_candles_from_rows_keeps_the_range_sorted_and_maps_the_columns(
    interval: str, offsets: list[int], prices: list[float]
) -> None:
    grid = Interval(interval)
    step = grid.fixed_ms or 0
    lo = 20_000 * DAY_MS
    hi = lo + 300 * step
    low, high, open_, close, volume = prices
    body = [
        [(lo + k * step) // 1000, low, high, open_, close, volume + k] for k in sorted(offsets, reverse=True)
    ]
    rows = lake_rows(candles_from_rows(body, grid, lo, hi))
    kept = sorted(k for k in offsets if 0 <= k < 300)
    assert rows == [
        (
            lo + k * step,
            open_,
            high,
            low,
            close,
            float(volume + k),
            lo + (k + 1) * step - 1,
            None,
            None,
            None,
            None,
        )
        for k in kept
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"message": "NotFound"},
        [[1735689600, 1, 2, 1, 2]],  # five fields
        [[1735689600, "1", 2, 1, 2, 3]],  # a string
        [[1735689600000, 1, 2, 1, 2, 3]],  # ms, not seconds
        [[1735689630, 1, 2, 1, 2, 3]],  # off the 1m grid
        [[True, 1, 2, 1, 2, 3]],
        [[float("nan"), 1, 2, 1, 2, 3]],
        [[1735689600, 1, float("inf"), 1, 2, 3]],
    ],
)
def test_candles_from_rows_refuses_what_coinbase_does_not_send(body: Any) -> None:
    with pytest.raises(BadPayload):
        candles_from_rows(body, Interval("1m"), 0, 2 * 10**12)
