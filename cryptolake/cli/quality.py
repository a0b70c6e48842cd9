"""``cryptolake check``: every stored candle against the data-quality rules (:mod:`cryptolake.quality`)."""

from __future__ import annotations

import json
import time

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    exchange_option,
    existing_lake,
    interval_option,
    json_option,
    known_pairs,
    lake_option,
    print_table,
    settings_from,
    symbols_option,
)


@cli.command("check")
@symbols_option("default: all stored")
@click.option("--since", default=None, help="Check candles from this date or UTC time on (default: all).")
@click.option("--until", default=None, help="Check candles before this date or UTC time (default: all).")
@interval_option
@lake_option
@exchange_option
@json_option
@click.pass_context
def check_command(
    ctx: click.Context,
    symbols: str | None,
    since: str | None,
    until: str | None,
    interval: str | None,
    lake: str | None,
    as_json: bool,
) -> None:
    """Check every stored candle against the data-quality rules; exit 1 if any is an error.

    Errors: duplicate open times, off-grid open times, wrong close times, times not plausible in
    milliseconds, high/low that do not contain open and close, prices that are not positive,
    negative volumes or counts, candles not closed yet. Warnings: taker volume above volume,
    zero volume with trades or moving prices, price spikes no neighbour confirms, long runs
    without volume (thresholds: the [quality] settings). --json prints one object per finding:
    exchange, symbol, interval, open_time, rule, severity, detail.

    Example:

        cryptolake check --symbols BTC,ETH --since 2025-01-01
    """
    from cryptolake.lake import Lake
    from cryptolake.quality import QualityRules, check_lake
    from cryptolake.timeutils import to_ms

    settings = settings_from(ctx, lake=lake, interval=interval, symbols=symbols)
    existing_lake(settings)
    store = Lake(settings.lake.root, settings.collection.exchange)
    interval_name = settings.collection.interval
    wanted = known_pairs(settings, symbols, store.symbols(interval_name))
    bounds = []
    for name, value in (("--since", since), ("--until", until)):
        try:
            bounds.append(to_ms(value) if value is not None else None)
        except ValueError:
            raise UsageProblem(
                f"invalid {name} {value!r}: a date (2025-01-01) or a UTC time (2025-01-01T12:00:00Z)"
            ) from None
    q = settings.quality
    rules = QualityRules(q.spike_mads, q.spike_window, q.zero_volume_hours)
    report = check_lake(store, interval_name, int(time.time() * 1000), wanted, bounds[0], bounds[1], rules)
    if as_json:
        click.echo(json.dumps(report.to_dicts(), indent=2))
    else:
        names = ("symbol", "interval", "open_time", "rule", "severity", "detail")
        rows = [[r[k] for k in names] for r in report.to_dicts()]
        print_table(
            f"{report.errors} errors, {report.warnings} warnings in {report.candles:,} {interval_name} candles "
            f"of {report.symbols} symbols",
            ["symbol", "interval", "open time", "rule", "severity", "detail"],
            rows,
        )
    if report.errors:
        raise SystemExit(1)
