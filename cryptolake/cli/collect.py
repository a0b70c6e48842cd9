"""``collect`` and ``fill-gaps``: the jobs that fetch candles."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    _pairs,
    base_url_option,
    checked_since,
    checked_until,
    creatable_lake,
    exchange_option,
    existing_lake,
    interval_option,
    json_option,
    known_pairs,
    lake_option,
    make_client,
    make_collector,
    settings_from,
    shard_option,
    source_options,
    symbols_option,
)
from cryptolake.config import Settings

if TYPE_CHECKING:
    pass


@cli.command("collect")
@symbols_option("default: the top N pairs (--top)")
@click.option("--top", type=int, default=None, help="Collect the top N pairs by 24h quote volume.")
@click.option(
    "--since",
    default=None,
    help="Start: a date YYYY-MM-DD or a UTC time 2023-01-01T00:00:00Z (setting collection.start_date).",
)
@click.option(
    "--until",
    default=None,
    help="Last candle wanted, inclusive: a date (that whole day) or a UTC time (default: the last closed one).",
)
@interval_option
@lake_option
@exchange_option
@base_url_option
@source_options
@click.option("--backward-only", is_flag=True, help="Only fetch history before what is stored.")
@click.option("--forward-only", is_flag=True, help="Only fetch candles after what is stored.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Fail at once if another process is collecting into or writing to the lake.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary and errors.")
@shard_option
@json_option
@click.pass_context
def collect_command(
    ctx: click.Context,
    symbols: str | None,
    top: int | None,
    since: str | None,
    until: str | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    source: str | None,
    archive_url: str | None,
    backward_only: bool,
    forward_only: bool,
    no_wait: bool,
    quiet: bool,
    shard: Any,
    as_json: bool,
) -> None:
    """Collect every closed candle of the chosen symbols into the lake.

    Backward from the earliest stored candle to --since (or the listing), and forward from the
    latest stored candle to the last closed one (or --until), in one run: all symbols' requests
    share one pool of connections and the exchange's weight, and each month is written as soon
    as its candles are in. Without --symbols: the top N pairs.
    Exit 0 when every symbol succeeded, 1 when some failed, 2 on bad usage.

    Example:

        cryptolake collect --symbols BTC,ETH --since 2024-01-01
    """
    from cryptolake.cli.progress import CollectProgress
    from cryptolake.cli.signals import StopSignals

    if backward_only and forward_only:
        raise UsageProblem("--backward-only and --forward-only exclude each other")
    if symbols is not None and top is not None:
        raise UsageProblem("give --symbols or --top, not both")
    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, since=since, top=top, symbols=symbols,
        source=source, archive_url=archive_url,
    )  # fmt: skip
    start = checked_since(settings)
    end = checked_until(until, start)
    wanted = None if top is not None else (list(settings.collection.symbols) or None)
    if wanted is not None:
        _pairs(settings, wanted)  # refuse a bad name before the lake is created
    creatable_lake(settings)
    logging.getLogger("cryptolake.collector").setLevel(logging.ERROR)  # the progress display reports failures
    if quiet or as_json:
        logging.getLogger("cryptolake.binance").setLevel(logging.ERROR)
        logging.getLogger("cryptolake.archive").setLevel(logging.ERROR)  # no retry chatter: the summary tells
    with make_client(settings) as client, CollectProgress(quiet=quiet or as_json) as progress:
        collector = make_collector(settings, client, wait=not no_wait, progress=progress.update, shard=shard)
        pairs = collector.resolve_symbols(_pairs(settings, wanted) if wanted is not None else None)
        if shard is not None:
            mine = collector.own_symbols(pairs)
            progress.announce(f"shard {shard}: {len(mine)} of the {len(pairs)} symbols")
            pairs = mine
        with StopSignals(collector.request_stop, announce=progress.announce) as signals:
            reports = collector.collect(
                start, pairs, until=end, backward=not forward_only, forward=not backward_only
            )
    failed = {s: e for r in reports for s, e in r.failed.items()}
    from cryptolake.query import refresh_database

    refresh_database(settings.lake.root)  # a first collection makes the klines view non-empty
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        _print_collect_summary(settings, reports, pairs, signals.signum)
    if signals.exit_code is not None:
        sys.exit(signals.exit_code)
    if failed:
        sys.exit(1)


def _print_collect_summary(
    settings: Settings, reports: list[Any], pairs: list[str], signum: int | None
) -> None:
    added = sum(r.total_rows_added for r in reports)
    failed = {s: e for r in reports for s, e in r.failed.items()}
    stopped = {s for r in reports for s, result in r.results.items() if result.stopped} - set(failed)
    done = len(pairs) - len(failed) - len(stopped)
    click.echo(
        f"collected {added} new {settings.collection.interval} candles for {done}/{len(pairs)} symbols "
        f"into {settings.lake.root}"
        + (f" from {settings.collection.exchange}" if settings.collection.exchange != "binance" else "")
        + (f" ({len(stopped)} stopped before the end)" if stopped else "")
    )
    if signum is not None:
        began = any(r.batches for report in reports for r in report.results.values())
        click.echo(_stopped_line(signum, began), err=True)
    for symbol, error in failed.items():
        click.echo(f"failed: {symbol}: {error}", err=True)
    notes = {
        (s, r.note) for report in reports for s, r in report.results.items() if r.note and s not in failed
    }
    for symbol, note in sorted(notes):
        click.echo(f"note: {symbol}: {note}", err=True)


def _stopped_line(signum: int, began: bool = True) -> str:
    import signal

    name = signal.Signals(signum).name
    if not began:
        return f"stopped by {name} before anything was fetched: nothing was written or recorded"
    return f"stopped by {name} before the end: the run is recorded and the next one resumes where this one stopped"


@cli.command("fill-gaps")
@symbols_option("default: all stored")
@click.option(
    "--since", default=None, help="Also fill from this date (or the listing) up to the first stored candle."
)
@interval_option
@lake_option
@exchange_option
@base_url_option
@source_options
@click.option(
    "--no-wait",
    is_flag=True,
    help="Fail at once if another process is collecting into or writing to the lake.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary and errors.")
@json_option
@click.pass_context
def fill_gaps_command(
    ctx: click.Context,
    symbols: str | None,
    since: str | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    source: str | None,
    archive_url: str | None,
    no_wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Fetch exactly the missing windows: missing and failed ones, and exchange outages due
    for a re-check; then report the candles filled and what remains, by kind.

    Exit 0 when every fetch succeeded, 1 when some failed (they are recorded and retried).

    Example:

        cryptolake fill-gaps --symbols BTC
    """
    from cryptolake.cli.progress import CollectProgress
    from cryptolake.cli.signals import StopSignals
    from cryptolake.query import refresh_database

    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, symbols=symbols, since=since,
        source=source, archive_url=archive_url,
    )  # fmt: skip
    existing_lake(settings)
    start = checked_since(settings) if since is not None else None
    logging.getLogger("cryptolake.collector").setLevel(logging.ERROR)
    if quiet or as_json:
        logging.getLogger("cryptolake.binance").setLevel(logging.ERROR)
        logging.getLogger("cryptolake.archive").setLevel(logging.ERROR)
    with make_client(settings) as client, CollectProgress(quiet=quiet or as_json) as progress:
        collector = make_collector(settings, client, wait=not no_wait, progress=progress.update)
        wanted = known_pairs(settings, symbols, collector.known_symbols())
        with StopSignals(collector.request_stop, announce=progress.announce) as signals:
            report = collector.detect_and_fill_gaps(wanted, start)
    refresh_database(settings.lake.root)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        remaining = ", ".join(f"{k} {v}" for k, v in sorted((report.remaining or {}).items())) or "none"
        click.echo(
            f"filled {report.total_rows_added} {settings.collection.interval} candles for "
            f"{len(report.results)} symbols; remaining: {remaining}"
        )
        if signals.signum is not None:
            click.echo(
                _stopped_line(signals.signum, any(r.batches for r in report.results.values())), err=True
            )
        for symbol, error in report.failed.items():
            click.echo(f"failed: {symbol}: {error}", err=True)
    if signals.exit_code is not None:
        sys.exit(signals.exit_code)
    if report.failed:
        sys.exit(1)
