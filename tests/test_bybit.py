"""BybitClient against FakeBybit over real loopback HTTP (no mocks of httpx or time).

The expected candles come from the fake's market model (``FakeVenue.candle_rows``) or are
written out by hand, never from the client's parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cryptolake.errors import InvalidSymbol, IPBanned
from cryptolake.schema import DAY_MS, HOUR_MS, KLINE_SCHEMA, MINUTE_MS, Interval
from cryptolake.sources.base import KlineSource
from cryptolake.sources.bybit import BybitClient, parse_candles
from cryptolake.testing.bybit import FakeBybit, _decimal, default_bybit_symbols
from cryptolake.testing.symbols import FakeSymbol
from cryptolake.testing.venue import VenueFault
from cryptolake.timeutils import from_ms, to_ms

KLINE = "/v5/market/kline"


@pytest.fixture
def fx() -> Iterator[FakeBybit]:
    with FakeBybit() as fake:
        yield fake


@pytest.fixture
def client(fx: FakeBybit) -> Iterator[BybitClient]:
    with BybitClient(base_url=fx.base_url, retry_delay=0.01, timeout_s=5) as bybit:
        yield bybit


def symbol_of(fx: FakeBybit, name: str) -> FakeSymbol:
    return next(sym for sym in fx.symbols if sym.symbol == name)


def oracle(fx: FakeBybit, symbol: str, interval: str, start: int, end: int) -> pl.DataFrame:
    """The fake market's candles opening in ``[start, end)``, typed as the lake's frame: Bybit
    gives base volume and turnover (quote volume), no trade count, no taker volumes."""
    rows = fx.candle_rows(symbol_of(fx, symbol), Interval(interval), start, end - 1, fx.now_ms())
    nulls = [None] * len(rows)
    data = {
        "open_time": [from_ms(r[0]) for r in rows],
        "open": [r[1] for r in rows],
        "high": [r[2] for r in rows],
        "low": [r[3] for r in rows],
        "close": [r[4] for r in rows],
        "volume": [r[5] for r in rows],
        "close_time": [from_ms(r[6]) for r in rows],
        "quote_volume": [r[7] for r in rows],
        "trades": nulls,
        "taker_buy_base_volume": nulls,
        "taker_buy_quote_volume": nulls,
    }
    return pl.DataFrame(data, schema=KLINE_SCHEMA)


def kline_requests(fx: FakeBybit) -> list[dict[str, str]]:
    return [params for _, path, params, _ in fx.stats().log if path == KLINE]


def raw_klines(fx: FakeBybit, **params: object) -> dict:
    query = {"category": "spot", **params}
    return httpx.get(fx.base_url + KLINE, params=query).json()


# -- candles ------------------------------------------------------------------------------------


def test_client_is_a_kline_source(client: BybitClient) -> None:
    assert isinstance(client, KlineSource)
    assert (client.exchange, client.title, client.quote_asset) == ("bybit", "Bybit", "USDT")
    assert client.intervals == (
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "12h",
        "1d",
        "1w",
        "1M",
    )
    assert client.page_candles == 1000 and client.empty_candles is True
    assert (BybitClient.RATE_LIMIT, BybitClient.RATE_PERIOD_S) == (600, 5.0)


@pytest.mark.parametrize(("count", "pages"), [(1, 1), (999, 1), (1000, 1), (1001, 2), (2000, 2), (2001, 3)])
def test_pagination_edges(client: BybitClient, fx: FakeBybit, count: int, pages: int) -> None:
    start = to_ms("2024-06-01")
    end = start + count * HOUR_MS
    frame = client.get_klines_range("BTCUSDT", "1h", start, end)
    assert frame.height == count
    assert frame.equals(oracle(fx, "BTCUSDT", "1h", start, end))
    sent = kline_requests(fx)
    assert len(sent) == pages
    # Each page asks Bybit (end inclusive) for at most 1000 slots, and always sends the limit.
    bounds = sorted((int(p["start"]), int(p["end"])) for p in sent)
    assert bounds[0][0] == start and bounds[-1][1] == end - 1
    assert all(hi - lo < 1000 * HOUR_MS for lo, hi in bounds)
    assert all(b[1] + 1 == a[0] for b, a in zip(bounds, bounds[1:], strict=False))
    assert {(p["category"], p["interval"], p["limit"]) for p in sent} == {("spot", "60", "1000")}


def test_rows_come_newest_first_in_ms_strings_and_leave_the_client_oldest_first(
    client: BybitClient, fx: FakeBybit
) -> None:
    start, end = to_ms("2024-01-01"), to_ms("2024-01-01T05:00Z")
    body = raw_klines(fx, symbol="ETHUSDT", interval="60", start=start, end=end - 1, limit=1000)
    rows = body["result"]["list"]
    assert body["retCode"] == 0 and all(isinstance(v, str) for row in rows for v in row)
    assert [int(r[0]) for r in rows] == [end - HOUR_MS * k for k in range(1, 6)]  # ms, newest first
    frame = client.get_klines_page("ETHUSDT", "1h", start, end)
    assert frame["open_time"].to_list() == [datetime(2024, 1, 1, h, tzinfo=UTC) for h in range(5)]
    assert frame.equals(oracle(fx, "ETHUSDT", "1h", start, end))
    assert frame["trades"].null_count() == 5 and frame["taker_buy_base_volume"].null_count() == 5
    assert (frame["close_time"] - frame["open_time"]).dt.total_milliseconds().to_list() == [HOUR_MS - 1] * 5


def test_start_and_end_are_inclusive_and_a_short_limit_keeps_the_newest(fx: FakeBybit) -> None:
    start = to_ms("2024-01-01")
    full = raw_klines(fx, symbol="BTCUSDT", interval="60", start=start, end=start + 4 * HOUR_MS)
    assert [int(r[0]) for r in full["result"]["list"]] == [start + k * HOUR_MS for k in (4, 3, 2, 1, 0)]
    short = raw_klines(fx, symbol="BTCUSDT", interval="60", start=start, end=start + 4 * HOUR_MS, limit=2)
    assert [int(r[0]) for r in short["result"]["list"]] == [start + 4 * HOUR_MS, start + 3 * HOUR_MS]


def test_weeks_open_on_monday_and_months_on_the_first(client: BybitClient, fx: FakeBybit) -> None:
    start, end = to_ms("2024-01-01"), to_ms("2025-01-01")  # 2024-01-01 is a Monday
    weekly = client.get_klines_range("SOLUSDT", "1w", start, end)
    assert weekly.height == 53 and {t.weekday() for t in weekly["open_time"]} == {0}
    assert weekly.equals(oracle(fx, "SOLUSDT", "1w", start, end))
    monthly = client.get_klines_range("SOLUSDT", "1M", start, end)
    assert monthly["open_time"].to_list() == [datetime(2024, m, 1, tzinfo=UTC) for m in range(1, 13)]
    assert monthly.equals(oracle(fx, "SOLUSDT", "1M", start, end))
    assert {p["interval"] for p in kline_requests(fx)} == {"W", "M"}


def test_the_open_candle_is_the_newest_and_sits_where_the_floor_rule_drops_it(
    client: BybitClient, fx: FakeBybit
) -> None:
    now = fx.now_ms()  # 2026-01-01T00:30Z
    start, end = to_ms("2025-12-31T19:00Z"), now + HOUR_MS
    frame = client.get_klines_range("BTCUSDT", "1h", start, end)
    assert frame["open_time"][-1] == from_ms(Interval("1h").floor(now)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert frame.equals(oracle(fx, "BTCUSDT", "1h", start, end))
    closed = frame.filter(pl.col("open_time") < from_ms(Interval("1h").floor(now)))
    assert closed.height == 5 and closed["open_time"][-1] == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert client.last_open_time("BTCUSDT", "1h") == to_ms("2026-01-01")


def test_a_range_before_the_listing(client: BybitClient, fx: FakeBybit) -> None:
    before = client.get_klines_range("NEWUSDT", "1h", to_ms("2024-01-01"), to_ms("2024-02-01"))
    assert before.height == 0
    across = client.get_klines_range("NEWUSDT", "1h", to_ms("2025-06-01"), to_ms("2025-06-16"))
    assert across["open_time"][0] == datetime(2025, 6, 15, 10, tzinfo=UTC)  # listed 10:30
    assert across.height == 14
    assert across.equals(oracle(fx, "NEWUSDT", "1h", to_ms("2025-06-01"), to_ms("2025-06-16")))


def test_a_range_over_the_outage_has_no_candles_inside_it(client: BybitClient, fx: FakeBybit) -> None:
    start, end = to_ms("2024-03-12"), to_ms("2024-03-12T12:00Z")
    frame = client.get_klines_range("BTCUSDT", "1h", start, end)
    assert [t.hour for t in frame["open_time"]] == [0, 1, 2, 3, 9, 10, 11]
    assert frame.equals(oracle(fx, "BTCUSDT", "1h", start, end))


def test_minutes_without_trades_are_zero_volume_candles_at_the_last_price(
    client: BybitClient, fx: FakeBybit
) -> None:
    start, end = to_ms("2024-06-01"), to_ms("2024-06-01T03:00Z")
    frame = client.get_klines_range("DUSTUSDT", "1m", start, end)
    assert frame["open_time"].to_list() == [from_ms(t) for t in range(start, end, MINUTE_MS)]  # no hole
    dust, minute = symbol_of(fx, "DUSTUSDT"), Interval("1m")
    model = {r[0]: r for r in fx.candle_rows(dust, minute, start, end - 1, fx.now_ms())}
    quiet = 0
    previous_close: float | None = None
    for row in frame.iter_rows(named=True):
        t = to_ms(row["open_time"])
        if fx.quiet(dust, minute, t, every=3):
            quiet += 1
            assert row["volume"] == row["quote_volume"] == 0.0
            if previous_close is not None:
                assert row["open"] == row["high"] == row["low"] == row["close"] == previous_close
        else:
            assert (row["open"], row["close"], row["volume"], row["quote_volume"]) == (
                model[t][1],
                model[t][4],
                model[t][5],
                model[t][7],
            )
        previous_close = row["close"]
    assert 40 <= quiet <= 80  # one minute in three, hashed


# -- the IP limit, 403 bans, retries ---------------------------------------------------------


class QuickBybit(BybitClient):
    """Bybit's rule (``RATE_LIMIT`` requests in any window) on a 1 s window, for a fast test."""

    RATE_PERIOD_S = 1.0


