"""``verify``: compare the lake with Binance's archive or its REST API."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    base_url_option,
    checked_since,
    checked_until,
    existing_lake,
    interval_option,
    json_option,
    known_pairs,
    lake_option,
    make_client,
    print_table,
    settings_from,
    symbols_option,
)


@cli.command("verify")
@symbols_option("default: all stored")
@click.option(
    "--since", default=None, help="Only candles from this date or UTC time on (default: all stored)."
)
@click.option("--until", default=None, help="Only candles up to this date (that whole day) or UTC time.")
@interval_option
@click.option(
    "--against",
    type=click.Choice(["archive", "rest"]),
    default="archive",
    show_default=True,
    help="archive: re-check every merged archive file's checksum, compare re-uploaded ones; "
    "rest: fetch the stored range (or --sample pages) and compare candle for candle.",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="With --against rest: this many random 1,000-candle pages per symbol.",
)
@click.option("--repair", is_flag=True, help="Write the source's candles where they differ.")
@lake_option
@base_url_option
@click.option(
    "--archive-url", "archive_url", default=None, help="Binance's bulk archive (setting binance.archive_url)."
)
@json_option
@click.pass_context
def verify_command(
    ctx: click.Context,
    symbols: str | None,
    since: str | None,
    until: str | None,
    interval: str | None,
    against: str,
    sample: int | None,
    repair: bool,
    lake: str | None,
    base_url: str | None,
    archive_url: str | None,
    as_json: bool,
) -> None:
    """Compare the lake with Binance: name every candle that differs.

    Against the archive (default), each archive file merged into the lake is checked against the
    checksum Binance publishes now; a file re-uploaded since is downloaded and compared. Against
    REST, the stored candles are fetched again and compared. --repair writes Binance's candles
    where they differ. Exit 0 when nothing differs, 1 when something does (even repaired).

    Example:

        cryptolake verify --symbols BTC --against rest --sample 5
    """
    from datetime import date, datetime

    from cryptolake.lake import Lake
    from cryptolake.timeutils import to_ms
    from cryptolake.verify import verify

    if sample is not None and against != "rest":
        raise UsageProblem("--sample goes with --against rest")
    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, symbols=symbols, archive_url=archive_url,
        since=since,
    )  # fmt: skip
    root = existing_lake(settings)
    if settings.collection.exchange != "binance":
        raise UsageProblem(
            f"verify compares the lake with Binance (its archive and API); collection.exchange is "
            f"{settings.collection.exchange} (from {settings.sources['collection.exchange']}): "
            "check other exchanges' candles with `cryptolake gaps --exchange ...`"
        )
    interval_name = settings.collection.interval
    stored = Lake(root).symbols(interval_name)
    if not stored:
        raise UsageProblem(
            f"the lake {root} holds no {interval_name} candles: nothing to verify (check --interval)"
        )
    wanted = known_pairs(settings, symbols, stored)
    start = checked_since(settings) if since is not None else None  # a start in the future is refused
    end = checked_until(until, start if start is not None else date(1970, 1, 1))
    since_ms = to_ms(start) if start is not None else None
    until_ms = None
    if end is not None:  # inclusive: a date is its whole day, a time that instant
        until_ms = to_ms(end) + (86_400_000 if not isinstance(end, datetime) else 1)
    if against == "archive":
        from cryptolake.sources.archive import BinanceArchive

        b = settings.binance
        with BinanceArchive(
            b.archive_url,
            listing_url=b.archive_listing_url or None,
            max_retries=b.max_retries,
            retry_delay=b.retry_delay_s,
        ) as archive:
            report = verify(
                root,
                interval_name,
                wanted,
                against="archive",
                since_ms=since_ms,
                until_ms=until_ms,
                archive=archive,
                repair=repair,
            )
    else:
        with make_client(settings) as client:
            report = verify(
                root,
                interval_name,
                wanted,
                against="rest",
                since_ms=since_ms,
                until_ms=until_ms,
                client=client,
                sample=sample,
                repair=repair,
            )
    if repair or report.repaired:
        from cryptolake.query import refresh_database

        refresh_database(root)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(1)


def _print_report(report: Any) -> None:
    files = report.files
    reuploaded = [f for f in files if f.status not in ("unchanged", "error")]
    if report.against == "archive":
        checked = sum(f.status != "error" for f in files)
        click.echo(
            f"checked {checked} of {len(files)} archive files of {len(report.symbols)} symbols ({report.interval}): "
            f"{sum(f.status == 'reuploaded' for f in files)} re-uploaded since merged, "
            f"{len(report.differences)} candles differ"
        )
        if not files:
            click.echo(
                "note: no archive file has been merged into these candles; compare them with --against rest"
            )
        if reuploaded:
            rows = [
                [f.symbol, f.file.rsplit("/", 1)[-1], f.status, f.differences, f.repaired, f.note]
                for f in reuploaded
            ]
            print_table("Archive files", ["symbol", "file", "status", "differing", "repaired", "note"], rows)
        for f in files:
            if f.off_grid:
                click.echo(f"note: {f.file}: {f.note or f'{f.off_grid} off-grid candles left out'}")
    else:
        click.echo(
            f"compared {report.candles_compared} {report.interval} candles of {len(report.symbols)} symbols with REST: "
            f"{len(report.differences)} differ"
        )
    if report.differences:
        shown = report.differences[:50]
        rows = [
            [d.symbol, d.open_time, d.kind, ",".join(d.fields), _values(d.lake), _values(d.source)]
            for d in shown
        ]
        print_table("Differences", ["symbol", "open_time", "kind", "fields", "lake", "source"], rows)
        if len(report.differences) > len(shown):
            click.echo(f"... and {len(report.differences) - len(shown)} more (--json lists all)")
    if report.repaired:
        click.echo(f"repaired {report.repaired} candles")
    for error in report.errors:
        click.echo(f"error: {error}", err=True)


def _values(values: dict[str, Any] | None) -> str:
    if not values:
        return ""
    return " ".join(f"{k}={v}" for k, v in values.items())
