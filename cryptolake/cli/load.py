"""``load postgres``: the lake into PostgreSQL."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    _pairs,
    exchange_option,
    existing_lake,
    interval_option,
    json_option,
    known_pairs,
    lake_option,
    resolve_settings,
    symbols_option,
)

if TYPE_CHECKING:
    pass


@cli.group("load")
def load_group() -> None:
    """Load the lake into a database, incrementally (PostgreSQL).

    Example:

        cryptolake load postgres --dsn postgresql://me@localhost/market
    """


@load_group.command("postgres")
@click.option(
    "--dsn", default=None, help="PostgreSQL DSN (setting postgres.dsn, env CRYPTOLAKE_POSTGRES_DSN)."
)
@click.option(
    "--schema", default=None, help="Schema of the table (setting postgres.schema, default cryptolake)."
)
@click.option("--table", default=None, help="Table to sync into (setting postgres.table, default klines).")
@symbols_option("default: all")
@interval_option
@lake_option
@exchange_option
@click.option(
    "--timescale/--no-timescale",
    default=None,
    help="Make the table a TimescaleDB hypertable (setting postgres.timescale).",
)
@click.option("--full", is_flag=True, help="Send every partition, even those unchanged since the last sync.")
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Connections that load partitions in parallel.",
)
@json_option
@click.pass_context
def load_postgres_command(
    ctx: click.Context,
    dsn: str | None,
    schema: str | None,
    table: str | None,
    symbols: str | None,
    interval: str | None,
    lake: str | None,
    timescale: bool | None,
    full: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Sync the lake into a PostgreSQL table; only partitions changed since the last sync move.

    Creates the schema and table when missing. Each partition (symbol, month) is one
    transaction; partitions gone from the lake are deleted from the table. Needs the postgres
    extra: pip install 'cryptolake[postgres]'. Exit 0 when every partition synced, 1 otherwise.

    Example:

        CRYPTOLAKE_POSTGRES_DSN=postgresql://me@localhost/market cryptolake load postgres --symbols BTC,ETH
    """
    from cryptolake.loader import PostgresLoader

    flags = {"postgres.dsn": dsn, "postgres.schema": schema, "postgres.table": table,
             "postgres.timescale": timescale, "lake.root": lake, "collection.interval": interval,
             "collection.symbols": symbols}  # fmt: skip
    flag_names = {
        "lake.root": "--lake",
        "collection.interval": "--interval",
        "collection.symbols": "--symbols",
    }
    overrides = {
        key: (value, flag_names.get(key, f"--{key.split('.')[1].replace('_', '-')}"))
        for key, value in flags.items()
    }
    settings = resolve_settings(ctx, overrides)
    pg = settings.postgres
    if not pg.dsn:
        raise UsageProblem("no PostgreSQL DSN: pass --dsn or set CRYPTOLAKE_POSTGRES_DSN")
    existing_lake(settings)
    from cryptolake.lake import Lake

    wanted = None
    if symbols is not None:
        wanted = _pairs(settings, settings.collection.symbols)
        stored = Lake(settings.lake.root, settings.collection.exchange).symbols(settings.collection.interval)
        known_pairs(settings, symbols, stored)  # a symbol the lake does not hold is a typo, not "0 sent"
    with PostgresLoader(
        Lake(settings.lake.root, settings.collection.exchange),
        pg.dsn,
        schema=pg.schema,
        table=pg.table,
        timescale=pg.timescale,
        workers=workers,
    ) as loader:
        report = loader.sync(settings.collection.interval, wanted, full=full)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(
            f"synced {settings.lake.root} ({report.interval}) into {report.table}: "
            f"{report.partitions_sent} partitions sent ({report.rows_sent:,} rows), "
            f"{report.partitions_skipped} unchanged, {report.partitions_removed} removed "
            f"({report.rows_deleted:,} rows deleted) in {report.seconds:.2f} s"
        )
        for failure in report.failures:
            click.echo(f"failed: {failure.symbol} {failure.month}: {failure.error}", err=True)
    if not report.ok:
        sys.exit(1)