def test_many_concurrent_fetches_stay_within_the_ip_limit() -> None:
    limit = 20  # requests in any 1 s on both sides (Bybit: 600 in any 5 s)
    start = to_ms("2024-01-01")
    with FakeBybit(rate_per_s=limit, burst=limit, ban_s=600) as fake:
        assert fake.window_s == 1.0
        bybit = QuickBybit(base_url=fake.base_url, requests_per_s=limit, concurrency=8, retry_delay=0.01)
        # 36 one-page fetches of a few candles (cheap: the first window fills at once), and 4
        # ranges of 3 full pages, all at the same time.
        with bybit, ThreadPoolExecutor(max_workers=16) as pool:
            small = [
                pool.submit(
                    bybit.get_klines_page, "BTCUSDT", "1h", start + k * HOUR_MS, start + (k + 5) * HOUR_MS, 5
                )
                for k in range(36)
            ]
            ranges = [
                pool.submit(bybit.get_klines_range, symbol, "1m", start, start + 3000 * MINUTE_MS)
                for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
            ]
            pages = [future.result() for future in small]
            frames = [future.result() for future in ranges]
        stats = fake.stats()
    assert [p.height for p in pages] == [5] * 36 and [f.height for f in frames] == [3000] * 4
    assert pages[7].equals(oracle(fake, "BTCUSDT", "1h", start + 7 * HOUR_MS, start + 12 * HOUR_MS))
    assert frames[2].equals(oracle(fake, "SOLUSDT", "1m", start, start + 3000 * MINUTE_MS))
    assert stats.rate_limited == 0 and 403 not in stats.by_status
    assert stats.by_path[KLINE] == 48
    assert stats.max_in_window == limit  # the pace reached the limit, and never passed it


