"""The collection pipeline end to end: weight spent only on candles, the writer lock only while
committing, two collections on one lake, --until and ISO starts, a bounded number of pages in
memory, and a start-up that loads no heavy library.

Request counts come from the fake exchange's own statistics; expected candles from its raw JSON.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from polars.testing import assert_frame_equal

from cryptolake import BinanceClient, CryptoCollector
from cryptolake.lake import Lake
from cryptolake.lake.meta import LakeMeta
from cryptolake.pipeline import Pipeline
from cryptolake.schema import Interval
from cryptolake.testing import FakeExchange
from cryptolake.timeutils import iso, to_ms

from .conftest import FAKE_NOW_MS
from .helpers import check_files, clean_env, collect, collect_argv, oracle, stored

KLINES = "/api/v3/klines"
END_1H = Interval("1h").floor(FAKE_NOW_MS)  # the open candle at the fake's now: never fetched


def slots(start: str, end_ms: int = END_1H, interval: str = "1h") -> int:
    grid = Interval(interval)
    return grid.count(grid.ceil(to_ms(start)), end_ms)


# -- weight spent only on candles ----------------------------------------------------------------


def test_a_multi_symbol_run_sends_one_request_per_1000_candles_and_one_time_and_symbol_list(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    symbols = ["BTC", "ETH", "SOL", "XRP"]
    collector = CryptoCollector(client, lake=tmp_path / "lake")
    reports = collector.collect("2025-03-01", symbols)

    assert all(r.ok for r in reports)
    stats = fake_exchange.stats()
    pages = math.ceil(slots("2025-03-01") / 1000)  # 7,320 slots: 8 pages a symbol
    assert stats.by_path == {"/api/v3/time": 1, "/api/v3/exchangeInfo": 1, KLINES: pages * len(symbols)}
    assert stats.by_status == {200: 1 + 1 + pages * len(symbols)}
    for pair in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
        assert_frame_equal(stored(tmp_path / "lake", pair), oracle(fake_exchange, pair, "2025-03-01"))

    # The first request (from the start, no end) brings 1,000 candles; the rest are pages counted
    # back from the end: full ones, but for the one that meets the first.
    requests = sorted(
        (int(r.params["startTime"]), int(r.params.get("endTime", -1)) + 1)
        for r in stats.log
        if r.path == KLINES and r.params["symbol"] == "BTCUSDT"
    )
    assert requests[0] == (to_ms("2025-03-01"), 0)
    sizes = [(hi - lo) // 3_600_000 for lo, hi in requests[1:]]
    assert sizes[1:] == [1000] * (pages - 2) and 0 < sizes[0] < 1000
    assert requests[1][0] == requests[0][0] + 1000 * 3_600_000  # it starts where the first one ended

    fake_exchange.reset()
    again = collector.collect("2025-03-01", symbols)  # nothing new: no klines request at all
    assert all(r.ok and r.total_rows_added == 0 for r in again)
    assert fake_exchange.stats().by_path == {"/api/v3/time": 1}  # the symbol list is minutes old: reused


def test_a_symbol_listed_after_the_start_costs_one_look_up_and_its_listing_is_recorded(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    collector = CryptoCollector(client, lake=tmp_path / "lake")
    (report,) = collector.collect("2025-01-01", ["NEW"], forward=False)

    assert report.ok
    listed = to_ms("2025-06-15T10:00:00Z")  # listed 10:30: its first 1h candle opens at 10:00
    stats = fake_exchange.stats()
    # The first request (from the start, no end) finds the first candle; one look-up of the very
    # first candle tells a listing from an outage; then full pages from the end back to it.
    assert stats.by_path[KLINES] == 1 + 1 + math.ceil((END_1H - listed) / 3_600_000 / 1000 - 1)
    assert LakeMeta(tmp_path / "lake").listings("1h") == {"NEWUSDT": listed}
    assert_frame_equal(stored(tmp_path / "lake", "NEWUSDT"), oracle(fake_exchange, "NEWUSDT", "2025-01-01"))

    fake_exchange.reset()
    (again,) = collector.collect("2024-01-01", ["NEW"], forward=False)  # earlier start, listing known
    assert again.ok and again.total_rows_added == 0
    assert KLINES not in fake_exchange.stats().by_path


def test_an_unknown_symbol_is_refused_from_the_symbol_list_without_a_klines_request(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    collector = CryptoCollector(client, lake=tmp_path / "lake")
    backward, forward = collector.collect("2025-12-01", ["NOPE", "BTC"])

    assert backward.failed == {
        "NOPEUSDT": "Binance does not know symbol 'NOPEUSDT' (code -1121: Invalid symbol.)"
    }
    assert backward.results["NOPEUSDT"].unknown_symbol and backward.results["BTCUSDT"].ok
    requested = {r.params["symbol"] for r in fake_exchange.stats().log if r.path == KLINES}
    assert requested == {"BTCUSDT"}


def test_a_delisted_symbol_costs_one_look_up_of_its_last_candle_and_no_page_after_it(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    collector = CryptoCollector(client, lake=tmp_path / "lake")
    (report,) = collector.collect("2022-04-01", ["LUNA"], forward=False)

    assert report.ok
    log = [r for r in fake_exchange.stats().log if r.path == KLINES]
    frame = stored(tmp_path / "lake", "LUNAUSDT")
    assert_frame_equal(frame, oracle(fake_exchange, "LUNAUSDT", "2022-04-01"))
    last = to_ms(frame["open_time"][-1])
    assert sum(r.params == {"symbol": "LUNAUSDT", "interval": "1h", "limit": "1"} for r in log) == 1
    assert all(int(r.params["startTime"]) <= last for r in log if "startTime" in r.params)
    assert len(log) == 1 + 1 + math.ceil(frame.height / 1000 - 1)


# -- the writer lock, per commit -------------------------------------------------------------------


def test_the_writer_lock_is_free_while_a_run_waits_for_the_exchange(
    fake_exchange: FakeExchange, client: BinanceClient, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    fake_exchange.set_latency(0.4)
    collector = CryptoCollector(client, lake=lake)
    run = threading.Thread(target=collector.collect, args=("2025-06-01", ["BTC", "ETH"]))
    run.start()
    try:
        deadline = time.monotonic() + 30
        while fake_exchange.stats().by_path.get(KLINES, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not list(lake.rglob("data.parquet"))  # requests are out, nothing written yet
        Lake(lake).acquire_writer_lock(wait=False).release()  # and the lock is free
    finally:
        run.join()
    fake_exchange.set_latency(0.0)
    assert_frame_equal(stored(lake, "ETHUSDT"), oracle(fake_exchange, "ETHUSDT", "2025-06-01"))


def test_a_second_collect_during_a_long_run_completes_and_the_lake_holds_both(
    fake_exchange: FakeExchange, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    fake_exchange.set_latency(0.05)
    slow = {**clean_env(), "CRYPTOLAKE_BINANCE_CONCURRENCY": "1"}  # 81 requests, one at a time: seconds
    first = subprocess.Popen(
        collect_argv(lake, fake_exchange, "--symbols", "BTC,ETH,SOL", "--since", "2023-01-01", "--quiet"),
        cwd=tmp_path,
        env=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(lake.rglob("data.parquet")) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second one could start"
        # The second run shares a symbol with the first (SOL) and starts while it writes.
        second = subprocess.run(
            collect_argv(lake, fake_exchange, "--symbols", "SOL,XRP", "--since", "2024-06-01", "--quiet"),
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr
        assert first.poll() is None, "the second run waited for the first to end"
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    fake_exchange.set_latency(0.0)
    check_files(lake)
    for pair, since in (
        ("BTCUSDT", "2023-01-01"),
        ("ETHUSDT", "2023-01-01"),
        ("SOLUSDT", "2023-01-01"),
        ("XRPUSDT", "2024-06-01"),
    ):
        assert_frame_equal(stored(lake, pair), oracle(fake_exchange, pair, since))


# -- bounded memory --------------------------------------------------------------------------------


def test_pages_held_or_requested_stay_within_the_bound_however_long_the_history(
    fake_exchange: FakeExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peaks: list[tuple[int, int]] = []
    send = Pipeline._send

    def watched(self: Pipeline, *args: Any, **kwargs: Any) -> None:
        peaks.append((self._in_flight + self._held, self.max_pages))
        send(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_send", watched)
    with BinanceClient(base_url=fake_exchange.base_url, concurrency=4) as client:
        collector = CryptoCollector(client, lake=tmp_path / "lake", interval="1m", batch_size_hours=24)
        (report,) = collector.collect("2025-10-01", ["BTC"], forward=False)  # 132k candles: 133 pages
    assert report.ok and report.total_rows_added == slots(
        "2025-10-01", Interval("1m").floor(FAKE_NOW_MS), "1m"
    )
    assert len(peaks) == 133
    held, bound = max(peaks)
    assert held < bound == 4 * 4 + 2 * 3  # requests in flight x 4, two units of 24 h (1,440 candles: 3 pages)


# -- the range: --until, ISO starts -----------------------------------------------------------------


def test_until_is_an_inclusive_end_as_a_date_or_a_time_and_a_later_run_goes_on(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    result = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--until", "2025-12-10"
    )
    assert result.exit_code == 0, result.stderr
    frame = stored(lake, "BTCUSDT")
    assert iso(to_ms(frame["open_time"][0])) == "2025-12-01T00:00:00Z"
    assert iso(to_ms(frame["open_time"][-1])) == "2025-12-10T23:00:00Z"  # the whole of the 10th

    result = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--until", "2025-12-12T05:30:00Z"
    )
    assert result.exit_code == 0, result.stderr
    assert iso(to_ms(stored(lake, "BTCUSDT")["open_time"][-1])) == "2025-12-12T05:00:00Z"

    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-01").exit_code == 0
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-01"))


def test_since_takes_a_utc_time_and_until_before_it_is_refused_in_one_line(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    result = collect(lake, fake_exchange, "--symbols", "ETH", "--since", "2025-12-20T06:00:00Z")
    assert result.exit_code == 0, result.stderr
    assert iso(to_ms(stored(lake, "ETHUSDT")["open_time"][0])) == "2025-12-20T06:00:00Z"
    assert_frame_equal(stored(lake, "ETHUSDT"), oracle(fake_exchange, "ETHUSDT", "2025-12-20T06:00:00Z"))

    for until, why in (("2025-12-19", "before the start"), ("yesterday", "invalid --until")):
        refused = collect(
            lake, fake_exchange, "--symbols", "ETH", "--since", "2025-12-20T06:00:00Z", "--until", until
        )
        assert (
            refused.exit_code == 2 and why in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        )


# -- a fast start ----------------------------------------------------------------------------------

HEAVY = ("duckdb", "polars", "pyarrow", "httpx", "apscheduler", "numpy", "rich")


@pytest.mark.parametrize("argv", [["--help"], ["config"], ["collect", "--help"]])
def test_help_and_config_load_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    shutil.copy(
        Path(__file__).parent.parent / "config.toml", tmp_path
    )  # the shipped settings, read and checked
    code = (
        "import sys\n"
        "from cryptolake.cli import main\n"
        f"sys.argv = ['cryptolake', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print('LOADED', __import__('json').dumps(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr.rsplit("LOADED", 1)[1])
    assert loaded == []


def test_the_public_names_still_import_from_the_package() -> None:
    code = (
        "import sys, cryptolake\n"
        "assert 'polars' not in sys.modules\n"
        "from cryptolake import CryptoCollector, BinanceClient, DataGapDetector, CollectorScheduler\n"
        "assert CryptoCollector.__module__ == 'cryptolake.collector'\n"
        "assert set(cryptolake.__all__) <= set(dir(cryptolake))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_default_schedule_that_skips_the_cron_parser_is_a_valid_cron_expression() -> None:
    from datetime import UTC, datetime

    from cryptolake.config import DEFAULT_SCHEDULE
    from cryptolake.cron import cron_trigger

    fire = cron_trigger(DEFAULT_SCHEDULE).get_next_fire_time(None, datetime(2026, 1, 1, 1, tzinfo=UTC))
    assert fire == datetime(2026, 1, 1, 6, tzinfo=UTC)


def test_until_never_leaves_a_hole_before_the_stored_range(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-11-01").exit_code == 0
    result = collect(
        lake, fake_exchange, "--symbols", "BTC", "--since", "2025-09-01", "--until", "2025-09-10"
    )
    assert result.exit_code == 0, result.stderr
    assert (
        "note: BTCUSDT: collected up to the earliest stored candle (2025-11-01T00:00:00Z), past --until"
        in result.stderr
    )
    assert_frame_equal(stored(lake, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-09-01"))  # contiguous


def test_forward_only_on_an_empty_lake_says_why_nothing_was_collected(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    result = collect(
        cli_env / "lake", fake_exchange, "--symbols", "BTC", "--since", "2025-12-01", "--forward-only"
    )
    assert result.exit_code == 0
    assert "note: BTCUSDT: nothing stored yet: collect backward first" in result.stderr


def test_no_wait_fails_at_once_while_another_live_process_collects(
    fake_exchange: FakeExchange, cli_env: Path
) -> None:
    lake = cli_env / "lake"
    assert collect(lake, fake_exchange, "--symbols", "BTC", "--since", "2025-12-30").exit_code == 0
    meta = lake / "_meta"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (meta / f"writer.active-{other.pid}-cafe").touch()  # a collection in another process
        fake_exchange.reset()
        refused = collect(lake, fake_exchange, "--symbols", "ETH", "--since", "2025-12-30", "--no-wait")
        assert refused.exit_code == 1 and "another cryptolake process is writing to" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert KLINES not in fake_exchange.stats().by_path  # nothing was asked
        assert (
            collect(lake, fake_exchange, "--symbols", "ETH", "--since", "2025-12-30").exit_code == 0
        )  # waits: fine
    finally:
        other.kill()
        other.wait()
    # A killed process's marker blocks nobody, and the next writer tidies it away.
    result = collect(lake, fake_exchange, "--symbols", "SOL", "--since", "2025-12-30", "--no-wait")
    assert result.exit_code == 0, result.stderr
    assert not list(meta.glob("writer.active-*"))


def test_the_python_api_refuses_an_end_before_the_start(client: BinanceClient, tmp_path: Path) -> None:
    collector = CryptoCollector(client, lake=tmp_path / "lake")
    with pytest.raises(ValueError, match="before the start"):
        collector.collect("2025-06-01", ["BTC"], until="2025-05-31")
    assert not (tmp_path / "lake").exists()


def test_a_collection_committing_without_pause_gives_a_waiting_writer_its_turn(tmp_path: Path) -> None:
    """Two commit threads overlap, so the lock is never idle; another process waiting for it says
    so (a marker), and the gate gives the lock up for it within its hold time."""
    from cryptolake.pipeline import CommitGate

    (tmp_path / "_meta").mkdir()
    gate = CommitGate(Lake(tmp_path), max_hold_s=0.2, pause_s=0.3)
    stop = threading.Event()

    def commit_forever() -> None:
        while not stop.is_set():
            with gate.held():
                time.sleep(0.02)

    writers = [threading.Thread(target=commit_forever) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        time.sleep(0.1)
        code = (
            "import sys\nfrom cryptolake.lake import Lake\n"
            "Lake(sys.argv[1]).acquire_writer_lock(wait=True, timeout_s=15).release()\nprint('got it')\n"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert other.returncode == 0 and "got it" in other.stdout, other.stderr
    assert not list((tmp_path / "_meta").glob("writer.lock.wait-*"))  # the marker went with the wait
