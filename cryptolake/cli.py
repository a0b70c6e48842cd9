"""The ``cryptolake`` command: a thin layer over the Python API.

Each command resolves the settings (defaults < config.toml < .env < environment < flags), builds
the objects, calls one library function and renders the result. Errors become one line on stderr:
exit 2 for bad usage or configuration, exit 1 for everything else; ``--debug`` shows tracebacks.
Heavy libraries are imported inside the commands so that ``cryptolake --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cryptolake._version import __version__
from cryptolake.cli_errors import UsageProblem, describe, one_line, redacted_traceback
from cryptolake.config import Settings, load_settings
from cryptolake.errors import InvalidSymbolName
from cryptolake.redact import RedactingFilter, register_secret
from cryptolake.timeutils import iso

if TYPE_CHECKING:
    from cryptolake.collector import CryptoCollector
    from cryptolake.sources.binance import BinanceClient

F = Callable[..., Any]
#: Rows `cryptolake sql` prints as a table unless --limit says otherwise.
SQL_TABLE_ROWS = 1000


class CryptolakeGroup(click.Group):
    """The CLI's error boundary: any exception becomes one redacted line and an exit code
    (:mod:`cryptolake.cli_errors`); ``--debug`` adds the traceback."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's options: one line, like every other error
            raise _usage(exc) from None
        except (click.exceptions.Exit, click.Abort, click.ClickException, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - this is the boundary
            message, code = describe(exc)
            if ctx.obj and ctx.obj.get("debug"):
                click.echo(redacted_traceback(exc), err=True, nl=False)
            raise _Failure(message, exit_code=code) from None


def _usage(exc: click.UsageError) -> click.ClickException:
    """Click's usage error as one line (exit 2), pointing at the command's help; a group called
    without a command still shows its help, as click does."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    where = exc.ctx.command_path if exc.ctx is not None else "cryptolake"
    return _Failure(f"{exc.format_message()} (see `{where} --help`)", exit_code=exc.exit_code)


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; per instance here

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.format_message())}", err=True)


@click.group(cls=CryptolakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cryptolake")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="CRYPTOLAKE_CONFIG",
    help="TOML configuration file (default: ./config.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, debug: bool) -> None:
    """cryptolake: keep a complete, trustworthy history of crypto candles in a Parquet lake.

    Example:

        cryptolake collect --symbols BTC,ETH --since 2024-01-01
    """
    ctx.ensure_object(dict)
    ctx.obj.update(config_file=config_file, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # psycopg warns about cleanups after a lost connection; the loader reports the loss itself.
    logging.getLogger("psycopg").setLevel(logging.DEBUG if debug else logging.ERROR)


# -- shared options ------------------------------------------------------------------------


def lake_option(func: F) -> F:
    return click.option(
        "--lake",
        "lake",
        type=click.Path(file_okay=False),
        default=None,
        help="Lake directory (setting lake.root, default data/lake).",
    )(func)


def base_url_option(func: F) -> F:
    return click.option(
        "--base-url", "base_url", default=None, help="Binance REST host (setting binance.base_url)."
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """Resolve settings with the given flag values on top (None = flag not given)."""
    names = {
        "lake": "lake.root", "base_url": "binance.base_url", "interval": "collection.interval",
        "since": "collection.start_date", "top": "collection.top_n", "symbols": "collection.symbols",
        "schedule": "scheduler.schedule", "dsn": "postgres.dsn",
    }  # fmt: skip
    overrides = {
        names[name]: (value, f"--{name.replace('_', '-')}")
        for name, value in flags.items()
        if value is not None
    }
    return resolve_settings(ctx, overrides)


def resolve_settings(ctx: click.Context, overrides: dict[str, tuple[Any, str]]) -> Settings:
    """Load the settings once per command: register their secrets for redaction and print each
    warning (an unknown ``CRYPTOLAKE_`` variable) on stderr."""
    settings = load_settings(ctx.obj.get("config_file"), os.environ, overrides=overrides)
    for secret in settings.secrets():
        register_secret(secret)
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    return settings


def make_client(settings: Settings, ban_file: Path | None = None) -> BinanceClient:
    """A BinanceClient configured from settings."""
    from cryptolake.sources.binance import BinanceClient

    b = settings.binance
    return BinanceClient(
        api_key=b.api_key or None,
        api_secret=b.api_secret or None,
        max_retries=b.max_retries,
        retry_delay=b.retry_delay_s,
        base_url=b.base_url,
        timeout_s=b.timeout_s,
        concurrency=b.concurrency,
        weight_share=b.weight_share,
        quote_asset=settings.collection.quote_asset,
        excluded_bases=settings.collection.excluded_bases,
        ban_file=ban_file if ban_file is not None else settings.lake.root / "_meta" / "binance-bans.json",
    )


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stdout: rich on a terminal, plain aligned text (nothing cut) otherwise."""
    from cryptolake.cli_output import plain_table, rich_table

    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if sys.stdout.isatty():
        click.echo(rich_table(title, columns, cells), nl=False)
    else:
        click.echo((f"{title}\n" if title else "") + plain_table(columns, cells), nl=False)


def existing_lake(settings: Settings) -> Path:
    """The lake root, which must already be a lake (a folder with ``klines/`` or ``_meta/``):
    commands that only read or repair never create one from a mistyped path.

    Raises:
        UsageProblem: the path is a file, missing, or a folder that holds no lake.
    """
    from cryptolake.lake import is_lake

    root = settings.lake.root
    where = f"{root} (from {settings.sources['lake.root']})"
    check_lake_path(settings)
    if not is_lake(root):
        missing = "does not exist" if not root.exists() else "holds no lake (no klines/ or _meta/ folder)"
        raise UsageProblem(
            f"lake {where} {missing}; check --lake / lake.root, or collect into it first "
            f"with `cryptolake collect --lake {root}`"
        )
    return root


def check_lake_path(settings: Settings) -> Path:
    """The lake root, refused when it names a file (a lake is a folder)."""
    root = settings.lake.root
    if root.exists() and not root.is_dir():
        raise UsageProblem(
            f"lake {root} (from {settings.sources['lake.root']}) is a file, not a folder; "
            "point --lake / lake.root at a folder"
        )
    return root


def creatable_lake(settings: Settings) -> Path:
    """The lake root for a command that creates the lake (collect, run): made now if missing,
    so a path that cannot hold a lake is refused before anything else happens."""
    from cryptolake.cli_errors import describe_os_error

    root = check_lake_path(settings)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(
            f"cannot create the lake {root} (from {settings.sources['lake.root']}): {describe_os_error(exc)}"
        ) from None
    return root


# -- commands ------------------------------------------------------------------------------


@cli.command("config")
@lake_option
@base_url_option
@json_option
@click.pass_context
def config_command(ctx: click.Context, lake: str | None, base_url: str | None, as_json: bool) -> None:
    """Print the effective configuration and where each value comes from (secrets redacted).

    Example:

        CRYPTOLAKE_BINANCE_TIMEOUT_S=30 cryptolake config
    """
    settings = settings_from(ctx, lake=lake, base_url=base_url)
    rows = settings.describe()
    if as_json:
        click.echo(
            json.dumps(
                [dict(zip(("key", "value", "source", "env"), row, strict=True)) for row in rows], indent=2
            )
        )
        return
    print_table(
        "cryptolake configuration", ["key", "value", "source", "environment name"], [list(r) for r in rows]
    )


@cli.command("symbols")
@lake_option
@base_url_option
@click.option("--top", type=int, default=None, help="Size of the universe (setting collection.top_n).")
@json_option
@click.pass_context
def symbols_command(
    ctx: click.Context, lake: str | None, base_url: str | None, top: int | None, as_json: bool
) -> None:
    """List the current top-N universe: TRADING spot pairs ranked by 24 h quote volume.

    Example:

        cryptolake symbols --top 10
    """
    settings = settings_from(ctx, lake=lake, base_url=base_url, top=top)
    with make_client(settings) as client:
        top_pairs = client.get_top_by_market_cap(settings.collection.top_n)
    if as_json:
        click.echo(json.dumps([vars(p) for p in top_pairs], indent=2))
        return
    print_table(
        f"top {settings.collection.top_n} {settings.collection.quote_asset} pairs by 24h quote volume",
        ["rank", "symbol", "base", "price", "24h quote volume"],
        [
            [p.rank, p.symbol, p.base_asset, f"{p.current_price:g}", f"{p.quote_volume_24h:,.0f}"]
            for p in top_pairs
        ],
    )


def _named_symbols(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--symbols``, checked once for every command: given but naming nothing (``""``, ``" , "``)
    is refused at once, so it never silently means "the top N" or "all"."""
    if value is not None and not [name for name in value.split(",") if name.strip()]:
        raise UsageProblem(f"invalid --symbols {value!r}: give base assets or pairs such as BTC,ETHUSDT")
    return value


def symbols_option(default_text: str) -> Callable[[F], F]:
    """``--symbols`` (comma-separated base assets or pairs); ``default_text`` says what none means."""
    return click.option(
        "--symbols",
        default=None,
        callback=_named_symbols,
        help=f"Comma-separated base assets or pairs (BTC,ETHUSDT); {default_text}.",
    )


def interval_option(func: F) -> F:
    return click.option(
        "--interval", default=None, help="Candle interval, 1s ... 1M (setting collection.interval)."
    )(func)


def make_collector(
    settings: Settings, client: BinanceClient, *, wait: bool = True, progress: Any = None
) -> CryptoCollector:
    """A CryptoCollector over the configured lake."""
    from cryptolake.collector import CryptoCollector

    return CryptoCollector(
        client,
        top_n_cryptos=settings.collection.top_n,
        batch_size_hours=settings.collection.batch_size_hours,
        lake=settings.lake.root,
        interval=settings.collection.interval,
        wait_for_lock=wait,
        on_progress=progress,
        on_lock_wait=lambda: click.echo(
            f"waiting: another cryptolake process is writing to {settings.lake.root}", err=True
        ),
        exchange_gap_recheck_days=settings.collection.exchange_gap_recheck_days,
    )


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
@base_url_option
@click.option("--backward-only", is_flag=True, help="Only fetch history before what is stored.")
@click.option("--forward-only", is_flag=True, help="Only fetch candles after what is stored.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Fail at once if another process is collecting into or writing to the lake.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary and errors.")
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
    backward_only: bool,
    forward_only: bool,
    no_wait: bool,
    quiet: bool,
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
    from cryptolake.cli_progress import CollectProgress
    from cryptolake.cli_signals import StopSignals

    if backward_only and forward_only:
        raise UsageProblem("--backward-only and --forward-only exclude each other")
    if symbols is not None and top is not None:
        raise UsageProblem("give --symbols or --top, not both")
    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, since=since, top=top, symbols=symbols
    )
    start = checked_since(settings)
    end = checked_until(until, start)
    wanted = None if top is not None else (list(settings.collection.symbols) or None)
    if wanted is not None:
        _pairs(settings, wanted)  # refuse a bad name before the lake is created
    creatable_lake(settings)
    logging.getLogger("cryptolake.collector").setLevel(logging.ERROR)  # the progress display reports failures
    if quiet or as_json:
        logging.getLogger("cryptolake.binance").setLevel(logging.ERROR)  # no retry chatter: the summary tells
    with make_client(settings) as client, CollectProgress(quiet=quiet or as_json) as progress:
        collector = make_collector(settings, client, wait=not no_wait, progress=progress.update)
        pairs = collector.resolve_symbols(_pairs(settings, wanted) if wanted is not None else None)
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
        f"into {settings.lake.root}" + (f" ({len(stopped)} stopped before the end)" if stopped else "")
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


@cli.command("status")
@interval_option
@lake_option
@json_option
@click.pass_context
def status_command(ctx: click.Context, interval: str | None, lake: str | None, as_json: bool) -> None:
    """Show what the lake holds per symbol, each symbol's last run and error, and the scheduler.

    With --json, the scheduler's `status`, `last_run` and `next_run_time` are at the top level.

    Example:

        cryptolake status --json
    """
    from cryptolake.cli_scheduler import scheduler_line, scheduler_summary
    from cryptolake.status import collection_status

    settings = settings_from(ctx, lake=lake, interval=interval)
    existing_lake(settings)
    status = collection_status(settings.lake.root, settings.collection.interval)  # no exchange client
    status.update(scheduler_summary(settings.lake.root))
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
        f"{status['lake']} ({status['interval']}): {status['total_records_collected']} candles",
        ["symbol", "rows", "first", "last", "last run", "last error"],
        rows,
    )
    click.echo(scheduler_line(status["scheduler"]))


@cli.command("forget")
@click.argument("symbols", nargs=-1, required=True)
@interval_option
@lake_option
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
    windows and gap-report rows, for one interval; with --data also their candles.

    For a typo that a run recorded, or a symbol you no longer want. Without --data the candles
    stay and the symbol is still stored; `collect` or `run` learn it again.

    Example:

        cryptolake forget NOPE --interval 1h
    """
    settings = settings_from(ctx, lake=lake, interval=interval)
    existing_lake(settings)
    pairs = _pairs(settings, symbols)
    with make_client(settings) as client:
        collector = make_collector(settings, client)
        status = collector.get_collection_status()["symbols"]
        known = set(collector.known_symbols()) | set(status)
        unknown = [p for p in pairs if p not in known]
        if unknown:
            raise UsageProblem(
                f"the lake {settings.lake.root} has no record of {', '.join(unknown)} for "
                f"{settings.collection.interval}; nothing to forget (check the names and --interval)"
            )
        if data:
            doomed = {p: status.get(p, {}).get("rows", 0) for p in pairs}
            what = ", ".join(f"{p} ({n:,} candles)" for p, n in doomed.items())
            if not yes:
                if not sys.stdin.isatty():
                    raise UsageProblem(
                        f"--data deletes every {settings.collection.interval} candle of {what}; "
                        "add --yes to confirm"
                    )
                click.confirm(f"delete every {settings.collection.interval} candle of {what}?", abort=True)
        from cryptolake.cli_signals import StopSignals

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


# -- gaps, coverage and SQL ------------------------------------------------------------------


def _detector(settings: Settings, client: BinanceClient | None) -> Any:
    from cryptolake.gaps import DataGapDetector

    return DataGapDetector(
        settings.lake.root, settings.collection.interval, client=client,
        exchange_gap_recheck_days=settings.collection.exchange_gap_recheck_days,
    )  # fmt: skip


def _scan(settings: Settings, symbols: str | None, since: str | None, offline: bool) -> Any:
    """Detect gaps as the gaps/coverage commands do, and store the report for the DuckDB views
    (unless the lake is read-only: then the report is only printed)."""
    from contextlib import nullcontext

    existing_lake(settings)
    start = checked_since(settings) if since is not None else None
    with nullcontext(None) if offline else make_client(settings) as client:
        detector = _detector(settings, client)
        wanted = known_pairs(settings, symbols, detector.known_symbols())
        return detector.report(wanted, start)


def known_pairs(settings: Settings, symbols: str | None, known: list[str]) -> list[str] | None:
    """The pairs ``--symbols`` names (None without it), each of which the lake must hold.

    Raises:
        UsageProblem: a malformed name, or a symbol the lake has no record of.
    """
    if symbols is None:
        return None
    wanted = _pairs(settings, settings.collection.symbols)  # --symbols names something: its callback says so
    unknown = [s for s in wanted if s not in known]
    if unknown:
        held = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "") or "nothing"
        raise UsageProblem(
            f"the lake {settings.lake.root} holds no {settings.collection.interval} candles of "
            f"{', '.join(unknown)} (it holds {held}); collect them first, or check --symbols "
            "and --interval"
        )
    return wanted


def checked_since(settings: Settings) -> Any:
    """The start date, refused when it lies in the future (nothing could be collected)."""
    from datetime import date, datetime

    start: date = settings.collection.start_date
    now = datetime.now(UTC)
    if start > (now if isinstance(start, datetime) else now.date()):
        shown = start.isoformat().replace("+00:00", "Z")
        raise UsageProblem(
            f"start {shown} (from {settings.sources['collection.start_date']}) is in the "
            f"future (today is {now.date()} UTC): no candle before it can be collected"
        )
    return start


def checked_until(until: str | None, start: Any) -> Any:
    """``--until``: a date (that whole day) or an ISO time, UTC, not before the start."""
    from datetime import UTC, date, datetime

    if until is None:
        return None
    text = until.strip()
    try:
        end: date = date.fromisoformat(text)
        last: datetime = datetime(end.year, end.month, end.day, 23, 59, 59, tzinfo=UTC)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise UsageProblem(
                f"invalid --until {until!r}: give a date YYYY-MM-DD or a UTC time such as "
                "2024-06-30T12:00:00Z"
            ) from None
        end = last = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    first = start if isinstance(start, datetime) else datetime(start.year, start.month, start.day, tzinfo=UTC)
    if last < first:
        raise UsageProblem(
            f"--until {until} is before the start {first.isoformat().replace('+00:00', 'Z')}: "
            "nothing to collect"
        )
    return end


def _pairs(settings: Settings, names: Any) -> list[str]:
    from cryptolake.collector import pair_symbols

    try:
        return pair_symbols(names, settings.collection.quote_asset)
    except InvalidSymbolName as exc:
        raise UsageProblem(str(exc)) from None


def offline_option(func: F) -> F:
    return click.option(
        "--offline",
        is_flag=True,
        help="Do not ask the exchange (judge forward gaps by this machine's clock).",
    )(func)


def scan_options(func: F) -> F:
    """The options of the commands that judge the lake's completeness (gaps, coverage)."""
    for option in reversed((
        symbols_option("default: all stored"),
        click.option("--since", default=None, help="Expected start YYYY-MM-DD (setting collection.start_date)."),
        interval_option, lake_option, base_url_option, offline_option,
    )):  # fmt: skip
        func = option(func)
    return func


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


@cli.command("fill-gaps")
@symbols_option("default: all stored")
@click.option(
    "--since", default=None, help="Also fill from this date (or the listing) up to the first stored candle."
)
@interval_option
@lake_option
@base_url_option
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
    from cryptolake.cli_progress import CollectProgress
    from cryptolake.cli_signals import StopSignals
    from cryptolake.query import refresh_database

    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, symbols=symbols, since=since
    )
    existing_lake(settings)
    start = checked_since(settings) if since is not None else None
    logging.getLogger("cryptolake.collector").setLevel(logging.ERROR)
    if quiet or as_json:
        logging.getLogger("cryptolake.binance").setLevel(logging.ERROR)
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


