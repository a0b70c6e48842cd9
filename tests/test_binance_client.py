"""BinanceClient against the fake exchange over real loopback HTTP (no mocks of httpx or time)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import polars as pl
import pyarrow as pa
import pytest

from cryptolake import BinanceClient, InvalidSymbol, IPBanned, PriceData, RestrictedLocation
from cryptolake.errors import BadPayload, ExchangeUnavailable, RequestRejected, SourceError
from cryptolake.schema import HOUR_MS, KLINE_COLUMNS, Interval
from cryptolake.testing import FakeExchange, Fault
from cryptolake.timeutils import to_ms

from .conftest import FAKE_NOW_MS
from .helpers import VirtualClock, expected_klines


def oracle(exchange: FakeExchange, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The fake's own closed candles, typed like the client's output (built without its parser)."""
    return expected_klines(exchange.klines(symbol, interval, start_ms, end_ms))


def page_requests(exchange: FakeExchange) -> list[dict[str, str]]:
    """Parameters of kline page requests (those with both startTime and endTime)."""
    return [
        r.params
        for r in exchange.stats().log
        if r.path == "/api/v3/klines" and "endTime" in r.params and "startTime" in r.params
    ]


# -- klines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "pages"), [(1, 1), (999, 1), (1000, 1), (1001, 2), (2000, 2), (2001, 3)])
def test_pagination_edges(client: BinanceClient, fake_exchange: FakeExchange, count: int, pages: int) -> None:
    start = to_ms("2024-06-01")
    end = start + count * HOUR_MS
    frame = client.get_klines("BTCUSDT", "1h", start, end)
    assert frame.height == count
    assert frame.equals(oracle(fake_exchange, "BTCUSDT", "1h", start, end))
    sent = page_requests(fake_exchange)
    assert len(sent) == pages
    assert all(int(p["limit"]) <= 1000 for p in sent)
    assert frame["open_time"].is_unique().all() and frame["open_time"].is_sorted()


def test_columns_and_types(client: BinanceClient) -> None:
    frame = client.get_klines("ETHUSDT", "1h", "2024-01-01", "2024-01-02")
    assert frame.columns == list(KLINE_COLUMNS)
    assert frame.schema["open_time"] == pl.Datetime("ms", "UTC")
    assert frame.schema["trades"] == pl.Int64 and frame.schema["close"] == pl.Float64
    assert frame.height == 24
    table = client.get_klines("ETHUSDT", "1h", "2024-01-01", "2024-01-02", as_arrow=True)
    assert isinstance(table, pa.Table) and table.num_rows == 24


def test_start_before_listing_returns_history_from_first_candle(client: BinanceClient) -> None:
    hourly = client.get_klines("SOLUSDT", "1h", "2019-01-01", "2020-09-01")
    assert hourly["open_time"][0] == datetime.fromisoformat("2020-08-11T06:00:00+00:00")
    daily = client.get_klines("SOLUSDT", "1d", "2019-01-01", "2020-09-01")
    assert daily["open_time"][0] == datetime.fromisoformat("2020-08-11T00:00:00+00:00")  # on the grid
    assert daily.height == 21


def test_start_before_listing_does_not_page_through_empty_years(
    client: BinanceClient, fake_exchange: FakeExchange
) -> None:
    client.get_klines("NEWUSDT", "1h", "2017-01-01", "2025-07-01")
    assert len(page_requests(fake_exchange)) == 1  # listed 2025-06-15: one page after the lookups


def test_delisted_symbol_ends_at_delisting(client: BinanceClient) -> None:
    frame = client.get_klines("LUNAUSDT", "1d", "2022-01-01")
    assert frame["open_time"][-1] == datetime.fromisoformat("2022-05-12T00:00:00+00:00")


