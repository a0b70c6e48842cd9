"""``cryptolake run`` and ``cryptolake scheduler trigger|pause|resume``: the scheduler's commands.

A thin layer over :mod:`cryptolake.scheduler`, registered on the main group by ``cryptolake.cli``.
``run`` is the long-running process; the ``scheduler`` commands steer it from another terminal
through the lake's metadata, and ``cryptolake status`` shows it (:func:`scheduler_summary`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    _pairs,
    base_url_option,
    checked_since,
    creatable_lake,
    exchange_option,
    existing_lake,
    interval_option,
    json_option,
    lake_option,
    make_client,
    make_collector,
    scheduler_shard_option,
    settings_from,
    shard_option,
    symbols_option,
)
from cryptolake.cli.signals import StopSignals
from cryptolake.cli.stream import make_stream_collector
from cryptolake.config import Settings
from cryptolake.errors import LoaderError
from cryptolake.scheduler_types import COLLECTION_TYPES  # not cryptolake.scheduler: keeps --help fast
from cryptolake.sharding import Shard

log = logging.getLogger("cryptolake.scheduler")


def postgres_sync_hook(settings: Settings, exchanges: list[str] | None = None) -> Callable[[Any], str] | None:
    """With a PostgreSQL DSN configured, a hook that syncs the lake (each exchange the run
    collects) after each run."""
    pg = settings.postgres
    if not pg.dsn:
        return None

    def sync_after_run(run: Any) -> str:
        from cryptolake.lake import Lake
        from cryptolake.loader import sync_postgres

        notes = []
        for exchange in exchanges or [settings.collection.exchange]:
            report = sync_postgres(
                Lake(settings.lake.root, exchange),
                pg.dsn,
                settings.collection.interval,
                schema=pg.schema,
                table=pg.table,
                timescale=pg.timescale,
            )
            if not report.ok:
                raise LoaderError(
                    f"PostgreSQL sync of {exchange}: {len(report.failures)} partition(s) failed: "
                    f"{report.failures[0].error}"
                )
            notes.append(
                f"postgres: {report.partitions_sent} partition(s), {report.rows_sent} rows sent to "
                f"{report.table} in {report.seconds:.1f} s"
                + (f" ({exchange})" if exchanges and len(exchanges) > 1 else "")
            )
        return "; ".join(notes)

    return sync_after_run


@cli.command("run")
@click.option(
    "--schedule",
    default=None,
    help="Cron expression, UTC (setting scheduler.schedule, env COLLECTION_SCHEDULE).",
)
@click.option(
    "--since", default=None, help="Collect history back to this date (setting collection.start_date)."
)
@click.option("--top", type=int, default=None, help="Collect the top N pairs by 24h quote volume.")
@symbols_option("default: the top N pairs (--top)")
@interval_option
@lake_option
@exchange_option
@base_url_option
@click.option("--run-now", is_flag=True, help="Start with a full run now rather than at the first fire time.")
@shard_option
@click.pass_context
def run_command(
    ctx: click.Context,
    schedule: str | None,
    since: str | None,
    top: int | None,
    symbols: str | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    run_now: bool,
    shard: Any,
) -> None:
    """Collect on a cron schedule until stopped: a long-running foreground process.

    Each run goes forward (new candles), fills gaps, then goes backward if --since lies before
    what is stored. Every run and its result is logged on stderr. SIGTERM or Ctrl-C lets the
    partition write in progress finish, records the run, then exits 143 (SIGTERM) or 130
    (Ctrl-C); a second signal aborts at once. One scheduler per lake; watch it with
    `cryptolake status` and steer it with `cryptolake scheduler trigger|pause|resume`.
    With stream.enabled, it also keeps a live stream of the Binance symbols' stream.interval
    candles going (as `cryptolake stream` does) beside the scheduled runs.

    Example:

        cryptolake run --schedule "0 */6 * * *" --top 20 --since 2024-01-01
    """
    from cryptolake.scheduler import CollectorScheduler

    if symbols is not None and top is not None:
        raise UsageProblem("give --symbols or --top, not both")
    settings = settings_from(
        ctx,
        lake=lake,
        base_url=base_url,
        interval=interval,
        since=since,
        top=top,
        symbols=symbols,
        schedule=schedule,
    )
    start = checked_since(settings)
    wanted = None if top is not None else (list(settings.collection.symbols) or None)
    if wanted is not None:
        _pairs(settings, wanted)  # refuse a bad name before the lake is created
    # --exchange runs that exchange; otherwise collection.exchanges (or collection.exchange).
    chosen = ctx.meta.get("cryptolake.exchange")
    exchanges = [chosen] if chosen else list(settings.collection.exchanges) or [settings.collection.exchange]
    per_exchange = [
        dataclasses.replace(settings, collection=dataclasses.replace(settings.collection, exchange=e))
        for e in exchanges
    ]
    for each in per_exchange:
        if wanted is not None:
            _pairs(each, wanted)  # refuse a bad name before the lake is created
    creatable_lake(settings)
    stop_requested = threading.Event()
    with contextlib.ExitStack() as stack:
        collectors = []
        for each in per_exchange:
            client = stack.enter_context(make_client(each))
            collector = make_collector(each, client, siblings=len(per_exchange) > 1, shard=shard)
            pairs = collector.resolve_symbols(_pairs(each, wanted)) if wanted is not None else None
            collectors.append((client, collector, pairs))
        client, collector, pairs = collectors[0]
        streamer = None
        if settings.stream.enabled:
            if "binance" not in exchanges:
                raise UsageProblem(
                    "stream.enabled streams Binance's candles; this run collects " + ", ".join(exchanges)
                )
            index = exchanges.index("binance")
            streamer = make_stream_collector(per_exchange[index], collectors[index][0], wanted)
        scheduler = CollectorScheduler(
            client,
            collector,
            settings.scheduler.schedule,
            start,
            crypto_symbols=pairs,
            after_run=postgres_sync_hook(settings, exchanges),
            other_exchanges=[(c, p) for _, c, p in collectors[1:]],
            stream=streamer,
        )
        scheduler.start()
        signals = StopSignals(stop_requested.set, announce=log.info)
        try:
            with signals:
                if run_now:
                    scheduler.trigger_manual_collection("full", wait=False)
                while not stop_requested.wait(0.5):
                    pass
                scheduler.stop()
        finally:
            scheduler.stop()
    if signals.exit_code is not None:
        raise SystemExit(signals.exit_code)


@cli.group("scheduler")
def scheduler_group() -> None:
    """Steer the scheduler running on a lake (`cryptolake run`) from another terminal.

    Example:

        cryptolake scheduler trigger --type forward --wait
    """


@scheduler_group.command("trigger")
@click.option(
    "--type",
    "collection_type",
    type=click.Choice(COLLECTION_TYPES),
    default="full",
    show_default=True,
    help="forward, backward, gaps, or full (all three).",
)
@symbols_option("default: the scheduler's")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit 1 if it failed.")
@lake_option
@scheduler_shard_option
@json_option
@click.pass_context
def trigger_command(
    ctx: click.Context,
    collection_type: str,
    symbols: str | None,
    wait: bool,
    lake: str | None,
    shard: Shard | None,
    as_json: bool,
) -> None:
    """Run a collection now in the running scheduler; skipped (exit 1) if a run is in progress.

    Example:

        cryptolake scheduler trigger --type gaps --wait
    """
    from cryptolake.scheduler import SchedulerControl

    settings = settings_from(ctx, lake=lake, symbols=symbols)
    existing_lake(settings)
    wanted = _pairs(settings, settings.collection.symbols) if symbols is not None else None
    control = SchedulerControl(settings.lake.root, shard=_shard_text(shard))
    ack = control.request("trigger", collection_type=collection_type, crypto_symbols=wanted)
    skipped = str(ack.get("outcome", "")).startswith(("skipped", "rejected"))
    run = control.wait_for_run(int(ack["run_id"])) if wait and not skipped else None
    if as_json:
        click.echo(json.dumps({"request": ack, "run": run}, indent=2))
    else:
        click.echo(f"scheduler on {settings.lake.root}{_of(shard)}: {ack.get('outcome')}", err=skipped)
        if run is not None:
            click.echo(_describe_run(run))
    if skipped or (run is not None and run.get("result") != "succeeded"):
        raise SystemExit(1)


@scheduler_group.command("pause")
@lake_option
@scheduler_shard_option
@click.pass_context
def pause_command(ctx: click.Context, lake: str | None, shard: Shard | None) -> None:
    """Pause scheduled runs (a run in progress goes on; manual triggers still run).

    Example:

        cryptolake scheduler pause --lake data/lake
    """
    _request(ctx, lake, "pause", shard)


@scheduler_group.command("resume")
@lake_option
@scheduler_shard_option
@click.pass_context
def resume_command(ctx: click.Context, lake: str | None, shard: Shard | None) -> None:
    """Resume scheduled runs from the next fire time (missed ones are not caught up).

    Example:

        cryptolake scheduler resume --lake data/lake
    """
    _request(ctx, lake, "resume", shard)


def _request(ctx: click.Context, lake: str | None, action: str, shard: Shard | None) -> None:
    from cryptolake.scheduler import SchedulerControl

    settings = settings_from(ctx, lake=lake)
    existing_lake(settings)
    ack = SchedulerControl(settings.lake.root, shard=_shard_text(shard)).request(action)
    click.echo(f"scheduler on {settings.lake.root}{_of(shard)}: {ack.get('outcome')}")


# -- shown by `cryptolake status` ----------------------------------------------------------


def scheduler_summary(lake_root: Path | str) -> dict[str, Any]:
    """``status``, ``next_run_time`` and ``last_run`` of the lake's scheduler, and the whole
    document under ``scheduler``."""
    from cryptolake.scheduler import SchedulerControl, local_shards

    state = SchedulerControl(lake_root).state()
    shards = {shard: SchedulerControl(lake_root, shard=shard).state() for shard in local_shards(lake_root)}
    if shards and not state.get("last_run") and state["status"] == "stopped":
        # Only sharded schedulers ran here (a lake on object storage): the first one speaks.
        state = next(iter(shards.values()))
    return {
        "status": state["status"],
        "next_run_time": state.get("next_run_time"),
        "last_run": state.get("last_run"),
        "scheduler": state,
        "scheduler_shards": shards,
    }


def _of(shard: Shard | None) -> str:
    return f" (shard {shard})" if shard is not None else ""


def _shard_text(shard: Shard | None) -> str | None:
    return str(shard) if shard is not None else None


def scheduler_line(state: dict[str, Any]) -> str:
    """One line about the scheduler for the status table."""
    if state["status"] == "stopped" and not state.get("last_run"):
        return "scheduler: not running (start one with `cryptolake run`)"
    parts = [f"scheduler: {state['status']}"]
    if state.get("active"):
        parts.append(
            f"pid {state.get('pid')}, schedule '{state.get('schedule')}' UTC, "
            f"next run {state.get('next_run_time') or 'none (paused)'}"
        )
    if state.get("current_run"):
        current = state["current_run"]
        parts.append(f"run #{current['id']} ({current['type']}) running since {current['start']}")
    if state.get("last_run"):
        parts.append("last " + _describe_run(state["last_run"]))
    if state.get("note"):
        parts.append(state["note"])
    return "; ".join(parts)


def _describe_run(run: dict[str, Any]) -> str:
    text = (
        f"run #{run['id']} ({run['type']}) {run['result']} at {run['end']}: {run['rows_added']} new candles"
    )
    return text + (f"; error: {run['error']}" if run.get("error") else "")