def test_the_fake_refuses_an_ip_over_the_limit_for_the_whole_ban() -> None:
    with FakeBybit(rate_per_s=10, burst=5, ban_s=1.0) as fake, httpx.Client(base_url=fake.base_url) as http:
        assert FakeBybit().window_s == 5.0  # Bybit's default: 600 in any 5 s
        statuses = [http.get("/v5/market/time").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [403]
        assert http.get("/v5/market/time").text == "access too frequent"
        time.sleep(0.6)  # the 0.5 s window has passed, the ban has not
        assert http.get("/v5/market/time").status_code == 403 and fake.banned_for() > 0
        time.sleep(0.5)
        assert http.get("/v5/market/time").status_code == 200
        assert fake.stats().rate_limited == 3


def test_a_403_stops_the_client_for_ten_minutes_and_nothing_more_is_sent(
    client: BybitClient, fx: FakeBybit
) -> None:
    fx.inject(VenueFault("ban", path=KLINE))
    start = to_ms("2024-01-01")
    began = time.monotonic()
    with pytest.raises(IPBanned) as raised:
        client.get_klines_range("BTCUSDT", "1m", start, start + 20 * 1000 * MINUTE_MS)
    assert time.monotonic() - began < 5  # the waiting pages gave up; none slept out the ban
    assert 595 < raised.value.banned_until - time.time() <= 600
    assert 595 < client.banned_until() - time.time() <= 600
    sent = fx.stats().requests
    assert sent <= client.concurrency  # the pages already in flight when the 403 came
    for call in (
        lambda: client.get_klines_page("BTCUSDT", "1m", start),
        lambda: client.markets(),
        lambda: client.get_server_time_ms(),
    ):
        with pytest.raises(IPBanned):
            call()
    assert fx.stats().requests == sent


def test_the_api_rate_limit_is_retried_after_its_reset_time() -> None:
    with FakeBybit(limit_reset_ms=300) as fake:
        fake.inject(VenueFault("rate_limit", path=KLINE))
        with BybitClient(base_url=fake.base_url, retry_delay=0.01) as bybit:
            start = to_ms("2024-02-01")
            frame = bybit.get_klines_range("ETHUSDT", "5m", start, start + 500 * 5 * MINUTE_MS)
        assert frame.equals(oracle(fake, "ETHUSDT", "5m", start, start + 500 * 5 * MINUTE_MS))
        log = [(t, status) for t, path, _, status in fake.stats().log if path == KLINE]
        assert len(log) == 2 and log[1][0] - log[0][0] >= 0.29  # X-Bapi-Limit-Reset-Timestamp honoured
        assert fake.stats().rate_limited == 1


@pytest.mark.parametrize(
    "fault",
    [
        VenueFault("server_error", path=KLINE, status=502),
        VenueFault("server_error", path=KLINE, status=200),  # retCode 10016
        VenueFault("bad_json", path=KLINE),
        VenueFault("drop", path=KLINE),
    ],
    ids=["http-502", "retcode-10016", "bad-json", "dropped"],
)
def test_transient_failures_are_retried_and_the_result_is_exact(
    client: BybitClient, fx: FakeBybit, fault: VenueFault
) -> None:
    fx.inject(fault, VenueFault(fault.kind, path=KLINE, status=fault.status))
    start, end = to_ms("2023-11-01"), to_ms("2023-11-10")
    frame = client.get_klines_range("XRPUSDT", "1h", start, end)
    assert frame.equals(oracle(fx, "XRPUSDT", "1h", start, end))
    assert len(kline_requests(fx)) == 3


def test_an_unknown_symbol_fails_alone_without_retries(client: BybitClient, fx: FakeBybit) -> None:
    with pytest.raises(InvalidSymbol) as raised:
        client.get_klines_range("NOPEUSDT", "1h", to_ms("2024-01-01"), to_ms("2024-01-02"))
    assert raised.value.symbol == "NOPEUSDT" and raised.value.code == 10001
    assert "Bybit" in str(raised.value) and "Not supported symbols" in str(raised.value)
    assert len(kline_requests(fx)) == 1
    assert client.get_klines_range("BTCUSDT", "1h", to_ms("2024-01-01"), to_ms("2024-01-02")).height == 24


@pytest.mark.parametrize("interval", ["1s", "8h", "3d"])
def test_an_interval_bybit_does_not_serve_is_refused_before_sending(
    client: BybitClient, fx: FakeBybit, interval: str
) -> None:
    for call in (
        lambda: client.get_klines_range("BTCUSDT", interval, to_ms("2024-01-01"), to_ms("2024-01-02")),
        lambda: client.first_open_time("BTCUSDT", interval),
    ):
        with pytest.raises(
            ValueError, match=rf"^Bybit has no '{interval}' candles; it serves 1m, "
        ) as raised:
            call()
        assert "\n" not in str(raised.value)
    assert fx.stats().requests == 0


# -- markets, volumes, clock, listing ------------------------------------------------------------


def test_markets_are_the_trading_spot_markets_with_common_names(client: BybitClient) -> None:
    markets = {m.symbol: m for m in client.markets()}
    trading = {s.symbol for s in default_bybit_symbols() if s.delisted_ms is None}
    assert set(markets) == trading  # Bybit's spot instruments-info lists trading markets only
    assert {m.status for m in markets.values()} == {"TRADING"}
    assert (markets["BTCUSDC"].base, markets["BTCUSDC"].quote, markets["BTCUSDC"].exchange) == (
        "BTC",
        "USDC",
        "bybit",
    )
    assert client.resolve_symbol("doge") == "DOGEUSDT" and client.resolve_symbol("ethusdt") == "ETHUSDT"
    assert client.symbol_statuses()["SOLUSDT"] == "TRADING"


def test_markets_follow_the_page_cursor() -> None:
    with FakeBybit(instruments_page=3) as fake, BybitClient(base_url=fake.base_url) as bybit:
        markets = bybit.markets()
        cursors = [p.get("cursor") for _, path, p, _ in fake.stats().log if path.endswith("instruments-info")]
    assert len(markets) == len({m.symbol for m in markets}) == 10
    assert cursors == [None, "3", "6", "9"]


def test_top_symbols_by_24h_turnover(client: BybitClient, fx: FakeBybit) -> None:
    top = client.get_top_by_market_cap(5)
    assert [t.symbol for t in top] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]
    tickers = httpx.get(fx.base_url + "/v5/market/tickers", params={"category": "spot"}).json()["result"][
        "list"
    ]
    turnover = {t["symbol"]: float(t["turnover24h"]) for t in tickers}
    assert [t.quote_volume_24h for t in top] == [turnover[t.symbol] for t in top]
    assert fx.stats().by_path["/v5/market/tickers"] == 2  # the client's one request, and ours


