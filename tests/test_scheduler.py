"""CollectorScheduler and ``cryptolake run``.

The schedule logic runs on a fake clock: tests move it and call ``run_pending`` (what the
background thread does), so days of schedule take milliseconds and no test waits for a fire time.
Where a run's content does not matter, a scripted collector stands in for the exchange: its steps
record themselves and can be held on a gate or made to fail. Where it does, the real collector
runs against the fake exchange. The real process runs in a subprocess against the fake exchange.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cryptolake import CollectorScheduler, CryptoCollector, SchedulerError
from cryptolake.collector import CollectionReport, SymbolResult
from cryptolake.config import load_settings
from cryptolake.errors import ConfigError, ExchangeUnavailable
from cryptolake.lake import Lake, partition_path
from cryptolake.lake.store import write_parquet_atomic
from cryptolake.scheduler import SchedulerControl, SchedulerEvent, SchedulerRun
from cryptolake.schema import HOUR_MS
from cryptolake.sources.binance import BinanceClient
from cryptolake.testing import FakeExchange, Fault
from cryptolake.timeutils import from_ms, iso, to_ms

from .conftest import FAKE_NOW_MS
from .helpers import check_files, clean_env, expected_klines, invoke

T = TypeVar("T")
STEPS_OF_A_FULL_RUN = ["forward", "gaps", "backward"]
NEVER_IN_A_TEST = "0 0 1 1 *"  # the subprocess uses the wall clock; its runs are triggered


# -- a fake clock, a scripted collector --------------------------------------------------------


class FakeClock:
    """Epoch seconds that move only when told; ``sleep`` moves them instead of waiting."""

    def __init__(self, start: str) -> None:
        self.t = to_ms(start) / 1000
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def set(self, when: str) -> None:
        self.t = to_ms(when) / 1000

    def now_iso(self) -> str:
        return iso(int(self.t * 1000))


class ScriptedCollector(CryptoCollector):
    """Steps that record themselves, wait on ``gate`` and fail as scripted in ``outcomes``: an
    exception is raised, a string becomes that symbol error in the report."""

    def __init__(self, client: BinanceClient, lake: Path, clock: FakeClock) -> None:
        super().__init__(client, lake=lake, clock=clock)
        self.steps: list[str] = []
        self.symbols_seen: list[Sequence[str] | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.outcomes: dict[str, list[Exception | str]] = {}

    def resolve_symbols(self, crypto_symbols: Sequence[str] | None = None) -> list[str]:
        return [f"{s}USDT" for s in crypto_symbols] if crypto_symbols is not None else ["BTCUSDT"]

    def collect_forward(self, crypto_symbols: Sequence[str] | None = None) -> CollectionReport:
        return self._step("forward", crypto_symbols)

    def collect_backward(
        self, start_date: Any, crypto_symbols: Sequence[str] | None = None
    ) -> CollectionReport:
        return self._step("backward", crypto_symbols)

    def detect_and_fill_gaps(self, crypto_symbols: Sequence[str] | None = None) -> CollectionReport:
        return self._step("gaps", crypto_symbols)

    def _step(self, step: str, symbols: Sequence[str] | None) -> CollectionReport:
        self.steps.append(step)
        self.symbols_seen.append(symbols)
        self.entered.set()
        assert self.gate.wait(10), "a test forgot to open the gate"
        now = from_ms(int(self._clock() * 1000))
        report = CollectionReport(step, "1h", started_at=now, finished_at=now)  # type: ignore[arg-type]
        outcome = self.outcomes.get(step, []).pop(0) if self.outcomes.get(step) else None
        if isinstance(outcome, Exception):
            raise outcome
        report.results["BTCUSDT"] = SymbolResult(
            "BTCUSDT",
            step,
            rows_added=0 if outcome else 1,  # type: ignore[arg-type]
            error=outcome,
        )
        return report


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2026-01-01T00:30:00Z")


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def offline_client(lake_root: Path, clock: FakeClock) -> Iterator[BinanceClient]:
    """A client that is never asked anything but whether a ban is recorded."""
    with BinanceClient(
        base_url="http://127.0.0.1:9", ban_file=lake_root / "_meta" / "binance-bans.json", clock=clock
    ) as client:
        yield client


@pytest.fixture
def scripted(offline_client: BinanceClient, lake_root: Path, clock: FakeClock) -> ScriptedCollector:
    return ScriptedCollector(offline_client, lake_root, clock)


@pytest.fixture
def schedulers() -> Iterator[list[CollectorScheduler]]:
    """Schedulers made by a test; each is stopped at its end, whatever happened."""
    made: list[CollectorScheduler] = []
    yield made
    for scheduler in made:
        if hasattr(scheduler.collector, "gate"):
            scheduler.collector.gate.set()
        scheduler.stop()


@pytest.fixture
def make_scheduler(
    schedulers: list[CollectorScheduler], clock: FakeClock
) -> Callable[..., CollectorScheduler]:
    def make(collector: CryptoCollector, cron: str = "0 */6 * * *", **kwargs: Any) -> CollectorScheduler:
        kwargs.setdefault("start_date", "2025-12-30")
        # A long poll: the background thread (when started) stays idle; the test drives it.
        scheduler = CollectorScheduler(
            collector.client, collector, cron, clock=clock, sleep=clock.sleep, poll_interval_s=60, **kwargs
        )
        schedulers.append(scheduler)
        return scheduler

    return make


def tick(scheduler: CollectorScheduler) -> SchedulerRun | None:
    """What the background thread does at each wake-up, then wait for the run it started."""
    run = scheduler.run_pending()
    assert scheduler.wait_idle(10)
    return run


def advance(
    scheduler: CollectorScheduler, clock: FakeClock, until: str, step_s: float = 900
) -> list[SchedulerRun]:
    """Move the clock to ``until`` in steps, ticking at each; the runs launched."""
    runs = []
    end = to_ms(until) / 1000
    while clock.t < end:
        clock.t = min(end, clock.t + step_s)
        run = tick(scheduler)
        if run is not None:
            runs.append(run)
    return runs


def recorder(scheduler: CollectorScheduler, kinds: Sequence[str] | None = None) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    scheduler.add_listener(lambda e: events.append((e.kind, e.run.id)), kinds)
    return events


# -- the schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "now", "next_run"),
    [
        ("0 */6 * * *", "2026-01-01T00:30:00Z", "2026-01-01T06:00:00Z"),
        ("0 */6 * * *", "2026-01-01T06:00:00Z", "2026-01-01T06:00:00Z"),  # due now: runs now
        ("*/15 * * * *", "2026-01-01T00:31:00Z", "2026-01-01T00:45:00Z"),
        ("0 0 1 * *", "2026-01-01T00:30:00Z", "2026-02-01T00:00:00Z"),
        ("30 2 * * 1", "2026-01-01T00:30:00Z", "2026-01-05T02:30:00Z"),  # 1 = Monday, as in cron
        ("0 6 * * 1-5", "2026-01-02T07:00:00Z", "2026-01-05T06:00:00Z"),  # Friday -> Monday
        ("0 12 * * 0", "2026-01-01T00:30:00Z", "2026-01-04T12:00:00Z"),  # 0 = Sunday
        ("0 12 * * 7", "2026-01-01T00:30:00Z", "2026-01-04T12:00:00Z"),  # 7 = Sunday too
        ("0 9 * * sat,sun", "2026-01-01T00:30:00Z", "2026-01-03T09:00:00Z"),
    ],
)
def test_cron_expressions_give_the_next_run_time(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock, cron: str, now: str, next_run: str
) -> None:
    clock.set(now)
    scheduler = make_scheduler(scripted, cron)

    run = scheduler.run_pending()

    if now == next_run:
        assert run is not None and run.scheduled_for == from_ms(to_ms(now))
        assert scheduler.wait_idle(10)
    else:
        assert run is None
        assert scheduler.get_status()["next_run_time"] == next_run


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * *", "0 */6 * * * *", "every hour", "0 0 * * 8", ""])
def test_an_invalid_cron_expression_is_a_config_error(scripted: ScriptedCollector, cron: str) -> None:
    with pytest.raises(ConfigError, match="invalid cron expression") as caught:
        CollectorScheduler(scripted.client, scripted, cron)
    assert "\n" not in str(caught.value)


def test_three_days_of_schedule_run_every_six_hours_as_full_cycles(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock
) -> None:
    scheduler = make_scheduler(scripted)

    runs = advance(scheduler, clock, "2026-01-04T00:30:00Z")

    fire_times = [iso(to_ms(r.scheduled_for)) for r in runs]  # type: ignore[arg-type]
    assert fire_times == [f"2026-01-0{d}T{h:02d}:00:00Z" for d in (1, 2, 3) for h in (0, 6, 12, 18)][1:] + [
        "2026-01-04T00:00:00Z"
    ]
    assert all(r.trigger == "scheduled" and r.collection_type == "full" and r.ok for r in runs)
    assert scripted.steps == STEPS_OF_A_FULL_RUN * 12
    status = scheduler.get_status()
    assert status["status"] == "idle" and status["next_run_time"] == "2026-01-04T06:00:00Z"
    assert status["counts"] == {"runs": 12, "succeeded": 12, "failed": 0, "skipped": 0, "stopped": 0}
    assert (
        status["last_run"]["start"] == "2026-01-04T00:00:00Z" and status["last_run"]["result"] == "succeeded"
    )


def test_fire_times_missed_while_asleep_collapse_into_one_run(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock
) -> None:
    scheduler = make_scheduler(scripted)
    assert tick(scheduler) is None

    clock.set("2026-01-02T13:00:00Z")  # the machine slept through four fire times
    run = tick(scheduler)

    assert run is not None and run.ok and run.scheduled_for == from_ms(to_ms("2026-01-01T06:00:00Z"))
    assert tick(scheduler) is None
    assert scheduler.get_status()["next_run_time"] == "2026-01-02T18:00:00Z"
    assert scripted.steps == STEPS_OF_A_FULL_RUN


# -- overlap, failure, pause ---------------------------------------------------------------


def test_a_run_that_would_overlap_is_skipped_and_reported(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock
) -> None:
    scheduler = make_scheduler(scripted)
    events = recorder(scheduler)
    scripted.gate.clear()
    clock.set("2026-01-01T06:00:00Z")
    first = scheduler.run_pending()
    assert first is not None and scripted.entered.wait(5)

    clock.set("2026-01-01T12:00:00Z")
    second = scheduler.run_pending()
    manual = scheduler.trigger_manual_collection("forward")  # returns at once: skipped, not queued

    for skipped in (second, manual):
        assert skipped is not None and skipped.result == "skipped"
        assert f"run #{first.id} (full) is still running since 2026-01-01T06:00:00Z" in skipped.notes[0]
    status = scheduler.get_status()
    assert status["status"] == "running" and status["current_run"]["id"] == first.id
    assert status["counts"]["skipped"] == 2

    scripted.gate.set()
    assert scheduler.wait_idle(10) and first.wait(1) and first.ok
    assert scripted.steps == STEPS_OF_A_FULL_RUN  # nothing was stacked behind the long run
    assert events == [("started", 1), ("skipped", 2), ("skipped", 3), ("succeeded", 1)]
    assert scheduler.get_status()["next_run_time"] == "2026-01-01T18:00:00Z"


def test_a_failed_run_sets_error_with_the_reason_and_the_next_run_goes_ahead(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock
) -> None:
    scheduler = make_scheduler(scripted)
    scripted.outcomes = {
        "forward": [ExchangeUnavailable("Binance timed out on /api/v3/klines")],
        "gaps": ["Binance does not know symbol 'BTCUSDT'"],
    }

    [failed] = advance(scheduler, clock, "2026-01-01T06:00:00Z")

    assert failed.result == "failed"
    assert scripted.steps == STEPS_OF_A_FULL_RUN  # a failed step does not stop the next one
    status = scheduler.get_status()
    assert status["status"] == "error"
    assert (
        status["error"]
        == status["last_run"]["error"]
        == (
            "forward: Binance timed out on /api/v3/klines; "
            "gaps: 1 of 1 symbols failed (BTCUSDT: Binance does not know symbol 'BTCUSDT')"
        )
    )
    assert status["next_run_time"] == "2026-01-01T12:00:00Z"

    scripted.outcomes = {"backward": [RuntimeError("a bug")]}
    [buggy] = advance(scheduler, clock, "2026-01-01T12:00:00Z")
    assert buggy.error == "backward: RuntimeError: a bug"

    [good] = advance(scheduler, clock, "2026-01-01T18:00:00Z")

    assert good.ok and good.error is None
    status = scheduler.get_status()
    assert status["status"] == "idle" and status["error"] is None and status["last_run"]["error"] is None
    assert status["counts"] == {"runs": 3, "succeeded": 1, "failed": 2, "skipped": 0, "stopped": 0}


def test_pause_and_resume(scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock) -> None:
    scheduler = make_scheduler(scripted)
    tick(scheduler)
    scheduler.pause()
    assert scheduler.get_status()["status"] == "paused"
    assert scheduler.get_status()["next_run_time"] is None

    assert advance(scheduler, clock, "2026-01-03T07:10:00Z") == []
    manual = scheduler.trigger_manual_collection("forward")  # pausing stops the schedule only
    assert manual.ok and scripted.steps == ["forward"]
    assert scheduler.get_status()["status"] == "paused"

    scheduler.resume()

    status = scheduler.get_status()
    assert status["status"] == "idle" and status["next_run_time"] == "2026-01-03T12:00:00Z"  # no catch-up
    runs = advance(scheduler, clock, "2026-01-03T18:00:00Z")
    assert [iso(to_ms(r.scheduled_for)) for r in runs] == ["2026-01-03T12:00:00Z", "2026-01-03T18:00:00Z"]  # type: ignore[arg-type]


# -- manual triggers and listeners ---------------------------------------------------------


@pytest.mark.parametrize(
    ("collection_type", "steps"),
    [("forward", ["forward"]), ("backward", ["backward"]), ("gaps", ["gaps"]), ("full", STEPS_OF_A_FULL_RUN)],
)
def test_manual_triggers_run_their_steps(
    scripted: ScriptedCollector, make_scheduler: Any, collection_type: str, steps: list[str]
) -> None:
    scheduler = make_scheduler(scripted, crypto_symbols=["SOL"])

    run = scheduler.trigger_manual_collection(collection_type, crypto_symbols=["BTC", "ETH"])

    assert run.ok and run.trigger == "manual" and run.collection_type == collection_type
    assert scripted.steps == steps and list(run.reports) == steps
    assert run.total_rows_added == len(steps)
    # The trigger's symbols replace the scheduler's; a full run's backward step gets pairs.
    expected = {
        "forward": ["BTC", "ETH"],
        "gaps": ["BTC", "ETH"],
        "backward": ["BTCUSDT", "ETHUSDT"] if collection_type == "full" else ["BTC", "ETH"],
    }
    assert [list(s or []) for s in scripted.symbols_seen] == [expected[s] for s in steps]
    assert scheduler.get_status()["last_run"]["type"] == collection_type


def test_a_manual_trigger_can_return_before_the_run_ends(
    scripted: ScriptedCollector, make_scheduler: Any
) -> None:
    scheduler = make_scheduler(scripted)
    scripted.gate.clear()

    run = scheduler.trigger_manual_collection("gaps", wait=False)

    assert run.result is None and scripted.entered.wait(5)
    assert scheduler.get_status()["status"] == "running"
    scripted.gate.set()
    assert run.wait(10) and run.ok
    with pytest.raises(ValueError, match="collection_type must be one of"):
        scheduler.trigger_manual_collection("sideways")


def test_listeners_receive_started_succeeded_failed_and_skipped(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock
) -> None:
    scheduler = make_scheduler(scripted)
    everything = recorder(scheduler)
    failures = recorder(scheduler, ["failed"])
    received: list[SchedulerEvent] = []
    scheduler.add_listener(received.append)
    scheduler.add_listener(lambda event: 1 / 0)  # a broken listener breaks nothing

    scheduler.trigger_manual_collection("forward")
    scripted.outcomes = {"forward": [ExchangeUnavailable("down")]}
    scheduler.trigger_manual_collection("forward")
    scripted.gate.clear()
    scripted.entered.clear()
    running = scheduler.trigger_manual_collection("backward", wait=False)
    assert scripted.entered.wait(5)
    scheduler.trigger_manual_collection("gaps")
    scripted.gate.set()
    assert running.wait(10)
    scheduler.remove_listener(received.append)
    scheduler.trigger_manual_collection("forward")

    assert everything == [
        ("started", 1),
        ("succeeded", 1),
        ("started", 2),
        ("failed", 2),
        ("started", 3),
        ("skipped", 4),
        ("succeeded", 3),
        ("started", 5),
        ("succeeded", 5),
    ]
    assert failures == [("failed", 2)]
    assert len(received) == 7 and received[3].run.error == "forward: down"
    assert all(e.at == from_ms(to_ms(clock.now_iso())) for e in received)
    with pytest.raises(ValueError, match="unknown event kinds"):
        scheduler.add_listener(print, ["exploded"])


# -- against the fake exchange -------------------------------------------------------------


def oracle(fx: FakeExchange, symbol: str, start: str) -> pl.DataFrame:
    return expected_klines(fx.klines(symbol, "1h", to_ms(start), fx.now_ms() + 1))


def stored(root: Path, symbol: str) -> pl.DataFrame:
    return Lake(root).scan("1h", [symbol]).collect().drop("symbol").sort("open_time")


@pytest.fixture
def real_collector(client: BinanceClient, lake_root: Path, clock: FakeClock) -> CryptoCollector:
    return CryptoCollector(client, lake=lake_root, clock=clock)


def test_manual_triggers_against_the_fake_exchange(
    fake_exchange: FakeExchange, real_collector: CryptoCollector, make_scheduler: Any, lake_root: Path
) -> None:
    scheduler = make_scheduler(real_collector, crypto_symbols=["BTC", "ETH"], start_date="2025-12-30")

    backward = scheduler.trigger_manual_collection("backward")
    assert backward.ok and backward.total_rows_added == 2 * 48

    fake_exchange.advance(3 * HOUR_MS)
    forward = scheduler.trigger_manual_collection("forward")
    assert forward.ok and forward.total_rows_added == 2 * 3

    fake_exchange.advance(2 * HOUR_MS)
    full = scheduler.trigger_manual_collection("full")
    assert full.ok, full.error
    assert list(full.reports) == ["forward", "gaps"] and full.reports["forward"].total_rows_added == 2 * 2
    assert full.notes == ["backward: not needed, the stored history reaches 2025-12-30T00:00:00Z"]

    newcomer = scheduler.trigger_manual_collection("full", ["SOL"])  # nothing stored: backward collects it
    assert newcomer.ok, newcomer.error
    assert newcomer.reports["backward"].total_rows_added == 53

    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert_frame_equal(stored(lake_root, symbol), oracle(fake_exchange, symbol, "2025-12-30"))
    assert scheduler.get_status()["counts"]["succeeded"] == 4


def test_a_gaps_trigger_fills_a_hole(
    fake_exchange: FakeExchange, real_collector: CryptoCollector, make_scheduler: Any, lake_root: Path
) -> None:
    scheduler = make_scheduler(real_collector, crypto_symbols=["BTC"], start_date="2025-12-30")
    assert scheduler.trigger_manual_collection("backward").ok
    hole = (from_ms(to_ms("2025-12-31T10:00:00Z")), from_ms(to_ms("2025-12-31T14:00:00Z")))
    holed = (
        Lake(lake_root)
        .read_partition("1h", "BTCUSDT", "2025-12")
        .filter(~pl.col("open_time").is_between(*hole))
    )
    write_parquet_atomic(partition_path(lake_root, "1h", "BTCUSDT", "2025-12"), holed, interval="1h")
    assert stored(lake_root, "BTCUSDT").height == 48 - 5

    run = scheduler.trigger_manual_collection("gaps")

    assert run.ok, run.error
    assert run.total_rows_added == 5
    assert_frame_equal(stored(lake_root, "BTCUSDT"), oracle(fake_exchange, "BTCUSDT", "2025-12-30"))


def test_a_recorded_ban_is_waited_out_not_hammered(
    lake_root: Path, clock: FakeClock, make_scheduler: Any
) -> None:
    with (
        FakeExchange(now=FAKE_NOW_MS, clock=clock) as fx,
        BinanceClient(
            base_url=fx.base_url,
            retry_delay=0.01,
            ban_file=lake_root / "_meta" / "binance-bans.json",
            clock=clock,
        ) as client,
    ):
        collector = CryptoCollector(client, lake=lake_root, clock=clock)
        scheduler = make_scheduler(collector, crypto_symbols=["BTC"], start_date="2025-12-30")
        assert scheduler.trigger_manual_collection("backward").ok
        fx.advance(3 * HOUR_MS)
        fx.inject(Fault.ban(retry_after_s=7200, path="/api/v3/klines"))

        banned = scheduler.trigger_manual_collection("full")

        assert banned.result == "failed" and "banned this IP" in (banned.error or "")
        assert list(banned.reports) == ["forward"]
        assert banned.notes == [
            "gaps, backward: not run, Binance has banned this IP until 2026-01-01T02:30:00Z"
        ]
        assert scheduler.get_status()["status"] == "error"
        until = client.banned_until()
        assert until == clock() + 7200
        sent = fx.stats().requests

        run = scheduler.trigger_manual_collection("forward")

        assert run.ok, run.error
        assert run.total_rows_added == 3
        assert sum(clock.slept) == pytest.approx(7200)
        # The fake holds the ban on the same clock: a request sent before it ended would get 418.
        later = fx.stats().log[sent:]
        assert later and all(request.status == 200 for request in later)
        assert fx.stats().banned == 1
        assert_frame_equal(stored(lake_root, "BTCUSDT"), oracle(fx, "BTCUSDT", "2025-12-30"))


# -- persistence, one scheduler per lake, requests from another process --------------------


def serve_request(scheduler: CollectorScheduler, request: Callable[[], T]) -> T:
    """Send a request from another thread (as another process would) while driving the
    scheduler the way its background thread does."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(request)
        while not future.done():
            scheduler.run_pending()
            time.sleep(0.01)
        return future.result()


