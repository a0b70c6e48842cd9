"""What reads or tends the lake: ``status``, ``gaps``, ``coverage``, ``sql``, ``forget``, ``bans``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cryptolake.cli.app import cli
from cryptolake.cli.failures import UsageProblem
from cryptolake.cli.options import (
    _pairs,
    _scan,
    base_url_option,
    exchange_option,
    existing_lake,
    interval_option,
    json_option,
    lake_option,
    make_client,
    make_collector,
    print_table,
    scan_options,
    settings_from,
)
from cryptolake.timeutils import iso

if TYPE_CHECKING:
    pass

#: Rows `cryptolake sql` prints as a table unless --limit says otherwise.
SQL_TABLE_ROWS = 1000


@cli.command("status")
@interval_option
@lake_option
@exchange_option
@json_option
@click.pass_context
def status_command(ctx: click.Context, interval: str | None, lake: str | None, as_json: bool) -> None:
    """Show what the lake holds per symbol, each symbol's last run and error, the scheduler and
    the live stream.

    With --json, the scheduler's `status`, `last_run` and `next_run_time` are at the top level,
    and the stream (connections, reconnects, REST repairs, each symbol's last candle and its
    delay after close) under `stream` (null if none ever ran).

    Example:

        cryptolake status --json
    """
    from cryptolake.cli.scheduler import scheduler_line, scheduler_summary
    from cryptolake.cli.stream import stream_lines
    from cryptolake.lake import Lake
    from cryptolake.status import collection_status, stream_status

    settings = settings_from(ctx, lake=lake, interval=interval)
    existing_lake(settings)
    status = collection_status(  # no exchange client
        Lake(settings.lake.root, settings.collection.exchange), settings.collection.interval
    )
    status.update(scheduler_summary(settings.lake.root))
    status["stream"] = stream_status(settings.lake.root) if status["exchange"] == "binance" else None
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    rows = [
        [
            s,
            e["rows"],
            e["first_open_time"],
            e["last_open_time"],
            e.get("last_run_at"),
            e.get("last_error") or "",
        ]
        for s, e in status["symbols"].items()
    ]
    print_table(
        f"{status['lake']} ({status['exchange']}, {status['interval']}): "
        f"{status['total_records_collected']} candles",
        ["symbol", "rows", "first", "last", "last run", "last error"],
        rows,
    )
    others = [e for e in status["exchanges_in_lake"] if e != status["exchange"]]
    if others:
        click.echo(f"also in this lake: {', '.join(others)} (see them with --exchange)")
    shards = status["scheduler_shards"]
    for shard, state in shards.items():  # sharded schedulers of an s3:// lake, on this host
        click.echo(f"shard {shard} {scheduler_line(state)}")
    if not shards or status["scheduler"] not in shards.values():
        click.echo(scheduler_line(status["scheduler"]))
    if status["exchange"] == "binance":
        for line in stream_lines(status["stream"]):
            click.echo(line)


@cli.command("forget")
@click.argument("symbols", nargs=-1, required=True)
@interval_option
@lake_option
@exchange_option
@click.option("--data", is_flag=True, help="Also delete the symbols' partitions (their candles).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting partitions (--data).")
@json_option
@click.pass_context
def forget_command(
    ctx: click.Context,
    symbols: tuple[str, ...],
    interval: str | None,
    lake: str | None,
    data: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Forget symbols: their state in `status`, recorded start, listing, outage and failed
    windows, gap-report and quality-report rows, for one interval; with --data also their
    candles (quarantined candles stay).

    For a typo that a run recorded, or a symbol you no longer want. Without --data the candles
    stay and the symbol is still stored; `collect` or `run` learn it again.

    Example:

        cryptolake forget NOPE --interval 1h
    """
    from cryptolake.errors import LakeError
    from cryptolake.status import state_document, state_section

    settings = settings_from(ctx, lake=lake, interval=interval)
    existing_lake(settings)
    pairs = _pairs(settings, symbols)
    with make_client(settings) as client:
        collector = make_collector(settings, client)
        try:
            status = collector.get_collection_status()["symbols"]
        except LakeError:  # an unreadable partition, maybe the very reason to delete the symbol
            status = {p: {"rows": None} for p in collector.stored_symbols()}
            status.update({p: {"rows": None} for p in state_document(collector.lake).get(
                state_section(collector.lake.exchange, collector.interval), {})})  # fmt: skip
        known = set(collector.known_symbols()) | set(status)
        unknown = [p for p in pairs if p not in known]
        if unknown:
            raise UsageProblem(
                f"the lake {settings.lake.root} has no record of {', '.join(unknown)} for "
                f"{settings.collection.interval}; nothing to forget (check the names and --interval)"
            )
        if data:
            doomed = {p: status.get(p, {}).get("rows", 0) for p in pairs}
            what = ", ".join(
                f"{p} ({'uncounted' if n is None else f'{n:,}'} candles)" for p, n in doomed.items()
            )
            if not yes:
                if not sys.stdin.isatty():
                    raise UsageProblem(
                        f"--data deletes every {settings.collection.interval} candle of {what}; "
                        "add --yes to confirm"
                    )
                click.confirm(f"delete every {settings.collection.interval} candle of {what}?", abort=True)
        from cryptolake.cli.signals import StopSignals

        with StopSignals(collector.request_stop) as signals:
            report = collector.forget_symbols(pairs, data=data)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for pair, done in report.items():
            deleted = f", {done['partitions']} partitions ({done['rows']:,} candles) deleted" if data else ""
            click.echo(
                f"forgot {pair} ({settings.collection.interval}): state "
                f"{'removed' if done['state'] else 'none'}, {done['records']} metadata records, "
                f"{done['report_rows']} report rows{deleted}"
            )
    if signals.exit_code is not None:
        left = [p for p in pairs if p not in report]
        click.echo(
            f"stopped before forgetting {', '.join(left) or 'more'}: each symbol is forgotten whole or not "
            "at all",
            err=True,
        )
        sys.exit(signals.exit_code)