def test_server_time(client: BybitClient, fx: FakeBybit) -> None:
    assert client.get_server_time_ms() == fx.now_ms() == to_ms("2026-01-01T00:30Z")
    assert abs(client.sync_clock() - fx.now_ms()) < 1000


@pytest.mark.parametrize("interval", ["1m", "3m", "15m", "1h", "4h", "12h", "1d", "1w", "1M"])
def test_first_open_time_in_few_requests_and_cached(
    client: BybitClient, fx: FakeBybit, interval: str
) -> None:
    listed = symbol_of(fx, "BTCUSDT").listed_ms  # 2021-07-05T10:17Z, a Monday
    assert client.first_open_time("BTCUSDT", interval) == Interval(interval).floor(listed)
    asked = len(kline_requests(fx))
    assert asked == (1 if interval == "1w" else 2 if interval in ("1d", "1M") else 3)
    assert client.first_open_time("BTCUSDT", interval) == Interval(interval).floor(listed)
    assert len(kline_requests(fx)) == asked


@settings(max_examples=12, deadline=None)
@given(listed=st.integers(to_ms("2019-01-01"), to_ms("2025-12-30")).map(lambda t: t - t % MINUTE_MS))
@example(listed=to_ms("2024-02-29T23:59Z"))  # the listing day has 1 minute: one 1m page
@example(listed=to_ms("2024-03-01T00:00Z"))  # 1440 minutes: the newest 1000, then the rest
@example(listed=to_ms("2024-03-01T07:20Z"))  # exactly 1000: a full page, then an empty one
def test_first_open_time_finds_any_listing(listed: int) -> None:
    coin = FakeSymbol("COINUSDT", "COIN", "USDT", listed)
    with FakeBybit(symbols=[coin], outages=[]) as fake, BybitClient(base_url=fake.base_url) as bybit:
        for interval in ("1m", "5m", "1h", "1d", "1w", "1M"):
            assert bybit.first_open_time("COINUSDT", interval) == Interval(interval).floor(listed), interval
        minutes_on_listing_day = (DAY_MS - listed % DAY_MS) // MINUTE_MS
        minute_pages = 2 if minutes_on_listing_day >= 1000 else 1
        # 1m: the listing month and day, then its minutes; 5m, 1h: one each; 1d, 1M: none; 1w: one.
        assert len(kline_requests(fake)) == (2 + minute_pages) + 1 + 1 + 0 + 1 + 0