def test_state_lock_and_requests_from_another_process(
    scripted: ScriptedCollector, make_scheduler: Any, clock: FakeClock, lake_root: Path
) -> None:
    control = SchedulerControl(lake_root, poll_s=0.01)
    assert control.state()["status"] == "stopped" and not control.is_running()
    with pytest.raises(SchedulerError, match="no scheduler is running on .*`cryptolake run`"):
        control.request("pause")
    scheduler = make_scheduler(scripted)

    scheduler.start()

    state = control.state()
    assert control.is_running()
    assert state["status"] == "idle" and state["next_run_time"] == "2026-01-01T06:00:00Z"
    assert state["pid"] == os.getpid() and state["schedule"] == "0 */6 * * *"
    with pytest.raises(SchedulerError, match=f"already running on {lake_root} \\(pid {os.getpid()}"):
        make_scheduler(scripted).start()

    assert serve_request(scheduler, lambda: control.request("pause"))["outcome"] == "paused"
    assert control.state()["status"] == "paused" and control.state()["next_run_time"] is None
    ack = serve_request(scheduler, lambda: control.request("resume"))
    assert ack["outcome"] == "resumed; next run at 2026-01-01T06:00:00Z"
    ack = serve_request(
        scheduler, lambda: control.request("trigger", collection_type="forward", crypto_symbols=["ETH"])
    )
    assert ack["outcome"] == "started run #1 (forward)"
    assert control.wait_for_run(ack["run_id"], timeout_s=10)["result"] == "succeeded"
    assert scripted.symbols_seen == [["ETH"]]
    (lake_root / "_meta" / "scheduler-control" / "garbage.json").write_text("{not json")
    scheduler.run_pending()
    assert control.state()["requests"][0]["outcome"].startswith("rejected: not a request")

    scheduler.stop()

    state = control.state()
    assert state["status"] == "stopped" and not control.is_running()
    assert state["last_run"]["result"] == "succeeded" and state["counts"]["runs"] == 1
    again = make_scheduler(scripted)
    again.start()  # the lock was released; counts and the last run carry over
    assert again.get_status()["counts"]["runs"] == 1
    assert again.trigger_manual_collection("gaps").id == 2


