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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from cryptolake._version import __version__
from cryptolake.config import Settings, load_settings
from cryptolake.errors import ConfigError, CryptolakeError, InvalidSymbolName

if TYPE_CHECKING:
    from cryptolake.collector import CryptoCollector
    from cryptolake.sources.binance import BinanceClient

F = Callable[..., Any]


class CryptolakeGroup(click.Group):
    """Translates cryptolake errors into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except ConfigError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _Failure(f"configuration error: {exc}", exit_code=2) from None
        except CryptolakeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _Failure(str(exc), exit_code=1) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(cls=CryptolakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cryptolake")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              envvar="CRYPTOLAKE_CONFIG", help="TOML configuration file (default: ./config.toml).")
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
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


# -- shared options ------------------------------------------------------------------------


def lake_option(func: F) -> F:
    return click.option("--lake", "lake", type=click.Path(file_okay=False), default=None,
                        help="Lake directory (setting lake.root, default data/lake).")(func)


def base_url_option(func: F) -> F:
    return click.option("--base-url", "base_url", default=None,
                        help="Binance REST host (setting binance.base_url).")(func)


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
    return load_settings(ctx.obj.get("config_file"), os.environ, overrides=overrides)


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
    """A table on stdout (rich on a terminal, aligned plain text otherwise)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


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
        click.echo(json.dumps([dict(zip(("key", "value", "source", "env"), row)) for row in rows], indent=2))
        return
    print_table("cryptolake configuration", ["key", "value", "source", "environment name"], [list(r) for r in rows])


@cli.command("symbols")
@lake_option
@base_url_option
@click.option("--top", type=int, default=None, help="Size of the universe (setting collection.top_n).")
@json_option
@click.pass_context
def symbols_command(ctx: click.Context, lake: str | None, base_url: str | None, top: int | None,
                    as_json: bool) -> None:
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
        [[p.rank, p.symbol, p.base_asset, f"{p.current_price:g}", f"{p.quote_volume_24h:,.0f}"] for p in top_pairs],
    )


def interval_option(func: F) -> F:
    return click.option("--interval", default=None,
                        help="Candle interval, 1s ... 1M (setting collection.interval).")(func)


def make_collector(settings: Settings, client: BinanceClient, *, wait: bool = True,
                   progress: Any = None) -> CryptoCollector:
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
            f"waiting: another cryptolake process is writing to {settings.lake.root}", err=True),
    )


@cli.command("collect")
@click.option("--symbols", default=None, help="Comma-separated base assets or pairs (BTC,ETHUSDT).")
@click.option("--top", type=int, default=None, help="Collect the top N pairs by 24h quote volume.")
@click.option("--since", default=None, help="Start date YYYY-MM-DD (setting collection.start_date).")
@interval_option
@lake_option
@base_url_option
@click.option("--backward-only", is_flag=True, help="Only fetch history before what is stored.")
@click.option("--forward-only", is_flag=True, help="Only fetch candles after what is stored.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another process is writing to the lake.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary and errors.")
@json_option
@click.pass_context
def collect_command(ctx: click.Context, symbols: str | None, top: int | None, since: str | None,
                    interval: str | None, lake: str | None, base_url: str | None, backward_only: bool,
                    forward_only: bool, no_wait: bool, quiet: bool, as_json: bool) -> None:
    """Collect every closed candle of the chosen symbols into the lake.

    Backward from the earliest stored candle to --since (or the listing), then forward from the
    latest stored candle to the last closed one. Without --symbols: the top N pairs.
    Exit 0 when every symbol succeeded, 1 when some failed, 2 on bad usage.

    Example:

        cryptolake collect --symbols BTC,ETH --since 2024-01-01
    """
    from cryptolake.cli_progress import CollectProgress

    if backward_only and forward_only:
        raise _Failure("--backward-only and --forward-only exclude each other", exit_code=2)
    if symbols is not None and top is not None:
        raise _Failure("give --symbols or --top, not both", exit_code=2)
    settings = settings_from(ctx, lake=lake, base_url=base_url, interval=interval, since=since,
                             top=top, symbols=symbols)
    if symbols is not None and not settings.collection.symbols:
        # An explicit but empty --symbols must not silently become "the top N".
        raise _Failure(f"invalid --symbols {symbols!r}: give base assets or pairs such as BTC,ETHUSDT "
                       "(or --top N)", exit_code=2)
    wanted = None if top is not None else (list(settings.collection.symbols) or None)
    logging.getLogger("cryptolake.collector").setLevel(logging.ERROR)  # the progress display reports failures
    with make_client(settings) as client, CollectProgress(quiet=quiet or as_json) as progress:
        collector = make_collector(settings, client, wait=not no_wait, progress=progress.update)
        try:
            pairs = collector.resolve_symbols(wanted)
        except InvalidSymbolName as exc:
            raise _Failure(str(exc), exit_code=2) from None
        reports = []
        if not forward_only:
            reports.append(collector.collect_backward(settings.collection.start_date, pairs))
        if not backward_only:
            reports.append(collector.collect_forward(pairs))
    failed = {s: e for r in reports for s, e in r.failed.items()}
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        _print_collect_summary(settings, reports, pairs)
    if failed:
        sys.exit(1)