@cli.command("bans")
@lake_option
@base_url_option
@click.option("--clear", is_flag=True, help="Forget the recorded bans (only once they are over).")
@json_option
@click.pass_context
def bans_command(
    ctx: click.Context, lake: str | None, base_url: str | None, clear: bool, as_json: bool
) -> None:
    """Show the IP bans (HTTP 418) recorded in the lake, which every process on it honours;
    --clear forgets them.

    A ban is never believed for longer than Binance's maximum, 3 days after it was recorded.
    Clear one only when you know it is over: a banned IP that keeps sending is banned longer.

    Example:

        cryptolake bans --clear
    """
    settings = settings_from(ctx, lake=lake, base_url=base_url)
    existing_lake(settings)
    with make_client(settings) as client:
        book = client.bans
        entries = book.clear() if clear else book.entries()
    rows = [{"host": host, "banned_until": iso(int(until * 1000))} for host, until in sorted(entries.items())]
    if as_json:
        click.echo(json.dumps({"ban_file": str(book.path), "cleared": clear, "bans": rows}, indent=2))
        return
    if not rows:
        click.echo(f"no ban recorded in {book.path}")
        return
    for row in rows:
        click.echo(f"{'cleared' if clear else 'banned'}: {row['host']} until {row['banned_until']}")
    click.echo(f"(recorded in {book.path})")


@cli.command("gaps")
@scan_options
@json_option
@click.pass_context
def gaps_command(
    ctx: click.Context,
    symbols: str | None,
    since: str | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    offline: bool,
    as_json: bool,
) -> None:
    """List the gaps in the lake: missing candles, exchange outages, failed fetches, and
    off-grid or duplicate rows.

    Expected candles run from --since (or the listing, if later) to the last candle closed on
    the exchange. --json prints objects with symbol, interval, kind, position, start_time and
    end_time (the first and last missing open time, UTC) and count.

    Example:

        cryptolake gaps --symbols BTC,ETH --json
    """
    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, since=since, symbols=symbols
    )
    scan = _scan(settings, symbols, since, offline)
    if as_json:
        click.echo(json.dumps([g.to_dict() for g in scan.gaps], indent=2))
        return
    rows = [[g.symbol, g.kind, g.position, iso(g.start_ms), iso(g.end_ms), g.count] for g in scan.gaps]
    print_table(
        f"{len(scan.gaps)} gaps ({scan.interval}, judged at {iso(scan.end_ms)})",
        ["symbol", "kind", "position", "first missing", "last missing", "count"],
        rows,
    )