def test_stop_lets_the_run_in_progress_finish_its_write(
    fake_exchange: FakeExchange, real_collector: CryptoCollector, make_scheduler: Any, lake_root: Path
) -> None:
    scheduler = make_scheduler(real_collector, crypto_symbols=["BTC", "ETH"], start_date="2023-01-01")
    events = recorder(scheduler)
    fake_exchange.set_latency(0.02)
    scheduler.start()
    run = scheduler.trigger_manual_collection("backward", wait=False)
    deadline = time.monotonic() + 20
    while not list(lake_root.rglob("data.parquet")) and time.monotonic() < deadline:
        time.sleep(0.005)

    scheduler.stop()

    assert run.result == "stopped" and run.error is None
    assert events[-1] == ("stopped", run.id)
    report = run.reports["backward"]
    assert report.stopped and not report.failed
    assert any(r.stopped for r in report.results.values())
    assert check_files(lake_root) > 0
    state = SchedulerControl(lake_root).state()
    assert state["status"] == "stopped" and state["last_run"]["result"] == "stopped"


# -- the process ---------------------------------------------------------------------------


@pytest.fixture
def cli_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lake under tmp_path, which is the working directory, with no cryptolake settings set."""
    monkeypatch.chdir(tmp_path)
    for name in set(os.environ) - set(clean_env()):
        monkeypatch.delenv(name)
    return tmp_path / "lake"


def run_argv(lake: Path, fx: FakeExchange, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cryptolake",
        "run",
        "--lake",
        str(lake),
        "--base-url",
        fx.base_url,
        "--schedule",
        NEVER_IN_A_TEST,
        *args,
    ]


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def status_json(lake: Path) -> dict[str, Any]:
    result = invoke("status", "--json", "--lake", lake)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_run_process_is_watched_steered_and_stopped_from_outside(
    fake_exchange: FakeExchange, cli_lake: Path
) -> None:
    control = SchedulerControl(cli_lake)
    err = open(cli_lake.parent / "run.err", "w+")  # noqa: SIM115 - read after the process ends
    process = subprocess.Popen(
        run_argv(cli_lake, fake_exchange, "--symbols", "BTC,ETH", "--since", "2025-12-30", "--run-now"),
        cwd=cli_lake.parent,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        wait_for(lambda: (control.state().get("last_run") or {}).get("result"), "the first run")

        status = status_json(cli_lake)  # from this process, another one
        assert status["status"] == "idle", status
        assert status["last_run"]["result"] == "succeeded" and status["last_run"]["error"] is None
        assert status["last_run"]["start"] <= status["last_run"]["end"]
        assert status["next_run_time"].endswith("-01-01T00:00:00Z")
        assert status["scheduler"]["pid"] == process.pid
        assert status["symbols"]["BTCUSDT"]["rows"] == 48 and status["total_records_collected"] == 96
        table = invoke("status", "--lake", cli_lake)
        assert f"scheduler: idle; pid {process.pid}, schedule '{NEVER_IN_A_TEST}' UTC" in table.stdout

        second = subprocess.run(
            run_argv(cli_lake, fake_exchange),
            cwd=cli_lake.parent,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert second.stderr.startswith(
            f"error: another scheduler is already running on {cli_lake} (pid {process.pid}"
        )

        fake_exchange.advance(2 * HOUR_MS)
        trigger = invoke("scheduler", "trigger", "--type", "forward", "--wait", "--lake", cli_lake)
        assert trigger.exit_code == 0, trigger.stderr
        assert "started run #2 (forward)" in trigger.stdout
        assert "run #2 (forward) succeeded" in trigger.stdout and "4 new candles" in trigger.stdout

        assert "paused" in invoke("scheduler", "pause", "--lake", cli_lake).stdout
        paused = status_json(cli_lake)
        assert paused["status"] == "paused" and paused["next_run_time"] is None
        assert "resumed" in invoke("scheduler", "resume", "--lake", cli_lake).stdout
        assert status_json(cli_lake)["status"] == "idle"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 143
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        err.seek(0)
        log = err.read()
        err.close()
    assert "run #1 succeeded" in log and "run #2 succeeded" in log and "scheduler stopped" in log, log
    final = status_json(cli_lake)
    assert final["status"] == "stopped" and final["next_run_time"] is None
    assert final["last_run"]["id"] == 2
    assert check_files(cli_lake) == 2 * 50
    refused = invoke("scheduler", "trigger", "--lake", cli_lake)
    assert refused.exit_code == 1 and "no scheduler is running" in refused.stderr


@pytest.mark.slow
def test_sigterm_mid_run_finishes_the_write_and_exits_143(
    fake_exchange: FakeExchange, cli_lake: Path
) -> None:
    fake_exchange.set_latency(0.02)  # a long backward run: a few seconds
    process = subprocess.Popen(
        run_argv(cli_lake, fake_exchange, "--symbols", "BTC,ETH,SOL", "--since", "2021-01-01", "--run-now"),
        cwd=cli_lake.parent,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: list(cli_lake.rglob("data.parquet")), "the first partition")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, log = process.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, log
    assert took < 10, log  # the batch in flight, then exit: about a second
    assert "stopping (SIGTERM): the partition being written finishes and the run is recorded first" in log
    assert check_files(cli_lake) > 0
    state = SchedulerControl(cli_lake).state()
    assert state["status"] == "stopped" and state["last_run"]["result"] == "stopped"


def test_configuration_reads_weekdays_as_cron_does(cli_lake: Path) -> None:
    settings = load_settings(None, {"COLLECTION_SCHEDULE": "0 12 * * 7"}, dotenv_file=None)

    assert settings.scheduler.schedule == "0 12 * * 7"
    with pytest.raises(ConfigError, match="scheduler.schedule = '0 12 \\* \\* 8'"):
        load_settings(None, {"COLLECTION_SCHEDULE": "0 12 * * 8"}, dotenv_file=None)


def test_a_scheduler_that_died_shows_as_stopped_with_a_note(lake_root: Path) -> None:
    meta = lake_root / "_meta"
    meta.mkdir(parents=True)
    (meta / "scheduler.json").write_text(
        json.dumps(
            {
                "status": "running",
                "pid": 4242,
                "next_run_time": "2026-01-01T06:00:00Z",
                "current_run": {"id": 7, "type": "full"},
                "last_run": None,
            }
        )
    )
    (meta / "scheduler.lock").touch()  # left behind by a SIGKILLed process, not held

    state = SchedulerControl(lake_root).state()

    assert state["status"] == "stopped" and state["next_run_time"] is None and state["current_run"] is None
    assert (
        state["note"]
        == "the scheduler process (pid 4242) ended without stopping cleanly; run #7 was interrupted"
    )


def test_run_refuses_an_invalid_cron_expression_in_one_line(cli_lake: Path) -> None:
    result = invoke("run", "--schedule", "0 25 * * *", "--lake", cli_lake)

    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: configuration error: scheduler.schedule = '0 25 * * *'"
    )
    assert not (cli_lake / "_meta" / "scheduler.lock").exists()


def test_run_takes_the_schedule_from_the_original_environment_name(
    cli_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTION_SCHEDULE", "every day")

    result = invoke("run", "--lake", cli_lake)

    assert result.exit_code == 2
    assert "(from environment COLLECTION_SCHEDULE)" in result.stderr


def test_a_restricted_day_and_weekday_fire_on_either_as_in_cron() -> None:
    from datetime import datetime

    from cryptolake.cron import cron_trigger

    def fires(expression: str, n: int) -> list[str]:
        trigger, now, out = cron_trigger(expression), datetime(2026, 11, 29, tzinfo=UTC), []
        for _ in range(n):
            now = trigger.get_next_fire_time(None, now)
            out.append(now.strftime("%a %d %b"))
            now = now.replace(second=1)
        return out

    # The 1st of each month, and every Monday (cron ORs the two when both are restricted).
    assert fires("0 0 1 * 1", 4) == ["Mon 30 Nov", "Tue 01 Dec", "Mon 07 Dec", "Mon 14 Dec"]
    # A star with a step is not a restriction: both must match (odd days that are Mondays).
    assert fires("0 0 */2 * 1", 2) == ["Mon 07 Dec", "Mon 21 Dec"]
    assert fires("0 0 29 2 1", 2) == ["Mon 01 Feb", "Mon 08 Feb"]