def _print_collect_summary(settings: Settings, reports: list[Any], pairs: list[str]) -> None:
    added = sum(r.total_rows_added for r in reports)
    failed = {s: e for r in reports for s, e in r.failed.items()}
    click.echo(f"collected {added} new {settings.collection.interval} candles for "
               f"{len(pairs) - len(failed)}/{len(pairs)} symbols into {settings.lake.root}")
    for symbol, error in failed.items():
        click.echo(f"failed: {symbol}: {error}", err=True)


@cli.command("status")
@interval_option
@lake_option
@json_option
@click.pass_context
def status_command(ctx: click.Context, interval: str | None, lake: str | None, as_json: bool) -> None:
    """Show what the lake holds per symbol, and each symbol's last run and error.

    Example:

        cryptolake status --json
    """
    settings = settings_from(ctx, lake=lake, interval=interval)
    with make_client(settings) as client:
        status = make_collector(settings, client).get_collection_status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    rows = [[s, e["rows"], e["first_open_time"], e["last_open_time"], e.get("last_run_at"),
             e.get("last_error") or ""] for s, e in status["symbols"].items()]
    print_table(f"{status['lake']} ({status['interval']}): {status['total_records_collected']} candles",
                ["symbol", "rows", "first", "last", "last run", "last error"], rows)


@cli.command("fake-exchange")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free port).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Added to every response.")
@click.option("--weight-limit", type=int, default=6000, show_default=True, help="Request weight per window.")
@click.option("--weight-window-s", type=int, default=60, show_default=True, help="Weight window, seconds.")
@click.option("--now", "now", default=None, help="The exchange's clock (ISO 8601 UTC); default: real time.")
@click.option("--frozen", is_flag=True, help="Keep the exchange's clock still instead of ticking.")
@click.option("--extra-symbols", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Add N synthetic USDT pairs (S0001USDT ...), listed 2017-09-01, for load tests.")
def fake_exchange_command(host: str, port: int, latency_ms: float, weight_limit: int,
                          weight_window_s: int, now: str | None, frozen: bool, extra_symbols: int) -> None:
    """Serve a Binance-compatible fake exchange (deterministic candles) for offline use.

    Point cryptolake at it with --base-url http://127.0.0.1:PORT.

    Example:

        cryptolake fake-exchange --port 8080 --latency-ms 50
    """
    from cryptolake.fake_exchange import FakeSymbol, default_symbols, serve
    from cryptolake.timeutils import parse_datetime, to_ms

    try:
        start = to_ms(parse_datetime(now)) if now else to_ms(_utcnow())
    except ValueError:
        raise click.BadParameter(f"{now!r} is not an ISO 8601 time", param_hint="--now") from None
    listed = to_ms("2017-09-01")
    symbols = default_symbols() + [
        FakeSymbol(f"S{i:04d}USDT", f"S{i:04d}", "USDT", listed_ms=listed, base_price=10.0 + i, volume_scale=0.001)
        for i in range(1, extra_symbols + 1)
    ]
    serve(host=host, port=port, now=start, follow_wall_clock=not frozen, latency_s=latency_ms / 1000,
          weight_limit=weight_limit, weight_window_s=weight_window_s, symbols=symbols)


def _utcnow() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cryptolake")