@cli.command("coverage")
@scan_options
@click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the coverage as a heatmap PNG (needs matplotlib); never inside the lake.",
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
    as_json: bool,
) -> None:
    """Show completeness (%) per symbol and month, and optionally draw it as a heatmap.

    Example:

        cryptolake coverage --png coverage.png
    """
    from cryptolake.cli_output import check_output_path
    from cryptolake.gaps import coverage_rows

    settings = settings_from(
        ctx, lake=lake, base_url=base_url, interval=interval, since=since, symbols=symbols
    )
    if png is not None:
        png = check_output_path(png, settings.lake.root, "--png")
    scan = _scan(settings, symbols, since, offline)
    rows = coverage_rows(scan)
    if png is not None:
        from cryptolake.coverage_plot import draw_coverage

        draw_coverage(rows, png, title=f"cryptolake coverage ({scan.interval})")
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
    from cryptolake.cli_output import check_output_path, render_sql, write_output
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


@cli.command("fake-exchange")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free port)."
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0, 60_000),
    default=0.0,
    show_default=True,
    help="Added to every response.",
)
@click.option(
    "--weight-limit",
    type=click.IntRange(1),
    default=6000,
    show_default=True,
    help="Request weight per window.",
)
@click.option(
    "--weight-window-s", type=click.IntRange(1), default=60, show_default=True, help="Weight window, seconds."
)
@click.option("--now", "now", default=None, help="The exchange's clock (ISO 8601 UTC); default: real time.")
@click.option("--frozen", is_flag=True, help="Keep the exchange's clock still instead of ticking.")
@click.option(
    "--extra-symbols",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="Add N synthetic USDT pairs (S0001USDT ...), listed 2017-09-01, for load tests.",
)
@click.option(
    "--chaos",
    "chaos_rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of klines requests that fail at random (5xx, -1007/-1008, dropped, malformed).",
)
@click.option("--chaos-seed", type=int, default=0, show_default=True, help="Seed of the random failures.")
@click.option(
    "--ban-grace",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Requests arriving inside a 429's Retry-After that still get a 429 (in flight) before a 418.",
)
@click.option(
    "--cache-rows",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Serve up to N closed candles again from memory instead of recomputing them (load tests).",
)
def fake_exchange_command(
    host: str,
    port: int,
    latency_ms: float,
    weight_limit: int,
    weight_window_s: int,
    now: str | None,
    frozen: bool,
    extra_symbols: int,
    chaos_rate: float,
    chaos_seed: int,
    ban_grace: int,
    cache_rows: int,
) -> None:
    """Serve a Binance-compatible fake exchange (deterministic candles) for offline use.

    Point cryptolake at it with --base-url http://127.0.0.1:PORT.

    Example:

        cryptolake fake-exchange --port 8080 --latency-ms 50
    """
    from cryptolake.testing import FakeSymbol, default_symbols, serve
    from cryptolake.timeutils import parse_datetime, to_ms

    try:
        start = to_ms(parse_datetime(now)) if now else to_ms(_utcnow())
    except ValueError:
        raise click.BadParameter(f"{now!r} is not an ISO 8601 time", param_hint="--now") from None
    listed = to_ms("2017-09-01")
    symbols = default_symbols() + [
        FakeSymbol(
            f"S{i:04d}USDT", f"S{i:04d}", "USDT", listed_ms=listed, base_price=10.0 + i, volume_scale=0.001
        )
        for i in range(1, extra_symbols + 1)
    ]
    try:
        serve(
            host=host,
            port=port,
            now=start,
            follow_wall_clock=not frozen,
            latency_s=latency_ms / 1000,
            weight_limit=weight_limit,
            weight_window_s=weight_window_s,
            symbols=symbols,
            chaos_rate=chaos_rate,
            chaos_seed=chaos_seed,
            ban_grace_requests=ban_grace,
            cache_rows=cache_rows,
        )
    except OSError as exc:
        raise UsageProblem(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port, "
            "or --port 0 for any free one; --host must be an address of this machine)"
        ) from None


def _utcnow() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


# -- load: the lake into PostgreSQL -------------------------------------------------------------


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
    wanted = None
    if symbols is not None:
        wanted = _pairs(settings, settings.collection.symbols)
        from cryptolake.lake import Lake

        stored = Lake(settings.lake.root).symbols(settings.collection.interval)
        known_pairs(settings, symbols, stored)  # a symbol the lake does not hold is a typo, not "0 sent"
    with PostgresLoader(
        settings.lake.root, pg.dsn, schema=pg.schema, table=pg.table, timescale=pg.timescale, workers=workers
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cryptolake")


from cryptolake import cli_scheduler  # noqa: E402, F401  (registers `run` and `scheduler`)