def test_open_candle_is_never_returned(client: BinanceClient, fake_exchange: FakeExchange) -> None:
    frame = client.get_klines("BTCUSDT", "1h", FAKE_NOW_MS - 5 * HOUR_MS)
    # The exchange's clock says 00:30: the 00:00 candle is still open (the local clock is later).
    assert frame["open_time"][-1] == datetime.fromisoformat("2025-12-31T23:00:00+00:00")
    assert (frame["close_time"] < datetime.fromisoformat("2026-01-01T00:30:00+00:00")).all()
    fake_exchange.advance(HOUR_MS)
    later = client.get_klines("BTCUSDT", "1h", FAKE_NOW_MS - 5 * HOUR_MS)
    assert later.height == frame.height + 1
    assert later["open_time"][-1] == datetime.fromisoformat("2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("interval", "start", "end"),
    [
        ("1s", "2025-12-31T23:50:00Z", "2026-01-01T00:10:00Z"),
        ("1m", "2025-12-30T00:00:00Z", "2025-12-31T00:00:00Z"),
        ("15m", "2025-11-01T00:00:00Z", "2025-12-31T00:00:00Z"),
        ("4h", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("1d", "2017-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        ("3d", "2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("1w", "2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("1M", "2017-01-01T00:00:00Z", "2026-06-01T00:00:00Z"),
    ],
)
def test_every_interval_matches_the_exchange(
    client: BinanceClient, fake_exchange: FakeExchange, interval: str, start: str, end: str
) -> None:
    frame = client.get_klines("BTCUSDT", interval, start, end)
    end_ms = min(to_ms(end), Interval(interval).floor(FAKE_NOW_MS))
    expected = oracle(fake_exchange, "BTCUSDT", interval, to_ms(start), end_ms)
    assert frame.height > 0 and frame.equals(expected)
    if interval == "1w":
        assert set(frame["open_time"].dt.weekday()) == {1}  # Monday
    if interval == "1M":
        assert set(frame["open_time"].dt.day()) == {1}


def test_get_hourly_prices_records(client: BinanceClient) -> None:
    prices = client.get_hourly_prices("BTCUSDT", datetime(2024, 3, 1), datetime(2024, 3, 1, 6))
    assert [p.open_time.hour for p in prices] == [0, 1, 2, 3, 4, 5]  # naive datetimes are UTC
    first = prices[0]
    assert isinstance(first, PriceData) and first.symbol == "BTCUSDT" and first.interval == "1h"
    assert first.open_time.tzinfo is not None
    assert first.low <= min(first.open, first.close) <= max(first.open, first.close) <= first.high


def test_outage_window_has_no_candles(client: BinanceClient) -> None:
    frame = client.get_klines("BTCUSDT", "1h", "2024-03-12T00:00:00Z", "2024-03-13T00:00:00Z")
    hours = frame["open_time"].dt.hour().to_list()
    assert hours == [h for h in range(24) if not 4 <= h < 9]


# -- universe and simple endpoints ---------------------------------------------------------


def test_top_by_market_cap(client: BinanceClient) -> None:
    top = client.get_top_by_market_cap(5)
    assert len(top) == 5
    assert [t.rank for t in top] == [1, 2, 3, 4, 5]
    assert top[0].symbol == "BTCUSDT" and top[0].base_asset == "BTC" and top[0].current_price > 0
    volumes = [t.quote_volume_24h for t in top]
    assert volumes == sorted(volumes, reverse=True)
    every = client.get_top_by_market_cap(100)
    symbols = {t.symbol for t in every}
    assert "USDCUSDT" not in symbols and "FDUSDUSDT" not in symbols  # stablecoins
    assert "BTCUPUSDT" not in symbols and "LUNAUSDT" not in symbols  # not TRADING
    assert "ETHBTC" not in symbols  # other quote asset
    assert "币安人生USDT" in symbols


def test_connectivity_and_server_time(client: BinanceClient, fake_exchange: FakeExchange) -> None:
    assert client.test_connectivity() is True
    assert client.get_server_time_ms() == FAKE_NOW_MS
    with BinanceClient(base_url="http://127.0.0.1:9", max_retries=0, timeout_s=1) as down:
        assert down.test_connectivity() is False


# -- limits, bans, retries, errors ------------------------------------------------------------


def test_429_then_nothing_sent_until_retry_after(ban_file: Path) -> None:
    clock = VirtualClock()  # shared by both sides: Retry-After passes without wall time
    with (
        FakeExchange(now=FAKE_NOW_MS, clock=clock.now) as fake_exchange,
        BinanceClient(
            base_url=fake_exchange.base_url,
            retry_delay=0.01,
            ban_file=ban_file,
            clock=clock.now,
            sleep=clock.sleep,
        ) as client,
    ):
        client.test_connectivity()
        fake_exchange.inject(Fault.rate_limit(retry_after_s=30, path="/api/v3/klines"))
        began = clock.now()
        frame = client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
        assert frame.height == 24
        log = fake_exchange.stats().log
        limited = [i for i, r in enumerate(log) if r.status == 429]
        assert len(limited) == 1
        after = log[limited[0] + 1 :]
        assert after, "the client never retried"
        # The fake bans a request inside Retry-After (its clock is the virtual one): none was.
        assert fake_exchange.stats().banned == 0
        assert clock.now() - began >= 30


def test_418_stops_everything_and_is_recorded_for_other_processes(ban_file: Path) -> None:
    shift = [0.0]  # both sides' real-time clocks jump together once the ban has been checked

    def clock() -> float:
        return time.time() + shift[0]

    fake_exchange = FakeExchange(now=FAKE_NOW_MS, clock=clock).start()
    client = BinanceClient(base_url=fake_exchange.base_url, retry_delay=0.01, ban_file=ban_file, clock=clock)
    client.test_connectivity()
    fake_exchange.inject(Fault.ban(retry_after_s=30))
    with pytest.raises(IPBanned) as info:
        client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
    assert 25 <= info.value.retry_after_s <= 30
    sent = fake_exchange.stats().requests
    with pytest.raises(IPBanned):
        client.get_klines("ETHUSDT", "1h", "2024-01-01", "2024-01-02")
    assert client.test_connectivity() is False
    assert ban_file.is_file()
    # Another process on the same lake reads the ban from disk and sends nothing.
    script = (
        "import sys\n"
        "from cryptolake import BinanceClient, IPBanned\n"
        f"c = BinanceClient(base_url={fake_exchange.base_url!r}, ban_file={str(ban_file)!r})\n"
        "try:\n    c.get_klines('BTCUSDT', '1h', '2024-01-01', '2024-01-02')\n"
        "except IPBanned as e:\n    print('banned', round(e.retry_after_s)); sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stderr
    assert fake_exchange.stats().requests == sent
    # Once the ban has passed, a new client sends again (and is served).
    shift[0] = 31.0
    with BinanceClient(base_url=fake_exchange.base_url, ban_file=ban_file, clock=clock) as later:
        assert later.test_connectivity() is True
    client.close()
    fake_exchange.stop()


def test_ban_from_weight_abuse_is_real(fake_exchange: FakeExchange) -> None:
    """The fake bans a client that ignores a 429, as Binance does (a raw httpx client here)."""
    fake_exchange.set_weight_limit(4, window_s=60)
    with httpx.Client(base_url=fake_exchange.base_url) as raw:
        statuses = [
            raw.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1h"}).status_code
            for _ in range(4)
        ]
    assert statuses == [200, 200, 429, 418]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(500),
        Fault.http(503),
        Fault.drop(),
        Fault.malformed(),
        Fault.slow(3.0),
        Fault.http(400, code=-1008, msg="Server is currently overloaded with other requests."),
    ],
    ids=["500", "503", "drop", "malformed", "slow", "busy"],
)
def test_transient_faults_are_retried(fake_exchange: FakeExchange, ban_file: Path, fault: Fault) -> None:
    with BinanceClient(
        base_url=fake_exchange.base_url, retry_delay=0.01, timeout_s=1.0, ban_file=ban_file
    ) as client:
        client.test_connectivity()
        fake_exchange.inject(Fault(**{**vars(fault), "path": "/api/v3/klines", "times": 2}))
        frame = client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
    assert frame.height == 24
    assert fake_exchange.stats().by_path["/api/v3/klines"] == 3


def test_retries_give_up_with_a_clear_error(client: BinanceClient, fake_exchange: FakeExchange) -> None:
    client.test_connectivity()
    fake_exchange.inject(Fault.http(502, path="/api/v3/klines", times=10))
    with pytest.raises(ExchangeUnavailable, match="HTTP 502"):
        client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
    assert fake_exchange.stats().by_path["/api/v3/klines"] == 4  # 1 + max_retries


def test_malformed_payload_gives_up_as_bad_payload(
    client: BinanceClient, fake_exchange: FakeExchange
) -> None:
    client.test_connectivity()
    fake_exchange.inject(Fault.malformed(path="/api/v3/klines", times=10))
    with pytest.raises(BadPayload):
        client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")


def test_invalid_symbol_is_not_retried(client: BinanceClient, fake_exchange: FakeExchange) -> None:
    with pytest.raises(InvalidSymbol, match="NOPEUSDT") as info:
        client.get_klines("NOPEUSDT", "1h", "2024-01-01", "2024-01-02")
    assert info.value.code == -1121
    statuses = [r.status for r in fake_exchange.stats().log if r.status != 200]
    assert statuses == [400]


def test_invalid_interval(client: BinanceClient) -> None:
    with pytest.raises(RequestRejected, match="interval"):
        client.get_klines("BTCUSDT", "1H", "2024-01-01", "2024-01-02")


def test_451_says_restricted_location_and_which_setting(
    client: BinanceClient, fake_exchange: FakeExchange
) -> None:
    fake_exchange.set_restricted(True)
    with pytest.raises(RestrictedLocation) as info:
        client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
    message = str(info.value)
    assert "restricted location" in message and "CRYPTOLAKE_BINANCE_BASE_URL" in message
    assert fake_exchange.stats().by_status[451] == 1  # not retried


def test_hundreds_of_requests_under_a_low_weight_limit_never_hit_429(ban_file: Path) -> None:
    """Binance's one-minute window, 160 weight in it: the clients wait for each next window on a
    virtual clock that the fake exchange shares, so minutes pass without any wall time."""
    clock = VirtualClock()
    with FakeExchange(now=FAKE_NOW_MS, clock=clock.now, weight_limit=160, weight_window_s=60) as exchange:
        clients = [
            BinanceClient(
                base_url=exchange.base_url,
                retry_delay=0.01,
                ban_file=ban_file,
                concurrency=8,
                clock=clock.now,
                sleep=clock.sleep,
            )
            for _ in range(2)
        ]
        symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT"]
        errors: list[BaseException] = []
        began = clock.now()

        def fetch(client: BinanceClient, symbol: str) -> None:
            try:
                client.get_klines(symbol, "1h", "2018-06-01", "2026-01-01")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(clients[i % 2], s)) for i, s in enumerate(symbols)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = exchange.stats()
        for c in clients:
            c.close()
    assert not errors
    assert stats.requests >= 250
    assert stats.rate_limited == 0 and stats.banned == 0
    assert stats.max_window_weight <= 160
    assert clock.now() - began >= 60 * (2 * stats.requests // 160 - 1)  # minutes passed, virtually


def test_every_transport_error_becomes_a_source_error() -> None:
    """The httpx -> cryptolake mapping is complete (the one place httpx errors are translated)."""

    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    for error in subclasses(httpx.TransportError):

        def handler(request: httpx.Request, error: type = error) -> httpx.Response:
            raise error("boom", request=request) if error is not httpx.TransportError else error("boom")

        transport = httpx.MockTransport(handler)
        with (
            BinanceClient(base_url="http://fake.invalid", max_retries=0, transport=transport) as client,
            pytest.raises(SourceError),
        ):
            client.get_server_time_ms()


def test_works_inside_a_running_event_loop(client: BinanceClient) -> None:
    """As in a Jupyter kernel: a synchronous call from code running on an event loop."""

    async def notebook_cell() -> int:
        return client.get_klines("BTCUSDT", "1h", "2024-01-01", "2024-03-01").height

    assert asyncio.run(notebook_cell()) == 60 * 24


def test_two_processes_recording_bans_at_once_lose_none(tmp_path: Path) -> None:
    ban_file = tmp_path / "_meta" / "binance-bans.json"
    code = (
        "import sys\nfrom pathlib import Path\nfrom cryptolake.sources.ratelimit import BanBook\n"
        "book = BanBook(Path(sys.argv[1]))\n"
        "for i in range(60):\n    book.record(f'{sys.argv[2]}-{i}.example', 600)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(ban_file), name]) for name in ("a", "b", "c")
    ]
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    recorded = json.loads(ban_file.read_text())
    assert len(recorded) == 180  # every ban of every process, none written over


def test_clients_share_a_weight_budget_only_with_the_same_host_and_share(fake_exchange: FakeExchange) -> None:
    from cryptolake.sources.ratelimit import WeightLimiter

    url = fake_exchange.base_url
    with BinanceClient(base_url=url) as a, BinanceClient(base_url=url) as b:
        assert a._limiter is b._limiter  # one process, one host, one share: one budget
    with BinanceClient(base_url=url, weight_share=0.5) as half, BinanceClient(base_url=url) as default:
        assert half._limiter is not default._limiter  # a second share is not silently ignored
        assert half._limiter.budget == 3000 and default._limiter.budget == 5400
    own = WeightLimiter(limit=100, share=1.0)
    with BinanceClient(base_url=url, weight_limiter=own) as client:
        assert client._limiter is own