@cli.command("coverage")
@scan_options
@click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the coverage as a heatmap PNG (needs matplotlib); never inside the lake.",
)
@click.option(
    "--quality",
    "quality_marks",
    is_flag=True,
    help="With --png: mark months with findings of the latest `cryptolake check` (E errors, W warnings).",
)
@json_option
@click.pass_context
def coverage_command(
    ctx: click.Context,
    symbols: str | None,
    since: str | None,
    interval: str | None,
    lake: str | None,
    base_url: str | None,
    offline: bool,
    png: Path | None,
    quality_marks: bool,
    as_json: bool,
) -> None:
    """Show completeness (%) per symbol and month, and optionally draw it as a heatmap
    (--quality marks the months where `cryptolake check` found problems).

    Example:

        cryptolake coverage --png coverage.png
    """
    from cryptolake.cli.output import check_output_path
    from cryptolake.gaps import coverage_rows

    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, since=since, symbols=symbols
    )
    if png is not None:
        png = check_output_path(png, settings.lake.root, "--png")
    elif quality_marks:
        raise UsageProblem("--quality marks the picture: add --png FILE")
    scan = _scan(settings, symbols, since, offline)
    rows = coverage_rows(scan)
    if png is not None:
        from cryptolake.coverage_plot import draw_coverage

        marks = None
        if quality_marks:
            from cryptolake.lake import Lake
            from cryptolake.quality import marked_months

            marks = marked_months(Lake(settings.lake.root, settings.collection.exchange), scan.interval)
        draw_coverage(rows, png, title=f"cryptolake coverage ({scan.interval})", marks=marks)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from cryptolake.coverage_text import coverage_text

    click.echo(coverage_text(rows, title=f"completeness % ({scan.interval})").rstrip("\n"))
    if png is not None:
        click.echo(f"wrote {png}")


@cli.command("sql")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout (required for parquet); never inside the lake.",
)
@click.option(
    "--limit",
    type=click.IntRange(0, 10**12),
    default=None,
    help=f"At most this many rows (0: all). Default: {SQL_TABLE_ROWS} for a table, all otherwise.",
)
@lake_option
@click.pass_context
def sql_command(
    ctx: click.Context, query: str, fmt: str, output: Path | None, limit: int | None, lake: str | None
) -> None:
    """Run one SQL query over the lake's DuckDB views: klines, gaps, coverage, exchange_windows.

    Times are UTC. The query runs in a DuckDB connection that cannot touch any file: the lake
    (and everything else on disk) is never changed. JSON output is strict JSON (NaN and
    infinities as null).

    Example:

        cryptolake sql "SELECT symbol, count(*) FROM klines GROUP BY symbol"
    """
    from cryptolake.cli.output import check_output_path, render_sql, write_output
    from cryptolake.errors import QueryError
    from cryptolake.query import run_sql

    settings = settings_from(ctx, lake=lake)
    root = existing_lake(settings)
    if fmt == "parquet" and output is None:
        raise UsageProblem("--format parquet needs --output FILE")
    target = check_output_path(output, root) if output is not None else None
    rows = limit if limit else (None if limit == 0 or fmt != "table" else SQL_TABLE_ROWS)
    shape = {"table": "text", "csv": "csv", "json": "json", "parquet": "parquet"}[fmt]
    try:
        result = run_sql(root, query, output=shape, limit=rows)  # type: ignore[arg-type]
    except QueryError as exc:
        raise UsageProblem(f"SQL error: {exc}") from None
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    data = render_sql(result, fmt, to_terminal=target is None and sys.stdout.isatty())
    if target is None:
        click.echo(data, nl=False, color=True)  # the data as it is: control characters kept
    else:
        write_output(target, data)
    if result.truncated:
        more = "--limit N for more, --limit 0 for all" + (", or --format csv|json" if fmt == "table" else "")
        click.echo(f"note: showing the first {rows:,} rows; more were left out ({more})", err=True)