def test_first_open_time_of_an_unknown_symbol(client: BybitClient) -> None:
    with pytest.raises(InvalidSymbol):
        client.first_open_time("NOPEUSDT", "1h")


# -- pure logic ---------------------------------------------------------------------------------


@given(
    interval=st.sampled_from(["1m", "15m", "1h", "1d", "1w", "1M"]),
    slots=st.sets(st.integers(0, 60), max_size=40),
    window=st.tuples(st.integers(0, 60), st.integers(0, 60)),
    repeated=st.integers(0, 3),
    data=st.data(),
)
def test_parse_candles_sorts_filters_and_keeps_one_per_open_time(
    interval: str, slots: set[int], window: tuple[int, int], repeated: int, data: st.DataObject
) -> None:
    grid = Interval(interval)
    base = grid.index(to_ms("2023-01-01"))
    rows = [[str(grid.at(base + k)), "1.5", "2", "1", "1.75", f"{k}.25", f"{k * 3}"] for k in sorted(slots)]
    rows += rows[:repeated]
    rows = data.draw(st.permutations(rows))
    lo, hi = grid.at(base + min(window)), grid.at(base + max(window))
    table = parse_candles(rows, grid, lo, hi)
    opens = table.column("open_time").cast("int64").to_pylist()
    assert opens == sorted({grid.at(base + k) for k in slots if lo <= grid.at(base + k) < hi})
    assert table.column("close_time").cast("int64").to_pylist() == [grid.next_open(t) - 1 for t in opens]
    assert table.column("volume").to_pylist() == [grid.index(t) - base + 0.25 for t in opens]
    assert table.column("quote_volume").to_pylist() == [3.0 * (grid.index(t) - base) for t in opens]
    assert table.column("trades").null_count == len(opens)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_the_fake_writes_numbers_as_plain_exact_decimals(x: float) -> None:
    text = _decimal(x)
    assert float(text) == x and "e" not in text.lower()
