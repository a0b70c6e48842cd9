"""``cryptolake check``: every stored candle against the data-quality rules (:mod:`cryptolake.quality`)."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING

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
    pairs_named,
    print_table,
    settings_from,
    symbols_option,
)
from cryptolake.errors import CryptolakeError

if TYPE_CHECKING:
    from cryptolake.config import Settings
    from cryptolake.lake import Lake


@cli.command("check")
@symbols_option("default: all stored")
@click.option("--since", default=None, help="Check candles from this date or UTC time on (default: all).")
@click.option("--until", default=None, help="Check candles before this date or UTC time (default: all).")
@click.option(
    "--quarantine",
    "quarantined",
    is_flag=True,
    help="List the candles the lake refused to store (rule, source, values) instead of checking.",
)
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
    quarantined: bool,
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
    exchange, symbol, interval, open_time, rule, severity, detail. The findings are kept as the
    `quality` view of `cryptolake sql`.

    Every collection already refuses the candles that break an error rule: --quarantine lists
    them (exit 0), with the rule, the source that sent them and their values.

    Example:

        cryptolake check --symbols BTC,ETH --since 2025-01-01
    """
    from cryptolake.lake import Lake
    from cryptolake.quality import QualityRules, check_lake, save_report
    from cryptolake.query import refresh_database
    from cryptolake.timeutils import to_ms

    settings = settings_from(ctx, lake=lake, interval=interval, symbols=symbols)
    existing_lake(settings)
    store = Lake(settings.lake.root, settings.collection.exchange)
    interval_name = settings.collection.interval
    bounds = []
    for name, value in (("--since", since), ("--until", until)):
        try:
            bounds.append(to_ms(value) if value is not None else None)
        except ValueError:
            raise UsageProblem(
                f"invalid {name} {value!r}: a date (2025-01-01) or a UTC time (2025-01-01T12:00:00Z)"
            ) from None
    if quarantined:
        _list_quarantine(settings, store, interval_name, symbols, bounds[0], bounds[1], as_json)
        return
    stored = store.symbols(interval_name)
    wanted = known_pairs(settings, symbols, stored) or stored
    q = settings.quality
    rules = QualityRules(q.spike_mads, q.spike_window, q.zero_volume_hours)
    now = int(time.time() * 1000)
    report = check_lake(store, interval_name, now, wanted, bounds[0], bounds[1], rules)
    try:
        save_report(store, report, wanted, bounds[0], bounds[1], now)
        refresh_database(store)
    except (OSError, CryptolakeError) as exc:  # a read-only lake: the report is printed, not kept
        click.echo(f"warning: the report is not kept for the quality view ({exc})", err=True)
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


def _list_quarantine(
    settings: Settings,
    store: Lake,
    interval: str,
    symbols: str | None,
    since_ms: int | None,
    until_ms: int | None,
    as_json: bool,
) -> None:
    """``check --quarantine``: the refused candles, oldest open time first."""
    import polars as pl

    wanted = None if symbols is None else pairs_named(settings)
    rows = store.quarantined(interval, wanted)
    opened = pl.col("open_time").dt.epoch("ms")
    if since_ms is not None:
        rows = rows.filter(opened >= since_ms)
    if until_ms is not None:
        rows = rows.filter(opened < until_ms)
    shown = rows.with_columns(
        pl.col("open_time").dt.epoch("ms").alias("open_time_ms"),
        pl.col("close_time").dt.epoch("ms").alias("close_time_ms"),
        *(
            pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            for c in ("open_time", "close_time", "quarantined_at")
        ),
    )
    if as_json:
        # Valid JSON: a price that is not a finite number (why it was refused) is written as text.
        safe = [{k: _json_value(v) for k, v in row.items()} for row in shown.iter_rows(named=True)]
        click.echo(json.dumps(safe, indent=2, allow_nan=False))
        return
    names = ("symbol", "interval", "open_time", "rule", "source", "quarantined_at", "detail")
    print_table(
        f"{rows.height} quarantined {interval} candles",
        ["symbol", "interval", "open time", "rule", "source", "quarantined", "detail"],
        [[r[k] for k in names] for r in shown.iter_rows(named=True)],
    )


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    return value
