"""CollectorScheduler: keeps the lake complete on a cron schedule, watched and steered from outside.

A scheduled run is a full cycle: forward (new candles), then fill gaps, then backward if the start
date lies before what is stored. APScheduler's :class:`~apscheduler.triggers.cron.CronTrigger`
parses the cron expression (UTC) and computes every fire time, but from the scheduler's own
``clock`` rather than the wall clock, which APScheduler 3's scheduler loop reads directly: one
driver thread asks :meth:`CollectorScheduler.run_pending` what is due, and tests drive the same
method with a fake clock, so days of schedule run in milliseconds.

Policies:

* **One run at a time.** A run that would overlap the one still running is skipped and reported
  (``skipped`` event, counted), never stacked. Fire times missed while the process was busy or
  asleep collapse into one run.
* **Failures.** A failed run sets the status to ``error`` with the reason; the next run goes ahead.
  A step that fails does not stop the next step; one symbol's failure never stops the others.
* **IP bans.** A recorded 418 ban (in this process or, through the lake's ban file, any other) is
  waited out before a run sends anything; a run that gets banned sends nothing more.
* **Stopping.** :meth:`~CollectorScheduler.stop` lets the partition write in progress finish,
  then returns; the run is recorded as ``stopped``.

While started, a scheduler owns ``<lake>/_meta/scheduler.lock`` (one scheduler per lake) and keeps
its status in ``<lake>/_meta/scheduler.json`` (written atomically on every change). Other processes
read that file and steer the scheduler through :class:`SchedulerControl`, which drops one small
JSON request per action into ``<lake>/_meta/scheduler-control/``; the scheduler polls that folder,
applies each request, deletes it and acknowledges it in ``scheduler.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from filelock import FileLock, Timeout

from cryptolake.atomic import write_bytes_atomic
from cryptolake.config import SPECS_BY_KEY
from cryptolake.cron import Trigger, cron_trigger
from cryptolake.errors import ConfigError, CryptolakeError, SchedulerError
from cryptolake.lake import meta_dir
from cryptolake.lake.storage import is_object_url
from cryptolake.scheduler_types import COLLECTION_TYPES, CollectionType  # defined there for the CLI's options
from cryptolake.timeutils import from_ms, iso, to_ms

if TYPE_CHECKING:
    from cryptolake.collector import CollectionReport, CryptoCollector
    from cryptolake.sources.base import KlineSource
    from cryptolake.streaming import StreamCollector

log = logging.getLogger("cryptolake.scheduler")

EventKind = Literal["started", "succeeded", "failed", "skipped", "stopped"]
RunResult = Literal["succeeded", "failed", "skipped", "stopped"]

EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
STATE_FILE = "scheduler.json"
LOCK_FILE = "scheduler.lock"
CONTROL_DIR = "scheduler-control"
CONTROL_ACTIONS = ("trigger", "pause", "resume")

_STEPS: dict[str, tuple[str, ...]] = {
    "forward": ("forward",),
    "backward": ("backward",),
    "gaps": ("gaps",),
    "full": ("forward", "gaps", "backward"),
}
_DEFAULT_START_DATE: date = SPECS_BY_KEY["collection.start_date"].default
_KEPT_RUNS = 10
_KEPT_REQUESTS = 20


@dataclass
class SchedulerRun:
    """One collection run (or one that was skipped): its steps' reports, result and error."""

    id: int
    collection_type: CollectionType
    trigger: Literal["scheduled", "manual"]
    crypto_symbols: tuple[str, ...] | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: RunResult | None = None
    """None while the run is in progress."""
    error: str | None = None
    reports: dict[str, CollectionReport] = field(default_factory=dict)
    """Each step's report, by step (``forward``, ``gaps``, ``backward``)."""
    notes: list[str] = field(default_factory=list)
    """Why a step did not run, why the run was skipped."""
    _done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"

    @property
    def total_rows_added(self) -> int:
        return sum(r.total_rows_added for r in self.reports.values())

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run has finished (or was skipped); False on timeout."""
        return self._done.wait(timeout_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.collection_type,
            "trigger": self.trigger,
            "symbols": list(self.crypto_symbols) if self.crypto_symbols is not None else None,
            "scheduled_for": _iso(self.scheduled_for),
            "start": _iso(self.started_at),
            "end": _iso(self.finished_at),
            "result": self.result,
            "error": self.error,
            "rows_added": self.total_rows_added,
            "steps": {
                step: {"rows_added": r.total_rows_added, "symbols": len(r.results), "failed": r.failed}
                for step, r in self.reports.items()
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SchedulerEvent:
    """Given to listeners: a run ``started``, ``succeeded``, ``failed``, was ``skipped`` (it would
    have overlapped the run in progress) or was ``stopped`` with the scheduler."""

    kind: EventKind
    run: SchedulerRun
    at: datetime


Listener = Callable[[SchedulerEvent], None]


class CollectorScheduler:
    """Runs a :class:`~cryptolake.collector.CryptoCollector` on a cron schedule, in the background.

    Args:
        binance_client: the collector's client; consulted for recorded IP bans.
        crypto_collector: does the collecting; its lake holds the scheduler's state and lock.
        schedule_cron: a 5-field cron expression, evaluated in UTC.
        start_date: history is collected back to this date (or the listing, if later).
        crypto_symbols: base assets or pairs; None means the collector's top N (backward) and
            everything stored (forward, gaps).
        clock: epoch seconds now; every fire time and timestamp comes from it.
        sleep: how to wait out an IP ban; None waits on the stop signal, so :meth:`stop` cuts
            the wait short. Tests pass a fake clock's sleep.
        poll_interval_s: longest idle wait of the background thread, which is also how often it
            looks for requests from other processes.
        after_run: called after each run that was not stopped (e.g. a PostgreSQL sync); what it
            returns is added to the run's notes, and an exception fails the run.

    Raises:
        ConfigError: the cron expression is invalid.

    Example::

        scheduler = CollectorScheduler(client, collector, "0 */6 * * *", date(2024, 1, 1))
        scheduler.start()
        scheduler.get_status()["next_run_time"]
        scheduler.trigger_manual_collection("forward", ["BTC", "ETH"])
        scheduler.stop()
    """

    def __init__(
        self,
        binance_client: KlineSource,
        crypto_collector: CryptoCollector,
        schedule_cron: str = "0 */6 * * *",
        start_date: date | datetime | str = _DEFAULT_START_DATE,
        *,
        crypto_symbols: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        poll_interval_s: float = 0.5,
        after_run: Callable[[SchedulerRun], str | None] | None = None,
        other_exchanges: Sequence[tuple[CryptoCollector, Sequence[str] | None]] = (),
        stream: StreamCollector | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self.client = binance_client
        self.collector = crypto_collector
        #: Collectors of other exchanges into the same lake, each with its symbols (None: its
        #: top N / everything stored); every step runs them beside the main one, in parallel
        #: (each exchange has its own rate budget).
        self.other_exchanges = [(c, tuple(s) if s is not None else None) for c, s in other_exchanges]
        #: A live stream kept going beside the scheduled runs (started and stopped with them).
        self.stream = stream
        self.schedule_cron = schedule_cron.strip()
        self.cron = parse_cron(self.schedule_cron)
        self.start_date = start_date
        self.crypto_symbols = tuple(crypto_symbols) if crypto_symbols is not None else None
        self.poll_interval_s = poll_interval_s
        self.after_run = after_run
        self.lake_root: str | Path = crypto_collector.lake.location
        shard = crypto_collector.shard
        #: Where the lock, the status document and the control requests live (see :func:`scheduler_dir`).
        self.state_dir = scheduler_dir(self.lake_root, str(shard) if shard is not None else None)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._file_lock: FileLock | None = None
        self._started_at: datetime | None = None
        self._paused = False
        self._next_fire: datetime | None = None
        self._current: SchedulerRun | None = None
        self._ban_until: float | None = None
        self._last_run: dict[str, Any] | None = None
        self._seq = 0
        self._counts = {"runs": 0, "succeeded": 0, "failed": 0, "skipped": 0, "stopped": 0}
        self._history: deque[dict[str, Any]] = deque(maxlen=_KEPT_RUNS)
        self._requests: deque[dict[str, Any]] = deque(maxlen=_KEPT_REQUESTS)
        self._listeners: list[tuple[Listener, frozenset[str] | None]] = []

    def __repr__(self) -> str:
        return f"CollectorScheduler({self.schedule_cron!r}, lake={str(self.lake_root)!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the lake's scheduler lock and run in a background thread; returns at once.

        Raises:
            SchedulerError: another scheduler runs on this lake.
        """
        with self._lock:
            if self._thread is not None:
                return
            self._acquire_lake_lock()
            self._stopping.clear()
            self._started_at = self._now()
            self._restore_state()
            _discard_requests(self.state_dir)
            self._next_fire = None if self._paused else self._fire_time_from(self._now(), inclusive=True)
            self._persist()
            self._thread = threading.Thread(target=self._loop, name="cryptolake-scheduler", daemon=True)
            self._thread.start()
            if self.stream is not None:
                self.stream.start()
        log.info(
            "scheduler started on %s%s: schedule '%s' (UTC), next run at %s",
            self.lake_root,
            f" (shard {self.collector.shard})" if self.collector.shard is not None else "",
            self.schedule_cron,
            _iso(self._next_fire) or "never",
        )

    def stop(self) -> None:
        """Stop scheduling; a run in progress finishes its partition write, then stops.

        Returns once the run has ended and the lake's scheduler lock is released.
        """
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
            if self.stream is not None:
                self.stream.stop()  # writes what is buffered and compacts
        with self._lock:  # a run launched from now on is skipped: the last worker is this one
            worker = self._worker
        while worker is not None and worker.is_alive():
            # The collector clears its stop flag when a step starts: repeat until the run is over.
            for collector in self._collectors():
                collector.request_stop()
            worker.join(0.2)
        with self._lock:
            self._next_fire = None
            if self._file_lock is not None:
                self._persist(status="stopped")
                self._file_lock.release()
                self._file_lock = None
                log.info("scheduler stopped")

    def pause(self) -> None:
        """Fire no scheduled run until :meth:`resume`; a run in progress goes on. Manual
        triggers still run."""
        with self._lock:
            if self._paused:
                return
            self._paused, self._next_fire = True, None
            self._persist()
        log.info("scheduler paused: no scheduled run until it is resumed")
        self._wake.set()

    def resume(self) -> None:
        """Schedule runs again, from the next fire time after now (missed ones are not caught up)."""
        with self._lock:
            if not self._paused:
                return
            self._paused = False
            self._next_fire = self._fire_time_from(self._now(), inclusive=True)
            self._persist()
        log.info("scheduler resumed: next run at %s", _iso(self._next_fire) or "never")
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_pending()
            except Exception:  # noqa: BLE001 - the schedule must outlive any one bad tick
                log.exception("scheduler tick failed; going on")
            self._wake.wait(self._idle_wait_s())
            self._wake.clear()

    def _idle_wait_s(self) -> float:
        with self._lock:
            if self._next_fire is None:
                return self.poll_interval_s
            return min(self.poll_interval_s, max(0.0, self._next_fire.timestamp() - self._clock()))

    # -- running -------------------------------------------------------------------------

    def run_pending(self) -> SchedulerRun | None:
        """Apply requests from other processes, then launch the scheduled run if it is due.

        The background thread calls this; call it yourself to drive the scheduler from your own
        loop or, with a fake clock, from a test. Returns the scheduled run launched (or skipped).
        """
        with self._tick_lock:
            if self._file_lock is not None:
                self._apply_requests()
            now = self._now()
            with self._lock:
                if self._paused or self._stopping.is_set():
                    return None
                if self._next_fire is None:
                    self._next_fire = self._fire_time_from(now, inclusive=True)
                    self._persist()
                due = self._next_fire
                if due is None or due > now:
                    return None
                self._next_fire = self._fire_time_from(now, inclusive=False)
                run = self._new_run("full", "scheduled", self.crypto_symbols, scheduled_for=due)
            return self._launch(run)

    def trigger_manual_collection(
        self,
        collection_type: CollectionType = "full",
        crypto_symbols: Sequence[str] | None = None,
        *,
        wait: bool = True,
    ) -> SchedulerRun:
        """Run a collection now, unless one is in progress (then the run is skipped, not queued).

        Args:
            collection_type: ``forward``, ``backward``, ``gaps`` or ``full`` (all three).
            crypto_symbols: base assets or pairs; None means the scheduler's symbols.
            wait: block until the run has finished; False returns once it has started.

        Returns:
            The run; ``.result`` is ``succeeded``, ``failed``, ``stopped`` or ``skipped`` (None
            while still running when ``wait`` is False).
        """
        if collection_type not in _STEPS:
            raise ValueError(
                f"collection_type must be one of {', '.join(COLLECTION_TYPES)}, not {collection_type!r}"
            )
        symbols = tuple(crypto_symbols) if crypto_symbols is not None else self.crypto_symbols
        with self._lock:
            run = self._new_run(collection_type, "manual", symbols)
        self._launch(run)
        if wait:
            run.wait()
        return run

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no run is in progress; False on timeout."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
            return not worker.is_alive()
        return True

    def _new_run(
        self,
        collection_type: CollectionType,
        trigger: Literal["scheduled", "manual"],
        symbols: tuple[str, ...] | None,
        scheduled_for: datetime | None = None,
    ) -> SchedulerRun:
        self._seq += 1
        return SchedulerRun(self._seq, collection_type, trigger, symbols, scheduled_for=scheduled_for)

    def _launch(self, run: SchedulerRun) -> SchedulerRun:
        with self._lock:
            busy = self._current
            if busy is None and not self._stopping.is_set():
                run.started_at = self._now()
                self._current = run
                self._counts["runs"] += 1
                self._persist()
                self._worker = threading.Thread(
                    target=self._execute, args=(run,), name=f"cryptolake-run-{run.id}", daemon=True
                )
                self._worker.start()
                return run
            reason = (
                f"run #{busy.id} ({busy.collection_type}) is still running since {_iso(busy.started_at)}"
                if busy is not None
                else "the scheduler is stopping"
            )
            run.started_at = run.finished_at = self._now()
            run.result = "skipped"
            run.notes.append(reason)
            self._counts["skipped"] += 1
            self._history.appendleft(run.to_dict())
            self._persist()
        log.warning("run #%d (%s, %s) skipped: %s", run.id, run.collection_type, run.trigger, reason)
        self._emit("skipped", run)
        run._done.set()
        return run

    def _execute(self, run: SchedulerRun) -> None:
        when = f", scheduled for {_iso(run.scheduled_for)}" if run.scheduled_for else ""
        log.info("run #%d started (%s, %s%s)", run.id, run.collection_type, run.trigger, when)
        self._emit("started", run)
        try:
            errors, interrupted = self._run_steps(run)
        except Exception as exc:  # noqa: BLE001 - a bug in one run must not kill the schedule
            log.exception("run #%d crashed", run.id)
            errors, interrupted = [f"{type(exc).__name__}: {exc}"], False
        if self.after_run is not None and not interrupted:
            try:
                note = self.after_run(run)
            except Exception as exc:  # noqa: BLE001 - reported as the run's error
                if not isinstance(exc, CryptolakeError):
                    log.exception("run #%d: after-run step failed", run.id)
                errors.append(f"after run: {_describe_exception(exc)}")
            else:
                if note:
                    run.notes.append(note)
        with self._lock:
            run.finished_at = self._now()
            if interrupted:
                run.result = "stopped"
                run.notes.append("stopped with the scheduler: the partition write in progress finished first")
            else:
                run.result = "failed" if errors else "succeeded"
                run.error = "; ".join(errors)[:2000] or None
            self._current, self._ban_until = None, None
            self._counts[run.result] += 1
            self._last_run = run.to_dict()
            self._history.appendleft(self._last_run)
            self._persist()
        self._log_result(run)
        self._emit(run.result, run)
        run._done.set()

    def _run_steps(self, run: SchedulerRun) -> tuple[list[str], bool]:
        """Run the steps in order; returns the errors and whether a stop cut the run short."""
        errors: list[str] = []
        steps = _STEPS[run.collection_type]
        for index, step in enumerate(steps):
            self._wait_out_ban(run)
            if self._stopping.is_set():
                return errors, True
            for key, report, exc in self._run_step_everywhere(step, run):
                if exc is not None:
                    if not isinstance(exc, CryptolakeError):
                        log.exception("run #%d: %s failed", run.id, key, exc_info=exc)
                    errors.append(f"{key}: {_describe_exception(exc)}")
                elif report is not None:
                    run.reports[key] = report
                    if report.failed:
                        errors.append(_describe_failures(key, report))
            if self._stopping.is_set():
                return errors, True
            until = self.client.banned_until()
            if until and index + 1 < len(steps):
                run.notes.append(
                    f"{', '.join(steps[index + 1 :])}: not run, Binance has banned this IP "
                    f"until {iso(int(until * 1000))}"
                )
                break
        return errors, False

    def _collectors(self) -> list[CryptoCollector]:
        return [self.collector, *(c for c, _ in self.other_exchanges)]

    def _run_step_everywhere(
        self, step: str, run: SchedulerRun
    ) -> list[tuple[str, CollectionReport | None, Exception | None]]:
        """One step on the main exchange and, in parallel, on every other one: ``(key,
        report, error)`` each, the key being the step (``forward``) on Binance and
        ``<exchange>:<step>`` on any other exchange."""

        def one(
            collector: CryptoCollector, symbols: list[str] | None, key: str
        ) -> tuple[str, CollectionReport | None, Exception | None]:
            try:
                return key, self._run_step(step, run, collector, symbols, key), None
            except Exception as exc:  # noqa: BLE001 - a failed step is reported; the next one runs
                return key, None, exc

        main_symbols = list(run.crypto_symbols) if run.crypto_symbols is not None else None
        main_key = (
            step if self.collector.lake.exchange == "binance" else f"{self.collector.lake.exchange}:{step}"
        )
        if not self.other_exchanges:
            return [one(self.collector, main_symbols, main_key)]
        from concurrent.futures import ThreadPoolExecutor

        jobs = [(self.collector, main_symbols, main_key)]
        for collector, symbols in self.other_exchanges:
            mine = list(symbols) if symbols is not None else None
            jobs.append((collector, mine, f"{collector.lake.exchange}:{step}"))
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="cryptolake-exchange") as pool:
            return list(pool.map(lambda job: one(*job), jobs))

    def _run_step(
        self,
        step: str,
        run: SchedulerRun,
        collector: CryptoCollector | None = None,
        symbols: list[str] | None = None,
        key: str | None = None,
    ) -> CollectionReport | None:
        collector = collector or self.collector
        if step == "forward":
            return collector.collect_forward(symbols)
        if step == "gaps":
            return collector.detect_and_fill_gaps(symbols)
        if run.collection_type == "full":
            symbols = self._symbols_missing_history(symbols, collector)
            if not symbols:
                run.notes.append(
                    f"{key or step}: not needed, the stored history reaches {self._start_text()}"
                )
                return None
        return collector.collect_backward(self.start_date, symbols)

    def _symbols_missing_history(
        self, symbols: list[str] | None, collector: CryptoCollector | None = None
    ) -> list[str]:
        """The pairs whose stored history starts after the start date (or is empty)."""
        collector = collector or self.collector
        start_ms = collector.grid.ceil(to_ms(self.start_date))
        missing = []
        for pair in collector.resolve_symbols(symbols):
            bounds = collector.lake.bounds(collector.interval, pair)
            if bounds is None or bounds[0] > start_ms:
                missing.append(pair)
        return missing

    def _wait_out_ban(self, run: SchedulerRun) -> None:
        announced = False
        while not self._stopping.is_set():
            until, now = self.client.banned_until(), self._clock()
            if until <= now:
                break
            if not announced:
                log.warning(
                    "Binance has banned this IP until %s: run #%d waits for the ban to end",
                    iso(int(until * 1000)),
                    run.id,
                )
                with self._lock:
                    self._ban_until = until
                    self._persist()
                announced = True
            if self._sleep is not None:
                self._sleep(until - now)
            else:
                self._stopping.wait(until - now)
        with self._lock:
            if self._ban_until is not None:
                self._ban_until = None
                self._persist()

    def _log_result(self, run: SchedulerRun) -> None:
        took = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else 0
        steps = ", ".join(f"{s} {r.total_rows_added}" for s, r in run.reports.items())
        summary = f"run #{run.id} {run.result} in {took:.1f} s: {run.total_rows_added} new candles"
        summary += f" ({steps})" if steps else ""
        summary += f"; next run at {_iso(self._next_fire) or 'none scheduled'}"
        if run.result == "failed":
            log.error("%s; error: %s", summary, run.error)
        else:
            log.info("%s", summary)

    # -- status and listeners --------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        """The status (``idle``, ``running``, ``paused`` or ``error``), ``error`` (the reason, with
        ``error``), ``next_run_time``, ``last_run`` (``start``, ``end``, ``result``, ``error``, ...),
        ``current_run``, ``counts`` (``runs``, ``succeeded``, ``failed``, ``skipped``, ``stopped``)
        and the configuration. Times are ISO 8601 UTC text."""
        with self._lock:
            return self._status_document()

    def add_listener(self, callback: Listener, kinds: Sequence[str] | None = None) -> None:
        """Call ``callback(event)`` for each :class:`SchedulerEvent` (only ``kinds``, if given).

        Listeners run on the scheduler's threads; an exception in one is logged and ignored.
        """
        unknown = set(kinds or ()) - set(EVENT_KINDS)
        if unknown:
            raise ValueError(f"unknown event kinds {sorted(unknown)}; expected some of {EVENT_KINDS}")
        with self._lock:
            self._listeners.append((callback, frozenset(kinds) if kinds is not None else None))

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling ``callback``."""
        with self._lock:
            self._listeners = [(cb, k) for cb, k in self._listeners if cb != callback]

    def _emit(self, kind: EventKind, run: SchedulerRun) -> None:
        event = SchedulerEvent(kind, run, self._now())
        with self._lock:
            listeners = list(self._listeners)
        for callback, kinds in listeners:
            if kinds is None or kind in kinds:
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - a listener must not break the scheduler
                    log.exception("scheduler listener %r failed on %s", callback, kind)

    def _status(self) -> str:
        if self._current is not None:
            return "running"
        if self._paused:
            return "paused"
        if self._last_run is not None and self._last_run.get("result") == "failed":
            return "error"
        return "idle"

    def _status_document(self) -> dict[str, Any]:
        status = self._status()
        return {
            "status": status,
            "error": self._last_run.get("error") if status == "error" and self._last_run else None,
            "next_run_time": _iso(self._next_fire),
            "last_run": self._last_run,
            "current_run": self._current.to_dict() if self._current is not None else None,
            "paused": self._paused,
            "active": self._file_lock is not None,
            "waiting_for_ban_until": iso(int(self._ban_until * 1000)) if self._ban_until else None,
            "counts": dict(self._counts),
            "schedule": self.schedule_cron,
            "timezone": "UTC",
            "start_date": self._start_text(),
            "symbols": list(self.crypto_symbols) if self.crypto_symbols is not None else None,
            "interval": self.collector.interval,
            "lake": str(self.lake_root),
        }

    # -- persistence, the lake lock and requests from other processes ----------------------

    def _acquire_lake_lock(self) -> None:
        path = self.state_dir / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        try:
            # A short wait: `cryptolake status` probes the lock for an instant.
            lock.acquire(timeout=0.5)
        except Timeout:
            other = _read_state(self.state_dir)
            who = (
                f" (pid {other.get('pid')} on {other.get('host')}, since {other.get('started_at')})"
                if other.get("pid")
                else ""
            )
            raise SchedulerError(
                f"another scheduler is already running on {self.lake_root}{who}; "
                "stop it first, or use another --lake"
            ) from None
        self._file_lock = lock

    def _restore_state(self) -> None:
        """Carry run counts, the last run and the history over from the previous process."""
        previous = _read_state(self.state_dir)
        counts = previous.get("counts")
        if isinstance(counts, dict):
            self._counts.update({k: int(v) for k, v in counts.items() if k in self._counts})
        if isinstance(previous.get("last_run"), dict):
            self._last_run = previous["last_run"]
        for entry in reversed(previous.get("history") or []):
            self._history.appendleft(entry)
        self._seq = max([self._seq, int(previous.get("last_run_id") or 0)])

    def _persist(self, status: str | None = None) -> None:
        """Write the status document, if this scheduler owns the lake's (caller holds _lock)."""
        if self._file_lock is None:
            return
        document = self._status_document()
        if status is not None:
            document.update(status=status, next_run_time=None, current_run=None)
        document.update(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=_iso(self._started_at),
            updated_at=_iso(self._now()),
            last_run_id=self._seq,
            history=list(self._history),
            requests=list(self._requests),
        )
        try:
            write_bytes_atomic(
                self.state_dir / STATE_FILE,
                json.dumps(document, indent=1, sort_keys=True).encode("utf-8"),
            )
        except OSError as exc:  # a full disk must not stop the schedule
            log.error("cannot write the scheduler state: %s", exc)

    def _apply_requests(self) -> None:
        for path, request in _pending_requests(self.state_dir):
            action = request.get("action") if isinstance(request, dict) else None
            ack: dict[str, Any] = {"id": path.stem, "action": action}
            try:
                ack.update(self._apply(request))
            except (ValueError, TypeError) as exc:
                ack["outcome"] = f"rejected: {exc}"
            path.unlink(missing_ok=True)
            ack["handled_at"] = _iso(self._now())
            log.info("request %s from another process: %s", action, ack["outcome"])
            with self._lock:
                self._requests.appendleft(ack)
                self._persist()

    def _apply(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or request.get("action") not in CONTROL_ACTIONS:
            raise ValueError(f"not a request; actions: {', '.join(CONTROL_ACTIONS)}")
        if request["action"] == "pause":
            self.pause()
            return {"outcome": "paused"}
        if request["action"] == "resume":
            self.resume()
            return {"outcome": f"resumed; next run at {_iso(self._next_fire)}"}
        symbols = request.get("symbols")
        if symbols is not None and not (
            isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
        ):
            raise ValueError("symbols must be a list of strings")
        run = self.trigger_manual_collection(request.get("collection_type") or "full", symbols, wait=False)
        if run.result == "skipped":
            return {"outcome": f"skipped: {run.notes[-1]}", "run_id": run.id}
        return {"outcome": f"started run #{run.id} ({run.collection_type})", "run_id": run.id}

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return from_ms(int(self._clock() * 1000))

    def _fire_time_from(self, now: datetime, *, inclusive: bool) -> datetime | None:
        start = now if inclusive else now + timedelta(microseconds=1)
        fire: datetime | None = self.cron.get_next_fire_time(None, start)
        return fire

    def _start_text(self) -> str:
        return iso(to_ms(self.start_date))


class SchedulerControl:
    """Watch and steer the scheduler of a lake from another process (or the same one).

    Requests are files in ``<lake>/_meta/scheduler-control/``; the running scheduler applies each
    within its poll interval and acknowledges it in ``<lake>/_meta/scheduler.json``.
    """

    def __init__(self, lake_root: str | Path, *, poll_s: float = 0.1, shard: str | None = None) -> None:
        self.lake_root = lake_root if is_object_url(lake_root) else Path(lake_root)
        self.shard = shard
        self.state_dir = scheduler_dir(lake_root, shard)
        self.poll_s = poll_s

    def is_running(self) -> bool:
        """True while a scheduler process holds the lake's scheduler lock."""
        path = self.state_dir / LOCK_FILE
        if not path.exists():
            return False
        lock = FileLock(path)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            return True
        lock.release()
        return False

    def state(self) -> dict[str, Any]:
        """The scheduler's status document, as in :meth:`CollectorScheduler.get_status`, plus
        ``pid``, ``host``, ``started_at``, ``updated_at``, ``history`` and ``requests``.

        ``status`` is ``stopped`` when no scheduler runs on the lake (``note`` says so when the
        last one did not stop cleanly).
        """
        document = _read_state(self.state_dir)
        if self.is_running():
            return document
        if not document:
            return {
                "status": "stopped",
                "error": None,
                "next_run_time": None,
                "last_run": None,
                "current_run": None,
                "active": False,
                "note": "no scheduler has run on this lake",
            }
        if document.get("status") != "stopped":
            document["note"] = (
                f"the scheduler process (pid {document.get('pid')}) ended without stopping cleanly"
            )
            if document.get("current_run"):
                document["note"] += f"; run #{document['current_run']['id']} was interrupted"
        document.update(status="stopped", next_run_time=None, current_run=None, active=False)
        return document

    def request(
        self,
        action: str,
        *,
        collection_type: str | None = None,
        crypto_symbols: Sequence[str] | None = None,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        """Ask the running scheduler to ``trigger`` a run, ``pause`` or ``resume``.

        Returns:
            The acknowledgement: ``outcome`` (e.g. ``started run #4 (forward)``) and, for a
            trigger, ``run_id``.

        Raises:
            SchedulerError: no scheduler runs on the lake, or it did not answer in ``timeout_s``.
        """
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(CONTROL_ACTIONS)}")
        if collection_type is not None and collection_type not in COLLECTION_TYPES:
            raise ValueError(f"collection_type must be one of {', '.join(COLLECTION_TYPES)}")
        if not self.is_running():
            others = [k for k in local_shards(self.lake_root) if k != self.shard]
            running = [k for k in others if SchedulerControl(self.lake_root, shard=k).is_running()]
            if running:
                raise SchedulerError(
                    f"no scheduler {'of shard ' + self.shard + ' ' if self.shard else ''}runs on "
                    f"{self.lake_root} on this host; shard schedulers {', '.join(running)} do: "
                    "pass --shard K/N"
                )
            raise SchedulerError(
                f"no scheduler {'of shard ' + self.shard + ' ' if self.shard else ''}is running on "
                f"{self.lake_root}; start one with `cryptolake run`"
            )
        request_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        body = {
            "action": action,
            "collection_type": collection_type or "full",
            "symbols": list(crypto_symbols) if crypto_symbols is not None else None,
            "requested_at": iso(int(time.time() * 1000)),
            "pid": os.getpid(),
        }
        path = self.state_dir / CONTROL_DIR / f"{request_id}.json"
        write_bytes_atomic(path, json.dumps(body).encode("utf-8"))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ack in _read_state(self.state_dir).get("requests") or []:
                if ack.get("id") == request_id:
                    return dict(ack)
            time.sleep(self.poll_s)
        path.unlink(missing_ok=True)
        raise SchedulerError(
            f"the scheduler on {self.lake_root} did not answer within {timeout_s:g} s; "
            "the request was withdrawn"
        )

    def wait_for_run(self, run_id: int, timeout_s: float | None = None) -> dict[str, Any]:
        """Block until run ``run_id`` has finished; returns its record (``result``, ``error``, ...).

        Raises:
            SchedulerError: the scheduler stopped first, or ``timeout_s`` passed.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            document = _read_state(self.state_dir)
            for run in document.get("history") or []:
                if run.get("id") == run_id and run.get("result"):
                    return dict(run)
            if document.get("status") == "stopped" or not self.is_running():
                raise SchedulerError(f"the scheduler on {self.lake_root} stopped before run #{run_id} ended")
            time.sleep(self.poll_s)
        raise SchedulerError(f"run #{run_id} did not finish within {timeout_s:g} s")


def parse_cron(expression: str) -> Trigger:
    """A UTC cron trigger for a 5-field expression, weekdays numbered as cron numbers them
    (see :func:`cryptolake.cron.cron_trigger`).

    Raises:
        ConfigError: the expression is not valid cron.
    """
    try:
        return cron_trigger(expression)
    except ValueError as exc:
        raise ConfigError(
            f"invalid cron expression {expression!r}: {exc}; expected 5 fields "
            "(minute hour day month weekday) such as '0 */6 * * *'"
        ) from None


def scheduler_dir(lake_root: str | Path, shard: str | None = None) -> Path:
    """Where a lake's scheduler keeps its lock, status document and control requests: the
    lake's ``_meta`` folder; for a lake on object storage, which schedulers on several hosts
    share, this host's state folder (``$XDG_STATE_HOME/cryptolake/schedulers/<lake>[-shard]``,
    default ``~/.local/state``), one per lake URL and shard."""
    if not is_object_url(lake_root):
        return meta_dir(lake_root)
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = hashlib.sha256(str(lake_root).rstrip("/").encode()).hexdigest()[:16]
    if shard:
        name += "-shard-" + shard.replace("/", "-of-")
    return state / "cryptolake" / "schedulers" / name


def local_shards(lake_root: str | Path) -> list[str]:
    """The shards (``"K/N"``) whose schedulers ran on this host for a lake on object storage."""
    if not is_object_url(lake_root):
        return []
    base = scheduler_dir(lake_root)
    found = []
    for folder in base.parent.glob(f"{base.name}-shard-*-of-*"):
        index, _, count = folder.name.rpartition("-shard-")[2].partition("-of-")
        if index.isdigit() and count.isdigit():
            found.append((int(count), int(index)))
    return [f"{index}/{count}" for count, index in sorted(found)]


def read_state_file(lake_root: str | Path, shard: str | None = None) -> dict[str, Any]:
    """The last status document a scheduler wrote on this lake; empty if none (or unreadable)."""
    return _read_state(scheduler_dir(lake_root, shard))


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        document = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _pending_requests(state_dir: Path) -> list[tuple[Path, Any]]:
    folder = state_dir / CONTROL_DIR
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    found = []
    for path in paths:
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            found.append((path, None))
    return found


def _discard_requests(state_dir: Path) -> None:
    """Requests left from a previous process are stale: nobody is waiting for their answer."""
    stale = _pending_requests(state_dir)
    for path, _ in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.warning("discarded %d control request(s) left from a previous scheduler", len(stale))


def _describe_exception(exc: Exception) -> str:
    return str(exc) if isinstance(exc, CryptolakeError) else f"{type(exc).__name__}: {exc}"


def _describe_failures(step: str, report: CollectionReport) -> str:
    failed = report.failed
    symbol, error = next(iter(failed.items()))
    more = f"; and {len(failed) - 1} more" if len(failed) > 1 else ""
    return f"{step}: {len(failed)} of {len(report.results)} symbols failed ({symbol}: {error}{more})"


def _iso(value: datetime | None) -> str | None:
    return iso(to_ms(value)) if value is not None else None
